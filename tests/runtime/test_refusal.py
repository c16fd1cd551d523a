"""A connection the broker will not take (over ``transport.max_connections``, or while
shutting down) is refused at once with the QUIC transport error ``CONNECTION_REFUSED`` and a
reason phrase, statelessly: no session, no ``QuicConnection``, nothing in the engine. At most
``MAX_REFUSALS_PER_PASS`` refusals go out per ``datagrams_to_send`` pass (the rest are
dropped). The sans-IO pair of ``test_fuzz_session.py`` (fake clock, no sockets)."""

from __future__ import annotations

from aioquic.quic import events as qe
from aioquic.quic.packet import QuicErrorCode

from felix_proto import messages as m
from felix_proto.codec import encode
from felix_server.server import MAX_REFUSALS_PER_PASS

from .test_fuzz_session import _Pair, _Peer, certs  # noqa: F401 - the fixture


def _welcomed_pair(cert_files: tuple[str, str], **transport: object) -> _Pair:
    pair = _Pair(cert_files, **transport)
    pair.exchange()
    pair.peer.send(0, encode(m.Hello(versions=[2])))
    pair.exchange()
    assert any(isinstance(msg, m.Welcome) for _, msg in pair.peer.received)
    return pair


def _knock(pair: _Pair, peers: list[_Peer]) -> dict[int, qe.ConnectionTerminated]:
    """Send each new peer's first flight, run one server pass, deliver the answers; return
    the termination each peer reports (by index), no later than aioquic's draining period
    (3 PTOs, about 1 s before any RTT sample) after the answer."""
    addrs = {("127.0.0.1", 50000 + i): peer for i, peer in enumerate(peers)}
    pair.now += 0.001
    for addr, peer in addrs.items():
        for data, _ in peer.quic.datagrams_to_send(now=pair.now):
            pair.server.datagram_received(data, addr, pair.now)
    for data, addr in pair.server.datagrams_to_send(pair.now):
        if addr in addrs:
            addrs[addr].quic.receive_datagram(data, ("127.0.0.1", 7447), pair.now)
    ended = {}
    for i, peer in enumerate(peers):
        timer = peer.quic.get_timer()
        if timer is not None and timer <= pair.now + 1.5:
            peer.quic.handle_timer(timer)
        while (event := peer.quic.next_event()) is not None:
            if isinstance(event, qe.ConnectionTerminated):
                ended[i] = event
    return ended


def _assert_refused(ended: qe.ConnectionTerminated, reason: str) -> None:
    assert ended.error_code == QuicErrorCode.CONNECTION_REFUSED
    assert ended.reason_phrase == reason


def _assert_unchanged(pair: _Pair, sessions: int) -> None:
    assert len(pair.server.sessions) == sessions
    assert len({id(s) for s in pair.server._by_cid.values()}) == sessions
    assert pair.server.broker.stats()["connections"] == sessions
    assert pair.server.stats.accepted == 1


def test_over_max_connections_is_refused_at_once(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _welcomed_pair(certs, max_connections=1)
    late = _Peer(certs[0], pair.now)
    (ended,) = _knock(pair, [late]).values()  # one round trip, no timer needed
    _assert_refused(ended, "broker at max_connections")
    _assert_unchanged(pair, 1)
    assert pair.server.stats.refused == pair.server.stats.refusals_sent == 1
    pair.peer.send(0, encode(m.Ping(nonce=7)))  # the first client is unaffected
    pair.exchange()
    assert any(isinstance(msg, m.Pong) for _, msg in pair.peer.received)
    assert not pair.peer.terminated


def test_shutting_down_refuses_new_connections(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _welcomed_pair(certs, max_connections=10)
    pair.server.begin_shutdown(pair.now)
    (ended,) = _knock(pair, [_Peer(certs[0], pair.now)]).values()
    _assert_refused(ended, "broker shutting down")
    _assert_unchanged(pair, 1)


def test_refusals_are_rate_limited_per_pass(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _welcomed_pair(certs, max_connections=1)
    flood = [_Peer(certs[0], pair.now) for _ in range(MAX_REFUSALS_PER_PASS + 8)]
    ended = _knock(pair, flood)
    assert len(ended) == MAX_REFUSALS_PER_PASS  # the rest were dropped, as before
    for event in ended.values():
        _assert_refused(event, "broker at max_connections")
    assert pair.server.stats.refused == len(flood)
    assert pair.server.stats.refusals_sent == MAX_REFUSALS_PER_PASS
    _assert_unchanged(pair, 1)
    rest = [peer for i, peer in enumerate(flood) if i not in ended]
    assert len(rest) == 8
    pair.now += 2.0  # a dropped client retransmits its Initial: refused on a later pass
    for peer in rest:
        if (timer := peer.quic.get_timer()) is not None and timer <= pair.now:
            peer.quic.handle_timer(pair.now)
    assert len(_knock(pair, rest)) == 8
    _assert_unchanged(pair, 1)
