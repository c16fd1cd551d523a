"""What a runtime adapter itself costs per datagram: the loop around the sans-IO server.

The broker's adapter (``felix_runtime_asyncio.runtime.UdpRuntime`` or
``felix_runtime_anyio.runtime.AnyioUdpRuntime``) runs in a child process around a server
that does nearly nothing: it echoes each datagram in the next ``datagrams_to_send`` and
keeps its one deadline 20 ms ahead (so every pass re-arms the timer, as the broker's moving
QUIC deadlines do). This process sends a 64 B datagram, waits for the echo, and again. The
figures: the adapter process's CPU per round trip (``process_time`` over the timed round
trips; the load of the machine moves it far less than a latency), and the round trip's p50
/ p99. What the adapter adds to every publish -> deliver is its wait, its wake-up, its read
and its send: the same path.

A/B: run the copy in each checkout (``python A/benchmarks/adapter_pass.py; python
B/benchmarks/adapter_pass.py``), or one copy with ``PYTHONPATH=B``, alternating.

Usage: ``python benchmarks/adapter_pass.py [--runtime asyncio,asyncio-uvloop,anyio-asyncio,
anyio-uvloop,anyio-trio] [--count 5000] [--rounds 1] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

RUNTIMES = ("asyncio", "asyncio-uvloop", "anyio-asyncio", "anyio-uvloop", "anyio-trio")
WARMUP = 200
DEADLINE_AHEAD = 0.02


class _EchoServer:
    """The least a server can do: echo each datagram, keep a deadline ahead."""

    transmit_due = False
    """Never asks for a transmit inside a batch (the broker's, after its requests)."""

    def __init__(self, count: int, clock: Any) -> None:
        self._clock = clock
        self._out: list[tuple[bytes, Any]] = []
        self.finished = False
        self.storage = None
        self.echoed = 0
        self.count = count
        self.cpu_start = 0.0
        self.cpu = 0.0

    def datagram_received(self, data: bytes, addr: Any, now: float) -> None:
        self._out.append((data, addr))

    def datagrams_to_send(self, now: float, send: Any = None) -> list[tuple[bytes, Any]]:
        out, self._out = self._out, []
        if out:
            send(out)
            self.echoed += len(out)
            if self.echoed == WARMUP:
                self.cpu_start = time.process_time()
            elif self.echoed == WARMUP + self.count:
                self.cpu = time.process_time() - self.cpu_start
                self.finished = True
        return []

    def get_timer(self) -> float | None:
        return self._clock() + DEADLINE_AHEAD

    def handle_timer(self, now: float) -> None:
        pass

    def take_storage_jobs(self, now: float) -> list[Any]:
        return []


def _serve(runtime: str, count: int) -> None:
    """The child: run the adapter until ``count`` timed echoes are done; print its CPU."""
    server = _EchoServer(count, time.time)
    if runtime.startswith("asyncio"):
        import asyncio

        from felix_runtime_asyncio.runtime import UdpRuntime

        async def main() -> None:
            rt = UdpRuntime(server)  # type: ignore[arg-type]
            _host, port = await rt.start("127.0.0.1", 0)
            print(port, flush=True)
            while not server.finished:
                await asyncio.sleep(0.05)
            rt.close()

        factory = None
        if runtime == "asyncio-uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    else:
        import anyio

        from felix_runtime_anyio.runtime import AnyioUdpRuntime

        async def amain() -> None:
            rt = AnyioUdpRuntime(server)  # type: ignore[arg-type]
            _host, port = rt.bind("127.0.0.1", 0)
            print(port, flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.serve)
                while not server.finished:
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            rt.close()

        backend = "trio" if runtime == "anyio-trio" else "asyncio"
        options = {"use_uvloop": True} if runtime == "anyio-uvloop" else None
        anyio.run(amain, backend=backend, backend_options=options)
    print(server.cpu, flush=True)


def _measure(runtime: str, count: int) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "_serve", runtime, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    payload = b"p" * 64
    rtts: list[float] = []
    try:
        for i in range(WARMUP + count):
            start = time.perf_counter()
            sock.sendto(payload, ("127.0.0.1", port))
            sock.recvfrom(2048)
            if i >= WARMUP:
                rtts.append(time.perf_counter() - start)
        cpu = float(child.stdout.readline())
    finally:
        sock.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it failed to serve: do not leave it running
            child.kill()
            child.wait()
    rtts.sort()
    return {
        "adapter_cpu_us_per_round_trip": cpu * 1e6 / count,
        "rtt_p50_us": rtts[len(rtts) // 2] * 1e6,
        "rtt_p99_us": rtts[int(len(rtts) * 0.99)] * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        _serve(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default=",".join(RUNTIMES), help="comma-separated")
    parser.add_argument("--count", type=int, default=5000, help="timed round trips")
    parser.add_argument("--rounds", type=int, default=1, help="each runtime this many times")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    runtimes = [r for r in args.runtime.split(",") if r]
    rows: dict[str, list[dict[str, float]]] = {r: [] for r in runtimes}
    for _ in range(args.rounds):
        for runtime in runtimes:
            rows[runtime].append(_measure(runtime, args.count))
    results = {
        runtime: {k: statistics.median(r[k] for r in got) for k in got[0]}
        for runtime, got in rows.items()
    }
    results["load_average"] = {"1min": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for runtime in runtimes:
            figures = results[runtime]
            print(
                f"{runtime:15} adapter CPU {figures['adapter_cpu_us_per_round_trip']:7.1f} us"
                f" per round trip, round trip p50 {figures['rtt_p50_us']:7.1f} us"
                f" p99 {figures['rtt_p99_us']:8.1f} us"
            )
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
