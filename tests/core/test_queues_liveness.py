"""Consumer liveness in the queue engine: a consumer that lets a delivery time out is
suspected, gets nothing while its group has a live consumer, and its silence costs a
message at most one attempt (docs/engine-queues-cache.md, "Silent consumers")."""

from __future__ import annotations

import pytest
from queue_driver import QueueDriver

from felix_core.errors import NotFound
from felix_core.events import EngineEvent, MessageDeadLettered, MessagesDelivered
from felix_core.queues import QueueConfig, QueueDelivery

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


def test_silent_consumer_costs_no_dead_letters_while_a_live_one_waits() -> None:
    """The black-box repro (issue 8, item 3): visibility timeout 3 s, max attempts 3, ten
    messages held by a consumer that then goes silent (SIGKILL, before the idle timeout
    notices), one live consumer waiting. Before the fix 3 of 10 were dead-lettered."""
    e = engine(visibility_timeout_s=3.0, max_attempts=3, dead_letter_queue="dlq")
    e.create_queue(DLQ)
    silent = e.consume(Q, 1, T0, prefetch=64)
    e.enqueue_batch(Q, [b"%d" % i for i in range(10)], T0)
    assert len(deliveries(e.drain_outputs(), silent)) == 10
    live = e.consume(Q, 2, T0, prefetch=1)
    assert e.drain_outputs() == []
    acked: list[int] = []
    late_to_silent: list[int] = []
    dead: list[MessageDeadLettered] = []
    now = T0
    for _ in range(120):  # 60 s of fake time, in 0.5 s steps
        now += 0.5
        e.handle_timer(now)
        events = e.drain_outputs()
        while events:
            for ev in events:
                if isinstance(ev, MessageDeadLettered):
                    dead.append(ev)
                elif isinstance(ev, MessagesDelivered) and ev.consumer_id == silent:
                    late_to_silent += [d.offset for d in ev.deliveries]
                elif isinstance(ev, MessagesDelivered):
                    e.ack(live, [d.delivery_id for d in ev.deliveries], now)
                    acked += [d.offset for d in ev.deliveries]
            events = e.drain_outputs()
    assert dead == []
    assert sorted(acked) == list(range(10))
    assert late_to_silent == []
    stats = e.stats(Q, now)
    assert (stats.dead_lettered, stats.in_flight, stats.depth) == (0, 0, 0)
    assert stats.groups["default"].suspected == 1
    assert e.stats(DLQ, now).records == 0


def test_only_the_oldest_timed_out_delivery_is_charged() -> None:
    e = engine(visibility_timeout_s=10.0, max_attempts=5)
    a = e.consume(Q, 1, T0, prefetch=3)
    e.enqueue_batch(Q, [b"0", b"1", b"2"], T0)
    e.drain_outputs()
    b = e.consume(Q, 2, T0, prefetch=3)
    e.handle_timer(T0 + 10)
    events = e.drain_outputs()
    assert deliveries(events, a) == []
    moved = deliveries(events, b)
    assert {d.offset: d.attempt for d in moved} == {0: 2, 1: 1, 2: 1}
    stats = e.stats(Q, T0 + 10).groups["default"]
    assert (stats.timeouts, stats.redeliveries, stats.suspected) == (3, 3, 1)


def test_suspected_consumer_gets_nothing_until_it_acks_or_nacks() -> None:
    e = engine(visibility_timeout_s=10.0)
    a = e.consume(Q, 1, T0, prefetch=4)
    e.enqueue(Q, b"first", T0)
    [late] = deliveries(e.drain_outputs(), a)
    b = e.consume(Q, 2, T0, prefetch=1)
    e.handle_timer(T0 + 10)
    [redelivered] = deliveries(e.drain_outputs(), b)
    assert redelivered.attempt == 2
    e.enqueue_batch(Q, [b"x", b"y"], T0 + 11)  # b is full, a is suspected: y waits
    assert deliveries(e.drain_outputs()) == []
    assert e.stats(Q, T0 + 11).depth == 2
    with pytest.raises(NotFound):  # a late ack (the id timed out) still shows a is alive
        e.ack(a, [late.delivery_id], T0 + 12)
    assert [d.offset for d in deliveries(e.drain_outputs(), a)] == [1, 2]
    assert e.stats(Q, T0 + 12).groups["default"].suspected == 0


def test_nack_also_clears_the_suspicion() -> None:
    e = engine(visibility_timeout_s=10.0)
    a = e.consume(Q, 1, T0, prefetch=2)
    e.enqueue_batch(Q, [b"0", b"1"], T0)
    e.drain_outputs()
    e.handle_timer(T0 + 5)
    e.consume(Q, 2, T0 + 5, prefetch=1)
    e.enqueue(Q, b"2", T0 + 5)
    e.drain_outputs()
    e.handle_timer(T0 + 10)  # a's two deliveries time out; b holds offset 2
    assert deliveries(e.drain_outputs()) == []
    e.nack(a, [], T0 + 11)
    assert [d.offset for d in deliveries(e.drain_outputs(), a)] == [0, 1]


def test_a_group_of_suspects_is_still_served_without_charging_attempts() -> None:
    """With no live consumer the message goes to a suspected one (the spec's redelivery
    after the visibility timeout), but its timeouts there cost nothing until the consumer
    shows life; then the next timeout is charged again."""
    e = engine(visibility_timeout_s=10.0, max_attempts=2)
    a = e.consume(Q, 1, T0)
    e.enqueue(Q, b"m", T0)
    [d] = deliveries(e.drain_outputs())
    now = T0
    for _ in range(5):  # a never answers: the message is redelivered, never dead-lettered
        now = d.deadline
        e.handle_timer(now)
        [d] = deliveries(e.drain_outputs())
        assert d.attempt == 2
    e.nack(a, [], now)  # a shows life: its next timeout is charged and is the last one
    e.handle_timer(d.deadline)
    [dead] = e.drain_outputs()
    assert isinstance(dead, MessageDeadLettered) and dead.attempts == 2
    assert e.stats(Q, d.deadline).groups["default"].timeouts == 6


def test_losing_a_consumer_charges_its_oldest_delivery_unless_it_was_suspected() -> None:
    e = engine(visibility_timeout_s=10.0)
    e.consume(Q, 1, T0, prefetch=2)
    e.enqueue_batch(Q, [b"0", b"1"], T0)
    e.drain_outputs()
    e.detach_connection(1, T0 + 1)
    b = e.consume(Q, 2, T0 + 1, prefetch=2)
    assert [(d.offset, d.attempt) for d in deliveries(e.drain_outputs(), b)] == [(0, 2), (1, 1)]
    # b goes silent: the timeout charges offset 0 only and suspects b, which is alone, so
    # it is served again
    e.handle_timer(T0 + 11)
    assert [(d.offset, d.attempt) for d in deliveries(e.drain_outputs(), b)] == [(0, 3), (1, 1)]
    e.enqueue(Q, b"2", T0 + 11)
    assert e.drain_outputs() == []  # b is full
    assert e.stats(Q, T0 + 11).groups["default"].suspected == 1
    e.cancel(b, T0 + 12)  # losing a suspected consumer charges nothing
    assert e.stats(Q, T0 + 12).groups["default"].suspected == 0
    c = e.consume(Q, 3, T0 + 12, prefetch=3)
    got = {d.offset: d.attempt for d in deliveries(e.drain_outputs(), c)}
    assert got == {0: 3, 1: 1, 2: 1}
