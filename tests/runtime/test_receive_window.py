"""The broker's QUIC receive windows slide at their configured size: after a long transfer a
client holds no more than ``transport.max_data`` of connection credit (``max_stream_data``
per stream), and a client whose requests the broker stopped reading can have no more than
that window unread at the broker.

aioquic by itself doubles both windows as data arrives, so after many MiB its credit is
many windows wide. In memory (``stingy_pair.py``): a :class:`FelixServer` and one raw
aioquic client + felix_proto ``ClientConnection`` exchanging datagrams under a fake clock,
no sockets; every step checks the credit.
"""

from __future__ import annotations

from pathlib import Path

from engine_calls import ThroughRouter

from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.quic import FelixQuicConnection
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.session import Session

from .stingy_pair import MemoryPair, StingyClient

T, N = "default", "default"
WINDOW, STREAM_WINDOW = 256 * 1024, 64 * 1024  # transport.max_data / max_stream_data
VALUE = bytes(range(256)) * 128  # 32 KiB
PUTS = 256  # 8 MiB of requests: 32 connection windows, 128 stream windows
LIMIT, RESUME, CAP = 64 * 1024, 16 * 1024, 128 * 1024


def held_bytes(session: Session) -> int:
    """Request bytes received but not read while over the cap (unparsed, in the gate)."""
    return sum(len(held.data) for held in session.gate.held_data.values())


class _Setup(MemoryPair):
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
        now = 1_000_000.0
        super().__init__(FelixServer(config, quic_config, now=now), now)
        calls = ThroughRouter(self.server.router)
        calls.create("cache", T, N, "c", now=now)
        calls.cache_put(T, N, "c", "big", VALUE, now=now)
        self.client = self.add(StingyClient(str(files.cert_path), 40000, now))

    def session(self) -> Session:
        (session,) = self.server.sessions
        return session

    def stepped(self) -> None:
        if self.client.welcomed:
            self.check_credit()

    def check_credit(self) -> None:
        """The credit outstanding, as the broker grants it and as the client sees it, is
        never more than one window, connection-wide and on every stream."""
        broker = self.session().quic
        assert isinstance(broker, FelixQuicConnection)
        limit = broker._local_max_data
        assert limit.value - limit.used <= WINDOW, (limit.value, limit.used)
        quic = self.client.quic
        assert quic._remote_max_data - quic._remote_max_data_used <= WINDOW
        for stream in broker._streams.values():
            if stream.max_stream_data_local:
                granted = stream.max_stream_data_local - stream.receiver.highest_offset
                assert granted <= STREAM_WINDOW, (stream.stream_id, granted)
        for stream in quic._streams.values():
            if stream.max_stream_data_remote:
                credit = stream.max_stream_data_remote - stream.sender.highest_offset
                assert credit <= STREAM_WINDOW, (stream.stream_id, credit)

    def answered(self) -> set[int]:
        return self.client.stored | self.client.values.keys()

    def run_until(self, ids: list[int], rounds: int = 50_000) -> None:
        for _ in range(rounds):
            self.step()
            if self.answered().issuperset(ids):
                return
        raise AssertionError(f"{len(set(ids) - self.answered())} requests unanswered")

    def puts(self, count: int) -> list[int]:
        felix = self.client.felix
        return [felix.cache_put(T, N, "c", f"k{i}", VALUE, now=self.now) for i in range(count)]


def test_receive_windows_slide_at_their_configured_size(tmp_path: Path) -> None:
    setup = _Setup(tmp_path)
    client = setup.client
    setup.settle()
    client.felix.connect(now=setup.now)
    setup.settle()
    assert client.welcomed

    # A long transfer: 8 MiB of requests on one lane, every step checking the credit.
    setup.run_until(setup.puts(PUTS))
    broker = setup.session().quic
    assert broker._local_max_data.used >= PUTS * len(VALUE)  # 32 windows received
    assert broker._local_max_data.value <= broker._local_max_data.used + WINDOW

    # The client stops reading: the broker's replies back up past the cap and it stops
    # reading the client's requests. Whatever the client sends then, what waits unread at
    # the broker is bounded by one window, not by the credit 8 MiB of auto-tuning grew.
    client.quic.reading = False
    gets = [client.felix.cache_get(T, N, "c", "big", now=setup.now) for _ in range(16)]
    more = setup.puts(PUTS // 2)  # 4 MiB more requests
    setup.settle()
    session = setup.session()
    assert not session.reading
    assert 0 < held_bytes(session) <= WINDOW, held_bytes(session)
    received = broker._local_max_data.used
    assert client.written - received > 2 * 1024 * 1024  # QUIC holds the rest at the client

    # Reading again, everything is answered; the windows kept sliding meanwhile.
    client.quic.reading = True
    setup.run_until(gets + more)
    setup.settle()
    assert session.reading and held_bytes(session) == 0
    assert broker._local_max_data.used == client.written
    assert all(client.values[i] == VALUE for i in gets)
