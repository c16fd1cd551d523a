"""``FelixServer.get_timer`` caches each session's deadline and recomputes only the sessions
touched in a pass; the timers of sessions nobody touches must still fire.

A sans-IO setup as in ``test_no_leftover_state.py`` (raw aioquic clients, datagrams moved by
hand under a fake clock). One busy client pings the broker on every pass, so the loop runs
while the other sessions receive nothing: one said ``Hello`` and vanished (the idle timeout
must drop it), one completed QUIC and never said ``Hello`` (the handshake timeout must
close it with ``TIMEOUT``), one was sent ``GoAway`` and then vanished (the goaway deadline
must close it with ``SHUTTING_DOWN``, well before its idle timeout). On every pass the
cached answer of ``get_timer`` must equal the minimum over every session, recomputed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_proto.errors import ErrorCode
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.session import Session

SERVER_ADDR = ("127.0.0.1", 7447)
IDLE, HANDSHAKE, GOAWAY_MS = 4.0, 1.0, 500
STEP = 0.01


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.closed: list[int] = []

    def connection_closed(self, error_code: int) -> None:
        self.closed.append(error_code)


class _Client:
    def __init__(self, cafile: str, port: int, now: float, *, hello: bool) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=60.0,
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.hello = hello
        self.gone = False
        self.welcomed = False

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted) and self.hello:
                self.quic.send_stream_data(0, encode(m.Hello(versions=[2], client_name="t")))
            elif isinstance(event, qe.StreamDataReceived) and event.stream_id == 0:
                self.welcomed = True


def _brute_force(server: FelixServer) -> float | None:
    drain = server._drain.get_timer() if server._drain is not None else None
    deadlines = [server.broker.get_timer(), drain, server._drain_until]
    deadlines.extend(s.get_timer() for s in server.sessions)
    return min((d for d in deadlines if d is not None), default=None)


class _Setup:
    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        transport = TransportConfig(idle_timeout_s=IDLE, handshake_timeout_s=HANDSHAKE)
        config = ServerConfig(data_dir=str(tmp), transport=transport)
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.observer = _Observer()
        self.server = FelixServer(config, quic_config, now=self.now, observer=self.observer)
        self.cafile = str(files.cert_path)
        self.clients: dict[tuple[str, int], _Client] = {}
        self.nonces = itertools.count(1)

    def add(self, *, hello: bool = True) -> _Client:
        client = _Client(self.cafile, 40000 + len(self.clients), self.now, hello=hello)
        self.clients[client.addr] = client
        return client

    def session(self, client: _Client) -> Session | None:
        found = [s for s in self.server.sessions if s.quic._network_paths[0].addr == client.addr]
        return found[0] if found else None

    def step(self, busy: _Client | None = None) -> None:
        self.now += STEP
        now, server = self.now, self.server
        if busy is not None and busy.welcomed:
            busy.quic.send_stream_data(0, encode(m.Ping(nonce=next(self.nonces))))
        for client in self.clients.values():
            timer = client.quic.get_timer()
            if timer is not None and timer <= now and not client.gone:
                client.quic.handle_timer(now)
        assert server.get_timer() == _brute_force(server)
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        for client in self.clients.values():
            client.pump()
            for data, _ in client.quic.datagrams_to_send(now=now):
                if not client.gone:
                    server.datagram_received(data, client.addr, now)
        for data, addr in server.datagrams_to_send(now):
            client = self.clients[addr]
            if not client.gone:
                client.quic.receive_datagram(data, SERVER_ADDR, now)
        for client in self.clients.values():
            client.pump()
        assert server.get_timer() == _brute_force(server)


def test_timers_of_untouched_sessions_fire(tmp_path: Path) -> None:
    setup = _Setup(tmp_path)
    busy, idle, goaway = setup.add(), setup.add(), setup.add()
    for _ in range(30):
        setup.step()
    assert busy.welcomed and idle.welcomed and goaway.welcomed
    start = setup.now
    silent = setup.add(hello=False)
    for _ in range(30):
        setup.step(busy)
    idle_session, goaway_session, silent_session = map(setup.session, (idle, goaway, silent))
    assert idle_session and goaway_session and silent_session
    goaway_session.go_away(GOAWAY_MS, setup.now)
    setup.server._mark(goaway_session)  # what the server does after it calls a session
    setup.step(busy)  # the GoAway goes out
    idle.gone = goaway.gone = True
    gone_at = setup.now
    silent_gone_at = goaway_gone_at = idle_gone_at = None
    while setup.now < gone_at + IDLE * 2:
        setup.step(busy)
        live = setup.server.sessions
        if silent_gone_at is None and silent_session not in live:
            silent_gone_at = setup.now
        if goaway_gone_at is None and goaway_session not in live:
            goaway_gone_at = setup.now
        if idle_gone_at is None and idle_session not in live:
            idle_gone_at = setup.now

    assert setup.session(busy) is not None  # the busy client was never dropped
    assert silent_gone_at is not None and goaway_gone_at is not None and idle_gone_at is not None
    assert start + HANDSHAKE <= silent_gone_at < start + HANDSHAKE + 1.0
    assert goaway_gone_at < gone_at + IDLE  # the goaway deadline, not the idle timeout
    assert gone_at + IDLE - 1.0 <= idle_gone_at <= gone_at + IDLE + 1.0
    assert int(ErrorCode.TIMEOUT) in setup.observer.closed
    assert int(ErrorCode.SHUTTING_DOWN) in setup.observer.closed
    assert len(setup.server._deadlines._heap) <= 2 * len(setup.server.sessions) + 64
