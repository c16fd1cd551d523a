"""In-memory benchmark of the cache request/reply path: no sockets, fake clock.

One :class:`~felix_server.server.FelixServer` and one client (aioquic ``QuicConnection``
plus the sans-IO :class:`~felix_proto.client.ClientConnection`), datagrams moved by hand.
A round is what one pass of each side does at concurrency C: the client queues C cache
``get`` (or ``put``) requests over 4 request streams (the client's default) and
transmits; the broker takes the datagrams, serves the requests and transmits the
replies; the client takes those and its machine turns them into reply events. The
figures are the broker's and the client's CPU per request (QUIC included; syscalls and
the client's asyncio plumbing not; the request calls themselves, ``cache_get`` and
``cache_put``, are counted apart as ``client_issue_us``), so a change to the broker's
request path can be measured without most of the noise of a loaded machine (still
compare A and B in alternation). The broker counts with the observer a broker process
uses (Prometheus).

The broker transmits between two datagrams of a pass once
:attr:`~felix_server.server.FelixServer.transmit_due` (as the adapters do), after
``--transmit-after`` requests (:data:`~felix_server.server.TRANSMIT_AFTER_REQUESTS` by
default; 0 transmits at the end of the pass only): what the mid-pass transmit costs.

Usage: ``python benchmarks/cache_path.py [--json] [--op get,put] [--concurrency 64]
[--rounds 300] [--quic-engine aioquic] [--transmit-after N] [--profile server|client]``;
``--profile`` prints the cProfile top 30 of that side next to the figures and writes
``cache_path-SIDE.prof``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import events as ev
from felix_proto import messages as msgs
from felix_proto.client import ClientConnection
from felix_runtime.prometheus import PrometheusObserver
from felix_runtime.quic_engines import server_quic
from felix_runtime.tls import ensure_self_signed
from felix_server import server as server_module
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

SERVER_ADDR = ("127.0.0.1", 7447)
CLIENT_ADDR = ("127.0.0.1", 10000)
PATH = ("default", "default", "bench")
VALUE = b"v" * 256
STREAMS = 4
"""Request streams the requests of a round are spread over (the client's default)."""


class Pair:
    """A broker and one connected client, moved by hand."""

    def __init__(self, tmp: Path, engine: str = "aioquic") -> None:
        files = ensure_self_signed(tmp)
        config = ServerConfig(data_dir=str(tmp), quic_engine=engine)
        quic_config, factory = server_quic(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.server = FelixServer(
            config,
            quic_config,
            now=self.now,
            observer=PrometheusObserver(),
            connection_factory=factory,
        )
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], server_name="localhost"
        )
        client_config.load_verify_locations(str(files.cert_path))
        self.quic = QuicConnection(configuration=client_config)
        self.quic.connect(SERVER_ADDR, now=self.now)
        self.machine = ClientConnection(client_name="bench", default_timeout=30.0)
        self.server_s = 0.0
        self.client_s = 0.0
        self.issue_s = 0.0
        """Client CPU spent in the request calls (``cache_get``/``cache_put``) themselves."""
        self.replies: list[ev.Event] = []
        self.handshake_done = False
        connected = False
        for _ in range(50):
            self.step()
            if not connected and self.handshake_done:
                self.machine.connect(now=self.now)
                connected = True
            if any(isinstance(e, ev.Welcomed) for e in self.replies):
                break
        else:
            raise RuntimeError("no Welcome")
        self.replies.clear()

    def step(self) -> None:
        """One pass of each side: client transmits, broker serves and transmits, client
        takes the replies."""
        self.now += 0.001  # qh3 paces its first flight: time must move
        now, quic, server, machine = self.now, self.quic, self.server, self.machine
        t0 = time.process_time()
        timer = quic.get_timer()
        if timer is not None and timer <= now:
            quic.handle_timer(now)
        for sid, data, end in machine.data_to_send():
            if sid % 4 == 0:  # aioquic opens client streams in id order (see _connection)
                next_id = quic.get_next_available_stream_id()
                while next_id < sid:
                    quic.send_stream_data(next_id, b"", False)
                    next_id += 4
            quic.send_stream_data(sid, data, end)
        datagrams = [d for d, _ in quic.datagrams_to_send(now=now)]
        t1 = time.process_time()
        replies: list[bytes] = []
        for data in datagrams:
            server.datagram_received(data, CLIENT_ADDR, now)
            if server.transmit_due:  # as the adapters do between two datagrams
                replies += [d for d, _ in server.datagrams_to_send(now)]
        timer = server.get_timer()
        if timer is not None and timer <= now:  # a pass cut short by fairness goes on
            server.handle_timer(now)
        replies += [d for d, _ in server.datagrams_to_send(now)]
        t2 = time.process_time()
        for data in replies:
            quic.receive_datagram(data, SERVER_ADDR, now)
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                machine.stream_data_received(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.HandshakeCompleted):
                self.handshake_done = True
        while (reply := machine.next_event()) is not None:
            self.replies.append(reply)
        t3 = time.process_time()
        self.client_s += (t1 - t0) + (t3 - t2)
        self.server_s += t2 - t1

    def request(self, call: Callable[[ClientConnection, float], int]) -> ev.Event:
        """One request, answered."""
        call(self.machine, self.now)
        for _ in range(20):
            self.step()
            if self.replies:
                return self.replies.pop()
        raise RuntimeError("no reply")


def _rounds(pair: Pair, op: str, concurrency: int, rounds: int) -> None:
    machine = pair.machine
    streams = [machine.open_request_stream() for _ in range(STREAMS)]
    for _ in range(rounds):
        now = pair.now
        t0 = time.process_time()
        for i in range(concurrency):
            sid = streams[i % STREAMS]
            if op == "get":
                machine.cache_get(*PATH, "k", now=now, stream_id=sid)
            else:
                machine.cache_put(*PATH, "k", VALUE, now=now, stream_id=sid)
        pair.issue_s += time.process_time() - t0
        for _ in range(20):
            pair.step()
            if len(pair.replies) >= concurrency:
                break
        assert len(pair.replies) == concurrency, (len(pair.replies), pair.replies[:1])
        assert all(not isinstance(r, ev.RequestFailed) for r in pair.replies), pair.replies[:1]
        pair.replies.clear()


def run(
    op: str, concurrency: int, rounds: int, profile: str | None, engine: str = "aioquic"
) -> dict[str, float]:
    """Per-request CPU microseconds of the broker and of the client."""
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(Path(tmp), engine)
        tenant, namespace, name = PATH
        pair.request(
            lambda m, now: m.admin(
                msgs.AdminCreate,
                now=now,
                kind="cache",
                tenant=tenant,
                namespace=namespace,
                name=name,
                settings={},
            )
        )
        pair.request(lambda m, now: m.cache_put(*PATH, "k", VALUE, now=now))
        _rounds(pair, op, concurrency, 20)  # warm-up: streams, caches
        pair.server_s = pair.client_s = pair.issue_s = 0.0
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            wrapped = pair.server if profile == "server" else pair.machine
            _profile_methods(wrapped, profiler)
        _rounds(pair, op, concurrency, rounds)
        if profiler is not None:
            profiler.dump_stats(f"cache_path-{profile}.prof")
            stats = pstats.Stats(profiler).sort_stats("tottime")
            stats.print_stats(30)
        count = concurrency * rounds
        return {
            f"{op}_c{concurrency}_server_us": pair.server_s * 1e6 / count,
            f"{op}_c{concurrency}_client_us": pair.client_s * 1e6 / count,
            f"{op}_c{concurrency}_client_issue_us": pair.issue_s * 1e6 / count,
        }


def _profile_methods(target: object, profiler: cProfile.Profile) -> None:
    """Profile the entry points of one side only."""
    names = (
        ("datagram_received", "datagrams_to_send")
        if isinstance(target, FelixServer)
        else ("stream_data_received", "data_to_send", "next_event", "cache_get", "cache_put")
    )
    for name in names:
        method = getattr(target, name)

        def wrapper(
            *args: object, _method: Callable[..., object] = method, **kwargs: object
        ) -> object:
            profiler.enable()
            try:
                return _method(*args, **kwargs)
            finally:
                profiler.disable()

        setattr(target, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--op", default="get,put", help="get, put or both (comma-separated)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests per round")
    parser.add_argument("--rounds", type=int, default=300, help="rounds measured")
    parser.add_argument("--quic-engine", default="aioquic", help="the broker's QUIC engine")
    parser.add_argument(
        "--transmit-after",
        type=int,
        default=server_module.TRANSMIT_AFTER_REQUESTS,
        help="requests after which the broker transmits inside a pass (0: at its end only)",
    )
    parser.add_argument("--profile", choices=("server", "client"), help="cProfile one side")
    args = parser.parse_args(argv)
    # transmit_due reads the module constant: set it for this process
    server_module.TRANSMIT_AFTER_REQUESTS = args.transmit_after or 1 << 62
    results: dict[str, float] = {}
    for op in args.op.split(","):
        results |= run(op, args.concurrency, args.rounds, args.profile, args.quic_engine)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:40} {value:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
