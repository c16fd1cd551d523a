"""An in-memory network for sans-IO broker tests: a FelixServer and clients under a fake clock.

No sockets and no event loop (as in ``test_unread_replies.py``): :class:`MemoryNet` owns a
:class:`~felix_server.server.FelixServer` and moves datagrams between it and
:class:`MemoryClient` objects by hand, each an aioquic client ``QuicConnection`` with a
felix_proto ``ClientConnection`` (or, with ``raw=True``, no Felix machine: the test writes
and reads frames itself). A client can be *frozen*: it drops every datagram the broker
sends, acknowledges nothing and sends nothing, like a stopped process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from engine_calls import ThroughRouter

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto.client import ClientConnection
from felix_runtime.tls import ensure_self_signed
from felix_server.access import Authenticate, Exchange
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.session import Session

T = N = "default"
SERVER_ADDR = ("127.0.0.1", 7447)
TICK = 0.001


class MemoryClient:
    """One client: aioquic + (unless ``raw``) a felix_proto ``ClientConnection``."""

    def __init__(self, cafile: str, port: int, now: float, *, raw: bool, **felix: Any) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=600.0,
            max_data=64 << 20,
            max_stream_data=16 << 20,
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.felix = None if raw else ClientConnection(default_timeout=3600.0, **felix)
        self.events: list[fe.Event] = []
        self.received: dict[int, bytearray] = {}  # raw mode: stream id -> bytes
        self.ended: set[int] = set()  # raw mode: streams the broker ended
        self.terminated: qe.ConnectionTerminated | None = None
        self.connected = False
        self.frozen = False

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = event
                if self.felix is not None:
                    self.felix.connection_lost()
            elif isinstance(event, qe.StreamDataReceived):
                if self.felix is not None:
                    self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
                else:
                    self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if event.end_stream:
                        self.ended.add(event.stream_id)
        if self.felix is not None:
            while (fev := self.felix.next_event()) is not None:
                self.events.append(fev)
            for sid, data, end in self.felix.data_to_send():
                self.quic.send_stream_data(sid, data, end)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class MemoryNet:
    """A broker and its clients exchanging datagrams in memory."""

    def __init__(
        self,
        tmp: Path,
        transport: TransportConfig | None = None,
        observer: ServerObserver | None = None,
        authenticate: Authenticate | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        files = ensure_self_signed(tmp)
        self.cafile = str(files.cert_path)
        config = ServerConfig(data_dir=str(tmp), transport=transport or TransportConfig())
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.server = FelixServer(
            config,
            quic_config,
            now=self.now,
            observer=observer,
            authenticate=authenticate,
            exchange=exchange,
        )
        self.broker = ThroughRouter(self.server.router)
        self.clients: dict[tuple[str, int], MemoryClient] = {}
        self._port = 40000

    def client(self, *, raw: bool = False, hello: bool = True, **felix: Any) -> MemoryClient:
        """A new client, connected (QUIC handshake done; Felix handshake too unless raw or
        ``hello=False``)."""
        client = MemoryClient(self.cafile, self._port, self.now, raw=raw, **felix)
        self._port += 1
        self.clients[client.addr] = client
        self.until(lambda: client.connected)
        if hello and client.felix is not None:
            client.felix.connect(now=self.now)
            self.until(lambda: bool(client.of(fe.Welcomed)))
        return client

    def session(self, client: MemoryClient) -> Session:
        (session,) = [
            s for s in self.server.sessions if s.quic._network_paths[0].addr == client.addr
        ]
        return session

    def step(self, tick: float = TICK) -> bool:
        """Advance the clock by ``tick``, fire timers, move every datagram once."""
        self.now += tick
        now, server, moved = self.now, self.server, False
        for client in self.clients.values():
            timer = client.quic.get_timer()
            if timer is not None and timer <= now and not client.frozen:
                client.quic.handle_timer(now)
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        for client in self.clients.values():
            if client.frozen:
                continue
            client.pump()
            for data, _ in client.quic.datagrams_to_send(now=now):
                server.datagram_received(data, client.addr, now)
                moved = True
        for data, addr in server.datagrams_to_send(now):
            client = self.clients[addr]
            if not client.frozen:
                client.quic.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        for client in self.clients.values():
            if not client.frozen:
                client.pump()
        return moved

    def until(self, done: Any, rounds: int = 20_000) -> None:
        """Step until ``done()``; when nothing moves, jump the clock to the next timer."""
        for _ in range(rounds):
            if done():
                return
            if not self.step():
                timers = [self.server.get_timer()]
                timers += [c.quic.get_timer() for c in self.clients.values() if not c.frozen]
                due = min((t for t in timers if t is not None), default=None)
                if due is not None and due > self.now:
                    self.now = due - TICK
        raise AssertionError("condition not reached")

    def settle(self, rounds: int = 200) -> None:
        """Step until nothing has moved for 10 steps (or ``rounds`` steps)."""
        quiet = 0
        for _ in range(rounds):
            quiet = 0 if self.step() else quiet + 1
            if quiet >= 10:
                return
