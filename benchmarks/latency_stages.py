"""Where a publish -> deliver goes: per-stage times of one record at a time, three processes.

The scenario of ``felix bench pubsub-latency --fanout 1``: a broker in its own process (the
``felix broker`` command, ``--runtime``), one publisher process that publishes one record at
a time and waits for its ack, one subscriber process reading the stream. Every process
notes ``time.monotonic_ns`` (one clock for the machine) at the points where a datagram
crosses a socket, by wrapping the socket calls of the broker's adapters
(``felix_runtime.udp.read_batch`` / ``send_all`` as the runtimes import them) and of the
client (``receive_many`` / ``send_nowait`` of its UDP socket). For each timed record:

==========  ====================================================================
stage       from -> to
==========  ====================================================================
pub_client  ``client.publish`` called -> its datagram written by the publisher
to_broker   written -> the broker's read of it returns (kernel + broker wake-up)
broker      read -> the subscriber's datagram written (the broker's pass)
to_sub      written -> the subscriber's read returns (kernel + subscriber wake-up)
sub_client  read -> the record reaches ``async for`` in the subscriber
total       ``client.publish`` called -> the record reaches ``async for``
==========  ====================================================================

Each stage is matched as "the first such event at or after the previous stage" (one record
is in flight at a time; a stray ACK-only datagram read at the right moment can be taken for
the record's, so read medians). Raw aioquic ping-pong (``felix bench``'s job, 64 B) runs
first in the same run as the anchor; ``--rounds`` repeats both.

Also per record: the CPU time of each process over the timed part (``process_time``; the
broker's from ``/proc``) and the datagrams each one sent or read, and, with
``--broker-calls``, how long the broker's ``FelixServer`` calls took. ``--rows FILE`` keeps
every record's stages; ``--profile PREFIX`` writes CPU-time profiles of the two clients.

A/B: the script imports the tree it lives in (broker and clients), so run the copy in each
checkout, alternating (``python A/benchmarks/latency_stages.py; python
B/benchmarks/latency_stages.py; ...``).

Usage: ``python benchmarks/latency_stages.py [--runtime asyncio|anyio-asyncio|anyio-trio|
asyncio-uvloop|anyio-uvloop]
[--loop asyncio|trio] [--seconds 2] [--rounds 1] [--stream-set KEY=VALUE] [--no-raw]
[--json] [--rows FILE] [--broker-calls] [--profile PREFIX]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

RUNTIMES = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio-asyncio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-trio": ["--runtime", "anyio", "--backend", "trio"],
    "asyncio-uvloop": ["--runtime", "asyncio", "--loop", "uvloop"],
    "anyio-uvloop": ["--runtime", "anyio", "--backend", "asyncio", "--loop", "uvloop"],
}
WARMUP = 50
STAGES = ("pub_client", "to_broker", "broker", "to_sub", "sub_client", "total")
SHOWN = (*STAGES[:4], "to_sub_idle", *STAGES[4:])


# ----------------------------------------------------------------- the broker process


def _broker_main(trace_file: str, argv: list[str]) -> int:
    """Run ``felix broker argv`` with its socket calls traced; write the trace at exit."""
    import felix_runtime_anyio.runtime as anyio_rt
    import felix_runtime_asyncio.runtime as asyncio_rt
    from felix_runtime import udp

    clock = time.monotonic_ns
    reads: array[int] = array("q")  # (ns, port) pairs: a datagram from port read
    sends: array[int] = array("q")  # (ns, port) pairs: a datagram to port written
    real_read, real_send = udp.read_batch, udp.send_all

    def read_batch(sock: Any, feed: Any, now: float, between: Any = None) -> int:
        def traced(data: bytes, addr: Any, t: float) -> None:
            reads.extend((clock(), addr[1]))
            feed(data, addr, t)

        return real_read(sock, traced, now, between)

    def send_all(sock: Any, datagrams: Any) -> None:
        datagrams = list(datagrams)
        t = clock()
        for _data, addr in datagrams:
            sends.extend((t, addr[1]))
        real_send(sock, datagrams)

    if os.environ.get("LATENCY_STAGES_BROKER_CALLS"):
        from aioquic.quic.connection import QuicConnection

        from felix_server.router import Router
        from felix_server.server import FelixServer
        from felix_server.session import Session

        calls: dict[str, array[int]] = {}

        def timed(name: str, real: Any) -> Any:
            spent = calls.setdefault(name, array("q"))

            def call(*a: Any, **k: Any) -> Any:
                t = clock()
                try:
                    return real(*a, **k)
                finally:
                    spent.append(clock() - t)

            return call

        for name in ("datagram_received", "datagrams_to_send", "get_timer", "handle_timer"):
            setattr(FelixServer, name, timed(name, getattr(FelixServer, name)))
        # and inside them: the sessions, the router and aioquic (per call, not per pass)
        inner: list[tuple[type, str]] = [
            (Session, n) for n in ("datagram_received", "transmit", "get_timer")
        ]
        inner += [(Router, "get_timer"), (Router, "ready"), (Router, "handle_timer")]
        inner += [(QuicConnection, n) for n in ("receive_datagram", "datagrams_to_send")]
        inner += [(QuicConnection, "get_timer")]
        for owner, name in inner:
            label = f"{owner.__name__}.{name}"
            setattr(owner, name, timed(label, getattr(owner, name)))

        import atexit

        def show() -> None:
            for name, spent in calls.items():
                v = sorted(spent)
                if v:
                    print(
                        f"broker {name}: n {len(v)} p50 {v[len(v) // 2] / 1000:.1f} us "
                        f"p90 {v[int(len(v) * 0.9)] / 1000:.1f} us",
                        file=sys.stderr,
                    )

        atexit.register(show)

    for module in (asyncio_rt, anyio_rt):
        module.read_batch = read_batch  # type: ignore[attr-defined]
        module.send_all = send_all  # type: ignore[attr-defined]

    def dump() -> None:
        Path(trace_file).write_text(json.dumps({"reads": list(reads), "sends": list(sends)}))

    from felix_client.cli import main

    try:
        return main(["broker", *argv])
    finally:
        dump()


# ------------------------------------------------------------ the client processes


def _trace_client_socket() -> tuple[array[int], array[int], array[int]]:
    """Wrap the client's socket calls; returns (reads ns, sends ns, waits ns) filled as they
    happen: when a read returned, when a send began, when a wait for a read began."""
    from felix_client import _transport

    clock = time.monotonic_ns
    reads: array[int] = array("q")
    sends: array[int] = array("q")
    waits: array[int] = array("q")

    def traced(real: Any) -> Any:
        async def receive_many(self: Any, limit: int, deadline: float = math.inf) -> list[bytes]:
            waits.append(clock())
            out: list[bytes] = await real(self, limit, deadline)
            if out:
                reads.append(clock())
            return out

        return receive_many

    # the generic socket (trio) and the asyncio one, which has its own receive_many
    for kind in (_transport._UdpSocket, _transport._AsyncioUdpSocket):
        kind.receive_many = traced(kind.receive_many)  # type: ignore[method-assign]
    real_send = _transport._UdpSocket.send_nowait

    def send_nowait(self: Any, datagrams: list[tuple[bytes, object]]) -> int:
        if datagrams:
            sends.append(clock())
        return real_send(self, datagrams)

    _transport._UdpSocket.send_nowait = send_nowait  # type: ignore[method-assign]
    return reads, sends, waits


def _client(url: str, ca: str) -> Any:
    from felix_client import Client

    return Client(url, ca_file=ca, timeout=30.0, client_name="latency-stages")


def _local_port(client: Any) -> int:
    for conn in client._conns:  # one connection: the client's first
        if conn is not None:
            return int(conn.transport._sock.sock.getsockname()[1])
    raise RuntimeError("no connection")


def _run(main: Any, loop: str, name: str) -> None:
    """``anyio.run(main)``, under a CPU-time profiler when ``LATENCY_STAGES_PROFILE`` names a
    file prefix (the parent sets it for ``--profile``)."""
    import anyio

    profile = os.environ.get("LATENCY_STAGES_PROFILE")
    if not profile:
        anyio.run(main, backend=loop)
        return
    import cProfile

    with cProfile.Profile(time.process_time) as prof:
        anyio.run(main, backend=loop)
    prof.dump_stats(f"{profile}.{name}")


def _subscriber(
    url: str, ca: str, stream: str, settings: dict[str, Any], loop: str, q: Any
) -> None:
    reads, sends, waits = _trace_client_socket()

    async def main() -> None:
        async with _client(url, ca) as client:
            await client.admin.create("stream", stream, settings)
            async with client.subscribe(stream, start="earliest") as sub:
                q.put(_local_port(client))
                cpu = time.process_time()
                offsets, times = array("q"), array("q")
                clock = time.monotonic_ns
                async for event in sub:
                    offsets.append(event.offset)
                    times.append(clock())
                    if event.payload == b"stop":
                        break
                cpu = time.process_time() - cpu
                q.put(
                    {
                        "offsets": list(offsets),
                        "times": list(times),
                        "reads": list(reads),
                        "waits": list(waits),
                        "cpu_s": cpu,
                        "sent": len(sends),
                    }
                )

    _run(main, loop, "subscriber")


def _publisher(url: str, ca: str, stream: str, seconds: float, loop: str, q: Any) -> None:
    _reads, sends, _waits = _trace_client_socket()

    async def main() -> None:
        async with _client(url, ca) as client:
            payload = b"x" * 100
            for _ in range(WARMUP):
                await client.publish(stream, payload)
            clock = time.monotonic_ns
            starts, ends, offsets = array("q"), array("q"), array("q")
            q.put("timed")
            cpu = time.process_time()
            sent_before = len(sends)
            deadline = clock() + int(seconds * 1e9)
            while (t0 := clock()) < deadline:
                result = await client.publish(stream, payload)
                ends.append(clock())
                starts.append(t0)
                assert result is not None
                offsets.append(result.first_offset)
            cpu = time.process_time() - cpu
            sent = len(sends) - sent_before
            await client.publish(stream, b"stop")
            q.put(
                {
                    "port": _local_port(client),
                    "offsets": list(offsets),
                    "starts": list(starts),
                    "ends": list(ends),
                    "sends": list(sends),
                    "cpu_s": cpu,
                    "sent": sent,
                }
            )

    _run(main, loop, "publisher")


# ------------------------------------------------------------------------ analysis


def _after(times: list[int], t: int) -> int | None:
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def analyse(pub: dict[str, Any], sub: dict[str, Any], broker: dict[str, Any]) -> dict[str, Any]:
    """Per-stage medians / p99s in microseconds."""
    reads_from_pub = [
        t
        for t, p in zip(broker["reads"][::2], broker["reads"][1::2], strict=True)
        if p == pub["port"]
    ]
    sends_to_sub = [
        t
        for t, p in zip(broker["sends"][::2], broker["sends"][1::2], strict=True)
        if p == sub["port"]
    ]
    arrived = dict(zip(sub["offsets"], sub["times"], strict=True))
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    idle_to_sub: list[float] = []  # to_sub when the subscriber was already waiting
    rows: list[list[float]] = []  # per record: each stage, in order
    for offset, t0 in zip(pub["offsets"], pub["starts"], strict=True):
        t5 = arrived.get(offset)
        if t5 is None:
            continue
        t1 = _after(pub["sends"], t0)
        t2 = _after(reads_from_pub, t1) if t1 is not None else None
        t3 = _after(sends_to_sub, t2) if t2 is not None else None
        t4 = _after(sub["reads"], t3) if t3 is not None else None
        if t1 is None or t2 is None or t3 is None or t4 is None or t4 > t5:
            continue
        w = bisect.bisect_right(sub["waits"], t3) - 1
        r = bisect.bisect_right(sub["reads"], t3) - 1
        if w >= 0 and (r < 0 or sub["waits"][w] > sub["reads"][r]):
            idle_to_sub.append((t4 - t3) / 1000)
        ends = (t1, t2, t3, t4, t5, t5)
        row = [(b - a) / 1000 for a, b in zip((t0, t1, t2, t3, t4, t0), ends, strict=True)]
        rows.append(row)
        for name, value in zip(STAGES, row, strict=True):
            samples[name].append(value)
    out: dict[str, Any] = {"count": len(samples["total"]), "sub_idle": len(idle_to_sub)}
    samples["to_sub_idle"] = idle_to_sub
    out["rows"] = rows
    for name, values in samples.items():
        if values:
            values.sort()
            out[name] = {
                "p50": round(statistics.median(values), 1),
                "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
            }
    return out


# ------------------------------------------------------------------------- a round


def _raw_ping_pong(seconds: float) -> dict[str, float]:
    """Raw aioquic 64 B ping-pong: ``felix bench raw-quic``'s figure, run now."""
    cmd = [sys.executable, "-m", "felix_client.cli", "bench", "raw-quic", "--engine", "aioquic"]
    cmd += ["--seconds", str(seconds), "--json", "--quiet"]
    doc = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    for figure in doc["figures"]:
        if figure["id"] == "raw-quic/aioquic/ping-pong/size=64":
            return {"p50": figure["metrics"]["p50_us"], "p99": figure["metrics"]["p99_us"]}
    raise RuntimeError("no raw ping-pong figure")


def _start_broker(args: argparse.Namespace, data_dir: Path, trace: Path) -> tuple[Any, str]:
    """The traced broker process and its URL."""
    cmd = [sys.executable, __file__, "_broker", str(trace), *RUNTIMES[args.runtime]]
    cmd += ["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data-dir", str(data_dir)]
    cmd += ["--log-format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
    if args.broker_calls:
        env["LATENCY_STAGES_BROKER_CALLS"] = "1"
    broker = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert broker.stderr is not None
    for raw in broker.stderr:
        line = json.loads(raw)
        if line.get("msg") == "felix broker listening":
            return broker, f"quic://{line['quic']}"
    raise RuntimeError("the broker did not start")


def _clients(
    args: argparse.Namespace, url: str, ca: str, stream: str, settings: dict[str, str], pid: int
) -> tuple[dict[str, Any], dict[str, Any], int, float]:
    """Run the subscriber and publisher processes; their results, the subscriber's port and
    the broker's CPU seconds over the timed part."""
    from felix_client.bench.servers import process_cpu_seconds

    ctx = multiprocessing.get_context("spawn")
    q_sub, q_pub = ctx.Queue(), ctx.Queue()
    sub_p = ctx.Process(target=_subscriber, args=(url, ca, stream, settings, args.loop, q_sub))
    sub_p.start()
    try:
        sub_port = q_sub.get(timeout=30)
        pub_p = ctx.Process(
            target=_publisher, args=(url, ca, stream, args.seconds, args.loop, q_pub)
        )
        pub_p.start()
        try:
            q_pub.get(timeout=30)  # the timed part starts
            broker_cpu = process_cpu_seconds(pid)
            pub = q_pub.get(timeout=60 + args.seconds)
            broker_cpu = process_cpu_seconds(pid) - broker_cpu
            sub = q_sub.get(timeout=60)
            sub["port"] = sub_port
            pub_p.join()
        finally:
            pub_p.kill()
    finally:
        sub_p.join(timeout=30)
        sub_p.kill()
    return pub, sub, sub_port, broker_cpu


def one_round(args: argparse.Namespace, data_dir: Path, n: int) -> dict[str, Any]:
    """Broker, subscriber and publisher processes for one figure; its stages."""
    trace = data_dir / f"broker-trace-{n}.json"
    broker, url = _start_broker(args, data_dir / f"broker-{n}", trace)
    ca = str(data_dir / f"broker-{n}" / "cert.pem")
    settings = dict(kv.split("=", 1) for kv in args.stream_set)
    stream = f"lat{n}"
    if args.profile:
        os.environ["LATENCY_STAGES_PROFILE"] = f"{args.profile}.{n}"
    try:
        pub, sub, sub_port, broker_cpu = _clients(args, url, ca, stream, settings, broker.pid)
    except BaseException:
        broker.kill()  # a broker left behind would run on, and skew every later figure
        broker.wait()
        raise
    finally:
        os.environ.pop("LATENCY_STAGES_PROFILE", None)
    broker.send_signal(signal.SIGTERM)
    assert broker.stderr is not None
    for raw in broker.stderr:
        if raw.startswith(b"broker "):  # --broker-calls
            print(" ", raw.decode().rstrip(), file=sys.stderr if args.json else sys.stdout)
    broker.wait(timeout=30)
    traced = json.loads(trace.read_text())
    result = analyse(pub, sub, traced)
    rtt = sorted((e - s) / 1000 for s, e in zip(pub["starts"], pub["ends"], strict=True))
    result["publish_rtt_p50"] = round(statistics.median(rtt), 1)
    count = len(pub["offsets"]) or 1
    to_sub = sum(1 for port in traced["sends"][1::2] if port == sub_port)
    result["cpu_us_per_record"] = {
        "publisher": round(pub["cpu_s"] / count * 1e6, 1),
        "broker": round(broker_cpu / count * 1e6, 1),
        "subscriber": round(sub["cpu_s"] / count * 1e6, 1),
    }
    result["datagrams_per_record"] = {
        "publisher_sent": round(pub["sent"] / count, 2),
        "broker_read": round(len(traced["reads"]) / 2 / count, 2),
        "broker_sent_to_sub": round(to_sub / count, 2),
        "subscriber_sent": round(sub["sent"] / count, 2),
    }
    return result


def _print_round(n: int, args: argparse.Namespace, raw: dict[str, float] | None, st: Any) -> None:
    print(f"round {n + 1} ({args.runtime}, loop {args.loop}, load {os.getloadavg()[0]:.1f})")
    if raw:
        print(f"  raw aioquic ping-pong 64 B p50 / p99: {raw['p50']:,.0f} / {raw['p99']:,.0f} us")
    print(f"  records: {st['count']}, publish round trip p50 {st['publish_rtt_p50']:,.0f} us")
    cpu = ", ".join(f"{k} {v:,.0f}" for k, v in st["cpu_us_per_record"].items())
    print(f"  CPU us per record: {cpu}")
    datagrams = ", ".join(f"{k} {v:.2f}" for k, v in st["datagrams_per_record"].items())
    print(f"  datagrams per record: {datagrams}")
    print(f"  the subscriber was waiting when {st['sub_idle']} of them were sent to it")
    for name in SHOWN:
        if name in st:
            print(f"  {name:<11} p50 {st[name]['p50']:>9,.1f}  p99 {st[name]['p99']:>9,.1f} us")
    if raw:
        total = st["total"]
        p50, p99 = total["p50"] / raw["p50"], total["p99"] / raw["p99"]
        print(f"  total / raw ping-pong: p50 x{p50:.2f}, p99 x{p99:.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_broker":
        sys.exit(_broker_main(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="asyncio")
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stream-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw ping-pong anchor")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rows", metavar="FILE", help="write every record's stages (JSON)")
    parser.add_argument(
        "--broker-calls",
        action="store_true",
        help="time the broker's FelixServer calls (and its sessions', router's and aioquic's)",
    )
    parser.add_argument(
        "--profile", metavar="PREFIX", help="CPU profiles of the clients: PREFIX.N.publisher ..."
    )
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    rows: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            raw = None if args.no_raw else _raw_ping_pong(args.seconds)
            stages = one_round(args, Path(tmp), n)
            if not args.json:
                _print_round(n, args, raw, stages)
            rows.append(stages.pop("rows"))
            rounds.append({"raw_ping_pong": raw, "stages": stages})
    if args.rows:
        Path(args.rows).write_text(json.dumps(rows))
    if args.json:
        print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
