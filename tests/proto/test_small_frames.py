"""The broker machine and a client's small ``max_frame_size`` (docs/wire-protocol.md §5.4).

A ``Hello`` announcing less than ``MIN_MAX_FRAME_SIZE`` is refused with
``Error(INVALID_ARGUMENT)`` and a close; a reply that does not fit becomes
``Error(TOO_LARGE)`` for that request; an ``Error`` or end frame always fits (details
dropped, text clipped); a delivery that does not fit is not written (the caller ends the
consumer); and a reply msgpack cannot encode leaves its request pending, so it can still be
answered. Before these rules a small ``max_frame_size`` meant silence: no ``Welcome``, no
reply, a stalled feed, and a ``LocalProtocolError`` escaping into the runtime.
"""

from __future__ import annotations

import pytest
from helpers import Pair, drain, feed, single

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto.client import ClientConnection
from felix_proto.codec import MessageDecoder, encode
from felix_proto.connection import MAX_TEXT_BYTES, MIN_MAX_FRAME_SIZE, clip_text
from felix_proto.errors import ErrorCode, LocalProtocolError
from felix_proto.frames import HEADER_SIZE
from felix_proto.server import ServerConnection

BIG = 6000


def _written(server: ServerConnection) -> dict[int, list[m.Message]]:
    out: dict[int, list[m.Message]] = {}
    for sid, data, _ in server.data_to_send():
        decoder = MessageDecoder()
        decoder.feed(data)
        while (msg := decoder.next_message()) is not None:
            out.setdefault(sid, []).append(msg)
    return out


@pytest.mark.parametrize("size", [0, 200, 600, MIN_MAX_FRAME_SIZE - 1])
def test_a_hello_below_the_minimum_is_refused_with_an_error_and_a_close(size: int) -> None:
    server = ServerConnection(server_id="b")
    server.stream_data_received(0, encode(m.Hello(versions=[2], max_frame_size=size)), False)
    events = drain(server)
    assert not [e for e in events if isinstance(e, ev.HandshakeRequested)]
    assert single(events, ev.CloseRequested).error_code == ErrorCode.INVALID_ARGUMENT
    (error,) = _written(server)[0]
    assert isinstance(error, m.Error) and error.code == ErrorCode.INVALID_ARGUMENT
    assert error.details == {"field": "max_frame_size", "min_max_frame_size": MIN_MAX_FRAME_SIZE}
    assert server.closed


def test_the_minimum_itself_is_accepted_and_neither_side_may_announce_less() -> None:
    pair = Pair(client={"max_frame_size": MIN_MAX_FRAME_SIZE})
    pair.handshake()
    assert pair.server.peer_max_frame_size == MIN_MAX_FRAME_SIZE
    for make in (ClientConnection, lambda **kw: ServerConnection(server_id="b", **kw)):
        with pytest.raises(LocalProtocolError):
            make(max_frame_size=MIN_MAX_FRAME_SIZE - 1)


def test_a_reply_that_does_not_fit_is_answered_too_large() -> None:
    pair = Pair(split=False, client={"max_frame_size": MIN_MAX_FRAME_SIZE})
    pair.handshake()
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    pair.request()
    value = m.CacheValue(request_id=rid, found=True, value=b"v" * BIG, version=1)
    assert pair.server.send_reply(value) is False
    failed = single(pair.to_client(), ev.RequestFailed)
    assert failed.request_id == rid and failed.code == ErrorCode.TOO_LARGE
    assert failed.details["max_frame_size"] == MIN_MAX_FRAME_SIZE
    assert failed.details["frame_bytes"] > MIN_MAX_FRAME_SIZE
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now)  # the connection goes on
    pair.request()
    assert pair.server.send_reply(m.CacheValue(request_id=rid, found=True, value=b"v")) is True
    assert single(pair.to_client(), ev.CacheValueReceived).value == b"v"


def test_an_error_always_fits_and_keeps_its_code_and_id() -> None:
    pair = Pair(split=False, client={"max_frame_size": MIN_MAX_FRAME_SIZE})
    pair.handshake()
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    pair.request()
    pair.server.send_error(
        rid, ErrorCode.NOT_FOUND, "é" * 5000, details={"blob": "x" * 10_000}, retryable=False
    )
    writes = pair.server.data_to_send()
    assert all(len(data) - HEADER_SIZE <= MIN_MAX_FRAME_SIZE for _, data, _ in writes)
    feed(pair.client, writes, split=False)
    failed = single(drain(pair.client), ev.RequestFailed)
    assert failed.code == ErrorCode.NOT_FOUND and failed.request_id == rid
    assert failed.details == {} and len(failed.message.encode()) <= MAX_TEXT_BYTES


def test_an_unencodable_reply_leaves_the_request_pending_for_an_error() -> None:
    pair = Pair(split=False)
    pair.handshake()
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    pair.request()
    bad = m.CacheValue(request_id=rid, found=True, value=b"v", ttl_remaining_ms=1 << 64)
    with pytest.raises(LocalProtocolError):
        pair.server.send_reply(bad)
    pair.server.send_error(rid, ErrorCode.INTERNAL, "internal error: OverflowError")
    assert single(pair.to_client(), ev.RequestFailed).code == ErrorCode.INTERNAL


def test_a_delivery_that_does_not_fit_is_not_written() -> None:
    pair = Pair(split=False, client={"max_frame_size": MIN_MAX_FRAME_SIZE})
    pair.handshake()
    rid = pair.client.consume("t", "n", "q", now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 1)
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=1))
    pair.to_client()
    big = m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b"d" * BIG)
    assert pair.server.send_delivery(1, big) is False
    assert pair.server.buffered_bytes() == 0
    small = m.Delivery(delivery_id=2, attempt=1, offset=1, payload=b"d")
    assert pair.server.send_delivery(1, small) is True
    pair.server.end_consumer(1, m.EndReason.ERROR, "x" * 10_000)
    events = pair.to_client()
    assert single(events, ev.DeliveryReceived).delivery.delivery_id == 2
    assert single(events, ev.ConsumerEnded).reason == m.EndReason.ERROR


def test_a_welcome_that_does_not_fit_closes_with_too_large() -> None:
    server = ServerConnection(server_id="b" * 5000)
    hello = m.Hello(versions=[2], max_frame_size=MIN_MAX_FRAME_SIZE)
    server.stream_data_received(0, encode(hello), False)
    single(drain(server), ev.HandshakeRequested)
    server.accept()
    assert single(drain(server), ev.CloseRequested).error_code == ErrorCode.TOO_LARGE
    (error,) = _written(server)[0]
    assert isinstance(error, m.Error) and error.code == ErrorCode.TOO_LARGE


def test_clip_text_cuts_on_a_character_boundary() -> None:
    assert clip_text("short") == "short"
    clipped = clip_text("é" * 1000, 101)
    assert len(clipped.encode()) <= 101 and clipped.endswith("\u2026")
