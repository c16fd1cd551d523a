"""After clients leave, the broker holds nothing of them and arms no timer.

A sans-IO pair, no sockets and no event loop: a :class:`~felix_server.server.FelixServer`
and N clients, each an aioquic client ``QuicConnection`` with a felix_proto
``ClientConnection``, exchange datagrams in memory under a fake clock. Every client
subscribes to a stream, consumes from a queue, publishes, enqueues, acks and reads the
cache; then they leave in the three ways a client can: a Felix close, a bare QUIC close,
and vanishing (the broker's idle timeout drops it). Once the clock has passed the idle
timeout, the server must be back where it started: no session, no connection id in the
demultiplexing table, nothing dirty, no connection, subscription or consumer in the
engine, nothing buffered, and ``get_timer()`` None, so an idle broker costs nothing and a
later workload pays nothing for the earlier ones (the soak harness checks the same
through ``/metrics``).
"""

from __future__ import annotations

from pathlib import Path

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from engine_calls import ThroughRouter

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.client import ClientConnection
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.server import FelixServer, make_quic_configuration

T, N = "default", "default"
CLIENTS = 6
IDLE_TIMEOUT = 5.0
SERVER_ADDR = ("127.0.0.1", 7447)


class _Client:
    def __init__(self, cafile: str, port: int, now: float) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=IDLE_TIMEOUT,
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.felix = ClientConnection(default_timeout=30.0)
        self.events: list[fe.Event] = []
        self.connected = False
        self.gone = False  # vanished: neither sends nor receives any more

    def pump(self, now: float) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.ConnectionTerminated):
                self.felix.connection_lost()
        while (fev := self.felix.next_event()) is not None:
            self.events.append(fev)
            if isinstance(fev, fe.CloseRequested):
                self.quic.close(error_code=fev.error_code, reason_phrase=fev.reason)
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)

    def of(self, kind: type[fe.Event]) -> list[fe.Event]:
        return [e for e in self.events if isinstance(e, kind)]


class _Pair:
    """The server and its clients, with datagrams moved by hand under a fake clock."""

    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        config = ServerConfig(
            data_dir=str(tmp), transport=TransportConfig(idle_timeout_s=IDLE_TIMEOUT)
        )
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.server = FelixServer(config, quic_config, now=self.now)
        self.cafile = str(files.cert_path)
        self.clients: list[_Client] = []

    def add_client(self) -> _Client:
        client = _Client(self.cafile, 40000 + len(self.clients), self.now)
        self.clients.append(client)
        return client

    def exchange(self, rounds: int = 200) -> None:
        """Move datagrams both ways until nobody has sent anything for a few rounds.

        Each round steps the clock by a millisecond (QUIC's pacer holds datagrams back
        while time stands still) and fires what is due.
        """
        server = self.server
        by_addr = {c.addr: c for c in self.clients}
        quiet = 0
        for _ in range(rounds):
            self.now += 0.001
            now = self.now
            self._fire_timers()
            moved = False
            for client in self.clients:
                client.pump(now)
                for data, _ in client.quic.datagrams_to_send(now=now):
                    if not client.gone:
                        server.datagram_received(data, client.addr, now)
                        moved = True
            for data, addr in server.datagrams_to_send(now):
                client = by_addr[addr]
                if not client.gone:
                    client.quic.receive_datagram(data, SERVER_ADDR, now)
                    moved = True
            for client in self.clients:
                client.pump(now)
            quiet = 0 if moved else quiet + 1
            if quiet >= 5:
                return
        raise AssertionError("the pair did not settle")

    def _fire_timers(self) -> None:
        for client in self.clients:
            timer = client.quic.get_timer()
            if timer is not None and timer <= self.now:
                client.quic.handle_timer(self.now)
        timer = self.server.get_timer()
        if timer is not None and timer <= self.now:
            self.server.handle_timer(self.now)

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Step the clock, firing every due timer on both sides."""
        end = self.now + seconds
        while self.now < end:
            self.now += step
            self._fire_timers()
            self.exchange()


def _work(pair: _Pair, client: _Client, index: int) -> None:
    """Handshake, then subscribe, consume, publish, enqueue, read the cache and ack (every
    other client leaves its deliveries unsettled)."""
    pair.exchange()
    assert client.connected
    felix = client.felix
    felix.connect(now=pair.now)
    pair.exchange()
    assert client.of(fe.Welcomed)
    felix.subscribe(T, N, "s", start=m.StartKind.EARLIEST, now=pair.now)
    felix.consume(T, N, "q", prefetch=4, now=pair.now)
    felix.cache_get(T, N, "c", "k", now=pair.now)
    pair.exchange()
    felix.publish(T, N, "s", f"record {index}".encode(), now=pair.now)
    felix.enqueue(T, N, "q", [f"job {index}".encode()], now=pair.now)
    pair.exchange()
    assert client.of(fe.SubscriptionStarted) and client.of(fe.ConsumerStarted)
    assert client.of(fe.CacheValueReceived) and client.of(fe.EventsReceived)
    if index % 2 == 0:
        for d in client.of(fe.DeliveryReceived):
            assert isinstance(d, fe.DeliveryReceived)
            felix.ack(d.consumer_id, [d.delivery.delivery_id], now=pair.now)
        pair.exchange()


def test_server_forgets_clients_that_left(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    server, broker = pair.server, pair.server.broker
    calls = ThroughRouter(server.router)
    calls.create("stream", T, N, "s", now=pair.now)
    calls.create("queue", T, N, "q", now=pair.now)
    calls.create("cache", T, N, "c", now=pair.now)
    calls.cache_put(T, N, "c", "k", b"v", now=pair.now)
    idle_timer = server.get_timer()

    for round_ in range(2):  # a second round pays nothing for the first
        clients = [pair.add_client() for _ in range(CLIENTS)]
        for i, client in enumerate(clients):
            _work(pair, client, i)
        stats = broker.stats()
        assert stats["connections"] == CLIENTS
        assert stats["subscriptions"] == CLIENTS and stats["consumers"] == CLIENTS
        assert len(server.sessions) == CLIENTS

        for i, client in enumerate(clients):
            if i % 3 == 0:
                client.felix.close()  # Felix close: CloseRequested -> QUIC close
            elif i % 3 == 1:
                client.quic.close()  # QUIC close without a Felix goodbye
            else:
                client.gone = True  # a killed process: the idle timeout drops it
        pair.exchange()
        pair.advance(IDLE_TIMEOUT * 3)

        assert server.sessions == [], f"round {round_}"
        assert server._by_cid == {} and server._dirty == {}
        stats = broker.stats()
        assert (stats["connections"], stats["subscriptions"], stats["consumers"]) == (0, 0, 0)
        assert all(not p.stream.subscriptions for p in broker.registry.streams.values())
        assert all(not att for att in server.router._mail.values())  # no mail left behind
        assert broker.totals(pair.now).queues.in_flight == 0
        assert server.get_timer() == idle_timer  # no timer is kept for departed clients
        assert server.datagrams_to_send(pair.now) == []
