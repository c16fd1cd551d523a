"""How long do many clients take to connect at once, for a receive queue size?

The broker's socket queues every client's datagrams in one kernel buffer,
``transport.receive_buffer`` (256 KiB by default, docs/broker.md "The receive queue"). A
short queue keeps one flooding client from delaying the others; its price is paid by a
burst of connections: the kernel drops some of their first datagrams, and QUIC sends them
again after its probe timeout. This measures that price: a fresh ``felix broker`` (its
defaults, a temporary data directory, a free loopback port) for each ``--receive-buffer``,
then ``--clients`` clients opened at once from one process (each connect is the QUIC
handshake and Felix's ``Hello`` / ``Welcome``), held open until every one connected or
failed::

    python benchmarks/connect_storm.py --clients 300 --receive-buffer 262144,4194304
        [--runs 2] [--json]

Per run: how many connected and failed, the time until the last one did, and the connect
times' p50 / p90 / max. The client process's own CPU is most of each figure (one process
opens every connection), so compare runs of one invocation, not machines. A run fails
(exit 1) when any client did not connect. The suite runs a short form
(``tests/bench/test_benchmark_scripts.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from keeps_up import FELIX, _free_port, _wait_for, stop

from felix_client import Client

CONNECT_TIMEOUT = 30.0
"""Seconds one client may take to connect (its ``Client(timeout=...)``)."""


async def _storm(url: str, ca: str, clients: int) -> dict[str, Any]:
    """Open ``clients`` clients at once; their connect times and failures."""
    times: list[float] = []
    failures: list[str] = []
    release = asyncio.Event()

    async def one() -> None:
        start = time.perf_counter()
        try:
            async with Client(url, ca_file=ca, timeout=CONNECT_TIMEOUT):
                times.append(time.perf_counter() - start)
                await release.wait()
        except Exception as exc:  # a failed connect is a figure, not a crash
            failures.append(f"{type(exc).__name__}: {exc}")

    begin = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    while len(times) + len(failures) < clients and time.perf_counter() - begin < 2 * 60:
        await asyncio.sleep(0.01)
    total = time.perf_counter() - begin
    release.set()
    await asyncio.gather(*tasks)
    times.sort()

    def at(q: float) -> float:
        return round(times[min(len(times) - 1, int(len(times) * q))] * 1e3, 1) if times else 0.0

    return {
        "clients": clients,
        "connected": len(times),
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "all_done_s": round(total, 3),
        "connect_p50_ms": at(0.5),
        "connect_p90_ms": at(0.9),
        "connect_max_ms": round(times[-1] * 1e3, 1) if times else 0.0,
    }


def one_run(clients: int, receive_buffer: int) -> dict[str, Any]:
    """A fresh broker with ``transport.receive_buffer`` set, and one storm against it."""
    with tempfile.TemporaryDirectory(prefix="felix-connect-storm-") as tmp:
        work = Path(tmp)
        port = _free_port()
        log = work / "broker.log"
        with log.open("w") as log_file:
            broker = subprocess.Popen(
                [
                    *FELIX,
                    "broker",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--metrics",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(work / "data"),
                    "--set",
                    f"transport.receive_buffer={receive_buffer}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            try:
                _wait_for(log, "felix broker listening", time.monotonic() + 30)
                url, ca = f"quic://127.0.0.1:{port}", str(work / "data" / "cert.pem")
                result = asyncio.run(_storm(url, ca, clients))
            finally:
                stop(broker, 30)
    return {"receive_buffer": receive_buffer} | result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument(
        "--receive-buffer",
        default="262144,4194304",
        help="comma-separated transport.receive_buffer values (bytes), one broker each",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each size, alternated")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    sizes = [int(v) for v in args.receive_buffer.split(",")]
    runs = [one_run(args.clients, size) for _ in range(args.runs) for size in sizes]
    if args.json:
        print(json.dumps({"runs": runs}, indent=2))
    else:
        for r in runs:
            print(
                f"receive_buffer {r['receive_buffer']:>9,}: {r['connected']}/{r['clients']} "
                f"connected, {r['failed']} failed, all done in {r['all_done_s']:.2f} s; "
                f"connect p50 {r['connect_p50_ms']:,.0f} ms, p90 {r['connect_p90_ms']:,.0f} "
                f"ms, max {r['connect_max_ms']:,.0f} ms"
            )
            if r["first_failure"]:
                print(f"  first failure: {r['first_failure']}")
    return 1 if any(r["failed"] or r["connected"] < r["clients"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
