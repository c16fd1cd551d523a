"""A peer that completes QUIC but never sends ``Hello`` is closed after
``transport.handshake_timeout_s`` with ``TIMEOUT`` and leaves nothing behind; a peer that
did say Hello is not affected. (Without it such a peer, kept alive by QUIC pings, would hold
a session and a ``max_connections`` slot for ever.) The sans-IO pair of
``test_fuzz_session.py``."""

from __future__ import annotations

import pytest
from aioquic.quic import events as qe

from felix_proto import messages as m
from felix_proto.codec import encode
from felix_proto.errors import ErrorCode
from felix_server.config import ConfigError, TransportConfig

from .test_fuzz_session import _Pair, certs  # noqa: F401 - the fixture

TIMEOUT = 1.0


def _terminations(pair: _Pair) -> list[qe.ConnectionTerminated]:
    found = []
    quic = pair.peer.quic
    while (event := quic.next_event()) is not None:
        if isinstance(event, qe.ConnectionTerminated):
            found.append(event)
    return found


def test_a_silent_peer_is_closed_after_the_handshake_timeout(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _Pair(certs, handshake_timeout_s=TIMEOUT)
    pair.peer.pump = lambda: None  # type: ignore[method-assign] - keep the QUIC events
    pair.exchange()
    assert len(pair.server.sessions) == 1
    assert pair.server.get_timer() is not None
    pair.advance(TIMEOUT / 2)
    assert len(pair.server.sessions) == 1
    pair.advance(TIMEOUT)
    (ended,) = _terminations(pair)
    assert ended.error_code == ErrorCode.TIMEOUT
    assert "no Hello within 1 s" in ended.reason_phrase
    pair.advance(2.0)
    assert pair.server.sessions == [] and pair.server._by_cid == {}
    assert pair.server.broker.stats()["connections"] == 0


def test_a_welcomed_peer_outlives_the_handshake_timeout(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _Pair(certs, handshake_timeout_s=TIMEOUT)
    pair.exchange()
    pair.peer.send(0, encode(m.Hello(versions=[2])))
    pair.exchange()
    assert any(isinstance(msg, m.Welcome) for _, msg in pair.peer.received)
    for _ in range(4):  # keep QUIC busy past the timeout
        pair.advance(TIMEOUT / 2)
        pair.peer.send(0, encode(m.Ping(nonce=1)))
    pair.exchange()
    assert len(pair.server.sessions) == 1 and not pair.peer.terminated


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="handshake_timeout_s"):
        TransportConfig(handshake_timeout_s=0).validate()
