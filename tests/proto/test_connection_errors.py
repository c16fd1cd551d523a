"""Every error path of the connection machines: peer violations and local misuse."""

from __future__ import annotations

import msgpack
import pytest
from helpers import Pair, drain, only, server_credit, single
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto._state import ConnState
from felix_proto.client import ClientConnection
from felix_proto.codec import MessageDecoder, encode, encode_event_batch
from felix_proto.errors import ErrorCode, LocalProtocolError
from felix_proto.frames import encode_header
from felix_proto.server import ServerConnection


def _decode_all(data: bytes) -> list[m.Message]:
    dec = MessageDecoder()
    dec.feed(data)
    out = []
    while (msg := dec.next_message()) is not None:
        out.append(msg)
    return out


def _writes(conn: ClientConnection | ServerConnection) -> dict[int, tuple[bytes, bool]]:
    return {sid: (data, end) for sid, data, end in conn.data_to_send()}


def _ready_server() -> ServerConnection:
    server = ServerConnection(server_id="b")
    server.stream_data_received(0, encode(m.Hello(versions=[2])), False)
    server.accept()
    server.data_to_send()
    drain(server)
    return server


# ----------------------------------------------------------------------------- server side


def test_request_before_handshake_is_answered_and_connection_stays() -> None:
    server = ServerConnection(server_id="b")
    server.stream_data_received(
        4, encode(m.CacheGet(request_id=7, tenant="t", namespace="n", cache="c", key="k")), False
    )
    out = _writes(server)
    (error,) = _decode_all(out[4][0])
    assert isinstance(error, m.Error) and error.code == ErrorCode.UNEXPECTED_MESSAGE
    assert error.request_id == 7
    assert single(drain(server), ev.ProtocolViolation).fatal is False
    server.stream_data_received(0, encode(m.Hello(versions=[2])), False)
    assert isinstance(drain(server)[-1], ev.HandshakeRequested)


def test_control_stream_not_opening_with_hello_closes_the_connection() -> None:
    server = ServerConnection(server_id="b")
    server.stream_data_received(0, encode(m.Ping(nonce=1)), False)
    (error,) = _decode_all(_writes(server)[0][0])
    assert isinstance(error, m.Error) and error.code == ErrorCode.UNEXPECTED_MESSAGE
    events = drain(server)
    assert single(events, ev.ProtocolViolation).fatal is True
    close = single(events, ev.CloseRequested)
    assert close.error_code == ErrorCode.UNEXPECTED_MESSAGE


def test_hello_twice_or_off_control_is_unexpected() -> None:
    server = _ready_server()
    server.stream_data_received(0, encode(m.Hello(versions=[2])), False)
    server.stream_data_received(4, encode(m.Welcome(version=2, server_id="x")), False)
    assert len(only(drain(server), ev.ProtocolViolation)) == 2
    assert server.state is ConnState.READY


def test_no_common_version_is_rejected_with_supported_list() -> None:
    server = ServerConnection(server_id="b")
    server.stream_data_received(0, encode(m.Hello(versions=[3, 4])), False)
    data, end = _writes(server)[0]
    (error,) = _decode_all(data)
    assert isinstance(error, m.Error) and end
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert error.details == {"supported_versions": [2]}
    events = drain(server)
    assert isinstance(events[0], ev.CloseRequested) and events[0].error_code == 101
    assert isinstance(events[-1], ev.ConnectionTerminated)


def test_reject_and_local_handshake_misuse() -> None:
    server = ServerConnection(server_id="b")
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.reject(ErrorCode.UNAUTHENTICATED, "no")
    with pytest.raises(LocalProtocolError):
        server.goaway("x", 1, now=0.0)
    server.stream_data_received(0, encode(m.Hello(versions=[2], token="bad")), False)
    server.reject(ErrorCode.UNAUTHENTICATED, "bad token")
    (error,) = _decode_all(_writes(server)[0][0])
    assert isinstance(error, m.Error) and error.code == ErrorCode.UNAUTHENTICATED
    assert drain(server)[-1] == ev.ConnectionTerminated(
        error_code=110, reason="bad token", by_peer=False
    )


def test_v1_header_on_control_gets_v1_error_then_close() -> None:
    server = ServerConnection(server_id="b")
    body = b'{"type":"hello"}'
    server.stream_data_received(0, encode_header(len(body), version=1) + body, False)
    data, end = _writes(server)[0]
    assert data[4:6] == b"\x00\x01" and b'"type":"error"' in data and end
    events = drain(server)
    assert events[1] == ev.CloseRequested(error_code=101, reason=events[1].reason)


def test_garbage_on_control_closes_connection() -> None:
    server = _ready_server()
    server.stream_data_received(0, b"GARBAGE-NOT-A-FRAME", False)
    (error,) = _decode_all(_writes(server)[0][0])
    assert isinstance(error, m.Error) and error.code == ErrorCode.BAD_FRAME
    assert server.closed
    assert isinstance(drain(server)[-1], ev.ConnectionTerminated)


def test_bad_frame_on_request_stream_ends_only_that_stream() -> None:
    server = _ready_server()
    server.stream_data_received(
        4, encode(m.CacheGet(request_id=1, tenant="t", namespace="n", cache="c", key="k")), False
    )
    drain(server)
    server.stream_data_received(4, b"\x00" * 12, False)
    data, end = _writes(server)[4]
    assert end and isinstance(_decode_all(data)[0], m.Error)
    server.stream_data_received(4, b"more ignored", True)
    server.send_reply(m.CacheValue(request_id=1, found=False))  # stream gone: dropped
    assert server.data_to_send() == []
    assert server.state is ConnState.READY


def test_bad_message_in_intact_frame_is_answered_and_stream_goes_on() -> None:
    server = _ready_server()
    body = msgpack.packb(
        [
            m.CacheGet.TYPE,
            {"request_id": 5, "tenant": 1, "namespace": "n", "cache": "c", "key": "k"},
        ]
    )
    unknown = msgpack.packb([0x7F, {"request_id": 6}])
    frames = encode_header(len(body)) + body + encode_header(len(unknown)) + unknown
    server.stream_data_received(8, frames + encode(m.Ok(request_id=3)), False)
    errors = _decode_all(_writes(server)[8][0])
    assert [(e.code, e.request_id) for e in errors if isinstance(e, m.Error)] == [
        (ErrorCode.BAD_FRAME, 5),
        (ErrorCode.UNKNOWN_MESSAGE, 6),
        (ErrorCode.UNEXPECTED_MESSAGE, 3),
    ]
    server.stream_data_received(8, encode(m.Ping(nonce=1)), False)  # ping off control
    assert len(only(drain(server), ev.ProtocolViolation)) == 4


def test_duplicate_request_id_and_truncated_stream() -> None:
    server = _ready_server()
    get = encode(m.CacheGet(request_id=1, tenant="t", namespace="n", cache="c", key="k"))
    server.stream_data_received(4, get + get, False)
    (error,) = _decode_all(_writes(server)[4][0])
    assert (
        isinstance(error, m.Error)
        and error.request_id is None
        and error.details == {"request_id": 1}
    )
    server.stream_data_received(8, get[:5], True)
    data, end = _writes(server)[8]
    assert end and _decode_all(data)[0].code == ErrorCode.BAD_FRAME  # type: ignore[attr-defined]


def test_client_errors_credit_races_and_refused_streams() -> None:
    server = _ready_server()
    server.stream_data_received(0, encode(m.Error(code=100, message="your bad")), False)
    server.stream_data_received(0, encode(m.Credit(subscription_id=9, messages=1, bytes=1)), False)
    server.stream_data_received(0, encode(m.Pong(nonce=42)), False)  # unsolicited: unexpected
    server.stream_data_received(2, b"client uni stream data", False)
    events = drain(server)
    assert events[0] == ev.ErrorReceived(stream_id=0, code=100, message="your bad")
    assert len(events) == 2 and isinstance(events[1], ev.ProtocolViolation)
    with pytest.raises(LocalProtocolError):
        server.stream_data_received(3, b"x", False)  # our own uni stream: a glue bug


def test_server_feed_api_misuse() -> None:
    server = _ready_server()
    sub = encode(
        m.Subscribe(
            request_id=1, tenant="t", namespace="n", stream="s", credit_messages=1, credit_bytes=1
        )
    )
    server.stream_data_received(
        4, sub + encode(m.Consume(request_id=2, tenant="t", namespace="n", queue="q")), False
    )
    with pytest.raises(LocalProtocolError):
        server.open_subscription(2, 1)  # not a Subscribe
    with pytest.raises(LocalProtocolError):
        server.send_reply(m.Subscribed(request_id=1, subscription_id=1, first_offset=0))
    server.open_subscription(1, 1)
    with pytest.raises(LocalProtocolError):
        server.open_subscription(1, 2)  # opened already
    with pytest.raises(LocalProtocolError):
        server.open_consumer(3, 9)
    with pytest.raises(LocalProtocolError):
        server.send_event_frame(1, encode_event_batch(0, [b"a", b"b"]), count=2, payload_bytes=2)
    server.send_event_frame(1, encode_event_batch(0, [b"ab"]), count=1, payload_bytes=2)
    assert server_credit(server, 1) == (0, -1)
    with pytest.raises(LocalProtocolError):
        server.send_delivery(5, m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b""))
    server.open_consumer(2, 1)  # consumer ids are a separate space
    with pytest.raises(LocalProtocolError):
        server.open_consumer(2, 2)
    small = Pair(client={"max_frame_size": 4096})
    small.handshake()
    rid = small.client.subscribe("t", "n", "s", now=0.0)
    small.request()
    small.server.open_subscription(rid, 1)
    with pytest.raises(LocalProtocolError):
        small.server.send_event_frame(
            1, encode_event_batch(0, [b"x" * 5000]), count=1, payload_bytes=5000
        )


def test_client_control_stream_fin_or_reset_closes() -> None:
    server = _ready_server()
    server.stream_data_received(0, b"", True)
    assert drain(server)[-1] == ev.ConnectionTerminated(
        error_code=0, reason="the client ended the control stream", by_peer=True
    )
    server = _ready_server()
    server.stream_reset(0, 7)
    assert isinstance(drain(server)[-1], ev.ConnectionTerminated)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.binary(max_size=40), max_size=6),
    stream_id=st.sampled_from([0, 4, 8, 2]),
    ready=st.booleans(),
)
def test_server_survives_arbitrary_bytes(data: list[bytes], stream_id: int, ready: bool) -> None:
    server = _ready_server() if ready else ServerConnection(server_id="b")
    for i, chunk in enumerate(data):
        server.stream_data_received(stream_id, chunk, i == len(data) - 1)
    drain(server)
    for sid, payload, _end in server.data_to_send():
        if payload[4:6] != b"\x00\x01":  # the v1 answer is not a v2 frame
            assert all(isinstance(msg, m.Error) for msg in _decode_all(payload))
        assert sid in (0, stream_id)


@settings(max_examples=150, deadline=None)
@given(
    msgs=st.lists(
        st.sampled_from(
            [
                m.Welcome(version=2, server_id="x"),
                m.Ping(nonce=1),
                m.Pong(nonce=1),
                m.GoAway(reason="r", deadline_ms=1),
                m.Error(code=100, message="x"),
                m.Error(code=100, message="x", request_id=1),
                m.Ok(request_id=1),
                m.PublishAck(request_id=2, first_offset=0, last_offset=0),
                m.Subscribed(request_id=2, subscription_id=1, first_offset=0),
                m.SubscriptionStreamStart(subscription_id=1, request_id=2),
                m.EventBatch(base_offset=0, payloads=[b"a"]),
                m.SubscriptionEnded(subscription_id=1, reason="x"),
                m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b""),
                m.ConsumerStreamStart(consumer_id=1, request_id=3),
                m.Consuming(request_id=3, consumer_id=1),
                m.ConsumerEnded(consumer_id=1, reason="x"),
                m.Hello(versions=[2]),
            ]
        ),
        max_size=8,
    ),
    streams=st.lists(st.sampled_from([0, 4, 3, 7, 1]), min_size=8, max_size=8),
)
def test_client_survives_arbitrary_broker_messages(
    msgs: list[m.Message], streams: list[int]
) -> None:
    client = ClientConnection(default_timeout=None)
    client.connect(now=0.0)
    for msg, sid in zip(msgs, streams, strict=False):
        if client.closed:
            break
        if sid == 4 and client.state is ConnState.READY:
            client.subscribe("t", "n", "s", now=0.0)
        client.stream_data_received(
            sid if sid != 4 or client.state is ConnState.READY else 0, encode(msg), False
        )
    client.connection_lost()
    assert isinstance(drain(client)[-1], ev.ConnectionTerminated)


# ----------------------------------------------------------------------------- client side


def _ready_pair() -> Pair:
    pair = Pair(split=False)
    pair.handshake()
    return pair


def test_client_refused_handshake_and_timeout() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.publish("t", "n", "s", b"x", now=0.0)
    client.connect(now=0.0, timeout=1.0)
    with pytest.raises(LocalProtocolError):
        client.connect(now=0.0)
    with pytest.raises(LocalProtocolError):
        client.ping(now=0.0)
    client.stream_data_received(
        0, encode(m.Error(code=101, message="no", details={"supported_versions": [3]})), False
    )
    events = drain(client)
    assert events[-1] == ev.ConnectionTerminated(
        error_code=101, reason="no", by_peer=True, details={"supported_versions": [3]}
    )
    client = ClientConnection()
    client.connect(now=0.0, timeout=1.0)
    assert client.get_timer() == 1.0
    client.handle_timer(1.0)
    assert drain(client)[-1].error_code == ErrorCode.TIMEOUT  # type: ignore[attr-defined]


def test_client_rejects_bad_welcome_and_messages_before_it() -> None:
    client = ClientConnection()
    client.connect(now=0.0)
    client.data_to_send()
    client.stream_data_received(0, encode(m.Ok(request_id=1)), False)
    assert single(drain(client), ev.ProtocolViolation).error_code == ErrorCode.UNEXPECTED_MESSAGE
    client.stream_data_received(0, encode(m.Welcome(version=9, server_id="x")), False)
    assert client.closed


def test_client_unknown_reply_wrong_stream_wrong_kind() -> None:
    pair = _ready_pair()
    client = pair.client
    client.stream_data_received(0, encode(m.Ok(request_id=99)), False)
    assert single(drain(client), ev.ProtocolViolation).fatal is False
    (error,) = _decode_all(_writes(client)[0][0])
    assert isinstance(error, m.Error) and error.code == ErrorCode.UNEXPECTED_MESSAGE
    rid = client.cache_get("t", "n", "c", "k", now=0.0)
    client.stream_data_received(0, encode(m.CacheValue(request_id=rid, found=False)), False)
    failed = single(drain(client), ev.RequestFailed)
    assert failed.code == ErrorCode.UNEXPECTED_MESSAGE
    rid = client.cache_get("t", "n", "c", "k", now=0.0)
    assert {e.stream_id for e in only(pair.to_server(), ev.RequestReceived)} == {4}
    client.stream_data_received(4, encode(m.Ok(request_id=rid)), False)
    assert single(drain(client), ev.RequestFailed).request_id == rid


def test_client_bad_frame_on_request_stream_fails_its_requests() -> None:
    pair = _ready_pair()
    client = pair.client
    r1 = client.cache_get("t", "n", "c", "k", now=0.0)
    r2 = client.publish("t", "n", "s", b"x", now=0.0)
    client.data_to_send()
    client.stream_data_received(4, b"\xff" * 12, False)  # the cache lane (publish: 8)
    events = drain(client)
    assert single(events, ev.RequestFailed).request_id == r1
    assert single(events, ev.ProtocolViolation).fatal
    out = _writes(client)
    assert out[4][1] and isinstance(_decode_all(out[4][0])[0], m.Error)
    assert client.cache_get("t", "n", "c", "k", now=0.0) > r2  # a new cache lane opens
    assert 12 in _writes(client)


def test_client_request_stream_fin_or_reset_by_broker() -> None:
    pair = _ready_pair()
    client = pair.client
    rid = client.cache_get("t", "n", "c", "k", now=0.0)
    client.stream_data_received(4, b"", True)
    failed = single(drain(client), ev.RequestFailed)
    assert failed.request_id == rid and failed.code == ErrorCode.CONNECTION_LOST
    rid = client.cache_get("t", "n", "c", "k", now=0.0)
    client.stream_reset(8, 3)
    assert single(drain(client), ev.RequestFailed).request_id == rid
    client.stream_reset(0, 3)
    assert client.closed


def _subscribed_client(pair: Pair, credit: int = 2) -> int:
    rid = pair.client.subscribe("t", "n", "s", credit_messages=credit, credit_bytes=100, now=0.0)
    pair.request()
    sid = pair.server.open_subscription(rid, 7)
    pair.server.send_reply(m.Subscribed(request_id=rid, subscription_id=7, first_offset=0))
    pair.to_client()
    return sid


def test_client_credit_overrun_ends_subscription_and_unsubscribes() -> None:
    pair = _ready_pair()
    sid = _subscribed_client(pair, credit=2)
    pair.client.stream_data_received(sid, encode_event_batch(0, [b"a", b"b", b"c"]), False)
    events = drain(pair.client)
    assert single(events, ev.ProtocolViolation).error_code == ErrorCode.LIMIT_EXCEEDED
    assert single(events, ev.SubscriptionEnded).reason == "error"
    reqs = only(pair.to_server(), ev.RequestReceived)
    assert isinstance(reqs[0].message, m.Unsubscribe)
    pair.client.stream_data_received(sid, encode_event_batch(3, [b"d"]), False)  # discarded
    assert drain(pair.client) == []


def test_client_feed_violations() -> None:
    pair = _ready_pair()
    client = pair.client
    client.stream_data_received(103, encode_event_batch(0, [b"a"]), False)  # no start frame
    assert single(drain(client), ev.ProtocolViolation).fatal
    client.stream_data_received(
        107, encode(m.SubscriptionStreamStart(subscription_id=1, request_id=50)), False
    )
    assert single(drain(client), ev.ProtocolViolation).fatal
    sid = _subscribed_client(pair)
    client.stream_data_received(
        sid, encode(m.SubscriptionStreamStart(subscription_id=7, request_id=1)), False
    )
    assert single(drain(client), ev.SubscriptionEnded).reason == "error"
    sid = 115
    rid = client.subscribe("t", "n", "s", now=0.0)
    client.stream_data_received(
        sid, encode(m.SubscriptionStreamStart(subscription_id=8, request_id=rid)), False
    )
    client.stream_data_received(
        sid, encode(m.SubscriptionEnded(subscription_id=9, reason="x")), False
    )
    assert single(drain(client), ev.ProtocolViolation).fatal is False
    client.stream_data_received(
        sid, encode(m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b"")), False
    )
    assert single(drain(client), ev.ProtocolViolation).fatal


def test_client_feed_fin_without_end_frame_and_reset() -> None:
    pair = _ready_pair()
    sid = _subscribed_client(pair)
    pair.client.stream_data_received(sid, b"", True)
    events = drain(pair.client)
    assert single(events, ev.SubscriptionEnded).reason == "error"
    assert isinstance(single(pair.to_server(), ev.RequestReceived).message, m.Unsubscribe)
    rid = pair.client.consume("t", "n", "q", now=0.0)
    pair.request()
    csid = pair.server.open_consumer(rid, 3)
    pair.to_client()  # start frame before the reply: consumer still pending
    pair.client.stream_reset(csid, 1)
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=3))
    events = pair.to_client()
    assert [type(e) for e in events] == [ev.ConsumerStarted, ev.ConsumerEnded]
    assert isinstance(pair.request().message, m.CancelConsume)


def test_client_early_frame_buffer_is_bounded() -> None:
    pair = Pair(split=False, client={"max_early_frames": 2})
    pair.handshake()
    rid = pair.client.subscribe("t", "n", "s", now=0.0)
    pair.request()
    pair.server.open_subscription(rid, 1)
    for i in range(3):
        pair.server.send_gap(1, 1, i)
    pair.to_client()
    pair.server.send_reply(m.Subscribed(request_id=rid, subscription_id=1, first_offset=0))
    events = pair.to_client()
    assert [type(e) for e in events] == [
        ev.SubscriptionStarted,
        ev.GapReported,
        ev.GapReported,
        ev.SubscriptionEnded,
    ]


def test_client_duplicate_delivery_and_subscribe_refused() -> None:
    pair = _ready_pair()
    rid = pair.client.consume("t", "n", "q", now=0.0)
    pair.request()
    pair.server.open_consumer(rid, 1)
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=1))
    d = m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b"")
    pair.server.send_delivery(1, d)
    pair.server.send_delivery(1, d)
    events = pair.to_client()
    assert (
        len(only(events, ev.DeliveryReceived)) == 1 and len(only(events, ev.ProtocolViolation)) == 1
    )
    rid = pair.client.subscribe("t", "n", "s", now=0.0)
    pair.request()
    pair.server.send_error(rid, ErrorCode.NOT_FOUND, "no stream")
    assert single(pair.to_client(), ev.RequestFailed).code == ErrorCode.NOT_FOUND


def test_client_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection(auto_credit=2.0)
    with pytest.raises(LocalProtocolError):
        ClientConnection(max_frame_size=10)
    pair = _ready_pair()
    client = pair.client
    with pytest.raises(LocalProtocolError):
        client.subscribe("t", "n", "s", credit_messages=0, now=0.0)
    with pytest.raises(LocalProtocolError):
        client.publish("t", "n", "s", "not bytes", now=0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        client.publish("t", "n", "s", b"x", now=0.0, stream_id=44)
    with pytest.raises(LocalProtocolError):
        client.ack(1, [1], now=0.0)
    with pytest.raises(LocalProtocolError):
        client.cancel_consume(1, now=0.0)
    with pytest.raises(LocalProtocolError):
        client.stream_data_received(2, b"x", False)  # our own uni stream: a glue bug
    small = Pair(server={"max_frame_size": 4096})
    small.handshake()
    with pytest.raises(LocalProtocolError):
        small.client.publish("t", "n", "s", b"x" * 5000, now=0.0)


def test_client_answers_pings_and_reports_connection_errors() -> None:
    pair = _ready_pair()
    pair.server.ping()
    pair.client.stream_data_received(0, encode(m.Error(code=502, message="oops")), False)
    pair.client.stream_data_received(1, b"server bidi: ignored", False)
    assert drain(pair.client) == [ev.ErrorReceived(stream_id=0, code=502, message="oops")]
    pair.to_client()
    assert len(only(pair.to_server(), ev.PongReceived)) == 1
    pair.client.stream_data_received(0, b"", True)
    assert drain(pair.client)[-1].error_code == ErrorCode.CONNECTION_LOST  # type: ignore[attr-defined]
