"""The broker's QUIC receive windows slide at their configured size: after a long transfer a
client holds no more than ``transport.max_data`` of connection credit (``max_stream_data``
per stream), and a client whose requests the broker stopped reading can have no more than
that window unread at the broker.

aioquic by itself doubles both windows as data arrives, so after many MiB its credit is
many windows wide. Same in-memory setup as ``test_unread_replies.py``: a
:class:`FelixServer` and one raw aioquic client + felix_proto ``ClientConnection`` exchanging
datagrams under a fake clock, no sockets.
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
from felix_server.config import ServerConfig, TransportConfig
from felix_server.quic import FelixQuicConnection
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.session import Session

T, N = "default", "default"
SERVER_ADDR = ("127.0.0.1", 7447)
CLIENT_ADDR = ("127.0.0.1", 40000)
WINDOW, STREAM_WINDOW = 256 * 1024, 64 * 1024  # transport.max_data / max_stream_data
VALUE = bytes(range(256)) * 128  # 32 KiB
PUTS = 256  # 8 MiB of requests: 32 connection windows, 128 stream windows
LIMIT, RESUME, CAP = 64 * 1024, 16 * 1024, 128 * 1024


def held_bytes(session: Session) -> int:
    """Request bytes received but not read while over the cap (unparsed, in the gate)."""
    return sum(len(held.data) for held in session.gate.held_data.values())


class _StingyQuic(QuicConnection):
    """A client QUIC that, while ``reading`` is false, grants the broker no more credit."""

    reading = True

    def _write_connection_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_connection_limits(*args, **kwargs)

    def _write_stream_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_stream_limits(*args, **kwargs)


class _Setup:
    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        transport = TransportConfig(
            max_data=WINDOW,
            max_stream_data=STREAM_WINDOW,
            connection_buffer_limit=LIMIT,
            connection_buffer_resume=RESUME,
            connection_buffer_cap=CAP,
        )
        config = ServerConfig(data_dir=str(tmp), transport=transport)
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.server = FelixServer(config, quic_config, now=self.now)
        calls = ThroughRouter(self.server.router)
        calls.create("cache", T, N, "c", now=self.now)
        calls.cache_put(T, N, "c", "big", VALUE, now=self.now)
        client_config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=60.0,
            max_data=256 * 1024,
            max_stream_data=128 * 1024,
        )
        client_config.load_verify_locations(str(files.cert_path))
        self.quic = _StingyQuic(configuration=client_config)
        self.quic.connect(SERVER_ADDR, now=self.now)
        self.felix = ClientConnection(default_timeout=3600.0)
        self.done: set[int] = set()  # request ids answered
        self.written = 0  # request bytes handed to QUIC
        self.welcomed = False
        self.steps = 0

    def session(self) -> Session:
        (session,) = self.server.sessions
        return session

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
        while (fev := self.felix.next_event()) is not None:
            if isinstance(fev, fe.Welcomed):
                self.welcomed = True
            elif isinstance(fev, (fe.CachePutCompleted, fe.CacheValueReceived)):
                self.done.add(fev.request_id)
            else:
                assert not isinstance(fev, (fe.RequestFailed, fe.RequestTimedOut)), fev
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)
            self.written += len(data)

    def step(self) -> bool:
        self.now += 0.001
        self.steps += 1
        now, server, moved = self.now, self.server, False
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now)
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        self.pump()
        for data, _ in self.quic.datagrams_to_send(now=now):
            server.datagram_received(data, CLIENT_ADDR, now)
            moved = True
        for data, _ in server.datagrams_to_send(now):
            self.quic.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        self.pump()
        if self.welcomed:
            self.check_credit()
        return moved

    def check_credit(self) -> None:
        """The credit outstanding, as the broker grants it and as the client sees it, is
        never more than one window, connection-wide and on every stream."""
        broker = self.session().quic
        assert isinstance(broker, FelixQuicConnection)
        limit = broker._local_max_data
        assert limit.value - limit.used <= WINDOW, (limit.value, limit.used)
        assert self.quic._remote_max_data - self.quic._remote_max_data_used <= WINDOW
        for stream in broker._streams.values():
            if stream.max_stream_data_local:
                granted = stream.max_stream_data_local - stream.receiver.highest_offset
                assert granted <= STREAM_WINDOW, (stream.stream_id, granted)
        for stream in self.quic._streams.values():
            if stream.max_stream_data_remote:
                credit = stream.max_stream_data_remote - stream.sender.highest_offset
                assert credit <= STREAM_WINDOW, (stream.stream_id, credit)

    def run_until(self, ids: list[int], rounds: int = 50_000) -> None:
        for _ in range(rounds):
            self.step()
            if self.done.issuperset(ids):
                return
        raise AssertionError(f"{len(set(ids) - self.done)} requests unanswered")

    def settle(self, rounds: int = 3000) -> None:
        quiet = 0
        for _ in range(rounds):
            quiet = 0 if self.step() else quiet + 1
            if quiet >= 10:
                return
        raise AssertionError("did not settle")

    def puts(self, count: int) -> list[int]:
        return [self.felix.cache_put(T, N, "c", f"k{i}", VALUE, now=self.now) for i in range(count)]


def test_receive_windows_slide_at_their_configured_size(tmp_path: Path) -> None:
    setup = _Setup(tmp_path)
    setup.settle()
    setup.felix.connect(now=setup.now)
    setup.settle()
    assert setup.welcomed

    # A long transfer: 8 MiB of requests on one lane, every step checking the credit.
    setup.run_until(setup.puts(PUTS))
    broker = setup.session().quic
    assert broker._local_max_data.used >= PUTS * len(VALUE)  # 32 windows received
    assert broker._local_max_data.value <= broker._local_max_data.used + WINDOW

    # The client stops reading: the broker's replies back up past the cap and it stops
    # reading the client's requests. Whatever the client sends then, what waits unread at
    # the broker is bounded by one window, not by the credit 8 MiB of auto-tuning grew.
    setup.quic.reading = False
    gets = [setup.felix.cache_get(T, N, "c", "big", now=setup.now) for _ in range(16)]
    more = setup.puts(PUTS // 2)  # 4 MiB more requests
    setup.settle()
    session = setup.session()
    assert not session.reading
    assert 0 < held_bytes(session) <= WINDOW, held_bytes(session)
    received = broker._local_max_data.used
    assert setup.written - received > 2 * 1024 * 1024  # QUIC holds the rest at the client

    # Reading again, everything is answered; the windows kept sliding meanwhile.
    setup.quic.reading = True
    setup.run_until(gets + more)
    setup.settle()
    assert session.reading and held_bytes(session) == 0
    assert broker._local_max_data.used == setup.written
