"""The broker's pacer (``felix_server.quic.LoopPacer``): one transmit after a loop pass lets
out what the congestion window allows, not aioquic's 16 datagrams.

A real aioquic client and the broker's ``FelixQuicConnection`` exchange in memory on a fake
clock; the same exchange with aioquic's own server class is the control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

from felix_runtime.tls import ensure_self_signed
from felix_server.quic import PACING_BURST_S, FelixQuicConnection, LoopPacer

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 7447)
MDS = 1452
WINDOW = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return ensure_self_signed(Path(tmp_path_factory.mktemp("certs")))


def test_the_bucket_holds_the_burst_or_the_whole_window() -> None:
    grown = []
    for cwnd, srtt in ((1_000_000, 0.010), (1_000_000, 0.0005), (20 * MDS, 0.100)):
        ours, theirs = LoopPacer(max_datagram_size=MDS), QuicPacketPacer(max_datagram_size=MDS)
        ours.update_rate(congestion_window=cwnd, smoothed_rtt=srtt)
        theirs.update_rate(congestion_window=cwnd, smoothed_rtt=srtt)
        assert ours.packet_time == theirs.packet_time  # the same rate
        assert ours.bucket_max == max(theirs.bucket_max, min(srtt, PACING_BURST_S))
        grown.append(ours.bucket_max > theirs.bucket_max)
    # A fast path: aioquic's 16 datagrams become 2 ms of sending (~1,377 datagrams), or the
    # whole window when the round trip is shorter; on a slow path (a window of 20
    # datagrams over 100 ms) aioquic's bucket of 5 datagrams (25 ms) is already larger.
    assert grown == [True, True, False]


def _pair(certs: Any, server_class: type[QuicConnection]) -> tuple[QuicConnection, QuicConnection]:
    client_config = QuicConfiguration(
        is_client=True,
        alpn_protocols=["test"],
        server_name="127.0.0.1",
        max_data=WINDOW,
        max_stream_data=WINDOW,
        max_datagram_size=MDS,
    )
    client_config.load_verify_locations(str(certs.cert_path))
    server_config = QuicConfiguration(
        is_client=False, alpn_protocols=["test"], max_datagram_size=MDS
    )
    server_config.load_cert_chain(str(certs.cert_path), str(certs.key_path))
    client = QuicConnection(configuration=client_config)
    server = server_class(
        configuration=server_config,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    return client, server


def _deliver(source: QuicConnection, target: QuicConnection, addr: Any, now: float) -> int:
    sent = source.datagrams_to_send(now)
    for data, _addr in sent:
        target.receive_datagram(data, addr, now)
    while (event := target.next_event()) is not None:
        assert not isinstance(event, qe.ConnectionTerminated), event
    return len(sent)


def _burst_after_a_pass(certs: Any, server_class: type[QuicConnection]) -> tuple[int, int]:
    """The server streams to the client, one transmit per 5 ms "pass" (every datagram
    arrives at once, the client acknowledges at once). Returns the datagrams of the last
    transmit and the server's congestion window then."""
    client, server = _pair(certs, server_class)
    now = 1.0
    client.connect(SERVER_ADDR, now=now)
    for _ in range(6):  # the handshake
        _deliver(client, server, CLIENT_ADDR, now)
        _deliver(server, client, SERVER_ADDR, now)
        now += 0.001
    stream_id = server.get_next_available_stream_id(is_unidirectional=True)
    sent = 0
    for _ in range(40):
        server.send_stream_data(stream_id, b"x" * 200_000)
        sent = _deliver(server, client, SERVER_ADDR, now)
        now += 0.0002  # the client answers after 200 us: a loopback round trip
        _deliver(client, server, CLIENT_ADDR, now)
        now += 0.005  # the broker's next pass
    assert server._loss._pacer.packet_time is not None  # pacing is on
    return sent, server._loss.congestion_window


def test_one_transmit_per_pass_sends_the_window_not_16_datagrams(certs: Any) -> None:
    theirs, theirs_cwnd = _burst_after_a_pass(certs, QuicConnection)
    ours, ours_cwnd = _burst_after_a_pass(certs, FelixQuicConnection)
    assert theirs <= 17  # aioquic's bucket: 16 datagrams, plus the one that empties it
    assert theirs_cwnd > 17 * MDS  # ... though its window allowed more
    assert ours > 4 * theirs  # ours: what the window allows
    assert ours * MDS <= ours_cwnd + MDS  # congestion control still bounds it


def test_the_broker_connection_has_the_loop_pacer(certs: Any) -> None:
    _client, server = _pair(certs, FelixQuicConnection)
    assert type(server._loss._pacer) is LoopPacer
