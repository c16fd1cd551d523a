"""``felix_server.quic.nothing_to_send``: the test by which the client transport and the
broker's session skip aioquic's ``datagrams_to_send`` when it would build nothing, checked
against ``datagrams_to_send`` itself on real aioquic connections (an aioquic client and
server exchanging datagrams in memory under a fake clock; the server is also the broker's
``FelixQuicConnection``).

The rule checked everywhere (:func:`check`): whenever ``nothing_to_send`` says true,
``datagrams_to_send`` at the same time returns no datagram and changes none of the state it
would have changed (the pacing state ``nothing_to_send`` sets itself, the packet number, the
loss recovery's bytes in flight, the idle timer, ``get_timer``): so skipping the call leaves
the connection exactly as the call would have. Each frame ``datagrams_to_send`` can write
gets a case where it is pending (``nothing_to_send`` must say false and the call sends),
and a random exchange (streams opened, written, finished, reset and stopped both ways,
pings, datagram frames, connection ID changes, lost datagrams, timers, pacing) checks the
rule at every client transmit. The source of the aioquic methods it mirrors is pinned: an
aioquic upgrade that changes them fails here first.
"""

from __future__ import annotations

import hashlib
import inspect
import random
from pathlib import Path
from typing import Any

import aioquic
import pytest
from aioquic import tls
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

from felix_runtime.tls import ensure_self_signed
from felix_server.quic import FelixQuicConnection, nothing_to_send
from felix_server.quic_engine import quiet_test

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 7447)

MIRRORED = {
    "QuicConnection.datagrams_to_send": QuicConnection.datagrams_to_send,
    "QuicConnection._write_application": QuicConnection._write_application,
    "QuicConnection._write_connection_limits": QuicConnection._write_connection_limits,
    "QuicConnection._write_stream_limits": QuicConnection._write_stream_limits,
    "QuicConnection._flush_builder": QuicConnection._flush_builder,
    "QuicPacketPacer.next_send_time": QuicPacketPacer.next_send_time,
    "QuicPacketPacer.update_bucket": QuicPacketPacer.update_bucket,
}
"""The aioquic code ``nothing_to_send`` mirrors."""
PINNED = {
    "QuicConnection.datagrams_to_send": "f4eb22c8add2",
    "QuicConnection._write_application": "c37bf64378f7",
    "QuicConnection._write_connection_limits": "02c42c5455ae",
    "QuicConnection._write_stream_limits": "398d4a898f7c",
    "QuicConnection._flush_builder": "ac4bd66d7c38",
    "QuicPacketPacer.next_send_time": "292b9964362e",
    "QuicPacketPacer.update_bucket": "a0ddbc96c1e5",
}
"""SHA-256 prefixes of their source in the aioquic release it was written for."""


def _digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:12]


def test_the_mirrored_aioquic_code_is_the_one_it_was_written_for() -> None:
    """An aioquic upgrade that changes what ``nothing_to_send`` mirrors fails here: review
    ``felix_server.quic.nothing_to_send`` against the new code, then update the pins."""
    assert aioquic.__version__.startswith("1.7.")
    assert {name: _digest(function) for name, function in MIRRORED.items()} == PINNED


class Pair:
    """An aioquic client and server in memory; ``now`` is the fake clock."""

    def __init__(
        self,
        certs: Any,
        *,
        datagrams: bool = False,
        max_stream_data: int = 4096,
        client_class: type[QuicConnection] = QuicConnection,
        server_class: type[QuicConnection] = QuicConnection,
    ) -> None:
        extra: dict[str, Any] = {"max_datagram_frame_size": 1200} if datagrams else {}
        client_config = QuicConfiguration(
            is_client=True,
            alpn_protocols=["test"],
            server_name="127.0.0.1",
            max_data=4 * max_stream_data,
            max_stream_data=max_stream_data,
            **extra,
        )
        client_config.load_verify_locations(str(certs.cert_path))
        server_config = QuicConfiguration(
            is_client=False, alpn_protocols=["test"], max_stream_data=max_stream_data, **extra
        )
        server_config.load_cert_chain(str(certs.cert_path), str(certs.key_path))
        self.now = 1.0
        self.client = client_class(configuration=client_config)
        self.server = server_class(
            configuration=server_config,
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        self.client.connect(SERVER_ADDR, now=self.now)
        self.quiet = 0  # client transmits that nothing_to_send said were empty
        self.busy = 0  # ... and that sent something
        self.check_server = False  # the server's transmits are checked too (the broker's)
        self.server_quiet = 0
        self.server_busy = 0
        self.rng = random.Random(0)
        self.loss = 0.0  # probability that a datagram is lost, each way
        for _ in range(10):
            self.exchange()
        assert self.client._handshake_confirmed

    def client_transmit(self) -> list[bytes]:
        said, out = check(self.client, self.now)
        if said:
            self.quiet += 1
        elif out:
            self.busy += 1
        return out

    def server_transmit(self) -> list[bytes]:
        if not self.check_server:
            return [data for data, _addr in self.server.datagrams_to_send(self.now)]
        said, out = check(self.server, self.now)
        if said:
            self.server_quiet += 1
        elif out:
            self.server_busy += 1
        return out

    def exchange(self, advance: float = 0.002) -> None:
        """Both sides transmit; what is not lost arrives; time moves on; timers fire."""
        for data in self.client_transmit():
            if self.rng.random() >= self.loss:
                self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        for data in self.server_transmit():
            if self.rng.random() >= self.loss:
                self.client.receive_datagram(data, SERVER_ADDR, self.now)
        self.drain()
        self.now += advance
        for quic in (self.client, self.server):
            timer = quic.get_timer()
            if timer is not None and timer <= self.now:
                quic.handle_timer(self.now)
        self.drain()

    def drain(self) -> None:
        for quic in (self.client, self.server):
            while (event := quic.next_event()) is not None:
                assert not isinstance(event, qe.ConnectionTerminated), event


def _state(quic: QuicConnection) -> dict[str, Any]:
    loss = quic._loss
    return {
        "pacing_at": quic._pacing_at,
        "pacer": dict(vars(loss._pacer)),
        "packet_number": quic._packet_number,
        "in_flight": loss.bytes_in_flight,
        "close_at": quic._close_at,
        "timer": quic.get_timer(),
        "streams": sorted(quic._streams),
        "queue": [stream.stream_id for stream in quic._streams_queue],
    }


def check(quic: QuicConnection, now: float) -> tuple[bool, list[bytes]]:
    """``nothing_to_send(quic, now)``, then ``datagrams_to_send(now)``: when the first said
    true, the second must send nothing and change nothing (so skipping it is exact)."""
    said = nothing_to_send(quic, now)
    before = _state(quic) if said else None
    out = [data for data, _addr in quic.datagrams_to_send(now)]
    if said:
        assert out == []
        assert _state(quic) == before
    return said, out


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return ensure_self_signed(Path(tmp_path_factory.mktemp("certs")))


def settle(pair: Pair) -> None:
    """Exchange until both sides are quiet (every ACK sent, timers past)."""
    for _ in range(20):
        pair.exchange(advance=0.03)
    assert nothing_to_send(pair.client, pair.now)


def pending(pair: Pair) -> list[bytes]:
    """The client has something to send: ``nothing_to_send`` says false and the call
    sends."""
    said, out = check(pair.client, pair.now)
    assert not said
    assert out
    return out


def _server_sends(pair: Pair, data: bytes) -> int:
    """The server writes ``data`` on a new stream and the client receives all of it; the
    stream's id."""
    stream_id = pair.server.get_next_available_stream_id()
    pair.server.send_stream_data(stream_id, data)
    for datagram, _addr in pair.server.datagrams_to_send(pair.now):
        pair.client.receive_datagram(datagram, SERVER_ADDR, pair.now)
    pair.drain()
    return stream_id


def test_quiet_after_settling_and_after_a_held_ack(certs: Any) -> None:
    pair = Pair(certs)
    settle(pair)
    # The server sends stream data: the client's ACK is held for its ack delay.
    _server_sends(pair, b"x" * 100)
    ack_at = pair.client._spaces[tls.Epoch.ONE_RTT].ack_at
    assert ack_at is not None and ack_at > pair.now
    said, out = check(pair.client, pair.now)
    assert said and out == []
    pair.now = ack_at  # the ACK is due
    pending(pair)
    assert nothing_to_send(pair.client, pair.now)


def _max_streams_due(pair: Pair) -> None:
    """As finished peer streams raise the limit (one each) until the update is no longer
    batched: the peer has fewer streams left to open than it would grant."""
    limit = pair.client._local_max_streams_uni
    limit.value = limit.sent + (limit.sent - limit.used) + 1


def _max_stream_data_lost(pair: Pair) -> None:
    """As a lost MAX_STREAM_DATA leaves it (``_on_max_stream_data_delivery``)."""
    stream_id = pair.server.get_next_available_stream_id()
    pair.server.send_stream_data(stream_id, b"w")
    settle(pair)
    pair.client._streams[stream_id].max_stream_data_local_sent = 0


@pytest.mark.parametrize(
    "make_pending",
    [
        pytest.param(lambda p: p.client.send_ping(7), id="ping"),
        pytest.param(
            lambda p: p.client.send_stream_data(p.client.get_next_available_stream_id(), b"data"),
            id="stream-data",
        ),
        pytest.param(
            lambda p: p.client.send_stream_data(
                p.client.get_next_available_stream_id(), b"", end_stream=True
            ),
            id="fin-only",
        ),
        pytest.param(lambda p: p.client.change_connection_id(), id="retire-cid"),
        pytest.param(lambda p: p.client.close(error_code=0), id="close"),
        pytest.param(lambda p: p.client._host_cids[-1].__setattr__("was_sent", False), id="cid"),
        pytest.param(lambda p: setattr(p.client, "_probe_pending", True), id="probe"),
        pytest.param(lambda p: setattr(p.client, "_handshake_done_pending", True), id="done"),
        pytest.param(
            lambda p: p.client._network_paths[0].remote_challenges.append(b"12345678"),
            id="path-response",
        ),
        pytest.param(
            lambda p: (
                setattr(p.client, "_streams_blocked_bidi", True),
                setattr(p.client, "_streams_blocked_pending", True),
            ),
            id="streams-blocked",
        ),
        pytest.param(lambda p: setattr(p.client._local_max_data, "sent", 0), id="max-data-lost"),
        pytest.param(_max_streams_due, id="max-streams"),
        pytest.param(_max_stream_data_lost, id="max-stream-data-lost"),
    ],
)
def test_each_pending_frame_is_seen(certs: Any, make_pending: Any) -> None:
    pair = Pair(certs)
    settle(pair)
    make_pending(pair)
    pending(pair)


def test_datagram_frame(certs: Any) -> None:
    pair = Pair(certs, datagrams=True)
    settle(pair)
    pair.client.send_datagram_frame(b"hello")
    pending(pair)


def _client_stream(pair: Pair) -> int:
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"open")
    settle(pair)
    return stream_id


def test_reset_and_stop_sending(certs: Any) -> None:
    pair = Pair(certs)
    stream_id = _client_stream(pair)
    pair.client.reset_stream(stream_id, 5)
    pending(pair)
    settle(pair)
    stream_id = _client_stream(pair)
    pair.client.stop_stream(stream_id, 6)
    pending(pair)


def test_flow_control_credit(certs: Any) -> None:
    """The server fills more than half the client's stream and connection windows: the
    client's MAX_STREAM_DATA / MAX_DATA updates are seen."""
    pair = Pair(certs, max_stream_data=4096)
    settle(pair)
    stream_id = _server_sends(pair, b"y" * 3000)
    stream = pair.client._streams[stream_id]
    assert stream.receiver.highest_offset * 2 > stream.max_stream_data_local
    pending(pair)


def test_max_streams_after_streams_finish(certs: Any) -> None:
    """The server opens and finishes streams until the client's batched MAX_STREAMS goes
    out; every client transmit on the way is checked, and some must send."""
    pair = Pair(certs)
    settle(pair)
    sent_before = pair.client._local_max_streams_uni.sent
    for _ in range(200):
        stream_id = pair.server.get_next_available_stream_id(is_unidirectional=True)
        pair.server.send_stream_data(stream_id, b"z", end_stream=True)
        pair.exchange()
        if pair.client._local_max_streams_uni.sent != sent_before:
            break
    assert pair.client._local_max_streams_uni.sent != sent_before


def test_losses_retransmissions_and_probes(certs: Any) -> None:
    """Data sent while every datagram is lost comes back as retransmissions and PTO
    probes: each one is seen."""
    pair = Pair(certs)
    stream_id = _client_stream(pair)
    pair.loss = 1.0
    pair.client.send_stream_data(stream_id, b"lost")
    pending(pair)
    busy = pair.busy
    for _ in range(40):
        pair.exchange(advance=0.05)
    assert pair.busy > busy  # the probes went out (and were checked)
    pair.loss = 0.0
    settle(pair)


def test_paced_data_is_quiet_with_the_pacing_time_set(certs: Any) -> None:
    """Stream data held by the pacer: nothing goes out now, and ``nothing_to_send`` says
    so with the pacing time aioquic's call leaves (so ``get_timer`` wakes for it)."""
    pair = Pair(certs, max_stream_data=1 << 20)
    settle(pair)
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"p" * 200_000)
    assert pair.client.datagrams_to_send(pair.now)
    assert not pair.client._streams[stream_id].sender.buffer_is_empty  # data waits
    said, out = check(pair.client, pair.now)
    assert said and out == []
    assert pair.client._pacing_at is not None
    assert pair.client.get_timer() == pair.client._pacing_at
    pair.now = pair.client._pacing_at
    pending(pair)


@pytest.mark.parametrize("seed", range(6))
def test_random_exchanges(certs: Any, seed: int) -> None:
    """Streams opened, written, finished, reset and stopped both ways, pings, datagram
    frames, connection ID changes, losses, timers: the rule holds at every client
    transmit, and both answers occur."""
    pair = Pair(certs, datagrams=True, max_stream_data=8192)
    rng = random.Random(seed)
    pair.rng = random.Random(seed + 100)
    client_streams: list[int] = []
    server_streams: list[int] = []
    for _step in range(400):
        pair.loss = 0.1 if rng.random() < 0.3 else 0.0
        action = rng.random()
        client, server = pair.client, pair.server
        try:
            if action < 0.15:
                stream_id = client.get_next_available_stream_id(rng.random() < 0.3)
                client.send_stream_data(stream_id, b"c" * rng.randrange(1, 3000))
                client_streams.append(stream_id)
            elif action < 0.3 and client_streams:
                stream_id = rng.choice(client_streams)
                client.send_stream_data(
                    stream_id, b"d" * rng.randrange(0, 2000), end_stream=rng.random() < 0.3
                )
            elif action < 0.45:
                stream_id = server.get_next_available_stream_id(rng.random() < 0.3)
                server.send_stream_data(
                    stream_id, b"s" * rng.randrange(1, 6000), end_stream=rng.random() < 0.5
                )
                server_streams.append(stream_id)
            elif action < 0.5 and client_streams:
                client.reset_stream(rng.choice(client_streams), 1)
            elif action < 0.55 and server_streams:
                client.stop_stream(rng.choice(server_streams), 2)
            elif action < 0.6:
                client.send_ping(rng.randrange(1000))
            elif action < 0.65:
                client.send_datagram_frame(b"g" * rng.randrange(1, 500))
            elif action < 0.67:
                client.change_connection_id()
        except (AssertionError, ValueError, RuntimeError):
            pass  # a stream already finished or reset: aioquic refuses, nothing changed
        pair.exchange(advance=rng.choice([0.0, 0.0005, 0.002, 0.02, 0.2]))
    assert pair.quiet > 20
    assert pair.busy > 20


# ------------------------------------------------- the broker's connection (FelixQuicConnection)


def _broker_pair(certs: Any, window: int = 8192) -> Pair:
    """A pair whose server is the broker's connection class (fixed sliding windows, credit
    the session can hold back), its transmits checked as the client's are."""
    pair = Pair(certs, datagrams=True, max_stream_data=window, server_class=FelixQuicConnection)
    assert type(pair.server) is FelixQuicConnection
    pair.check_server = True
    return pair


def test_the_broker_connection_sees_its_sliding_windows(certs: Any) -> None:
    """The client fills more than half of a stream window: the broker's connection slides
    it (its own rule, not aioquic's doubling), and the MAX_STREAM_DATA is seen; while the
    session holds credit back nothing is announced, and releasing it is seen."""
    pair = _broker_pair(certs, window=4096)
    settle(pair)
    for hold in (True, False):
        assert isinstance(pair.server, FelixQuicConnection)
        pair.server.credit_held = hold
        stream_id = pair.client.get_next_available_stream_id()
        pair.client.send_stream_data(stream_id, b"y" * 3000)
        for data in pair.client_transmit():
            pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
        pair.drain()
        pair.now = pair.server._spaces[tls.Epoch.ONE_RTT].ack_at or pair.now
        pair.now += 0.0001
        # The ACK of the data is due either way, so the call sends: what it carries matters.
        said, out = check(pair.server, pair.now)
        assert not said and out
        stream = pair.server._streams[stream_id]
        if hold:
            assert stream.max_stream_data_local_sent == 4096  # nothing announced
            said, out = check(pair.server, pair.now)
            assert said and out == []  # held credit is not "something to send"
            pair.server.credit_held = False
            said, out = check(pair.server, pair.now)
            assert not said and out  # released: the slid window goes out
        assert stream.max_stream_data_local_sent == 3000 + 4096
        settle(pair)


@pytest.mark.parametrize("seed", range(4))
def test_random_exchanges_on_the_broker_connection(certs: Any, seed: int) -> None:
    """The random exchange of :func:`test_random_exchanges` with the broker's connection as
    the server, its credit held and released at random: the rule holds at every transmit
    of both sides, and both answers occur on the broker's side."""
    pair = _broker_pair(certs)
    rng = random.Random(seed)
    pair.rng = random.Random(seed + 200)
    streams: list[int] = []
    server = pair.server
    assert isinstance(server, FelixQuicConnection)
    for _step in range(400):
        pair.loss = 0.1 if rng.random() < 0.3 else 0.0
        action = rng.random()
        try:
            if action < 0.25:
                stream_id = pair.client.get_next_available_stream_id(rng.random() < 0.3)
                pair.client.send_stream_data(
                    stream_id, b"c" * rng.randrange(1, 6000), end_stream=rng.random() < 0.3
                )
                streams.append(stream_id)
            elif action < 0.45 and streams:
                stream_id = rng.choice(streams)
                if stream_id % 4 == 0:  # a request: the broker answers on it
                    server.send_stream_data(
                        stream_id, b"r" * rng.randrange(0, 3000), end_stream=rng.random() < 0.5
                    )
            elif action < 0.55:
                stream_id = server.get_next_available_stream_id(is_unidirectional=True)
                server.send_stream_data(stream_id, b"f" * rng.randrange(1, 4000))
            elif action < 0.6:
                server.send_ping(rng.randrange(1000))
            elif action < 0.65 and streams:
                pair.client.reset_stream(rng.choice(streams), 1)
            elif action < 0.75:
                server.credit_held = not server.credit_held
        except (AssertionError, ValueError, RuntimeError):
            pass  # a stream already finished or reset: aioquic refuses, nothing changed
        pair.exchange(advance=rng.choice([0.0, 0.0005, 0.002, 0.02, 0.2]))
    assert pair.server_quiet > 20
    assert pair.server_busy > 20


def test_quiet_test_names_the_classes_it_mirrors(certs: Any) -> None:
    """The session and the client transport ask :func:`quiet_test`: aioquic's own class and
    the broker's get the test, a subclass (which may write other frames) does not."""
    pair = _broker_pair(certs)
    assert quiet_test(pair.server) is nothing_to_send
    assert quiet_test(pair.client) is nothing_to_send
    assert quiet_test(_CountingQuic(configuration=pair.client._configuration)) is None


class _Socket:
    remote = SERVER_ADDR

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def send_nowait(self, datagrams: list[tuple[bytes, object]]) -> int:
        self.written.extend(data for data, _addr in datagrams)
        return len(datagrams)


class _CountingQuic(QuicConnection):
    """aioquic's client, counting ``datagrams_to_send`` calls (a subclass: the transport
    must not skip its calls, since a subclass may write frames of its own)."""

    calls = 0

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self.calls += 1
        return super().datagrams_to_send(now)


@pytest.mark.anyio
async def test_the_transport_skips_the_call_only_on_aioquics_own_class(certs: Any) -> None:
    """A quiet transmit of a plain aioquic connection does not call ``datagrams_to_send``
    and writes nothing; one with a PING pending calls it and writes the PING; a subclass
    is always called."""
    from felix_client._transport import QuicTransport

    pair = Pair(certs)
    settle(pair)
    calls: list[float] = []
    real = pair.client.datagrams_to_send

    def counted(now: float) -> list[tuple[bytes, Any]]:
        calls.append(now)
        return real(now)

    pair.client.datagrams_to_send = counted  # type: ignore[method-assign]
    sock = _Socket()
    transport = QuicTransport(sock, pair.client)  # type: ignore[arg-type]
    transport.clock = lambda: pair.now
    assert transport._send_now() == []
    assert calls == [] and sock.written == []
    pair.client.send_ping(1)
    assert transport._send_now() == []
    assert calls == [pair.now] and len(sock.written) == 1

    pair = Pair(certs, client_class=_CountingQuic)
    settle(pair)
    counting = pair.client
    assert isinstance(counting, _CountingQuic)
    calls_before = counting.calls
    transport = QuicTransport(sock, counting)  # type: ignore[arg-type]
    transport.clock = lambda: pair.now
    assert transport._send_now() == []
    assert counting.calls == calls_before + 1
