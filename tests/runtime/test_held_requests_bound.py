"""Requests held over the buffer cap are bounded by ``transport.max_data`` on every engine.

As in ``test_unread_replies.py`` (a sans-IO :class:`FelixServer` and aioquic clients under a
fake clock): a greedy client asks for a 16 KiB cache value over and over while granting the
broker no flow-control credit (it does not read its replies), so the broker goes over its
cap and holds the greedy client's requests. Here the broker runs on each engine. On aioquic
the broker holds its own QUIC credit back, so what waits stays within ``max_data`` and the
connection lives on. qh3 grants credit as data arrives, so the greedy client can send on:
once what waits goes over ``max_data`` the broker closes the connection with ``OVERLOADED``
(the client sees the code and the reason), having held no more than ``max_data`` plus one
receive batch; a client that reads, on the same broker, is served throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from engine_calls import ThroughRouter

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto.client import ClientConnection
from felix_proto.errors import ErrorCode
from felix_runtime.quic_engines import server_quic
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer
from felix_server.session import OVERFLOW_REASON, Session

pytest.importorskip("qh3")

T, N = "default", "default"
SERVER_ADDR = ("127.0.0.1", 7447)
VALUE = bytes(range(256)) * 64  # 16 KiB
LIMIT, RESUME, CAP = 64 * 1024, 16 * 1024, 128 * 1024
MAX_DATA = 4 * 1024  # the broker's receive window: the bound of what may wait
REQUESTS = 600  # about 20 KiB of requests, five times MAX_DATA
BATCH_SLACK = 16 * 1452  # what one receive batch may add before the check


class _StingyQuic(QuicConnection):
    """A client QUIC that, while ``reading`` is false, grants the broker no more credit."""

    reading = True

    def _write_connection_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_connection_limits(*args, **kwargs)

    def _write_stream_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_stream_limits(*args, **kwargs)


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.overflows: list[int] = []

    def held_overflow(self, held_bytes: int) -> None:
        self.overflows.append(held_bytes)


class _Client:
    def __init__(self, cafile: str, port: int, now: float) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=60.0,
            max_data=256 * 1024,
            max_stream_data=128 * 1024,
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = _StingyQuic(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.felix = ClientConnection(default_timeout=3600.0)
        self.values: dict[int, bytes | None] = {}
        self.welcomed = False
        self.terminated: qe.ConnectionTerminated | None = None

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = event
        while (fev := self.felix.next_event()) is not None:
            if isinstance(fev, fe.CacheValueReceived):
                self.values[fev.request_id] = fev.value
            elif isinstance(fev, fe.Welcomed):
                self.welcomed = True
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)


class _Setup:
    def __init__(self, tmp: Path, engine: str) -> None:
        files = ensure_self_signed(tmp)
        transport = TransportConfig(
            connection_buffer_limit=LIMIT,
            connection_buffer_resume=RESUME,
            connection_buffer_cap=CAP,
            max_data=MAX_DATA,
            max_stream_data=16 * 1024,
        )
        config = ServerConfig(data_dir=str(tmp), transport=transport, quic_engine=engine)
        quic_config, factory = server_quic(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.observer = _Observer()
        self.server = FelixServer(
            config, quic_config, now=self.now, observer=self.observer, connection_factory=factory
        )
        calls = ThroughRouter(self.server.router)
        calls.create("cache", T, N, "c", now=self.now)
        calls.cache_put(T, N, "c", "k", VALUE, now=self.now)
        self.clients: dict[tuple[str, int], _Client] = {}
        self.cafile = str(files.cert_path)
        self.peak_held = 0  # the most the broker held for the greedy client
        self.greedy: Session | None = None

    def connect(self, port: int) -> tuple[_Client, Session]:
        before = set(self.server.sessions)
        client = self.clients[("127.0.0.1", port)] = _Client(self.cafile, port, self.now)
        self.settle()
        client.felix.connect(now=self.now)
        self.settle()
        assert client.welcomed
        (session,) = set(self.server.sessions) - before
        return client, session

    def step(self) -> bool:
        self.now += 0.001
        now, server, moved = self.now, self.server, False
        for client in self.clients.values():
            timer = client.quic.get_timer()
            if timer is not None and timer <= now:
                client.quic.handle_timer(now)
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        for client in self.clients.values():
            client.pump()
            for data, _ in client.quic.datagrams_to_send(now=now):
                server.datagram_received(data, client.addr, now)
                moved = True
        for data, addr in server.datagrams_to_send(now):
            self.clients[addr].quic.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        for client in self.clients.values():
            client.pump()
        if self.greedy is not None:
            self.peak_held = max(self.peak_held, self.greedy.gate.held_bytes)
        return moved

    def settle(self, rounds: int = 3000) -> None:
        quiet = 0
        for _ in range(rounds):
            quiet = 0 if self.step() else quiet + 1
            if quiet >= 10:
                return
        raise AssertionError("did not settle")


@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
def test_requests_held_over_the_cap_stay_within_max_data(tmp_path: Path, engine: str) -> None:
    setup = _Setup(tmp_path, engine)
    greedy, session = setup.connect(40000)
    reader, _ = setup.connect(40001)
    setup.greedy = session

    greedy.quic.reading = False  # from now on the greedy client reads nothing
    for _ in range(REQUESTS // 50):  # it keeps asking; the reader is served meanwhile
        for _ in range(50):
            greedy.felix.cache_get(T, N, "c", "k", now=setup.now)
        ids = [reader.felix.cache_get(T, N, "c", "k", now=setup.now) for _ in range(2)]
        for _ in range(300):
            setup.step()
            if all(i in reader.values for i in ids):
                break
        assert all(reader.values.get(i) == VALUE for i in ids)
    setup.settle()

    assert setup.peak_held <= MAX_DATA + BATCH_SLACK, setup.peak_held
    if engine == "aioquic":  # QUIC credit held back: what waits stays within max_data
        assert not setup.observer.overflows and greedy.terminated is None
        assert not session.reading and 0 < session.gate.held_bytes <= MAX_DATA
    else:  # credit granted as data arrives: over max_data the connection is closed
        assert len(setup.observer.overflows) == 1
        assert MAX_DATA < setup.observer.overflows[0] <= MAX_DATA + BATCH_SLACK
        for _ in range(2000):  # the client reports the close once its draining period ends
            if greedy.terminated is not None and session.finished:
                break
            setup.step()
        assert greedy.terminated is not None
        assert greedy.terminated.error_code == ErrorCode.OVERLOADED
        assert greedy.terminated.reason_phrase == OVERFLOW_REASON
        assert session.finished and session.gate.held_bytes == 0
        assert session not in setup.server.sessions
