"""Tests of the Broker facade: connections, admin, streams, queues, caches, memory, timers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from engine_calls import Calls

from felix_core import (
    AlreadyExists,
    Broker,
    BrokerConfig,
    ConsumerClosed,
    CursorTooOld,
    InvalidArgument,
    LimitExceeded,
    MemoryMetadataStore,
    MessagesDelivered,
    NotFound,
    Overloaded,
    RecordsDelivered,
    RecordsSkipped,
    ShuttingDown,
    StartKind,
    SubscriptionClosed,
    TooLarge,
)
from felix_core.events import MetadataWrite, RequestRefused, ResourceDescribed
from felix_core.metadata import Kind, ResourceRecord, WriteOp

T, N = "default", "default"


def broker(**config: Any) -> Calls:
    b = Calls(Broker(BrokerConfig(**config)))
    b.attach(1, 0.0)
    return b


def batches(outs: list[Any], sub: int | None = None) -> list[list[bytes]]:
    return [
        o.slice.payloads
        for o in outs
        if isinstance(o, RecordsDelivered) and (sub is None or o.subscription_id == sub)
    ]


def test_defaults_and_no_defaults() -> None:
    b = Calls(Broker())
    assert [r["tenant"] for r in b.list("tenant")] == ["default"]
    assert [r["namespace"] for r in b.list("namespace", "default")] == ["default"]
    assert Calls(Broker(BrokerConfig(create_defaults=False))).list("tenant") == []
    store = MemoryMetadataStore()
    Calls(Broker(), store)
    second = Calls(Broker(), store)  # a second broker on the same store finds the defaults
    assert [r["tenant"] for r in second.list("tenant")] == ["default"]
    assert len(store.records()) == 2


def test_connection_lifecycle_errors() -> None:
    b = broker()
    with pytest.raises(ValueError):
        b.attach(1, 0.0)
    with pytest.raises(ValueError):
        b.subscribe(2, T, N, "s", now=0.0)
    with pytest.raises(ValueError):
        b.pause(2)
    b.detach(2, 0.0)  # unknown: ignored


def test_admin_round_trip_and_stats() -> None:
    b = broker()
    created = b.create("stream", T, N, "s", {"batch_max_events": 2}, now=1.0)
    assert created["settings"]["batch_max_events"] == 2 and created["stats"]["records"] == 0
    with pytest.raises(AlreadyExists):
        b.create("stream", T, N, "s", now=1.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)
    assert b.describe("stream", T, N, "s", now=1.0)["stats"]["records"] == 1
    updated = b.update("stream", T, N, "s", {"retention_max_records": 1}, now=2.0)
    assert updated["generation"] == 2
    assert [r["name"] for r in b.list("stream", T, N)] == ["s"]
    b.create("queue", T, N, "q", now=1.0)
    assert b.describe("queue", T, N, "q", now=1.0)["stats"]["records"] == 0
    b.create("cache", T, N, "c", now=1.0)
    assert b.describe("cache", T, N, "c", now=1.0)["stats"]["feed_subscriptions"] == 0
    assert b.describe("tenant", T, now=1.0)["kind"] == "tenant"
    b.delete("stream", T, N, "s", now=3.0)
    with pytest.raises(NotFound):
        b.describe("stream", T, N, "s", now=3.0)
    with pytest.raises(InvalidArgument):
        b.create("topic", T, N, "x", now=1.0)
    stats = b.stats()
    assert stats["queues"] == 1 and stats["caches"] == 1 and stats["streams"] == 0


def test_publish_subscribe_and_batches() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"batch_max_events": 2}, now=0.0)
    sub, first = b.subscribe(1, T, N, "s", now=0.0)
    assert first == 0
    assert b.publish(9, T, N, "s", [b"a", b"b", b"c"], now=1.0) == (0, 2)
    assert batches(b.drain_events()) == [[b"a", b"b"]]
    deadline = b.get_timer()
    assert deadline == 1.0  # a delay below 1 ms: due now, fired when the loop's pass ends
    b.handle_timer(deadline)
    assert batches(b.drain_events()) == [[b"c"]]
    assert b.get_timer() is None
    b.unsubscribe(1, sub, now=2.0)
    out = b.drain_events()
    assert out == [
        SubscriptionClosed(
            connection_id=1, subscription_id=sub, reason="unsubscribed", next_offset=3
        )
    ]
    with pytest.raises(NotFound):
        b.unsubscribe(1, sub, now=2.0)
    assert not b.add_credit(1, sub, 1, 1, now=2.0)  # ended: the grant is ignored


def test_subscribe_from_earliest_offset_and_errors() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"retention_max_records": 2, "batch_max_delay_us": 0}, now=0.0)
    b.publish(1, T, N, "s", [b"a", b"b", b"c"][:2], now=0.0)
    b.publish(1, T, N, "s", [b"c"], now=0.0)
    sid, first = b.subscribe(1, T, N, "s", start=1, now=0.0)
    assert first == 1 and batches(b.drain_events(), sid) == [[b"b", b"c"]]
    with pytest.raises(CursorTooOld) as err:
        b.subscribe(1, T, N, "s", start=2, start_value=0, now=0.0)
    assert err.value.details["first_offset"] == 1
    with pytest.raises(InvalidArgument):
        b.subscribe(1, T, N, "s", source="queue", now=0.0)
    with pytest.raises(NotFound):
        b.subscribe(1, T, N, "nope", now=0.0)


def test_shared_slice_for_subscribers_at_same_position() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"batch_max_events": 2}, now=0.0)
    for conn in (2, 3, 4):
        b.attach(conn, 0.0)
        b.subscribe(conn, T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"a", b"b"], now=1.0)
    out = b.drain_events()
    assert len(out) == 3 and all(o.slice is out[0].slice for o in out)


def test_credit_clamping_and_subscription_limit() -> None:
    b = broker(max_subscriptions_per_connection=1, max_credit_messages=3)
    b.create("stream", T, N, "s", {"batch_max_delay_us": 0}, now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", credit_messages=100, now=0.0)
    with pytest.raises(LimitExceeded):
        b.subscribe(1, T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"x"] * 5, now=1.0)
    assert batches(b.drain_events()) == [[b"x"] * 3]
    b.add_credit(1, sid, 100, 100, now=2.0)
    assert batches(b.drain_events()) == [[b"x"] * 2]
    with pytest.raises(ValueError):  # the wire cannot carry a negative grant
        b.add_credit(1, sid, -1, 0, now=2.0)


def test_pause_and_resume() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"batch_max_delay_us": 0}, now=0.0)
    b.create("queue", T, N, "q", now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.pause(1)
    sid2, _ = b.subscribe(1, T, N, "s", now=0.0)  # a new subscription starts paused
    cid = b.consume(1, T, N, "q", now=0.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)
    b.enqueue(1, T, N, "q", [b"m"], now=1.0)
    assert b.drain_events() == []
    b.resume(1, 2.0)
    out = b.drain_events()
    assert sorted(o.subscription_id for o in out if isinstance(o, RecordsDelivered)) == [sid, sid2]
    assert [o.consumer_id for o in out if isinstance(o, MessagesDelivered)] == [cid]


def test_detach_releases_everything() -> None:
    b = broker()
    b.create("stream", T, N, "s", now=0.0)
    b.create("queue", T, N, "q", {"visibility_timeout_ms": 60_000}, now=0.0)
    b.subscribe(1, T, N, "s", now=0.0)
    b.consume(1, T, N, "q", now=0.0)
    b.enqueue(1, T, N, "q", [b"m"], now=0.0)
    assert isinstance(b.drain_events()[0], MessagesDelivered)
    b.detach(1, 1.0)
    assert b.stats()["subscriptions"] == 0 and b.stats()["connections"] == 0
    b.attach(2, 1.0)
    b.consume(2, T, N, "q", now=1.0)
    (delivered,) = b.drain_events()  # returned at once, redelivered to the new consumer
    assert isinstance(delivered, MessagesDelivered)
    assert delivered.deliveries[0].attempt == 2


def test_publish_validation() -> None:
    b = broker(max_batch_records=2, max_payload_bytes=4, max_key_bytes=2, max_batch_bytes=6)
    b.create("stream", T, N, "s", now=0.0)
    with pytest.raises(InvalidArgument):
        b.publish(1, T, N, "s", [], now=0.0)
    with pytest.raises(InvalidArgument):
        b.publish(1, T, N, "s", [b"a"], keys=[b"k", b"k"], now=0.0)
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b"a"] * 3, now=0.0)
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b"aaaaa"], now=0.0)
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b"a"], keys=[b"kkk"], now=0.0)
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b"aaaa", b"aaaa"], now=0.0)
    assert b.publish(1, T, N, "s", [b"a", b"b"], keys=[b"k", None], headers=[None, {}], now=0.0)
    with pytest.raises(NotFound):
        b.publish(1, T, N, "nope", [b"a"], now=0.0)


def test_memory_budget_refuses_and_frees() -> None:
    b = broker(memory_limit_bytes=10)
    b.create("stream", T, N, "s", {"retention_max_records": 100}, now=0.0)
    b.create("stream", T, N, "ring", {"retention_max_records": 2}, now=0.0)
    b.publish(1, T, N, "s", [b"12345678"], now=0.0)
    with pytest.raises(Overloaded) as err:
        b.publish(1, T, N, "s", [b"123"], now=0.0)
    assert err.value.retryable
    b.delete("stream", T, N, "s", now=0.0)
    assert b.budget.used == 0
    # a full ring evicts as much as it adds, so it never needs more room
    for _ in range(5):
        b.publish(1, T, N, "ring", [b"12345"], now=0.0)
    assert b.budget.used == 10
    b.create("queue", T, N, "q", now=0.0)
    with pytest.raises(Overloaded):
        b.enqueue(1, T, N, "q", [b"x"], now=0.0)
    b.create("cache", T, N, "c", now=0.0)
    with pytest.raises(Overloaded):
        b.cache_put(T, N, "c", "k", b"v", now=0.0)
    assert b.stats()["memory_refusals"] == 3


def test_block_policy_through_facade() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"retention_max_records": 2, "slow_consumer": "block"}, now=0.0)
    b.subscribe(1, T, N, "s", credit_messages=0, now=0.0)
    b.publish(1, T, N, "s", [b"a", b"b"], now=0.0)
    with pytest.raises(Overloaded):
        b.publish(1, T, N, "s", [b"c"], now=0.0)
    assert b.stats()["stream_blocked_publishes"] == 1


def test_age_retention_timer_through_facade() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"retention_max_age_ms": 100}, now=0.0)
    b.publish(1, T, N, "s", [b"abc"], now=1.0)
    assert b.budget.used == 3
    deadline = b.get_timer()
    assert deadline is not None and deadline > 1.1
    b.handle_timer(deadline)
    assert b.budget.used == 0 and b.get_timer() is None


def test_update_applies_to_live_stream() -> None:
    b = broker()
    b.create("stream", T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"a", b"b", b"c"], now=0.0)
    b.update("stream", T, N, "s", {"retention_max_records": 1}, now=1.0)
    assert b.describe("stream", T, N, "s", now=1.0)["stats"]["records"] == 1
    assert b.budget.used == 1


def test_metadata_changed_by_another_writer() -> None:
    store = MemoryMetadataStore()
    b = Calls(Broker(), store)  # each call first takes in what the store reports
    other = Calls(Broker(), store)  # another broker writing to the same store
    b.attach(1, 0.0)
    other.create("stream", T, N, "s", now=0.0)  # created elsewhere: fed to this engine
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    other.update("stream", T, N, "s", {"batch_max_delay_us": 0}, now=1.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)  # the new generation applies: no waiting
    assert batches(b.drain_events()) == [[b"a"]]
    other.delete("stream", T, N, "s", now=2.0)
    other.create("stream", T, N, "s", now=2.0)  # re-created: a new uid
    assert b.publish(1, T, N, "s", [b"b"], now=2.0) == (0, 0)
    ended = b.drain_events()
    assert ended == [
        SubscriptionClosed(
            connection_id=1,
            subscription_id=sid,
            reason="deleted",
            message="the stream was deleted",
            next_offset=1,
        )
    ]
    other.delete("stream", T, N, "s", now=3.0)
    with pytest.raises(NotFound):
        b.publish(1, T, N, "s", [b"c"], now=3.0)
    other.create("queue", T, N, "q", now=3.0)
    cid = b.consume(1, T, N, "q", now=3.0)
    other.update("queue", T, N, "q", {"max_prefetch": 8}, now=3.0)
    b.enqueue(1, T, N, "q", [b"m"], now=3.0)
    assert b.describe("queue", T, N, "q", now=3.0)["settings"]["max_prefetch"] == 8
    other.delete("queue", T, N, "q", now=3.0)
    with pytest.raises(NotFound):
        b.enqueue(1, T, N, "q", [b"m"], now=3.0)
    ended_consumers = [o for o in b.drain_events() if isinstance(o, ConsumerClosed)]
    assert [(e.consumer_id, e.reason) for e in ended_consumers] == [(cid, "deleted")]
    assert b.stats()["consumers"] == 0
    other.create("cache", T, N, "c", now=3.0)
    assert b.cache_put(T, N, "c", "k", b"v", now=3.0) == (True, 1)
    other.update("cache", T, N, "c", {"max_entries": 5}, now=3.0)
    assert b.cache_get(T, N, "c", "k", now=3.0) is not None


def test_queue_operations() -> None:
    b = broker(max_consumers_per_connection=1)
    b.create("queue", T, N, "q", {"dead_letter_queue": "dlq", "max_attempts": 1}, now=0.0)
    b.create("queue", T, N, "dlq", now=0.0)
    assert b.enqueue(1, T, N, "q", [b"a", b"b"], now=0.0) == (0, 1)
    cid = b.consume(1, T, N, "q", prefetch=10, now=0.0)
    with pytest.raises(LimitExceeded):
        b.consume(1, T, N, "q", now=0.0)
    (out,) = b.drain_events()
    assert isinstance(out, MessagesDelivered)
    ids = [d.delivery_id for d in out.deliveries]
    b.ack(1, cid, ids[:1], now=1.0)
    with pytest.raises(NotFound):
        b.ack(1, cid, [999], now=1.0)
    with pytest.raises(InvalidArgument):
        b.nack(1, cid, ids[1:], delay_ms=-1, now=1.0)
    b.nack(1, cid, ids[1:], now=1.0)  # max_attempts 1: dead-lettered into dlq
    assert b.describe("queue", T, N, "dlq", now=1.0)["stats"]["records"] == 1
    with pytest.raises(NotFound):
        b.ack(1, 12345, [1], now=1.0)
    b.enqueue(1, T, N, "q", [b"c"], now=1.0)
    b.cancel_consumer(1, cid, now=2.0)
    ended = [o for o in b.drain_events() if isinstance(o, ConsumerClosed)]
    assert [(e.consumer_id, e.reason) for e in ended] == [(cid, "unsubscribed")]
    with pytest.raises(NotFound):
        b.cancel_consumer(1, cid, now=2.0)
    # "c" had its one attempt: losing its consumer dead-letters it rather than requeueing
    assert b.describe("queue", T, N, "dlq", now=2.0)["stats"]["records"] == 2


def test_queue_visibility_timeout_via_timer() -> None:
    b = broker()
    b.create("queue", T, N, "q", {"visibility_timeout_ms": 1000}, now=0.0)
    cid = b.consume(1, T, N, "q", now=0.0)
    b.enqueue(1, T, N, "q", [b"a"], now=0.0)
    b.drain_events()
    assert b.get_timer() == pytest.approx(1.0)
    b.handle_timer(1.0)
    (again,) = b.drain_events()
    assert isinstance(again, MessagesDelivered) and again.deliveries[0].attempt == 2
    assert again.consumer_id == cid


def test_cache_operations_and_change_feed() -> None:
    b = broker()
    b.create("cache", T, N, "c", {"default_ttl_ms": 1000}, now=0.0)
    sid, first = b.subscribe(1, T, N, "c", source="cache", now=0.0)
    assert first == 0
    assert b.cache_put(T, N, "c", "k", b"v1", now=0.0) == (True, 1)
    assert b.cache_put(T, N, "c", "k", b"v2", if_absent=True, now=0.0) == (False, 1)
    assert b.cache_put(T, N, "c", "k", b"v2", if_version=1, ttl_ms=0, now=0.0) == (True, 2)
    entry = b.cache_get(T, N, "c", "k", now=5.0)
    assert entry is not None and entry.value == b"v2" and entry.ttl_remaining_ms is None
    assert b.cache_get(T, N, "c", "missing", now=5.0) is None
    assert b.cache_delete(T, N, "c", "k", if_version=1, now=5.0) is False
    assert b.cache_delete(T, N, "c", "k", now=5.0) is True
    cache = b.registry.caches[(T, N, "c")].cache
    assert b.budget.used == cache.byte_size  # the budget tracks tables and feeds exactly
    deadline = b.get_timer()
    assert deadline is not None
    b.handle_timer(deadline)
    feed = [o for o in b.drain_events() if isinstance(o, RecordsDelivered)]
    ops = [h["op"] for o in feed for h in (o.slice.headers or [])]
    assert ops == [b"put", b"put", b"delete"]
    with pytest.raises(InvalidArgument):
        b.cache_put(T, N, "c", "", b"v", now=5.0)
    with pytest.raises(NotFound):
        b.cache_get(T, N, "nope", "k", now=5.0)
    b.delete("cache", T, N, "c", now=6.0)
    ended = b.drain_events()
    assert [(o.subscription_id, o.reason) for o in ended] == [(sid, "deleted")]
    assert b.budget.used == 0


def test_cache_expiry_lazy_and_swept() -> None:
    b = broker()
    b.create("cache", T, N, "c", now=0.0)
    b.subscribe(1, T, N, "c", source="cache", now=0.0)
    b.cache_put(T, N, "c", "lazy", b"v", ttl_ms=100, now=0.0)
    b.cache_put(T, N, "c", "swept", b"v", ttl_ms=100, now=0.0)
    assert b.cache_get(T, N, "c", "lazy", now=1.0) is None  # expired on read, logged
    b.handle_timer(1.0)  # sweeps "swept" and flushes the feed
    b.handle_timer(2.0)
    ops = [
        h["op"]
        for o in b.drain_events()
        if isinstance(o, RecordsDelivered)
        for h in o.slice.headers or []
    ]
    assert sorted(ops) == [b"expire", b"expire", b"put", b"put"]
    assert b.describe("cache", T, N, "c", now=2.0)["stats"]["expirations"] == 2


def test_drop_oldest_gap_through_facade() -> None:
    b = broker()
    b.create("stream", T, N, "s", {"retention_max_records": 2, "batch_max_delay_us": 0}, now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", credit_messages=0, now=0.0)
    b.publish(1, T, N, "s", [b"a", b"b"], now=0.0)
    b.publish(1, T, N, "s", [b"c", b"d"], now=0.0)
    b.add_credit(1, sid, 10, 0, now=1.0)
    out = b.drain_events()
    assert out[0] == RecordsSkipped(connection_id=1, subscription_id=sid, missed=2, next_offset=2)
    assert batches(out) == [[b"c", b"d"]]
    assert b.stats()["stream_gap_records"] == 2


def test_disconnect_policy_forgets_subscription() -> None:
    b = broker()
    b.create(
        "stream", T, N, "s", {"retention_max_records": 1, "slow_consumer": "disconnect"}, now=0.0
    )
    b.subscribe(1, T, N, "s", credit_messages=0, now=0.0)
    b.publish(1, T, N, "s", [b"a"], now=0.0)
    b.publish(1, T, N, "s", [b"b"], now=0.0)
    (ended,) = b.drain_events()
    assert isinstance(ended, SubscriptionClosed) and ended.reason == "lagged"
    assert b.stats()["subscriptions"] == 0


def test_shutdown() -> None:
    b = broker()
    b.create("stream", T, N, "s", now=0.0)
    b.create("queue", T, N, "q", now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    cid = b.consume(1, T, N, "q", now=0.0)
    b.shutdown(1.0)
    out = b.drain_events()
    assert [(type(o).__name__, o.reason) for o in out] == [
        ("SubscriptionClosed", "shutdown"),
        ("ConsumerClosed", "shutdown"),
    ]
    assert out[0].subscription_id == sid and out[1].consumer_id == cid
    for call in (
        lambda: b.publish(1, T, N, "s", [b"a"], now=1.0),
        lambda: b.subscribe(1, T, N, "s", now=1.0),
        lambda: b.create("stream", T, N, "t", now=1.0),
        lambda: b.cache_put(T, N, "c", "k", b"v", now=1.0),
    ):
        with pytest.raises(ShuttingDown):
            call()
    assert b.describe("stream", T, N, "s", now=1.0)["name"] == "s"


def test_timer_heap_drops_stale_and_closed_entries() -> None:
    b = broker()
    # A 2 ms delay is a real timer (a shorter one flushes at the end of the loop's pass).
    b.create("stream", T, N, "s", {"batch_max_events": 10, "batch_max_delay_us": 2000}, now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)
    assert b.get_timer() == pytest.approx(1.002)
    b.add_credit(1, sid, 1, 0, now=1.0001)  # a credit grant flushes at once
    assert batches(b.drain_events()) == [[b"a"]]
    assert b.get_timer() is None  # the stale deadline was dropped
    b.publish(1, T, N, "s", [b"b"], now=2.0)
    b.publish(1, T, N, "s", [b"c"], now=2.0001)  # the first deadline stands
    assert b.get_timer() == pytest.approx(2.002)
    b.delete("stream", T, N, "s", now=2.0001)
    b.handle_timer(3.0)  # the deleted stream's entry is skipped
    assert b.get_timer() is None


def test_delete_of_resource_this_broker_never_used() -> None:
    store = MemoryMetadataStore()
    b = Calls(Broker(), store)
    Calls(Broker(), store).create("stream", T, N, "s", now=0.0)  # another broker's
    b.delete("stream", T, N, "s", now=0.0)
    b.create("cache", T, N, "c", now=0.0)
    b.cache_put(T, N, "c", "k", b"v", now=0.0)
    assert b.cache_delete(T, N, "c", "k", now=0.0) is True  # no feed to pump
    b.delete("cache", T, N, "c", now=0.0)  # a cache without a feed
    assert b.budget.used == 0


def test_second_feed_subscription_shares_the_fanout() -> None:
    b = broker()
    b.create("cache", T, N, "c", {}, now=0.0)
    b.subscribe(1, T, N, "c", source="cache", now=0.0)
    b.subscribe(1, T, N, "c", source="cache", now=0.0)
    assert b.describe("cache", T, N, "c", now=0.0)["stats"]["feed_subscriptions"] == 2


def test_consumer_ended_for_detached_connection_is_dropped_quietly() -> None:
    b = broker()
    b.create("queue", T, N, "q", now=0.0)
    cid = b.consume(1, T, N, "q", now=0.0)
    b.cancel_consumer(1, cid, now=0.0)
    b.detach(1, 0.0)
    assert [type(o).__name__ for o in b.drain_events()] == ["ConsumerClosed"]


def test_dead_letter_target_missing_is_tolerated() -> None:
    b = broker()
    b.create("queue", T, N, "q", {"dead_letter_queue": "later"}, now=0.0)
    assert b.enqueue(1, T, N, "q", [b"a"], now=0.0) == (0, 0)


def test_timer_heap_reschedules_a_changed_deadline() -> None:
    b = broker()
    settings = {"batch_max_events": 10, "batch_max_delay_us": 2000, "retention_max_age_ms": 5000}
    b.create("stream", T, N, "s", settings, now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)
    assert b.get_timer() == pytest.approx(1.002)  # the flush comes before the age limit
    b.add_credit(1, sid, 1, 0, now=1.0001)
    assert b.get_timer() == pytest.approx(6.0015)  # now the age deadline
    b.handle_timer(6.0015)
    assert b.get_timer() is None and b.budget.used == 0


def test_pass_end_flush_bypasses_the_timer_heap() -> None:
    """A publish leaving a partial batch for the pass end (default batching) is listed for
    the pass end, not pushed on the partitions' heap: the timer says it is due at once,
    the next handle_timer delivers it, and nothing is left behind."""
    b = broker()
    b.create("stream", T, N, "s", now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.drain_events()
    assert b.get_timer() is None  # the glue asks after every pass
    b.publish(1, T, N, "s", [b"a"], now=1.0)
    b.publish(1, T, N, "s", [b"b"], now=1.0001)
    assert b.get_timer() == 1.0  # the first partial batch's pass
    assert len(b.registry.deadlines) == 0  # the heap was not involved
    assert batches(b.drain_events(), sid) == []
    b.handle_timer(1.0001)
    assert batches(b.drain_events(), sid) == [[b"a", b"b"]]
    assert b.get_timer() is None and len(b.registry.deadlines) == 0


def test_pass_end_flush_not_yet_due_goes_to_the_heap() -> None:
    """A listed flush that an earlier ``now`` does not reach stays scheduled (through the
    heap) and fires once due; a stream deleted while listed is forgotten."""
    b = broker()
    b.create("stream", T, N, "s", now=0.0)
    b.create("stream", T, N, "gone", now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.subscribe(1, T, N, "gone", now=0.0)
    b.drain_events()
    b.publish(1, T, N, "s", [b"a"], now=2.0)
    b.publish(1, T, N, "gone", [b"x"], now=2.0)
    b.delete("stream", T, N, "gone", now=2.0)
    b.drain_events()
    b.handle_timer(1.5)  # early: harmless, nothing lost
    assert b.drain_events() == []
    assert b.get_timer() == 2.0
    b.handle_timer(2.0)
    assert batches(b.drain_events(), sid) == [[b"a"]]
    assert b.get_timer() is None


def test_pass_end_flush_keeps_the_age_deadline() -> None:
    """With age retention the heap holds the age deadline; pass-end flushes leave it
    there, and a publish that moves it goes through the heap."""
    b = broker()
    b.create("stream", T, N, "s", {"retention_max_age_ms": 5000}, now=0.0)
    sid, _ = b.subscribe(1, T, N, "s", now=0.0)
    b.publish(1, T, N, "s", [b"a"], now=1.0)  # the age deadline appears: the heap
    assert b.get_timer() == 1.0
    b.handle_timer(1.0)
    assert batches(b.drain_events(), sid) == [[b"a"]]
    assert b.get_timer() == pytest.approx(6.0015)
    b.publish(1, T, N, "s", [b"b"], now=2.0)  # the same age deadline: listed
    assert b.get_timer() == 2.0
    b.handle_timer(2.0)
    assert batches(b.drain_events(), sid) == [[b"b"]]
    assert b.get_timer() == pytest.approx(6.0015)


def test_totals_for_metrics() -> None:
    """``Broker.totals``: queue and cache figures without per-message work, counters that
    survive deleting a resource, per-resource detail only up to ``detail_limit``."""
    b = broker()
    empty = b.totals(5.0, detail_limit=10)
    assert (empty.queues.queues, empty.queues.depth, empty.queues.oldest_age_s) == (0, 0, None)
    assert (empty.caches.caches, empty.caches.entries, empty.caches.hits) == (0, 0, 0)
    assert empty.queue_detail == {} and empty.cache_detail == {}

    b.create("queue", T, N, "q", {"max_attempts": 2}, now=0.0)
    b.create("queue", T, N, "idle", now=0.0)  # no group: its depth is its record count
    b.enqueue(1, T, N, "q", [b"a", b"b"], now=10.0)
    b.enqueue(1, T, N, "idle", [b"x"], now=12.0)
    cid = b.consume(1, T, N, "q", prefetch=1, now=10.0)
    (out,) = b.drain_events()
    assert isinstance(out, MessagesDelivered)
    b.nack(1, cid, [out.deliveries[0].delivery_id], now=11.0)  # "a" again: a redelivery
    (out,) = b.drain_events()
    assert isinstance(out, MessagesDelivered) and out.deliveries[0].attempt == 2
    b.nack(1, cid, [out.deliveries[0].delivery_id], now=11.0)  # attempts used up: dropped
    b.drain_events()
    q = b.totals(15.0).queues
    assert (q.queues, q.records, q.in_flight, q.redeliveries, q.dead_lettered) == (2, 3, 1, 1, 1)
    assert q.depth == 0 + 1  # "b" is in flight; the idle queue holds "x"
    assert q.oldest_age_s == 5.0  # "b", enqueued at 10.0 and not finished
    assert q.bytes == b.describe("queue", T, N, "q", now=15.0)["stats"]["bytes"] + 1

    b.create("cache", T, N, "c", {"max_entries": 1}, now=0.0)
    b.cache_put(T, N, "c", "k1", b"v", ttl_ms=1000, now=20.0)
    b.cache_put(T, N, "c", "k2", b"vv", now=20.0)  # evicts k1
    assert b.cache_get(T, N, "c", "k2", now=20.0) is not None
    assert b.cache_get(T, N, "c", "k1", now=20.0) is None
    c = b.totals(20.0).caches
    assert (c.caches, c.entries, c.bytes, c.hits, c.misses, c.puts, c.evictions) == (
        1,
        1,
        4,
        1,
        1,
        2,
        1,
    )

    detail = b.totals(20.0, detail_limit=2)
    assert set(detail.queue_detail) == {(T, N, "q"), (T, N, "idle")}
    assert detail.queue_detail[(T, N, "q")].redeliveries == 1
    assert detail.cache_detail[(T, N, "c")].hits == 1
    capped = b.totals(20.0, detail_limit=1)  # two queues > 1: totals only; one cache fits
    assert capped.queue_detail == {} and set(capped.cache_detail) == {(T, N, "c")}

    b.delete("queue", T, N, "q", now=30.0)
    b.delete("cache", T, N, "c", now=30.0)
    after = b.totals(30.0)
    assert (after.queues.queues, after.queues.redeliveries, after.queues.dead_lettered) == (1, 1, 1)
    assert after.queues.oldest_age_s == 18.0  # "x" of the idle queue
    assert (after.caches.caches, after.caches.entries, after.caches.bytes) == (0, 0, 0)
    assert (after.caches.hits, after.caches.misses, after.caches.evictions) == (1, 1, 1)


def test_count_limit_messages_name_what_is_counted() -> None:
    """A namespace full of queues used to answer 'at most 2 streams may exist here'."""
    b = broker(max_resources_per_namespace=2, max_namespaces_per_tenant=1, max_tenants=1)
    b.create("queue", T, N, "q1", now=0.0)
    b.create("queue", T, N, "q2", now=0.0)
    for kind in ("stream", "queue", "cache"):
        with pytest.raises(LimitExceeded) as err:
            b.create(kind, T, N, "more", now=0.0)
        assert str(err.value) == (
            "at most 2 resources (streams, queues and caches together) may exist in "
            "namespace default/default"
        )
        assert err.value.details == {"limit": 2}
    with pytest.raises(LimitExceeded, match="at most 1 namespaces may exist in tenant default"):
        b.create("namespace", T, "other", now=0.0)
    with pytest.raises(LimitExceeded, match="at most 1 tenants may exist"):
        b.create("tenant", "other", now=0.0)


def test_cache_compare_and_set_without_ttl_keeps_the_ttl() -> None:
    """CachePut with if_version and no ttl_ms keeps the entry's expiry (was: permanent)."""
    b = broker()
    b.create("cache", T, N, "c", now=0.0)
    _, version = b.cache_put(T, N, "c", "bob", b"42", ttl_ms=30_000, now=0.0)
    assert b.cache_put(T, N, "c", "bob", b"43", if_version=version, now=10.0) == (True, 2)
    entry = b.cache_get(T, N, "c", "bob", now=10.0)
    assert entry is not None and entry.value == b"43" and entry.ttl_remaining_ms == 20_000
    assert b.cache_get(T, N, "c", "bob", now=30.0) is None


def test_every_request_completes_through_the_events_before_what_it_causes() -> None:
    """A request's completion (or refusal) is an event naming the connection and the
    caller's number; it comes before the events the request caused."""
    b = Broker(BrokerConfig())
    b.attach(1, 0.0)
    Calls(b).create("stream", T, N, "s", {"batch_max_delay_us": 0}, now=0.0)
    b.describe(1, 10, "stream", T, N, "s", now=0.0)
    b.publish(2, 11, T, N, "s", [b"a", b"b"], now=0.0)  # any connection may publish
    b.subscribe(1, 12, T, N, "s", start=StartKind.EARLIEST, now=0.0)
    b.subscribe(1, 13, T, N, "missing", now=0.0)
    b.unsubscribe(1, 14, 1, now=0.0)
    out = b.drain_events()
    assert [(type(e).__name__, e.connection_id, getattr(e, "request", None)) for e in out] == [
        ("ResourceDescribed", 1, 10),
        ("Appended", 2, 11),
        ("SubscriptionOpened", 1, 12),
        ("RecordsDelivered", 1, None),
        ("RequestRefused", 1, 13),
        ("RequestCompleted", 1, 14),
        ("SubscriptionClosed", 1, None),
    ]
    assert isinstance(out[4], RequestRefused) and isinstance(out[4].error, NotFound)


def test_a_stopped_feed_needs_no_reply_and_an_unknown_one_is_ignored() -> None:
    b = Broker(BrokerConfig())
    b.attach(1, 0.0)
    Calls(b).create("queue", T, N, "q", now=0.0)
    b.consume(1, 2, T, N, "q", now=0.0)
    b.drain_events()
    b.cancel_consumer(1, None, 1, now=0.0)  # the client stopped its stream
    b.cancel_consumer(1, None, 1, now=0.0)  # again: ended already, nothing happens
    b.unsubscribe(1, None, 99, now=0.0)
    assert [type(e).__name__ for e in b.drain_events()] == ["ConsumerClosed"]


def test_admin_writes_complete_when_the_store_answers() -> None:
    """The engine never asks a store: an admin write is an event; the request completes when
    the glue reports the store's answer (at once for a memory store, later for etcd), and a
    store's refusal (another writer took the name meanwhile) refuses it."""
    b = Broker(BrokerConfig(create_defaults=False))
    for kind, path in ((Kind.TENANT, ("t", "", "")), (Kind.NAMESPACE, ("t", "n", ""))):
        record = ResourceRecord(kind=kind, tenant=path[0], namespace=path[1], uid=1)
        b.metadata_changed(kind, path, record, 0.0)
    b.create(7, 1, "stream", "t", "n", "s", now=1.0)
    b.create(7, 2, "queue", "t", "n", "q", now=1.0)
    first, second = b.drain_events()
    assert isinstance(first, MetadataWrite) and first.op is WriteOp.CREATE
    assert isinstance(second, MetadataWrite) and second.record.uid == 0  # the store gives it
    b.metadata_written(second.write_id, AlreadyExists("queue t/n/q exists already"), 2.0)
    (refused,) = b.drain_events()
    assert isinstance(refused, RequestRefused) and isinstance(refused.error, AlreadyExists)
    assert refused.request == 2
    b.metadata_written(first.write_id, replace(first.record, uid=42), 3.0)
    (done,) = b.drain_events()
    assert isinstance(done, ResourceDescribed) and (done.connection_id, done.request) == (7, 1)
    assert done.resource["uid"] == 42 and done.resource["stats"]["records"] == 0
    b.metadata_written(first.write_id, first.record, 3.0)  # a second answer: ignored
    assert b.drain_events() == [] and b.stats()["streams"] == 1
