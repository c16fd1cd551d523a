"""A client that keeps sending requests and never reads the replies cannot make the broker
buffer without limit; a client that reads, on the same broker, is not slowed.

A sans-IO setup as in ``test_no_leftover_state.py``: a :class:`FelixServer` and two clients
(aioquic client ``QuicConnection`` + felix_proto ``ClientConnection``) exchange datagrams in
memory under a fake clock. The greedy client asks for a 16 KiB cache value over and over,
while its QUIC grants the broker no flow-control credit beyond the first window: a client
that does not read. The broker must keep what it has queued for it under
``connection_buffer_cap`` (plus at most one reply), stop reading its requests and hold back
its own QUIC credit (so the greedy client is throttled by QUIC: fewer requests reach the
broker than it tried to send); the reading client gets every reply meanwhile. Once the
greedy client reads again, every one of its requests is answered, in full.
"""

from __future__ import annotations

from pathlib import Path

from engine_calls import ThroughRouter

from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.session import Session

from .stingy_pair import MemoryPair, StingyClient

T, N = "default", "default"
VALUE = bytes(range(256)) * 64  # 16 KiB
LIMIT, RESUME, CAP = 64 * 1024, 16 * 1024, 128 * 1024
REQUESTS = 200  # 3.2 MiB of replies, 25 times the cap
SERVER_MAX_DATA = 4 * 1024  # the broker's receive window: what a throttled client may send
REPLY_SLACK = len(VALUE) + 1024  # one reply may cross the cap


def held_bytes(session: Session) -> int:
    """Request bytes received but not read while over the cap (unparsed, in the gate)."""
    return sum(len(held.data) for held in session.gate.held_data.values())


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.requests = 0

    def request_started(self, kind: str) -> object:
        self.requests += 1
        return None


class _Setup(MemoryPair):
    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        transport = TransportConfig(
            connection_buffer_limit=LIMIT,
            connection_buffer_resume=RESUME,
            connection_buffer_cap=CAP,
            max_data=SERVER_MAX_DATA,
            max_stream_data=16 * 1024,
        )
        config = ServerConfig(data_dir=str(tmp), transport=transport)
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.observer = _Observer()
        now = 1_000_000.0
        super().__init__(FelixServer(config, quic_config, now=now, observer=self.observer), now)
        calls = ThroughRouter(self.server.router)
        calls.create("cache", T, N, "c", now=self.now)
        calls.cache_put(T, N, "c", "k", VALUE, now=self.now)
        self.greedy = self.add(StingyClient(str(files.cert_path), 40000, self.now))
        self.reader = self.add(StingyClient(str(files.cert_path), 40001, self.now))
        self.peak = 0  # the most the broker held queued for the greedy client

    def session(self, client: StingyClient) -> Session:
        (session,) = [
            s for s in self.server.sessions if s.quic._network_paths[0].addr == client.addr
        ]
        return session

    def stepped(self) -> None:
        if self.greedy.welcomed:
            self.peak = max(self.peak, self.session(self.greedy).buffered_bytes)


def test_unread_replies_are_bounded(tmp_path: Path) -> None:
    setup = _Setup(tmp_path)
    greedy, reader = setup.greedy, setup.reader
    setup.settle()
    for client in (greedy, reader):
        client.felix.connect(now=setup.now)
    setup.settle()
    assert greedy.welcomed and reader.welcomed

    greedy.quic.reading = False  # from now on the greedy client reads nothing
    sent = [greedy.felix.cache_get(T, N, "c", "k", now=setup.now) for _ in range(REQUESTS)]
    for _ in range(20):  # the reader keeps working meanwhile, and gets every reply
        ids = [reader.felix.cache_get(T, N, "c", "k", now=setup.now) for _ in range(3)]
        for _ in range(200):
            setup.step()
            if all(i in reader.values for i in ids):
                break
        assert all(reader.values[i] == VALUE for i in ids)
    setup.settle()

    session = setup.session(greedy)
    assert not session.reading  # over the cap: its requests wait
    assert setup.peak <= CAP + REPLY_SLACK, setup.peak
    assert session.buffered_bytes <= CAP + REPLY_SLACK
    served = setup.observer.requests - 20 * 3  # the greedy client's requests served
    assert served * len(VALUE) <= 2 * CAP  # not 3.2 MiB of replies
    assert held_bytes(session) <= SERVER_MAX_DATA  # unread requests: bounded by QUIC credit
    assert session.quic._local_max_data.used < greedy.written  # QUIC holds the rest back
    assert not setup.session(reader).paused and setup.session(reader).reading

    greedy.quic.reading = True  # it reads again: every request is answered, in full
    for _ in range(20_000):
        setup.step()
        if len(greedy.values) == len(sent):
            break
    setup.settle()
    assert sorted(greedy.values) == sorted(sent)
    assert all(value == VALUE for value in greedy.values.values())
    assert session.reading and session.buffered_bytes == 0 and held_bytes(session) == 0
    assert setup.peak <= CAP + REPLY_SLACK, setup.peak
