"""Unit tests of felix_core.queues: every error path and each documented behaviour."""

from __future__ import annotations

import math

import pytest
from engine_calls import Calls
from queue_driver import QueueDriver

from felix_core.broker import Broker
from felix_core.errors import (
    AlreadyExists,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Overloaded,
    TooLarge,
)
from felix_core.events import ConsumerClosed, EngineEvent, MessageDeadLettered, MessagesDelivered
from felix_core.queues import (
    DEAD_LETTER_RETRY_S,
    TRIM_EVERY,
    QueueConfig,
    QueueDelivery,
)

Q = ("t", "ns", "q")
DLQ = ("t", "ns", "dlq")
T0 = 1_000.0


def deliveries(events: list[EngineEvent], consumer_id: int | None = None) -> list[QueueDelivery]:
    return [
        d
        for e in events
        if isinstance(e, MessagesDelivered) and consumer_id in (None, e.consumer_id)
        for d in e.deliveries
    ]


def engine(**config: object) -> QueueDriver:
    e = QueueDriver()
    e.create_queue(Q, QueueConfig(**config))  # type: ignore[arg-type]
    return e


# -- registry ----------------------------------------------------------------------------


def test_create_duplicate_and_lookup_errors() -> None:
    e = engine()
    assert Q in e
    assert ("t", "ns", "other") not in e
    with pytest.raises(AlreadyExists):
        e.create_queue(Q)
    with pytest.raises(NotFound) as info:
        e.queue(("t", "ns", "missing"))
    assert info.value.details == {"queue": "missing"}
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_records", 0),
        ("max_bytes", 0),
        ("visibility_timeout_s", 0.0),
        ("visibility_timeout_s", math.inf),
        ("visibility_timeout_s", math.nan),
        ("max_attempts", 0),
        ("dead_letter_queue", "q"),
        ("max_prefetch", 0),
    ],
)
def test_invalid_config_is_refused(field: str, value: object) -> None:
    e = QueueDriver()
    with pytest.raises(InvalidArgument) as info:
        e.create_queue(Q, QueueConfig(**{field: value}))  # type: ignore[arg-type]
    assert info.value.details == {"field": field}
    assert Q not in e


def test_unbounded_config_is_valid() -> None:
    e = engine(max_records=None, max_bytes=None, max_attempts=None)
    assert e.enqueue(Q, b"x" * 10_000, T0) == 0


def test_update_queue_validates_and_applies() -> None:
    e = engine()
    with pytest.raises(InvalidArgument):
        e.update_queue(Q, QueueConfig(max_prefetch=0))
    with pytest.raises(NotFound):
        e.update_queue(DLQ, QueueConfig())
    e.update_queue(Q, QueueConfig(max_prefetch=2))
    assert e.queue(Q).config.max_prefetch == 2
    with pytest.raises(LimitExceeded):
        e.consume(Q, 1, T0, prefetch=3)


def test_delete_queue_ends_consumers() -> None:
    e = engine()
    c1 = e.consume(Q, 7, T0)
    c2 = e.consume(Q, 7, T0, group="other")
    e.enqueue(Q, b"a", T0)
    e.drain_outputs()
    e.delete_queue(Q)
    ended = e.drain_outputs()
    assert ended == [
        ConsumerClosed(connection_id=7, consumer_id=c1, queue=Q, reason="deleted"),
        ConsumerClosed(connection_id=7, consumer_id=c2, queue=Q, reason="deleted"),
    ]
    assert Q not in e and e.byte_size == 0
    with pytest.raises(NotFound):
        e.ack(c1, [1], T0)
    with pytest.raises(NotFound):
        e.delete_queue(Q)
    assert e.get_timer() is None
    e.detach_connection(7, T0)  # nothing left to release


# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_returns_consecutive_offsets_and_counts_bytes() -> None:
    e = engine()
    assert e.enqueue(Q, b"abc", T0, key=b"k", headers={"h": b"v"}) == 0
    assert e.enqueue_batch(Q, [b"1", b"2"], T0) == 1
    assert e.queue(Q).log.byte_size == e.byte_size == 3 + 1 + 2 + 2
    assert e.stats(Q, T0).enqueued == 3


def test_too_large_message_and_batch() -> None:
    e = engine(max_bytes=10, max_records=2)
    with pytest.raises(TooLarge) as info:
        e.enqueue(Q, b"x" * 11, T0)
    assert not info.value.retryable
    with pytest.raises(TooLarge):
        e.enqueue_batch(Q, [b"a", b"b", b"c"], T0)


def test_full_queue_is_overloaded_then_has_room_after_acks() -> None:
    e = engine(max_records=2)
    e.enqueue_batch(Q, [b"a", b"b"], T0)
    with pytest.raises(Overloaded) as info:
        e.enqueue(Q, b"c", T0)
    assert info.value.retryable
    assert info.value.details == {"records": 2, "bytes": 2}
    cid = e.consume(Q, 1, T0)
    with pytest.raises(Overloaded):  # delivered but not finished: still held
        e.enqueue(Q, b"c", T0)
    e.ack(cid, [d.delivery_id for d in deliveries(e.drain_outputs())], T0)
    assert e.enqueue(Q, b"c", T0) == 2
    assert e.queue(Q).log.first_offset == 2


def test_full_queue_by_bytes() -> None:
    e = engine(max_bytes=4)
    e.enqueue(Q, b"abc", T0)
    with pytest.raises(Overloaded):
        e.enqueue(Q, b"de", T0)


def test_enqueue_batch_argument_errors() -> None:
    """A batch is validated once, by the engine, before it reaches a queue."""
    b = Calls(Broker())
    b.create("queue", "default", "default", "q", now=T0)
    with pytest.raises(InvalidArgument):
        b.enqueue(1, "default", "default", "q", [], now=T0)
    with pytest.raises(InvalidArgument):
        b.enqueue(1, "default", "default", "q", [b"a"], keys=[None, None], now=T0)
    with pytest.raises(InvalidArgument):
        b.enqueue(1, "default", "default", "q", [b"a"], headers=[], now=T0)
    with pytest.raises(NotFound):
        b.enqueue(1, "default", "default", "dlq", [b"a"], now=T0)
    assert b.registry.queues[("default", "default", "q")].log.next_offset == 0


def test_batch_keys_and_headers_are_delivered() -> None:
    e = engine(max_bytes=7)
    with pytest.raises(TooLarge):  # 1 + 1 + 1 + (1 + 4): keys and headers count
        e.enqueue_batch(Q, [b"a", b"b"], T0, keys=[b"k", None], headers=[None, {"h": b"vvvv"}])
    e.enqueue_batch(Q, [b"a", b"b"], T0, keys=[b"k", None])
    e.enqueue_batch(Q, [b"c"], T0, headers=[{"h": b"v"}])
    e.consume(Q, 1, T0)
    ds = deliveries(e.drain_outputs())
    assert [(d.payload, d.key, d.headers) for d in ds] == [
        (b"a", b"k", None),
        (b"b", None, None),
        (b"c", None, {"h": b"v"}),
    ]
    assert all(d.timestamp_ms == 1_000_000 and d.attempt == 1 for d in ds)


# -- consume / ack / nack ----------------------------------------------------------------


def test_consume_argument_errors() -> None:
    e = engine(max_prefetch=8)
    with pytest.raises(NotFound):
        e.consume(DLQ, 1, T0)
    with pytest.raises(InvalidArgument):
        e.consume(Q, 1, T0, group="")
    with pytest.raises(InvalidArgument):
        e.consume(Q, 1, T0, group="g" * 256)
    with pytest.raises(InvalidArgument):
        e.consume(Q, 1, T0, prefetch=0)
    with pytest.raises(LimitExceeded) as info:
        e.consume(Q, 1, T0, prefetch=9)
    assert info.value.details == {"prefetch": 9, "max_prefetch": 8}
    assert e.stats(Q, T0).groups == {}


def test_prefetch_limits_deliveries_and_ack_releases_more() -> None:
    e = engine()
    e.enqueue_batch(Q, [b"a", b"b", b"c"], T0)
    cid = e.consume(Q, 1, T0, prefetch=2)
    first = deliveries(e.drain_outputs())
    assert [d.offset for d in first] == [0, 1]
    assert [d.delivery_id for d in first] == [1, 2]
    assert first[0].deadline == T0 + 30.0
    e.ack(cid, [first[0].delivery_id], T0 + 1)
    [third] = deliveries(e.drain_outputs())
    assert third.offset == 2 and third.deadline == T0 + 31.0
    stats = e.stats(Q, T0 + 2)
    assert stats.in_flight == 2 and stats.depth == 0 and stats.records == 3
    assert stats.groups["default"].acked == 1


def test_round_robin_between_consumers_with_room() -> None:
    e = engine()
    a = e.consume(Q, 1, T0, prefetch=10)  # runs of 2 (a quarter of its prefetch)
    b = e.consume(Q, 2, T0, prefetch=1)
    e.enqueue_batch(Q, [b"0", b"1", b"2", b"3"], T0)
    events = e.drain_outputs()
    assert [d.offset for d in deliveries(events, a)] == [0, 1, 3]
    assert [d.offset for d in deliveries(events, b)] == [2]
    e.enqueue_batch(Q, [b"4", b"5"], T0)
    assert [d.offset for d in deliveries(e.drain_outputs(), a)] == [4, 5]


def test_small_prefetch_is_one_message_each() -> None:
    e = engine()
    ids = [e.consume(Q, i, T0, prefetch=7) for i in (1, 2, 3)]  # 7 // 4 = 1
    e.enqueue_batch(Q, [b"%d" % i for i in range(6)], T0)
    events = e.drain_outputs()
    assert [[d.offset for d in deliveries(events, c)] for c in ids] == [[0, 3], [1, 4], [2, 5]]


def test_dispatch_hands_out_runs_of_a_quarter_prefetch_in_one_delivery_event() -> None:
    """Four consumers with the default prefetch (256): a burst of 64 goes to one consumer
    in one MessagesDelivered (one frame), the next burst to the next consumer; a burst
    larger than a run is shared in runs of 64, round-robin."""
    e = engine()
    ids = [e.consume(Q, i, T0, prefetch=256) for i in (1, 2, 3, 4)]
    e.enqueue_batch(Q, [b"m"] * 64, T0)
    events = [x for x in e.drain_outputs() if isinstance(x, MessagesDelivered)]
    assert [(x.consumer_id, len(x.deliveries)) for x in events] == [(ids[0], 64)]
    e.enqueue_batch(Q, [b"m"] * 64, T0)
    events = [x for x in e.drain_outputs() if isinstance(x, MessagesDelivered)]
    assert [(x.consumer_id, len(x.deliveries)) for x in events] == [(ids[1], 64)]
    e.enqueue_batch(Q, [b"m"] * 200, T0)
    got = {
        x.consumer_id: [d.offset for d in x.deliveries]
        for x in e.drain_outputs()
        if isinstance(x, MessagesDelivered)
    }
    assert got == {
        ids[2]: list(range(128, 192)),
        ids[3]: list(range(192, 256)),
        ids[0]: list(range(256, 320)),
        ids[1]: list(range(320, 328)),
    }


def test_a_run_ends_where_the_consumers_prefetch_is_full() -> None:
    e = engine()
    a = e.consume(Q, 1, T0, prefetch=8)  # runs of 2
    e.enqueue_batch(Q, [b"m"] * 7, T0)
    assert len(deliveries(e.drain_outputs(), a)) == 7
    b = e.consume(Q, 2, T0, prefetch=8)
    e.enqueue_batch(Q, [b"m"] * 6, T0)  # a's run starts with room for one
    events = e.drain_outputs()
    assert [d.offset for d in deliveries(events, a)] == [7]
    assert [d.offset for d in deliveries(events, b)] == [8, 9, 10, 11, 12]


def test_ack_errors_keep_known_ids_acked() -> None:
    e = engine()
    e.enqueue(Q, b"a", T0)
    cid = e.consume(Q, 1, T0)
    other = e.consume(Q, 2, T0)
    [d] = deliveries(e.drain_outputs())
    with pytest.raises(NotFound):
        e.ack(999, [d.delivery_id], T0)
    with pytest.raises(NotFound):  # only the consumer it was delivered to may ack it
        e.ack(other, [d.delivery_id], T0)
    with pytest.raises(NotFound) as info:
        e.ack(cid, [d.delivery_id, 77], T0)
    assert info.value.details == {"delivery_ids": [77]}
    assert e.stats(Q, T0).groups["default"].acked == 1
    with pytest.raises(NotFound):  # acked twice
        e.ack(cid, [d.delivery_id], T0)


def test_nack_redelivers_with_attempt_and_delay() -> None:
    e = engine()
    e.enqueue(Q, b"a", T0)
    cid = e.consume(Q, 1, T0)
    [d1] = deliveries(e.drain_outputs())
    e.nack(cid, [d1.delivery_id], T0)
    [d2] = deliveries(e.drain_outputs())
    assert (d2.offset, d2.attempt) == (0, 2) and d2.delivery_id != d1.delivery_id
    e.nack(cid, [d2.delivery_id], T0 + 1, delay=5.0)
    assert deliveries(e.drain_outputs()) == []
    assert e.stats(Q, T0 + 1).depth == 1
    assert e.get_timer() == T0 + 6
    e.handle_timer(T0 + 5.9)
    assert deliveries(e.drain_outputs()) == []
    e.handle_timer(T0 + 6)
    [d3] = deliveries(e.drain_outputs())
    assert d3.attempt == 3
    stats = e.stats(Q, T0 + 6).groups["default"]
    assert (stats.nacked, stats.redeliveries, stats.delivered) == (2, 2, 3)


@pytest.mark.parametrize("delay", [-1.0, math.inf, math.nan])
def test_nack_bad_delay(delay: float) -> None:
    e = engine()
    cid = e.consume(Q, 1, T0)
    with pytest.raises(InvalidArgument):
        e.nack(cid, [1], T0, delay=delay)


def test_nack_unknown_ids_and_consumer() -> None:
    e = engine()
    cid = e.consume(Q, 1, T0)
    with pytest.raises(NotFound) as info:
        e.nack(cid, [5], T0)
    assert info.value.details == {"delivery_ids": [5]}
    with pytest.raises(NotFound):
        e.nack(cid + 1, [5], T0)


def test_visibility_timeout_redelivers_then_dead_letters_without_target() -> None:
    e = engine(visibility_timeout_s=10.0, max_attempts=2)
    e.enqueue(Q, b"a", T0)
    cid = e.consume(Q, 1, T0)
    [d1] = deliveries(e.drain_outputs())
    assert e.get_timer() == T0 + 10
    e.handle_timer(T0 + 10)
    [d2] = deliveries(e.drain_outputs())
    assert d2.attempt == 2 and d2.deadline == T0 + 20
    with pytest.raises(NotFound):  # the late ack of the first delivery
        e.ack(cid, [d1.delivery_id], T0 + 11)
    e.handle_timer(T0 + 20)
    assert e.drain_outputs() == [
        MessageDeadLettered(
            queue=Q, group="default", offset=0, attempts=2, reason="max_attempts", target=None
        )
    ]
    stats = e.stats(Q, T0 + 20)
    assert (stats.dead_lettered, stats.redeliveries, stats.depth, stats.in_flight) == (1, 1, 0, 0)
    assert stats.groups["default"].timeouts == 2
    assert stats.records == 0 and stats.oldest_age_s is None
    assert e.get_timer() is None


def test_dead_letter_to_queue_with_reason_headers() -> None:
    e = engine(max_attempts=1, dead_letter_queue="dlq")
    e.create_queue(DLQ)
    e.enqueue(Q, b"a", T0, key=b"k", headers={"user": b"1"})
    e.enqueue(Q, b"b", T0)
    cid = e.consume(Q, 1, T0)
    d_a, d_b = deliveries(e.drain_outputs())
    e.nack(cid, [d_a.delivery_id], T0 + 1)
    e.nack(cid, [d_b.delivery_id], T0 + 1, requeue=False)
    events = e.drain_outputs()
    assert [(ev.offset, ev.reason, ev.target) for ev in events] == [  # type: ignore[attr-defined]
        (0, "max_attempts", "dlq"),
        (1, "rejected", "dlq"),
    ]
    dcid = e.consume(DLQ, 2, T0 + 2)
    x, y = deliveries(e.drain_outputs())
    assert (x.payload, x.key, y.payload, y.key) == (b"a", b"k", b"b", None)
    assert x.headers == {
        "user": b"1",
        "x-felix-dead-letter-reason": b"max_attempts",
        "x-felix-last-failure": b"nack",
        "x-felix-original-queue": b"q",
        "x-felix-original-offset": b"0",
        "x-felix-group": b"default",
        "x-felix-attempts": b"1",
    }
    assert y.headers is not None and y.headers["x-felix-dead-letter-reason"] == b"rejected"
    assert y.timestamp_ms == 1_001_000
    e.ack(dcid, [x.delivery_id, y.delivery_id], T0 + 3)
    assert e.stats(Q, T0 + 3).dead_lettered == 2


def test_dead_letters_park_until_target_exists_and_has_room() -> None:
    e = engine(max_attempts=1, dead_letter_queue="dlq")
    e.enqueue_batch(Q, [b"a", b"b"], T0)
    cid = e.consume(Q, 1, T0)
    ds = deliveries(e.drain_outputs())
    e.nack(cid, [d.delivery_id for d in ds], T0)
    assert e.drain_outputs() == []
    group = e.stats(Q, T0).groups["default"]
    assert (group.dead_letter_pending, group.depth, group.dead_lettered) == (2, 2, 0)
    assert e.get_timer() == T0 + DEAD_LETTER_RETRY_S
    e.create_queue(DLQ, QueueConfig(max_records=1))
    e.handle_timer(T0 + DEAD_LETTER_RETRY_S)
    [moved] = e.drain_outputs()
    assert isinstance(moved, MessageDeadLettered) and moved.offset == 0
    assert e.stats(Q, T0).groups["default"].dead_letter_pending == 1
    assert e.get_timer() == T0 + 2 * DEAD_LETTER_RETRY_S
    dcid = e.consume(DLQ, 2, T0)
    e.ack(dcid, [d.delivery_id for d in deliveries(e.drain_outputs())], T0)
    e.handle_timer(T0 + 2 * DEAD_LETTER_RETRY_S)
    assert [ev.offset for ev in e.drain_outputs() if isinstance(ev, MessageDeadLettered)] == [1]
    assert e.stats(Q, T0).records == 0


def test_cancel_returns_in_flight_to_other_consumers() -> None:
    e = engine()
    e.enqueue_batch(Q, [b"a", b"b"], T0)
    a = e.consume(Q, 1, T0, prefetch=2)
    b = e.consume(Q, 2, T0, prefetch=2)
    assert [d.offset for d in deliveries(e.drain_outputs(), a)] == [0, 1]
    e.cancel(a, T0 + 1)
    moved = deliveries(e.drain_outputs(), b)
    # The loss is charged to the oldest delivery only; b waited in a's prefetch.
    assert [(d.offset, d.attempt) for d in moved] == [(0, 2), (1, 1)]
    with pytest.raises(NotFound):
        e.cancel(a, T0)
    assert e.stats(Q, T0).groups["default"].consumers == 1


def test_detach_connection_releases_all_its_consumers() -> None:
    e = engine()
    e.enqueue(Q, b"a", T0)
    a1 = e.consume(Q, 1, T0)
    e.consume(Q, 1, T0, group="g2")
    e.drain_outputs()
    e.pause_connection(1)
    e.detach_connection(1, T0)
    assert e.drain_outputs() == []
    with pytest.raises(NotFound):
        e.ack(a1, [1], T0)
    stats = e.stats(Q, T0)
    assert stats.in_flight == 0 and stats.depth == 1
    e.consume(Q, 1, T0)  # the pause ended with the connection
    [d] = deliveries(e.drain_outputs())
    assert d.attempt == 2


def test_paused_connection_gets_nothing_until_resumed() -> None:
    e = engine()
    e.pause_connection(3)
    a = e.consume(Q, 3, T0)
    e.enqueue(Q, b"a", T0)
    assert e.drain_outputs() == []
    b = e.consume(Q, 4, T0)
    e.enqueue(Q, b"b", T0)
    assert [d.offset for d in deliveries(e.drain_outputs(), b)] == [0, 1]
    e.pause_connection(4)
    e.enqueue(Q, b"c", T0)
    assert e.drain_outputs() == []
    e.resume_connection(3, T0)
    assert [d.offset for d in deliveries(e.drain_outputs(), a)] == [2]
    e.resume_connection(99, T0)  # unknown connections are ignored


def test_groups_fan_out_and_trim_waits_for_the_slowest() -> None:
    e = engine(max_records=TRIM_EVERY * 4, max_bytes=None)
    fast = e.consume(Q, 1, T0, prefetch=1024)
    slow = e.consume(Q, 2, T0, group="slow", prefetch=1)
    e.enqueue_batch(Q, [b"m"] * (TRIM_EVERY * 2), T0)
    events = e.drain_outputs()
    e.ack(fast, [d.delivery_id for d in deliveries(events, fast)], T0)
    [held] = deliveries(events, slow)
    assert e.queue(Q).log.first_offset == 0  # the slow group holds everything back
    stats = e.stats(Q, T0 + 4)
    assert stats.depth == TRIM_EVERY * 2 - 1 and stats.oldest_age_s == 4.0
    late = e.consume(Q, 3, T0, group="late", prefetch=1024)
    assert len(deliveries(e.drain_outputs(), late)) == TRIM_EVERY * 2
    e.ack(slow, [held.delivery_id], T0)
    e.delete_group(Q, "late")
    assert [type(ev) for ev in e.drain_outputs()] == [MessagesDelivered, ConsumerClosed]
    e.delete_group(Q, "slow")
    assert e.queue(Q).log.first_offset == TRIM_EVERY * 2
    with pytest.raises(NotFound):
        e.delete_group(Q, "slow")


def test_trim_runs_every_so_many_acks_and_on_timer() -> None:
    e = engine()
    cid = e.consume(Q, 1, T0, prefetch=1024)
    e.enqueue_batch(Q, [b"m"] * (TRIM_EVERY + 1), T0)
    ds = deliveries(e.drain_outputs())
    e.ack(cid, [ds[0].delivery_id], T0)
    assert e.queue(Q).log.first_offset == 0
    e.handle_timer(T0)
    assert e.queue(Q).log.first_offset == 1
    e.ack(cid, [d.delivery_id for d in ds[1:]], T0)
    assert e.queue(Q).log.record_count == 0


def test_deadlines_never_decrease_when_the_clock_steps_back() -> None:
    e = engine(visibility_timeout_s=10.0)
    e.consume(Q, 1, T0, prefetch=5)
    e.enqueue(Q, b"a", T0)
    e.enqueue(Q, b"b", T0 - 5)
    a, b = deliveries(e.drain_outputs())
    assert a.deadline == b.deadline == T0 + 10


def test_idle_engine_has_no_timer() -> None:
    e = engine()
    e.consume(Q, 1, T0)
    assert e.get_timer() is None
    e.handle_timer(T0)
    assert e.drain_outputs() == []
