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

import pytest
from engine_calls import ThroughRouter

from felix_proto.errors import ErrorCode
from felix_runtime.quic_engines import server_quic
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer
from felix_server.session import OVERFLOW_REASON, Session

from .stingy_pair import MemoryPair, StingyClient

pytest.importorskip("qh3")

T, N = "default", "default"
VALUE = bytes(range(256)) * 64  # 16 KiB
LIMIT, RESUME, CAP = 64 * 1024, 16 * 1024, 128 * 1024
MAX_DATA = 4 * 1024  # the broker's receive window: the bound of what may wait
REQUESTS = 600  # about 20 KiB of requests, five times MAX_DATA
BATCH_SLACK = 16 * 1452  # what one receive batch may add before the check


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.overflows: list[int] = []

    def held_overflow(self, held_bytes: int) -> None:
        self.overflows.append(held_bytes)


class _Setup(MemoryPair):
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
        self.observer = _Observer()
        now = 1_000_000.0
        server = FelixServer(
            config, quic_config, now=now, observer=self.observer, connection_factory=factory
        )
        super().__init__(server, now)
        calls = ThroughRouter(self.server.router)
        calls.create("cache", T, N, "c", now=self.now)
        calls.cache_put(T, N, "c", "k", VALUE, now=self.now)
        self.cafile = str(files.cert_path)
        self.peak_held = 0  # the most the broker held for the greedy client
        self.greedy: Session | None = None

    def connect(self, port: int) -> tuple[StingyClient, Session]:
        before = set(self.server.sessions)
        client = self.add(StingyClient(self.cafile, port, self.now))
        self.settle()
        client.felix.connect(now=self.now)
        self.settle()
        assert client.welcomed
        (session,) = set(self.server.sessions) - before
        return client, session

    def stepped(self) -> None:
        if self.greedy is not None:
            self.peak_held = max(self.peak_held, self.greedy.gate.held_bytes)


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
