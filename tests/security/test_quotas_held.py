"""Per-tenant quotas on what a tenant holds, pure: live subscriptions (stream subscriptions
and cache change feeds), queue consumers and cache bytes. Each is refused LIMIT_EXCEEDED
naming the quota, counted, freed whatever ends the feed or removes the entry, and follows
the tenant's settings live; a durable cache's bytes are counted again after a restart."""

from __future__ import annotations

from typing import Any

import pytest
from engine_calls import Calls
from hypothesis import given
from hypothesis import strategies as st

from felix_core import Broker, BrokerConfig, InvalidArgument, LimitExceeded
from felix_core.disklog import DiskLogStore
from felix_core.events import MessagesDelivered
from felix_core.filesystem import MemoryFileSystem
from felix_core.metadata import Kind
from felix_core.quotas import (
    MAX_CACHE_BYTES,
    MAX_CONSUMERS,
    MAX_INFLIGHT_BYTES,
    MAX_SUBSCRIPTIONS,
    TenantQuotas,
)


class FakeFeed:
    def __init__(self) -> None:
        self.closed = False


def engine(**config: Any) -> Calls:
    b = Calls(Broker(BrokerConfig(**config)))
    for conn in (1, 2):
        b.attach(conn, 0.0)
    for tenant in ("a", "b"):
        b.create("tenant", tenant, "", "", now=0.0)
        b.create("namespace", tenant, "ns", "", now=0.0)
        for kind, name in (("stream", "s"), ("queue", "q"), ("cache", "c")):
            b.create(kind, tenant, "ns", name, now=0.0)
    return b


def refusal(exc: pytest.ExceptionInfo[LimitExceeded], quota: str) -> dict[str, Any]:
    assert not exc.value.retryable
    assert exc.value.details["quota"] == quota
    return dict(exc.value.details)


# -- the feed count ------------------------------------------------------------------------


def test_feeds_counted_until_closed_and_pruned_as_they_go() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_max_subscriptions=2))
    feeds = [FakeFeed(), FakeFeed()]
    for feed in feeds:
        quotas.check_feeds("a", MAX_SUBSCRIPTIONS)
        quotas.add_feed("a", MAX_SUBSCRIPTIONS, feed)
    with pytest.raises(LimitExceeded) as caught:
        quotas.check_feeds("a", MAX_SUBSCRIPTIONS)
    assert refusal(caught, MAX_SUBSCRIPTIONS) == {
        "tenant": "a",
        "quota": MAX_SUBSCRIPTIONS,
        "limit": 2,
    }
    quotas.check_feeds("b", MAX_SUBSCRIPTIONS)  # another tenant
    quotas.check_feeds("a", MAX_CONSUMERS)  # another quota (unlimited)
    feeds[0].closed = True  # however it ended
    quotas.check_feeds("a", MAX_SUBSCRIPTIONS)
    assert quotas.feeds("a", MAX_SUBSCRIPTIONS) == 1
    assert quotas.refused == {("a", MAX_SUBSCRIPTIONS): 1}
    feeds[1].closed = True
    assert quotas.feeds("a", MAX_SUBSCRIPTIONS) == 0
    assert quotas.usage() == {}


def test_unlimited_feeds_are_still_counted_and_memory_stays_bounded() -> None:
    quotas = TenantQuotas(BrokerConfig())
    live: list[FakeFeed] = []
    for _ in range(10_000):  # churn: each feed ends before the next opens
        quotas.check_feeds("a", MAX_CONSUMERS)
        feed = FakeFeed()
        quotas.add_feed("a", MAX_CONSUMERS, feed)
        feed.closed = True
        if len(live) < 5:
            live.append(other := FakeFeed())
            quotas.add_feed("a", MAX_CONSUMERS, other)
    assert len(quotas._feeds[("a", MAX_CONSUMERS)]) <= 64
    assert quotas.usage() == {("a", MAX_CONSUMERS): 5}
    quotas.set_tenant("a", {MAX_CONSUMERS: 5})  # a limit set later counts the open ones
    with pytest.raises(LimitExceeded):
        quotas.check_feeds("a", MAX_CONSUMERS)


# -- subscriptions and consumers in the engine ---------------------------------------------


def test_subscriptions_per_tenant_count_streams_and_change_feeds_of_every_connection() -> None:
    b = engine(tenant_max_subscriptions=3)
    sub1, _ = b.subscribe(1, "a", "ns", "s", now=0.0)
    b.subscribe(2, "a", "ns", "s", now=0.0)  # another connection, the same tenant
    b.subscribe(1, "a", "ns", "c", source="cache", now=0.0)  # a change feed counts too
    for source, name in (("stream", "s"), ("cache", "c")):
        with pytest.raises(LimitExceeded) as caught:
            b.subscribe(2, "a", "ns", name, source=source, now=0.0)
        assert refusal(caught, MAX_SUBSCRIPTIONS)["tenant"] == "a"
    b.subscribe(1, "b", "ns", "s", now=0.0)  # another tenant
    b.unsubscribe(1, sub1, now=0.0)  # a slot freed
    b.subscribe(2, "a", "ns", "s", now=0.0)
    with pytest.raises(LimitExceeded):
        b.subscribe(2, "a", "ns", "s", now=0.0)
    b.detach(2, 0.0)  # its connection went: both of its subscriptions free their slots
    b.subscribe(1, "a", "ns", "s", now=0.0)
    b.subscribe(1, "a", "ns", "s", now=0.0)
    assert b.quotas.refused == {("a", MAX_SUBSCRIPTIONS): 3}
    assert b.quotas.usage()[("a", MAX_SUBSCRIPTIONS)] == 3


def test_a_deleted_resource_frees_its_subscriptions_and_consumers() -> None:
    b = engine(tenant_max_subscriptions=1, tenant_max_consumers=1)
    b.subscribe(1, "a", "ns", "c", source="cache", now=0.0)
    b.consume(1, "a", "ns", "q", now=0.0)
    b.delete("cache", "a", "ns", "c", now=0.0)
    b.delete("queue", "a", "ns", "q", now=0.0)
    b.subscribe(1, "a", "ns", "s", now=0.0)
    b.create("queue", "a", "ns", "q2", now=0.0)
    b.consume(1, "a", "ns", "q2", now=0.0)


def test_consumers_per_tenant_refused_freed_and_changed_live() -> None:
    b = engine()
    b.update("tenant", "a", "", "", {MAX_CONSUMERS: 2}, now=0.0)
    first = b.consume(1, "a", "ns", "q", now=0.0)
    b.consume(2, "a", "ns", "q", group="other", now=0.0)
    with pytest.raises(LimitExceeded) as caught:
        b.consume(1, "a", "ns", "q", now=0.0)
    assert refusal(caught, MAX_CONSUMERS) == {"tenant": "a", "quota": MAX_CONSUMERS, "limit": 2}
    b.consume(1, "b", "ns", "q", now=0.0)  # the broker default: unlimited
    b.subscribe(1, "a", "ns", "s", now=0.0)  # subscriptions are another quota
    b.cancel_consumer(1, first, now=0.0)
    b.consume(1, "a", "ns", "q", now=0.0)
    b.update("tenant", "a", "", "", {MAX_CONSUMERS: 3}, now=0.0)  # raised live
    b.consume(1, "a", "ns", "q", now=0.0)
    b.update("tenant", "a", "", "", {MAX_CONSUMERS: 1}, now=0.0)  # lowered: open ones stay
    with pytest.raises(LimitExceeded):
        b.consume(2, "a", "ns", "q", now=0.0)
    assert b.quotas.usage()[("a", MAX_CONSUMERS)] == 3
    b.end_feeds(1, 0.0)  # a drain ends them
    b.end_feeds(2, 0.0)
    b.consume(2, "a", "ns", "q", now=0.0)


# -- cache bytes ---------------------------------------------------------------------------


def test_cache_bytes_per_tenant_across_caches_refused_and_freed() -> None:
    b = engine(tenant_max_cache_bytes=100)
    b.create("cache", "a", "ns", "c2", now=0.0)
    assert b.cache_put("a", "ns", "c", "k1", b"x" * 38, now=0.0) == (True, 1)  # 40 bytes
    assert b.cache_put("a", "ns", "c2", "k2", b"x" * 38, now=0.0) == (True, 1)  # 80
    with pytest.raises(LimitExceeded) as caught:
        b.cache_put("a", "ns", "c", "k3", b"x" * 19, now=0.0)  # 21 more: 101
    assert refusal(caught, MAX_CACHE_BYTES) == {
        "tenant": "a",
        "quota": MAX_CACHE_BYTES,
        "limit": 100,
        "used": 80,
        "bytes": 21,
    }
    assert b.cache_get("a", "ns", "c", "k3", now=0.0) is None  # nothing stored
    b.cache_put("a", "ns", "c", "k3", b"x" * 18, now=0.0)  # exactly 100
    assert b.quotas.cache_bytes == {"a": 100}
    b.update("tenant", "b", "", "", {MAX_CACHE_BYTES: 2000}, now=0.0)
    b.cache_put("b", "ns", "c", "k", b"x" * 1000, now=0.0)  # another tenant, its own limit
    # an overwrite is charged its growth only: smaller always passes, equal too
    b.cache_put("a", "ns", "c", "k1", b"y" * 30, now=0.0)
    assert b.quotas.cache_bytes["a"] == 92
    with pytest.raises(LimitExceeded):
        b.cache_put("a", "ns", "c", "k1", b"y" * 39, now=0.0)  # 9 more: 101
    b.cache_put("a", "ns", "c", "k1", b"y" * 38, now=0.0)  # 8 more: 100
    # a failed condition is an answer, not a refusal
    assert b.cache_put("a", "ns", "c", "k1", b"z" * 90, if_absent=True, now=0.0) == (False, 4)
    b.cache_delete("a", "ns", "c", "k1", now=0.0)  # deletes free
    b.cache_put("a", "ns", "c", "new", b"x" * 37, now=0.0)
    b.delete("cache", "a", "ns", "c2", now=0.0)  # a deleted cache frees its entries
    assert b.quotas.cache_bytes["a"] == 60
    assert b.quotas.refused == {("a", MAX_CACHE_BYTES): 2}
    assert b.quotas.usage()[("b", MAX_CACHE_BYTES)] == 1001


def test_expired_and_evicted_entries_free_their_bytes() -> None:
    b = engine(tenant_max_cache_bytes=50)
    b.update("cache", "a", "ns", "c", {"max_entries": 2}, now=0.0)
    b.cache_put("a", "ns", "c", "t", b"x" * 19, ttl_ms=1000, now=0.0)  # 20
    b.cache_put("a", "ns", "c", "u", b"x" * 19, now=0.0)  # 40
    with pytest.raises(LimitExceeded):
        b.cache_put("a", "ns", "c", "v", b"x" * 19, now=0.5)
    b.handle_timer(1.0)  # the sweep expires "t"
    assert b.quotas.cache_bytes["a"] == 20
    b.cache_put("a", "ns", "c", "v", b"x" * 19, now=1.0)  # 40
    b.cache_put("a", "ns", "c", "w", b"x" * 9, now=1.0)  # 50 before the LRU evicts "u"
    assert b.quotas.cache_bytes["a"] == 30
    b.cache_put("a", "ns", "c", "t", b"x" * 19, ttl_ms=100, now=1.0)  # evicts "v"
    # the put replacing an expired entry is charged all of its size (the old one went)
    assert b.cache_get("a", "ns", "c", "t", now=1.2) is None
    b.cache_put("a", "ns", "c", "t", b"x" * 19, now=1.2)
    assert b.quotas.cache_bytes["a"] == 30


def test_a_cache_quota_follows_the_tenant_setting() -> None:
    b = engine()
    b.cache_put("a", "ns", "c", "k", b"x" * 99, now=0.0)  # unlimited by default: 100
    b.update("tenant", "a", "", "", {MAX_CACHE_BYTES: 50}, now=0.0)  # lowered below use
    with pytest.raises(LimitExceeded):
        b.cache_put("a", "ns", "c", "j", b"", now=0.0)
    b.cache_put("a", "ns", "c", "k", b"x" * 9, now=0.0)  # shrinking is always admitted
    b.cache_put("a", "ns", "c", "j", b"x" * 39, now=0.0)  # 10 + 40
    b.update("tenant", "a", "", "", {MAX_CACHE_BYTES: None}, now=0.0)
    b.cache_put("a", "ns", "c", "big", b"x" * 1000, now=0.0)


@pytest.mark.parametrize(
    "key", ["max_subscriptions", "max_consumers", "max_cache_bytes", "max_inflight_bytes"]
)
def test_the_settings_are_positive_integers_or_null(key: str) -> None:
    b = engine()
    with pytest.raises(InvalidArgument):
        b.update("tenant", "a", "", "", {key: 0}, now=0.0)
    settings: dict[str, Any] = {f"tenant_{key}": 0}
    with pytest.raises(InvalidArgument, match=f"tenant_{key}"):
        BrokerConfig(**settings)
    assert b.update("tenant", "a", "", "", {key: 7}, now=0.0)["settings"][key] == 7


def _sync(calls: Calls, now: float) -> None:
    store = calls.broker.logs
    assert isinstance(store, DiskLogStore)
    store.handle_timer(now + 1.0)
    for _ in range(100):
        jobs = store.take_jobs()
        if not jobs:
            return
        for job in jobs:
            job.finish(job.run(), now + 1.0)
    raise AssertionError("jobs never settle")


def test_a_durable_cache_is_counted_again_after_a_restart() -> None:
    fs = MemoryFileSystem()
    config = BrokerConfig(tenant_max_cache_bytes=100)
    calls = Calls(Broker(config, logs=DiskLogStore(fs), now=0.0))
    calls.create("cache", "default", "default", "c", {"durability": "durable"}, now=0.0)
    calls.create("cache", "default", "default", "e", now=0.0)  # ephemeral: gone at restart
    calls.cache_put("default", "default", "c", "k", b"x" * 59, now=0.0)  # 60
    calls.cache_put("default", "default", "c", "d", b"x" * 9, now=0.0)
    calls.cache_delete("default", "default", "c", "d", now=0.0)
    calls.cache_put("default", "default", "e", "k", b"x" * 19, now=0.0)
    assert calls.quotas.cache_bytes == {"default": 80}
    _sync(calls, 0.0)

    fs.crash()
    engine_again = Broker(config, logs=DiskLogStore(fs), now=1.0)
    parents_first = {Kind.TENANT: 0, Kind.NAMESPACE: 1}
    for record in sorted(calls.store.records(), key=lambda r: parents_first.get(r.kind, 2)):
        engine_again.metadata_changed(record.kind, record.path, record, 1.0)
    again = Calls(engine_again, calls.store)
    assert again.quotas.cache_bytes == {"default": 60}
    with pytest.raises(LimitExceeded):
        again.cache_put("default", "default", "e", "k", b"x" * 40, now=1.0)
    again.cache_put("default", "default", "e", "k", b"x" * 39, now=1.0)


# -- in-flight bytes -----------------------------------------------------------------------


def delivered(b: Calls) -> list[tuple[str, int, bytes]]:
    """(queue, delivery id, payload) of every delivery since the last call."""
    return [
        (event.queue[2], d.delivery_id, d.payload)
        for event in b.drain_events()
        if isinstance(event, MessagesDelivered)
        for d in event.deliveries
    ]


def test_inflight_bytes_hold_deliveries_back_until_settled() -> None:
    b = engine(tenant_max_inflight_bytes=10)
    b.create("queue", "a", "ns", "q2", now=0.0)
    b.enqueue(1, "a", "ns", "q", [b"1111", b"2222", b"3333"], now=0.0)
    b.enqueue(1, "a", "ns", "q2", [b"55", b"66"], keys=[b"k", None], now=0.0)
    c1 = b.consume(1, "a", "ns", "q", now=0.0)
    got = delivered(b)
    assert [p for _, _, p in got] == [b"1111", b"2222"]  # a third would make 12 bytes
    assert b.quotas.usage()[("a", MAX_INFLIGHT_BYTES)] == 8
    b.consume(1, "a", "ns", "q2", now=0.0)  # another queue of the tenant: the same bytes
    assert delivered(b) == []  # 3 bytes with its key: 11
    assert b.quotas.held_back == {("a", MAX_INFLIGHT_BYTES): 2}
    b.update("tenant", "b", "", "", {MAX_INFLIGHT_BYTES: 1000}, now=0.0)
    b.enqueue(1, "b", "ns", "q", [b"x" * 100] * 3, now=0.0)  # another tenant, its own limit
    b.consume(2, "b", "ns", "q", now=0.0)
    assert len(delivered(b)) == 3
    b.ack(1, c1, [got[0][1]], now=0.0)  # 4 bytes free: q waited first and takes them
    assert [p for _, _, p in delivered(b)] == [b"3333"]
    assert b.quotas.usage()[("a", MAX_INFLIGHT_BYTES)] == 8
    b.ack(1, c1, [got[1][1]], now=0.0)  # the other queue is woken: 4 + 3 + 2
    assert [(q, p) for q, _, p in delivered(b)] == [("q2", b"55"), ("q2", b"66")]
    assert b.quotas.usage()[("a", MAX_INFLIGHT_BYTES)] == 9
    assert b.quotas.usage()[("b", MAX_INFLIGHT_BYTES)] == 300


def test_a_delivery_larger_than_the_limit_goes_alone() -> None:
    b = engine(tenant_max_inflight_bytes=10)
    b.enqueue(1, "a", "ns", "q", [b"x" * 50, b"y"], now=0.0)
    c = b.consume(1, "a", "ns", "q", now=0.0)
    [(_, big, _)] = delivered(b)
    b.ack(1, c, [big], now=0.0)
    assert [p for _, _, p in delivered(b)] == [b"y"]


def test_inflight_bytes_freed_by_nack_timeout_detach_cancel_and_delete_in_turns() -> None:
    b = engine(tenant_max_inflight_bytes=4)
    b.update("queue", "a", "ns", "q", {"visibility_timeout_ms": 1000}, now=0.0)
    b.create("queue", "a", "ns", "other", now=0.0)
    b.enqueue(1, "a", "ns", "q", [b"aaaa", b"bbbb"], now=0.0)
    b.enqueue(1, "a", "ns", "other", [b"cccc"], now=0.0)
    c = b.consume(1, "a", "ns", "q", now=0.0)
    [(_, first, _)] = delivered(b)
    b.consume(2, "a", "ns", "other", now=0.0)
    assert delivered(b) == []  # both queues wait for room, "q" first
    b.nack(1, c, [first], now=0.0)
    assert [(q, p) for q, _, p in delivered(b)] == [("q", b"aaaa")]  # it waited first
    b.handle_timer(1.0)  # its visibility timeout returns it; now "other" goes first
    assert [(q, p) for q, _, p in delivered(b)] == [("other", b"cccc")]
    b.detach(2, 1.0)  # the connection goes with its delivery
    assert [(q, p) for q, _, p in delivered(b)] == [("q", b"aaaa")]
    b.attach(2, 1.0)
    b.consume(2, "a", "ns", "other", now=1.0)
    assert delivered(b) == []
    b.cancel_consumer(1, c, now=1.0)  # the consumer goes with its delivery
    assert [(q, p) for q, _, p in delivered(b)] == [("other", b"cccc")]
    b.consume(1, "a", "ns", "q", now=1.0)
    assert delivered(b) == []
    b.delete("queue", "a", "ns", "other", now=1.0)  # the queue goes with its delivery
    assert [(q, p) for q, _, p in delivered(b)] == [("q", b"aaaa")]
    assert b.quotas.usage()[("a", MAX_INFLIGHT_BYTES)] == 4


def test_a_raised_inflight_limit_applies_at_once() -> None:
    b = engine()
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: 1}, now=0.0)
    b.enqueue(1, "a", "ns", "q", [b"1", b"2", b"3"], now=0.0)
    b.consume(1, "a", "ns", "q", now=0.0)
    assert len(delivered(b)) == 1
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: 3}, now=0.0)
    assert len(delivered(b)) == 2
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: None}, now=0.0)  # unlimited again
    b.enqueue(1, "a", "ns", "q", [b"x" * 100] * 2, now=0.0)
    assert len(delivered(b)) == 2


def test_redeliveries_held_back_keep_their_turn() -> None:
    b = engine(tenant_max_inflight_bytes=12)
    b.enqueue(1, "a", "ns", "q", [b"0000", b"1111", b"2222", b"3333"], now=0.0)
    c = b.consume(1, "a", "ns", "q", prefetch=4, now=0.0)
    ids = [did for _, did, _ in delivered(b)]
    assert len(ids) == 3
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: 8}, now=0.0)  # lowered below use
    b.nack(1, c, ids, now=0.0)  # three come back; two fit
    again = delivered(b)
    assert [p for _, _, p in again] == [b"0000", b"1111"]
    b.ack(1, c, [again[0][1]], now=0.0)
    third = delivered(b)
    assert [p for _, _, p in third] == [b"2222"]  # the held-back redelivery, before "3333"
    b.ack(1, c, [again[1][1], third[0][1]], now=0.0)
    assert [p for _, _, p in delivered(b)] == [b"3333"]
    stats = b.describe("queue", "a", "ns", "q", now=0.0)["stats"]["groups"]["default"]
    assert stats["redeliveries"] == 3  # counted once each, not when held back


def test_a_limit_set_on_a_busy_tenant_counts_what_is_in_flight() -> None:
    b = engine()  # unlimited: nothing is counted
    b.enqueue(1, "a", "ns", "q", [b"1234", b"5678", b"9abc"], now=0.0)
    c = b.consume(1, "a", "ns", "q", prefetch=2, now=0.0)
    first, _ = delivered(b)
    meter = b.quotas.inflight("a")
    assert meter.held == 0 and ("a", MAX_INFLIGHT_BYTES) not in b.quotas.usage()
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: 4}, now=0.0)
    assert meter.held == 8  # the two deliveries made while unlimited
    b.ack(1, c, [first[1]], now=0.0)
    assert delivered(b) == []  # 4 + 4 > 4: the third waits
    b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: None}, now=0.0)  # lifted
    assert [p for _, _, p in delivered(b)] == [b"9abc"] and meter.held == 0
    assert len(meter.holders) == 1
    b.delete("queue", "a", "ns", "q", now=0.0)
    assert meter.holders == {}  # a deleted queue is not kept


def test_a_deleted_tenant_leaves_no_meters_or_feed_lists() -> None:
    b = engine(tenant_max_inflight_bytes=100, tenant_max_cache_bytes=100)
    b.create("tenant", "gone", "", "", now=0.0)
    b.create("namespace", "gone", "ns", "", now=0.0)
    for kind, name in (("stream", "s"), ("queue", "q"), ("cache", "c")):
        b.create(kind, "gone", "ns", name, now=0.0)
    b.subscribe(1, "gone", "ns", "s", now=0.0)
    b.consume(1, "gone", "ns", "q", now=0.0)
    b.cache_put("gone", "ns", "c", "k", b"v", now=0.0)
    for kind, name in (("stream", "s"), ("queue", "q"), ("cache", "c")):
        b.delete(kind, "gone", "ns", name, now=0.0)
    b.delete("namespace", "gone", "ns", "", now=0.0)
    b.delete("tenant", "gone", "", "", now=0.0)
    quotas = b.quotas
    assert "gone" not in quotas._cache_meters and "gone" not in quotas._inflight
    assert not any(tenant == "gone" for tenant, _ in quotas._feeds)
    assert "a" in quotas._inflight  # the others stay


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.sampled_from("qr"), st.integers(0, 12)),
        st.tuples(st.just("consume"), st.sampled_from("qr"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("nack"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("timer"), st.just(""), st.booleans()),
        st.tuples(st.just("reconnect"), st.just(""), st.booleans()),
        st.tuples(st.just("limit"), st.just(""), st.booleans()),
    ),
    max_size=40,
)


class InflightRun:
    """Tenant ``a``'s queues ``q`` and ``r`` (one group each) under an in-flight limit,
    driven by the ops of the test below."""

    def __init__(self, limit: int) -> None:
        self.b = b = engine()  # the tenant's own setting: null lifts it
        b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: limit}, now=0.0)
        self.limit = limit
        b.create("queue", "a", "ns", "r", now=0.0)
        for name in "qr":
            settings = {"visibility_timeout_ms": 1000, "max_attempts": None}
            b.update("queue", "a", "ns", name, settings, now=0.0)
        self.now = 0.0
        self.bounded = True  # the limit held all along (never lifted and set again)
        self.consumers: list[int] = []
        self.acked: dict[str, list[int]] = {"q": [], "r": []}

    def held_by(self, consumer: int | None = None) -> list[tuple[str, int, int]]:
        """(queue, delivery id, offset) of the deliveries in flight (to one consumer)."""
        return [
            (p.path[2], did, d.offset)
            for p in self.b.registry.queues.values()
            if p.path[0] == "a"
            for g in p.queue.groups.values()
            for c in g.consumers
            if consumer is None or c.id == consumer
            for did, d in c.inflight.items()
        ]

    def ack(self, consumer: int, held: list[tuple[str, int, int]]) -> None:
        self.b.ack(1, consumer, [did for _, did, _ in held], now=self.now)
        for queue, _, offset in held:
            self.acked[queue].append(offset)

    def step(self, op: str, arg: Any, flag: Any) -> None:
        b = self.b
        if op == "enqueue":
            b.enqueue(1, "a", "ns", arg, [b"x" * flag], now=self.now)
        elif op == "consume":
            self.consumers.append(b.consume(1, "a", "ns", arg, prefetch=flag, now=self.now))
        elif op == "timer":
            self.now += 1.0
            b.handle_timer(self.now)
        elif op == "reconnect":
            b.detach(1, self.now)
            b.attach(1, self.now)
            self.consumers.clear()
        elif op == "limit":  # lifted (flag) or set again: counted from what is in flight
            self.bounded = False
            value = None if flag else self.limit
            b.update("tenant", "a", "", "", {MAX_INFLIGHT_BYTES: value}, now=self.now)
        elif self.consumers:
            consumer = self.consumers[arg % len(self.consumers)]
            held = self.held_by(consumer)[: 1 if flag else None]
            if op == "cancel":
                b.cancel_consumer(1, consumer, now=self.now)
                self.consumers.remove(consumer)
            elif held and op == "ack":
                self.ack(consumer, held)
            elif held:
                b.nack(1, consumer, [did for _, did, _ in held], now=self.now)

    def check(self) -> None:
        deliveries = [
            d
            for p in self.b.registry.queues.values()
            if p.path[0] == "a"
            for g in p.queue.groups.values()
            for c in g.consumers
            for d in c.inflight.values()
        ]
        meter = self.b.quotas.inflight("a")
        if meter.limit is None:  # the tenant's limit was lifted: nothing is counted
            assert meter.held == 0
            return
        assert meter.held == sum(len(d.payload) for d in deliveries)
        assert not self.bounded or meter.held <= self.limit or len(deliveries) == 1
        if not deliveries:  # nothing in flight to wake a waiting group: none may wait
            for p in self.b.registry.queues.values():
                for g in p.queue.groups.values():
                    if g.consumers:
                        assert not g.ready and g.cursor == p.queue.log.next_offset


@given(ops=OPS, limit=st.integers(1, 20))
def test_inflight_bytes_match_the_deliveries_and_nothing_waits_for_nothing(
    ops: list[tuple[str, Any, Any]], limit: int
) -> None:
    """Whatever happens, the tenant's in-flight bytes are the sum of its unsettled
    deliveries, stay within the limit (or are one delivery alone), no group waits with
    nothing in flight to wake it, and every message is delivered and acked in the end."""
    run = InflightRun(limit)
    for op, arg, flag in ops:
        run.step(op, arg, flag)
        run.check()
    run.step("limit", "", False)  # limited again
    for queue in "qr":  # drain: every message enqueued is delivered and acked once
        run.step("consume", queue, 3)
    for _ in range(200):
        held = run.held_by()
        if not held:
            break
        for consumer in run.consumers:
            mine = run.held_by(consumer)
            if mine:
                run.ack(consumer, mine)
        run.check()
    for queue in "qr":
        log = run.b.registry.queues[("a", "ns", queue)].queue.log
        assert sorted(run.acked[queue]) == list(range(log.next_offset))
