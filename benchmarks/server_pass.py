"""In-memory benchmarks of the sans-IO server's loop passes: no sockets, fake clock.

A :class:`~felix_server.server.FelixServer` accepts N connections (aioquic client
``QuicConnection`` + Felix ``Hello``, datagrams moved by hand); once they are idle, one
loop pass is what a runtime adapter does when nothing arrived: ``datagrams_to_send(now)``
then ``get_timer()``. The figure is the mean cost of that pass, with 1 and with 1,000 idle
connections: it should not grow with the connections that did nothing.

``--publish N``: the broker's work per record of ``felix bench pubsub-latency`` (fanout 1),
without the kernel, the clients' CPU or the load of the machine: one publisher and one
subscriber (aioquic + felix_proto clients in the same process), one record of 100 B at a
time on a default stream, the publisher waiting for its ``PublishAck``, the clock stepped
by :data:`STEP` between the events of one record as a real run spaces them. Every call the
adapter makes on the server (``datagram_received``, ``handle_timer``,
``datagrams_to_send``, ``get_timer``) is timed; the figures are the broker's microseconds
per record (mean, and the median of the records), the calls and datagrams per record, and,
with ``--profile FILE``, a cProfile of those calls only (``python -m pstats FILE``).
``path_us_p50`` is the broker's CPU on the record's path (thread time, median): from the
start of the read of the publish datagram to the subscriber's datagram handed to the
adapter's ``send`` (as the runtimes pass it), inside one pass; what the pass does after that
(the publisher's ack, ``get_timer``) is not in it.

Usage: ``python benchmarks/server_pass.py [--json] [--connections 1,1000] [--passes P]
[--publish N] [--profile FILE] [--prometheus]``. ``--prometheus`` attaches the broker's own
observer (:class:`felix_runtime.prometheus.PrometheusObserver`, as ``felix broker`` runs) instead
of the one that does nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.client import ClientConnection
from felix_proto.codec import encode
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

SERVER_ADDR = ("127.0.0.1", 7447)
STEP = 0.0002
"""Seconds the fake clock moves between two hops of a record (``--step``): about what a
hop (kernel and wake-up) takes in a real run, so QUIC's ACK delays fire as often."""
PAYLOAD = b"x" * 100

T = TypeVar("T")


def _idle_server(connections: int, tmp: Path) -> tuple[FelixServer, float]:
    files = ensure_self_signed(tmp)
    config = ServerConfig(data_dir=str(tmp))
    quic_config = make_quic_configuration(config)
    quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
    now = 1_000_000.0
    server = FelixServer(config, quic_config, now=now)
    client_config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], server_name="localhost", max_datagram_size=1452
    )
    client_config.load_verify_locations(str(files.cert_path))
    for i in range(connections):
        addr = ("127.0.0.1", 10000 + i)
        client = QuicConnection(configuration=client_config)
        client.connect(SERVER_ADDR, now=now)
        hello_sent = False
        for _ in range(50):
            now += 0.001
            for data, _ in client.datagrams_to_send(now=now):
                server.datagram_received(data, addr, now)
            for data, _ in server.datagrams_to_send(now):
                client.receive_datagram(data, SERVER_ADDR, now)
            while (event := client.next_event()) is not None:
                if isinstance(event, qe.HandshakeCompleted) and not hello_sent:
                    client.send_stream_data(0, encode(m.Hello(versions=[2], client_name="b")))
                    hello_sent = True
        assert hello_sent
    assert len(server.sessions) == connections
    return server, now


def _pass_cost(server: FelixServer, now: float, passes: int) -> float:
    """Mean seconds of one idle pass (``datagrams_to_send`` + ``get_timer``)."""
    for _ in range(100):
        server.datagrams_to_send(now)
        server.get_timer()
    start = time.perf_counter()
    for _ in range(passes):
        server.datagrams_to_send(now)
        server.get_timer()
    return (time.perf_counter() - start) / passes


class _Client:
    """An aioquic client connection with a felix_proto machine on it."""

    def __init__(self, cafile: str, port: int, now: float) -> None:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], server_name="localhost", max_datagram_size=1452
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.felix = ClientConnection(default_timeout=3600.0)
        self.events: list[fe.Event] = []
        self.sent = 0

    def pump(self, now: float) -> list[bytes]:
        """Fire a due timer, move QUIC events into Felix and Felix writes into QUIC; the
        datagrams to send."""
        quic, felix = self.quic, self.felix
        timer = quic.get_timer()
        if timer is not None and timer <= now:
            quic.handle_timer(now)
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                felix.connect(now=now)
            elif isinstance(event, qe.StreamDataReceived):
                felix.stream_data_received(event.stream_id, event.data, event.end_stream)
        while (fev := felix.next_event()) is not None:
            self.events.append(fev)
        for sid, data, end in felix.data_to_send():
            quic.send_stream_data(sid, data, end)
        out = [data for data, _ in quic.datagrams_to_send(now=now)]
        self.sent += len(out)
        return out


class _PubSub:
    """A broker, a publisher and a subscriber in memory; only the broker's calls timed."""

    def __init__(
        self, tmp: Path, step: float, profile: cProfile.Profile | None, prometheus: bool
    ) -> None:
        self.step = step
        files = ensure_self_signed(tmp)
        config = ServerConfig(data_dir=str(tmp))
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        observer = None
        if prometheus:  # the broker's own observer, as `felix broker` runs it
            from felix_runtime.prometheus import PrometheusObserver

            observer = PrometheusObserver()
        self.server = FelixServer(config, quic_config, now=self.now, observer=observer)
        if observer is not None:
            observer.attach(self.server)
        self.pub = _Client(str(files.cert_path), 10001, self.now)
        self.sub = _Client(str(files.cert_path), 10002, self.now)
        self.clients = {c.addr: c for c in (self.pub, self.sub)}
        self.profile = profile
        self.timed = False
        self.spent = 0.0
        self.calls = {"datagram_received": 0, "handle_timer": 0, "passes": 0}
        self.to_sub = 0
        self.path_start: float | None = None  # thread time the publish datagram's read began
        self.path: float | None = None  # that to the delivery handed to the socket

    def _call(self, call: Callable[..., T], *args: Any) -> T:
        if not self.timed:
            return call(*args)
        profile = self.profile
        start = time.thread_time()
        if profile is not None:
            profile.enable()
        try:
            return call(*args)
        finally:
            if profile is not None:
                profile.disable()
            self.spent += time.thread_time() - start

    def hop(self) -> None:
        """The clock moves a step; each side handles what reached it: the clients fire
        their timers and send, the broker reads them (or fires its timer) and transmits."""
        self.now += self.step
        now, server, calls = self.now, self.server, self.calls
        inputs = [(d, c.addr) for c in self.clients.values() for d in c.pump(now)]
        timer = server.get_timer()
        if not inputs and (timer is None or timer > now):
            return
        if not inputs:
            self._call(server.handle_timer, now)
            calls["handle_timer"] += 1
        for data, addr in inputs:
            if self.path_start is None and addr == self.pub.addr:
                self.path_start = time.thread_time()
            self._call(server.datagram_received, data, addr, now)
            calls["datagram_received"] += 1
        out: list[tuple[bytes, tuple[str, int]]] = []
        self._call(server.datagrams_to_send, now, partial(self._send, out))
        self._call(server.get_timer)
        calls["passes"] += 1
        for data, addr in out:
            if addr == self.sub.addr:
                self.to_sub += 1
            self.clients[addr].quic.receive_datagram(data, SERVER_ADDR, now)

    def _send(self, out: list[tuple[bytes, Any]], datagrams: list[tuple[bytes, Any]]) -> None:
        """The adapter's ``send``: the first datagram to the subscriber ends the path."""
        start = self.path_start
        if (
            self.path is None
            and start is not None
            and any(a == self.sub.addr for _, a in datagrams)
        ):
            self.path = time.thread_time() - start
        out.extend(datagrams)

    def until(self, done: Callable[[], bool]) -> None:
        for _ in range(10_000):
            if done():
                return
            self.hop()
        raise AssertionError("the record did not make it")

    def start(self) -> None:
        """Handshakes, the stream, the subscription."""
        pub, sub = self.pub, self.sub
        self.until(lambda: all(c.events for c in (pub, sub)))
        pub.felix.admin(
            m.AdminCreate,
            now=self.now,
            kind="stream",
            tenant="default",
            namespace="default",
            name="lat",
        )
        self.until(lambda: any(isinstance(e, fe.AdminReplied) for e in pub.events))
        sub.felix.subscribe("default", "default", "lat", now=self.now)
        self.until(lambda: any(isinstance(e, fe.SubscriptionStarted) for e in sub.events))

    def record(self) -> None:
        """Publish one record and step until it is delivered and acknowledged."""
        pub, sub = self.pub, self.sub
        pub.events.clear()
        sub.events.clear()
        self.path_start = self.path = None
        pub.felix.publish("default", "default", "lat", PAYLOAD, now=self.now)
        self.until(
            lambda: (
                any(isinstance(e, fe.PublishAcked) for e in pub.events)
                and any(isinstance(e, fe.EventsReceived) for e in sub.events)
            )
        )


def publish_figures(
    records: int, step: float, profile: cProfile.Profile | None, prometheus: bool = False
) -> dict[str, float]:
    """The broker's work per record, one record at a time (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        net = _PubSub(Path(tmp), step, profile, prometheus)
        net.start()
        for _ in range(200):  # warm up
            net.record()
        net.timed = True
        net.calls = dict.fromkeys(net.calls, 0)
        net.to_sub = 0
        subscriber_sent = net.sub.sent
        spent: list[float] = []
        paths: list[float] = []
        for _ in range(records):
            before = net.spent
            net.record()
            spent.append(net.spent - before)
            if net.path is not None:
                paths.append(net.path)
        figures = {
            "broker_us_per_record": net.spent * 1e6 / records,
            "broker_us_per_record_p50": statistics.median(spent) * 1e6,
            "path_us_p50": statistics.median(paths) * 1e6 if paths else float("nan"),
        }
        for name, count in net.calls.items():
            figures[f"{name}_per_record"] = count / records
        figures["to_subscriber_per_record"] = net.to_sub / records
        figures["subscriber_sent_per_record"] = (net.sub.sent - subscriber_sent) / records
        return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--connections", default="1,1000", help="comma-separated counts")
    parser.add_argument("--passes", type=int, default=2000, help="passes measured per count")
    parser.add_argument("--publish", type=int, default=0, help="records of the publish run")
    parser.add_argument("--step", type=float, default=STEP, help="seconds between hops")
    parser.add_argument("--profile", help="write a cProfile of the broker's calls here")
    parser.add_argument(
        "--prometheus", action="store_true", help="the broker's Prometheus observer attached"
    )
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    if args.publish:
        profile = cProfile.Profile(time.thread_time) if args.profile else None
        results = publish_figures(args.publish, args.step, profile, args.prometheus)
        if profile is not None:
            profile.dump_stats(args.profile)
        args.connections = ""
    for count in (int(c) for c in args.connections.split(",") if c):
        with tempfile.TemporaryDirectory() as tmp:
            server, now = _idle_server(count, Path(tmp))
            results[f"idle_pass_us_{count}_connections"] = (
                _pass_cost(server, now + 0.01, args.passes) * 1e6
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:40} {value:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
