"""Client and server machines talking through a fake QUIC (1-byte pieces, reordering)."""

from __future__ import annotations

import pytest
from helpers import Pair, drain, only, server_credit, single

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto._state import ConnState
from felix_proto.codec import encode_event_batch
from felix_proto.errors import ErrorCode, LocalProtocolError


@pytest.fixture(
    params=[(True, False), (True, True), (False, False)], ids=["split", "reorder", "whole"]
)
def pair(request: pytest.FixtureRequest) -> Pair:
    split, reorder = request.param
    p = Pair(split=split, reorder=reorder, client={"capabilities": ["zstd", "other"]})
    p.handshake()
    return p


def test_handshake_negotiates_version_capabilities_and_limits() -> None:
    p = Pair(
        client={"capabilities": ["other", "zstd"]}, server={"limits": {"max_batch_records": 5}}
    )
    p.client.connect(now=0.0)
    assert p.client.get_timer() == 30.0
    hs = single(p.to_server(), ev.HandshakeRequested)
    assert hs.version == 2 and hs.capabilities == ["zstd"]
    assert p.server.state is ConnState.HANDSHAKING
    p.server.accept(limits={"max_frame_size": 1})  # max_frame_size is always ours
    welcomed = single(p.to_client(), ev.Welcomed)
    assert welcomed.server_id == "broker-1" and welcomed.region == "eu"
    assert welcomed.capabilities == ["zstd"]
    assert welcomed.limits == {"max_batch_records": 5, "max_frame_size": 16 * 1024 * 1024}
    assert p.client.state is ConnState.READY and p.server.state is ConnState.READY
    assert p.client.get_timer() is None


def test_publish_and_ack(pair: Pair) -> None:
    rid = pair.client.publish("t", "n", "s", b"x", key=b"k", headers={"h": b"v"}, now=pair.now)
    req = pair.request()
    assert isinstance(req.message, m.Publish) and req.message.key == b"k"
    pair.server.send_reply(m.PublishAck(request_id=rid, first_offset=3, last_offset=3))
    assert pair.to_client() == [ev.PublishAcked(request_id=rid, first_offset=3, last_offset=3)]
    rid2 = pair.client.publish_batch("t", "n", "s", [b"a", b"b"], now=pair.now)
    rid3 = pair.client.enqueue("t", "n", "q", [b"c"], now=pair.now)
    reqs = only(pair.to_server(), ev.RequestReceived)
    assert {r.stream_id for r in reqs} == {4, 8}  # publish lane and queue lane
    pair.server.send_reply(m.PublishAck(request_id=rid3, first_offset=0, last_offset=0))
    pair.server.send_reply(m.PublishAck(request_id=rid2, first_offset=4, last_offset=5))
    assert sorted(e.request_id for e in only(pair.to_client(), ev.PublishAcked)) == [rid2, rid3]
    assert pair.client.get_timer() is None


def test_ack_none_publish_reports_only_errors(pair: Pair) -> None:
    rid = pair.client.publish("t", "n", "s", b"x", ack=m.AckMode.NONE, now=pair.now)
    assert pair.client.get_timer() is None
    req = pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.send_reply(m.PublishAck(request_id=rid, first_offset=0, last_offset=0))
    pair.server.send_error(rid, ErrorCode.NOT_FOUND, "no such stream")
    failed = single(pair.to_client(), ev.RequestFailed)
    assert (failed.request_id, failed.code, failed.retryable) == (rid, ErrorCode.NOT_FOUND, False)
    assert req.stream_id == 4


def test_every_request_with_an_ack_mode_is_unawaited_under_ack_none() -> None:
    # the server machine's hot path names these types instead of looking for an ack field
    from dataclasses import fields

    from felix_proto import server as server_module
    from felix_proto.connection import REPLY_TYPES

    with_ack = {cls for cls in REPLY_TYPES if "ack" in {f.name for f in fields(cls)}}
    assert with_ack == server_module._ACKED


def test_ack_none_enqueue_is_not_awaited_by_the_server(pair: Pair) -> None:
    rid = pair.client.enqueue("t", "n", "q", [b"x"], ack=m.AckMode.NONE, now=pair.now)
    pair.request()
    with pytest.raises(LocalProtocolError):  # no reply is due
        pair.server.send_reply(m.PublishAck(request_id=rid, first_offset=0, last_offset=0))
    pair.server.send_error(rid, ErrorCode.NOT_FOUND, "no such queue")
    assert single(pair.to_client(), ev.RequestFailed).request_id == rid


def _subscribe(pair: Pair, sub_id: int = 77, **kw: int) -> int:
    rid = pair.client.subscribe("t", "n", "s", now=pair.now, **kw)
    pair.request()
    pair.server.open_subscription(rid, sub_id)
    pair.server.send_reply(m.Subscribed(request_id=rid, subscription_id=sub_id, first_offset=0))
    single(pair.to_client(), ev.SubscriptionStarted)
    return rid


def test_subscription_events_arriving_before_the_reply_are_buffered() -> None:
    pair = Pair(reorder=True)
    pair.handshake()
    rid = pair.client.subscribe("t", "n", "s", credit_messages=10, credit_bytes=1000, now=pair.now)
    pair.request()
    sid = pair.server.open_subscription(rid, 5)
    assert sid == 3
    pair.server.send_event_frame(5, encode_event_batch(0, [b"a", b"b"]), count=2, payload_bytes=2)
    pair.server.send_gap(5, missed=3, next_offset=5)
    assert pair.to_client() == []  # the uni stream came first: buffered
    pair.server.send_reply(m.Subscribed(request_id=rid, subscription_id=5, first_offset=0))
    events = pair.to_client()
    assert isinstance(events[0], ev.SubscriptionStarted)
    assert isinstance(events[1], ev.EventsReceived) and events[1].batch.payloads == [b"a", b"b"]
    assert events[2] == ev.GapReported(subscription_id=5, missed=3, next_offset=5)
    assert pair.client.subscription_credit(5) == (8, 998)
    assert server_credit(pair.server, 5) == (8, 998)


def test_credit_auto_top_up_and_manual_credit(pair: Pair) -> None:
    _subscribe(pair, credit_messages=4, credit_bytes=1000)
    pair.server.send_event_frame(77, encode_event_batch(0, [b"a"]), count=1, payload_bytes=1)
    pair.to_client()
    assert pair.to_server() == []  # a quarter used: no top-up yet
    pair.server.send_event_frame(77, encode_event_batch(1, [b"b"]), count=1, payload_bytes=1)
    assert len(only(pair.to_client(), ev.EventsReceived)) == 1
    granted = single(pair.to_server(), ev.CreditGranted)
    assert (granted.messages, granted.bytes) == (2, 2)
    assert server_credit(pair.server, 77) == (4, 1000)
    pair.client.credit(77, 10, 0)
    assert single(pair.to_server(), ev.CreditGranted).messages == 10
    assert server_credit(pair.server, 77) == (14, 1000)
    with pytest.raises(LocalProtocolError):
        pair.server.send_event_frame(
            77, encode_event_batch(2, [b"x"] * 15), count=15, payload_bytes=15
        )
    with pytest.raises(LocalProtocolError):
        pair.client.credit(77, -1, 0)
    with pytest.raises(LocalProtocolError):
        pair.client.credit(99, 1, 1)


def test_auto_credit_disabled() -> None:
    pair = Pair(client={"auto_credit": None})
    pair.handshake()
    _subscribe(pair, credit_messages=2, credit_bytes=10)
    pair.server.send_event_frame(77, encode_event_batch(0, [b"a", b"b"]), count=2, payload_bytes=2)
    pair.to_client()
    assert pair.to_server() == []
    assert pair.client.subscription_credit(77) == (0, 8)


def test_unsubscribe_then_end(pair: Pair) -> None:
    _subscribe(pair)
    rid = pair.client.unsubscribe(77, now=pair.now)
    with pytest.raises(LocalProtocolError):
        pair.client.unsubscribe(77, now=pair.now)  # already closing
    req = pair.request()
    assert isinstance(req.message, m.Unsubscribe)
    pair.server.send_reply(m.Ok(request_id=rid))
    pair.server.send_event_frame(77, encode_event_batch(0, [b"late"]), count=1, payload_bytes=4)
    pair.server.end_subscription(77, m.EndReason.UNSUBSCRIBED, next_offset=1)
    events = pair.to_client()
    assert ev.RequestSucceeded(request_id=rid) in events
    assert len(only(events, ev.EventsReceived)) == 1
    ended = single(events, ev.SubscriptionEnded)
    assert (ended.reason, ended.next_offset) == ("unsubscribed", 1)
    with pytest.raises(LocalProtocolError):
        pair.server.end_subscription(77, m.EndReason.UNSUBSCRIBED)
    with pytest.raises(LocalProtocolError):
        pair.client.subscription_credit(77)


def test_client_stopping_a_feed_stream_cancels_it(pair: Pair) -> None:
    _subscribe(pair)
    pair.server.stream_reset(3, 0)  # glue: StopSendingReceived on the uni stream
    assert drain(pair.server) == [ev.SubscriptionCancelled(subscription_id=77)]
    with pytest.raises(LocalProtocolError):
        pair.server.send_gap(77, 1, 1)


def test_consume_deliver_ack_nack(pair: Pair) -> None:
    rid = pair.client.consume("t", "n", "q", prefetch=2, now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 9)
    pair.server.send_delivery(9, m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b"a"))
    pair.server.send_delivery(9, m.Delivery(delivery_id=2, attempt=1, offset=1, payload=b"b"))
    with pytest.raises(LocalProtocolError):
        pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=10))
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=9))
    events = pair.to_client()
    assert isinstance(events[0], ev.ConsumerStarted)
    assert [e.delivery.delivery_id for e in only(events, ev.DeliveryReceived)] == [1, 2]
    assert pair.client.pending_deliveries(9) == {1, 2}
    ack_rid = pair.client.ack(9, [1], now=pair.now)
    assert ack_rid is not None
    with pytest.raises(LocalProtocolError):
        pair.client.ack(9, [1], now=pair.now)  # settled already
    with pytest.raises(LocalProtocolError):
        pair.client.nack(9, [3], now=pair.now)  # unknown
    with pytest.raises(LocalProtocolError):
        pair.client.ack(9, [2, 2], now=pair.now)
    assert pair.client.nack(9, [2], delay_ms=50, confirm=False, now=pair.now) is None
    reqs = only(pair.to_server(), ev.RequestReceived)
    assert isinstance(reqs[1].message, m.Nack) and reqs[1].message.request_id is None
    pair.server.send_reply(m.Ok(request_id=ack_rid))
    assert pair.to_client() == [ev.RequestSucceeded(request_id=ack_rid)]
    cancel = pair.client.cancel_consume(9, now=pair.now)
    pair.request()
    pair.server.send_reply(m.Ok(request_id=cancel))
    pair.server.end_consumer(9, m.EndReason.UNSUBSCRIBED)
    events = pair.to_client()
    assert events[-1] == ev.ConsumerEnded(consumer_id=9, reason="unsubscribed", message="")
    with pytest.raises(LocalProtocolError):
        pair.client.pending_deliveries(9)


def test_cache_and_admin(pair: Pair) -> None:
    put = pair.client.cache_put("t", "n", "c", "k", b"v", ttl_ms=100, now=pair.now)
    get = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    delete = pair.client.cache_delete("t", "n", "c", "k", if_version=1, now=pair.now)
    create = pair.client.admin(m.AdminCreate, kind="stream", tenant="t", name="s", now=pair.now)
    listed = pair.client.admin(m.AdminList, kind="stream", tenant="t", now=pair.now)
    gone = pair.client.admin(m.AdminDelete, kind="stream", tenant="t", name="s", now=pair.now)
    assert len(only(pair.to_server(), ev.RequestReceived)) == 6
    for reply in (
        m.CachePutResult(request_id=put, stored=True, version=1),
        m.CacheValue(request_id=get, found=True, value=b"v", version=1, ttl_remaining_ms=90),
        m.CacheDeleted(request_id=delete, deleted=True),
        m.AdminResource(request_id=create, resource={"name": "s"}),
        m.AdminResources(request_id=listed, resources=[{"name": "s"}]),
        m.Ok(request_id=gone),
    ):
        pair.server.send_reply(reply)
    events = sorted(pair.to_client(), key=lambda e: getattr(e, "request_id", 0))
    assert events == [
        ev.CachePutCompleted(request_id=put, stored=True, version=1),
        ev.CacheValueReceived(
            request_id=get, found=True, value=b"v", version=1, ttl_remaining_ms=90
        ),
        ev.CacheDeleteCompleted(request_id=delete, deleted=True),
        ev.AdminReplied(request_id=create, resource={"name": "s"}),
        ev.AdminReplied(request_id=listed, resources=[{"name": "s"}]),
        ev.RequestSucceeded(request_id=gone),
    ]
    with pytest.raises(LocalProtocolError):
        pair.client.admin(m.Publish, now=pair.now)
    with pytest.raises(LocalProtocolError):
        pair.client.admin(m.AdminCreate, kind="stream", now=pair.now)  # tenant missing


def test_reply_kind_mismatch_is_local_error_on_server(pair: Pair) -> None:
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.send_reply(m.Ok(request_id=rid))
    with pytest.raises(LocalProtocolError):
        pair.server.send_reply(m.Ok(request_id=999))
    with pytest.raises(LocalProtocolError):
        pair.server.send_error(999, ErrorCode.INTERNAL, "x")
    pair.server.send_error(rid, ErrorCode.OVERLOADED, "busy", details={"retry_ms": 5})
    failed = single(pair.to_client(), ev.RequestFailed)
    assert failed.retryable and failed.details == {"retry_ms": 5}


def test_request_timeout_with_fake_time(pair: Pair) -> None:
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now, timeout=2.0)
    rid2 = pair.client.cache_get("t", "n", "c", "k", now=pair.now + 1, timeout=5.0)
    assert pair.client.get_timer() == pair.now + 2.0
    pair.client.handle_timer(pair.now + 1.999)
    assert drain(pair.client) == []
    pair.client.handle_timer(pair.now + 2.0)
    assert drain(pair.client) == [ev.RequestTimedOut(request_id=rid)]
    assert pair.client.get_timer() == pair.now + 6.0
    pair.to_server()
    pair.server.send_reply(m.CacheValue(request_id=rid, found=False))  # late: dropped
    assert pair.to_client() == []
    pair.client.handle_timer(pair.now + 10)
    assert drain(pair.client) == [ev.RequestTimedOut(request_id=rid2)]
    assert pair.client.get_timer() is None


def test_late_subscribed_is_undone(pair: Pair) -> None:
    rid = pair.client.subscribe("t", "n", "s", now=pair.now, timeout=1.0)
    pair.request()
    pair.client.handle_timer(pair.now + 1)
    assert drain(pair.client) == [ev.RequestTimedOut(request_id=rid)]
    pair.server.open_subscription(rid, 4)
    pair.server.send_event_frame(4, encode_event_batch(0, [b"a"]), count=1, payload_bytes=1)
    pair.server.send_reply(m.Subscribed(request_id=rid, subscription_id=4, first_offset=0))
    assert pair.to_client() == []
    undo = pair.request()
    assert isinstance(undo.message, m.Unsubscribe) and undo.message.subscription_id == 4
    pair.server.send_reply(m.Ok(request_id=undo.message.request_id))
    pair.server.end_subscription(4, m.EndReason.UNSUBSCRIBED)
    assert pair.to_client() == []


def test_ping_both_ways(pair: Pair) -> None:
    nonce = pair.client.ping(now=pair.now, timeout=1.0)
    assert pair.to_server() == []
    assert pair.to_client() == [ev.PongReceived(nonce=nonce)]
    snonce = pair.server.ping()
    assert pair.to_client() == []
    assert pair.to_server() == [ev.PongReceived(nonce=snonce)]
    nonce = pair.client.ping(now=pair.now, timeout=1.0)
    pair.client.handle_timer(pair.now + 1)
    assert drain(pair.client) == [ev.RequestTimedOut(request_id=nonce)]
    pair.to_server()
    assert pair.to_client() == []  # late pong dropped


def test_goaway(pair: Pair) -> None:
    _subscribe(pair)
    rid = pair.client.consume("t", "n", "q", now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 1)
    pair.server.send_delivery(1, m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b""))
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=1))
    pair.to_client()
    in_flight = pair.client.cache_get("t", "n", "c", "k", now=pair.now)
    pair.server.goaway("maintenance", 5000, now=pair.now)
    assert pair.server.get_timer() == pair.now + 5
    events = pair.to_client()
    assert events == [ev.GoAwayReceived(reason="maintenance", deadline_ms=5000, code=501)]
    with pytest.raises(LocalProtocolError):
        pair.client.publish("t", "n", "s", b"x", now=pair.now)
    with pytest.raises(LocalProtocolError):
        pair.client.open_request_stream()
    pair.client.ack(1, [1], now=pair.now)
    pair.client.credit(77, 1, 1)
    pair.client.ping(now=pair.now)
    events = pair.to_server()
    assert {type(e) for e in events} == {ev.CreditGranted, ev.RequestReceived}
    # the cache_get was sent before GoAway reached the client: refused by the machine
    failed = single(pair.to_client(), ev.RequestFailed)
    assert (failed.request_id, failed.code, failed.retryable) == (in_flight, 501, True)
    pair.server.handle_timer(pair.now + 4.9)
    assert drain(pair.server) == []
    pair.server.handle_timer(pair.now + 5)
    events = drain(pair.server)
    assert events[0] == ev.CloseRequested(error_code=501, reason="goaway deadline passed")
    assert set(map(type, events[1:-1])) == {ev.SubscriptionCancelled, ev.ConsumerCancelled}
    assert isinstance(events[-1], ev.ConnectionTerminated) and not events[-1].by_peer
    assert pair.server.get_timer() is None
    pair.server.send_reply(m.Ok(request_id=1))  # after the end: dropped silently


def test_connection_lost_ends_everything(pair: Pair) -> None:
    _subscribe(pair)
    rid = pair.client.consume("t", "n", "q", now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 1)
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=1))
    pair.to_client()
    p1 = pair.client.publish("t", "n", "s", b"x", now=pair.now)
    p2 = pair.client.subscribe("t", "n", "s", now=pair.now)
    pair.client.connection_lost()
    events = drain(pair.client)
    failed = only(events, ev.RequestFailed)
    assert {f.request_id for f in failed} == {p1, p2}
    assert all(f.code == ErrorCode.CONNECTION_LOST and f.retryable for f in failed)
    assert single(events, ev.SubscriptionEnded).subscription_id == 77
    assert single(events, ev.ConsumerEnded).consumer_id == 1
    assert isinstance(events[-1], ev.ConnectionTerminated) and events[-1].by_peer
    assert pair.client.get_timer() is None and pair.client.data_to_send() == []
    pair.client.connection_lost()
    assert drain(pair.client) == []
    with pytest.raises(LocalProtocolError):
        pair.client.publish("t", "n", "s", b"x", now=pair.now)
    pair.server.connection_lost()
    events = drain(pair.server)
    assert events[:2] == [
        ev.SubscriptionCancelled(subscription_id=77),
        ev.ConsumerCancelled(consumer_id=1),
    ]
    assert isinstance(events[-1], ev.ConnectionTerminated)
    pair.server.stream_data_received(0, b"ignored", False)
    assert pair.server.closed


def test_request_streams_end_cleanly(pair: Pair) -> None:
    sid = pair.client.open_request_stream()
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now, stream_id=sid)
    pair.client.end_request_stream(sid)
    with pytest.raises(LocalProtocolError):
        pair.client.cache_get("t", "n", "c", "k", now=pair.now, stream_id=sid)
    with pytest.raises(LocalProtocolError):
        pair.client.end_request_stream(sid)
    assert pair.request().stream_id == sid
    pair.server.send_reply(m.CacheValue(request_id=rid, found=False))
    out = pair.server.data_to_send()
    assert out[0][0] == sid and out[0][2]  # the broker ends its side after the last reply
    pair.client.stream_data_received(sid, out[0][1], True)
    assert single(drain(pair.client), ev.CacheValueReceived).request_id == rid


def test_requests_on_the_control_stream(pair: Pair) -> None:
    rid = pair.client.cache_get("t", "n", "c", "k", now=pair.now, stream_id=0)
    assert pair.request().stream_id == 0
    pair.server.send_reply(m.CacheValue(request_id=rid, found=False))
    assert single(pair.to_client(), ev.CacheValueReceived).found is False


def test_client_close() -> None:
    pair = Pair()
    pair.handshake()
    rid = pair.client.publish("t", "n", "s", b"x", now=pair.now)
    pair.client.close(0, "bye")
    events = drain(pair.client)
    assert events[0] == ev.CloseRequested(error_code=0, reason="bye")
    assert single(events, ev.RequestFailed).request_id == rid
    pair.client.close()
    assert drain(pair.client) == []


def test_welcome_carries_the_assigned_tenant_when_given() -> None:
    for tenant in ("acme", None):
        p = Pair()
        p.client.connect(now=0.0)
        single(p.to_server(), ev.HandshakeRequested)
        p.server.accept(tenant=tenant)
        assert single(p.to_client(), ev.Welcomed).tenant == tenant
