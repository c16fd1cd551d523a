"""The client's ACK timing as a reader (felix_client._quic_acks), against a real aioquic
connection pair exchanging datagrams in memory: one packet's ACK waits 10 ms (not aioquic's
1 ms), ACK_EVERY (4) datagrams make it due 1 ms after the first (as aioquic would have), and a
broker-connected client uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from brokers import Broker, unique_name

from felix_client import Client
from felix_client._quic_acks import ACK_EVERY, READER_ACK_DELAY, ReaderAcks
from felix_runtime.tls import ensure_self_signed
from felix_server.quic import ack_due

T0 = 1_000.0
SERVER = ("127.0.0.1", 4433)
CLIENT = ("127.0.0.1", 40000)


class _Pair:
    """An aioquic client and server, handshake done, the client's ACKs all sent."""

    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["t"])
        server_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        client_config = QuicConfiguration(is_client=True, alpn_protocols=["t"])
        client_config.load_verify_locations(str(files.cert_path))
        client_config.server_name = "localhost"
        self.client = QuicConnection(configuration=client_config)
        self.server = QuicConnection(
            configuration=server_config,
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        # No pacing on the sending side: a test sends many datagrams at one instant.
        pacer: Any = self.server._loss._pacer
        pacer.next_send_time = lambda now: None
        self.client.connect(SERVER, now=T0)
        for step in range(20):
            self.exchange(T0 + step * 0.02)
        assert self.client._handshake_complete
        self.acks = ReaderAcks()
        self.acks.start(self.client)

    def exchange(self, now: float) -> None:
        for data, _ in self.client.datagrams_to_send(now):
            self.server.receive_datagram(data, CLIENT, now)
        for data, _ in self.server.datagrams_to_send(now):
            self.client.receive_datagram(data, SERVER, now)

    def records(self, count: int, now: float) -> None:
        """The server sends ``count`` datagrams of stream data; the client reads them."""
        for i in range(count):
            self.server.send_stream_data(3, b"x" * 500)
            datagrams = self.server.datagrams_to_send(now)
            assert len(datagrams) == 1, i
            self.client.receive_datagram(datagrams[0][0], SERVER, now)
            self.acks.received(self.client, 1)

    def client_sends(self, now: float) -> int:
        """Datagrams the client sends at ``now`` (delivered to the server)."""
        sent = self.client.datagrams_to_send(now)
        for data, _ in sent:
            self.server.receive_datagram(data, CLIENT, now)
        return len(sent)


@pytest.fixture
def pair(tmp_path: Path) -> _Pair:
    p = _Pair(tmp_path)
    p.client_sends(T0 + 10)  # whatever the handshake left
    assert ack_due(p.client) is None
    return p


def test_one_record_is_acknowledged_after_the_reader_delay(pair: _Pair) -> None:
    now = T0 + 20
    pair.records(1, now)
    assert ack_due(pair.client) == pytest.approx(now + READER_ACK_DELAY)
    assert pair.client_sends(now + 0.002) == 0  # aioquic alone would ACK at 1 ms
    assert pair.client_sends(now + READER_ACK_DELAY) == 1
    assert ack_due(pair.client) is None


def test_ack_every_datagrams_make_it_due_as_aioquic_would(pair: _Pair) -> None:
    now = T0 + 20
    pair.records(ACK_EVERY - 1, now)
    assert ack_due(pair.client) == pytest.approx(now + READER_ACK_DELAY)
    pair.records(1, now + 0.0005)
    assert ack_due(pair.client) == pytest.approx(now + 0.001)  # 1 ms after the first
    assert pair.client_sends(now + 0.0005) == 0
    assert pair.client_sends(now + 0.001) == 1
    # A new ACK counts from zero again.
    later = now + 0.005
    pair.records(ACK_EVERY - 1, later)
    assert ack_due(pair.client) == pytest.approx(later + READER_ACK_DELAY)


def test_a_late_last_datagram_makes_the_ack_due_at_once(pair: _Pair) -> None:
    now = T0 + 20
    pair.records(1, now)
    pair.records(ACK_EVERY - 1, now + 0.004)
    assert ack_due(pair.client) == pytest.approx(now + 0.001)  # past: the next transmit
    assert pair.client_sends(now + 0.004) == 1


def test_a_data_packet_carries_the_ack_and_the_count_restarts(pair: _Pair) -> None:
    now = T0 + 20
    pair.records(ACK_EVERY - 1, now)
    pair.client.send_stream_data(0, b"request")
    space = pair.client._spaces[tls.Epoch.ONE_RTT]
    space.ack_at = now  # what AckWithData does when a request leaves
    assert pair.client_sends(now + 0.0001) == 1
    assert ack_due(pair.client) is None
    pair.records(1, now + 0.0002)
    assert ack_due(pair.client) == pytest.approx(now + 0.0002 + READER_ACK_DELAY)


def test_other_engines_keep_their_own_timing() -> None:
    acks = ReaderAcks()

    class Other:
        _ack_delay = 0.001

    other = Other()
    acks.start(other)
    acks.received(other, ACK_EVERY)  # touches nothing
    assert other._ack_delay == 0.001


@pytest.mark.anyio
async def test_a_broker_client_reads_with_sparse_acks(broker: Broker) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        stream = unique_name("acks")
        await c.admin.create("stream", stream)
        conn = c._conns[0]
        assert conn is not None
        transport = conn.transport
        assert transport.quic._ack_delay == READER_ACK_DELAY
        seen: list[int] = []

        class Counting(ReaderAcks):
            def received(self, quic: object, datagrams: int) -> None:
                seen.append(datagrams)
                super().received(quic, datagrams)

        counting = Counting()
        counting.start(transport.quic)
        transport.reader_acks = counting
        await c.publish(stream, b"one")
        assert seen
