"""In-memory benchmark of felix_proto's own request/reply cost: no QUIC, no broker.

A :class:`~felix_proto.client.ClientConnection` and a
:class:`~felix_proto.server.ServerConnection` are joined by hand (each side's
``data_to_send`` fed whole to the other). A round: the client issues C cache ``get`` (or
``put``) requests over 4 request streams; the server machine decodes them, and each is
answered with a ready-made ``CacheValue`` (``CachePutResult``); the client machine turns
the replies into events. The figures are the CPU microseconds per request of the three
steps (client issue, server, client receive): what the sans-IO machines cost, without the
QUIC stack and the broker around them (see ``cache_path.py`` for those).

Usage: ``python benchmarks/proto_request.py [--json] [--op get,put] [--concurrency 64]
[--rounds 300] [--profile issue|server|receive]``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto.client import ClientConnection
from felix_proto.server import ServerConnection

PATH = ("default", "default", "bench")
VALUE = b"v" * 256
STREAMS = 4


def _pair() -> tuple[ClientConnection, ServerConnection]:
    client = ClientConnection(client_name="bench", default_timeout=30.0)
    server = ServerConnection(server_id="bench", region="local")
    client.connect(now=0.0)
    for sid, data, end in client.data_to_send():
        server.stream_data_received(sid, data, end)
    while server.next_event() is not None:
        pass
    server.accept()
    for sid, data, end in server.data_to_send():
        client.stream_data_received(sid, data, end)
    while client.next_event() is not None:
        pass
    return client, server


def run(op: str, concurrency: int, rounds: int, profile: str | None) -> dict[str, float]:
    """Per-request CPU microseconds of each step."""
    client, server = _pair()
    streams = [client.open_request_stream() for _ in range(STREAMS)]
    spent = {"issue": 0.0, "server": 0.0, "receive": 0.0}
    profiler = cProfile.Profile() if profile else None
    for r in range(rounds + 20):
        if r == 20:
            spent = dict.fromkeys(spent, 0.0)
        measured = profiler is not None and r >= 20
        t0 = time.process_time()
        if measured and profile == "issue":
            profiler.enable()  # type: ignore[union-attr]
        for i in range(concurrency):
            if op == "get":
                client.cache_get(*PATH, "k", now=1.0, stream_id=streams[i % STREAMS])
            else:
                client.cache_put(*PATH, "k", VALUE, now=1.0, stream_id=streams[i % STREAMS])
        writes = client.data_to_send()
        if measured:
            profiler.disable()  # type: ignore[union-attr]
        t1 = time.process_time()
        if measured and profile == "server":
            profiler.enable()  # type: ignore[union-attr]
        for sid, data, end in writes:
            server.stream_data_received(sid, data, end)
        while (event := server.next_event()) is not None:
            assert isinstance(event, ev.RequestReceived)
            rid = event.message.request_id  # type: ignore[attr-defined]
            if op == "get":
                server.send_reply(m.CacheValue(request_id=rid, found=True, value=VALUE, version=1))
            else:
                server.send_reply(m.CachePutResult(request_id=rid, stored=True, version=1))
        replies = server.data_to_send()
        if measured:
            profiler.disable()  # type: ignore[union-attr]
        t2 = time.process_time()
        if measured and profile == "receive":
            profiler.enable()  # type: ignore[union-attr]
        for sid, data, end in replies:
            client.stream_data_received(sid, data, end)
        count = 0
        while client.next_event() is not None:
            count += 1
        if measured:
            profiler.disable()  # type: ignore[union-attr]
        t3 = time.process_time()
        assert count == concurrency, count
        spent["issue"] += t1 - t0
        spent["server"] += t2 - t1
        spent["receive"] += t3 - t2
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    n = concurrency * rounds
    return {f"{op}_c{concurrency}_{step}_us": s * 1e6 / n for step, s in spent.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--op", default="get,put", help="get, put or both (comma-separated)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests per round")
    parser.add_argument("--rounds", type=int, default=300, help="rounds measured")
    parser.add_argument("--profile", choices=("issue", "server", "receive"), help="cProfile")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    for op in args.op.split(","):
        results |= run(op, args.concurrency, args.rounds, args.profile)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:40} {value:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
