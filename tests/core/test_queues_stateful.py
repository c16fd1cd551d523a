"""Stateful hypothesis test of the queue engine against a model, with fake time.

The model tracks every message by its offset: how many times it was delivered, whether it is
in flight (and to whom, until which deadline) and whether it is finished (acked or
dead-lettered). After each step the engine's outputs are checked against the model:

* a delivery's attempt number is exactly one more than the attempts charged before: a nack
  is charged; a timeout only when its consumer was not suspected (it then becomes suspected);
  a lost consumer's (cancel, detach) oldest delivery only, and only if it was not suspected;
* a consumer is suspected from the timeout that charged it until it acks or nacks (even
  unknown ids);
* a message is never in flight twice, never delivered once finished, never to a paused
  consumer, never to a suspected consumer while the group has one that is not, and never
  beyond a consumer's prefetch;
* dead letters happen only after ``max_attempts`` charged attempts (or a reject) and land in
  the DLQ.

At teardown everything is drained with a fresh consumer: every message enqueued is finished,
so nothing was lost.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from queue_driver import QueueDriver

from felix_core.errors import NotFound, Overloaded
from felix_core.events import MessageDeadLettered, MessagesDelivered
from felix_core.queues import QueueConfig

Q = ("t", "n", "work")
DLQ = ("t", "n", "dead")
VT = 10.0
MAX_ATTEMPTS = 3
MAX_RECORDS = 24


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.e = QueueDriver()
        self.e.create_queue(
            Q,
            QueueConfig(
                max_records=MAX_RECORDS,
                visibility_timeout_s=VT,
                max_attempts=MAX_ATTEMPTS,
                dead_letter_queue="dead",
            ),
        )
        self.e.create_queue(DLQ, QueueConfig(max_records=None, max_bytes=None))
        self.now = 1000.0
        self.enqueued: set[int] = set()
        self.finished: set[int] = set()
        self.attempts: dict[int, int] = {}
        # delivery id -> (offset, consumer id, deadline)
        self.inflight: dict[int, tuple[int, int, float]] = {}
        self.consumers: dict[int, tuple[int, int]] = {}  # consumer id -> (connection, prefetch)
        self.paused: set[int] = set()
        self.suspected: set[int] = set()  # consumer ids
        self.seen: set[int] = set()  # offsets delivered at least once
        self.stale: list[int] = []  # delivery ids no longer in flight
        self.redeliveries = 0
        self.dead = 0

    # -- output checking ----------------------------------------------------------------

    def absorb(self) -> None:
        for ev in self.e.drain_outputs():
            if isinstance(ev, MessagesDelivered):
                assert ev.consumer_id in self.consumers
                conn, prefetch = self.consumers[ev.consumer_id]
                assert conn == ev.connection_id and conn not in self.paused
                if ev.consumer_id in self.suspected:
                    assert self.suspected >= set(self.consumers), "a live consumer was skipped"
                for d in ev.deliveries:
                    assert d.offset in self.enqueued and d.offset not in self.finished
                    assert all(off != d.offset for off, _, _ in self.inflight.values())
                    assert d.attempt == self.attempts.get(d.offset, 0) + 1
                    assert d.attempt <= MAX_ATTEMPTS
                    assert d.payload == str(d.offset).encode()
                    assert d.deadline >= self.now + VT
                    self.attempts[d.offset] = d.attempt
                    self.redeliveries += d.offset in self.seen
                    self.seen.add(d.offset)
                    self.inflight[d.delivery_id] = (d.offset, ev.consumer_id, d.deadline)
                mine = sum(1 for _, c, _ in self.inflight.values() if c == ev.consumer_id)
                assert mine <= prefetch
            elif isinstance(ev, MessageDeadLettered):
                assert ev.queue == Q and ev.target == "dead"
                assert ev.offset not in self.finished
                assert ev.reason == "rejected" or ev.attempts == MAX_ATTEMPTS
                assert ev.attempts == self.attempts[ev.offset]
                self.finished.add(ev.offset)
                self.dead += 1
            else:  # pragma: no cover - nothing here deletes queues or groups
                raise AssertionError(f"unexpected {ev!r}")

    def drop_inflight(self, pred: Callable[[tuple[int, int, float]], bool]) -> list[int]:
        """Forget the matching deliveries; return them in delivery (= deadline) order."""
        gone = sorted(d for d, v in self.inflight.items() if pred(v))
        for did in gone:
            self.stale.append(did)
        return gone

    def lose(self, cid: int) -> None:
        """A consumer left: its oldest delivery is charged only if it was not suspected."""
        charged = cid not in self.suspected
        for did in self.drop_inflight(lambda v: v[1] == cid):
            offset, _, _ = self.inflight.pop(did)
            if not charged:
                self.attempts[offset] -= 1
            charged = False
        self.suspected.discard(cid)

    # -- rules ----------------------------------------------------------------------------

    @rule(n=st.integers(1, 6))
    def enqueue(self, n: int) -> None:
        base = self.e.queue(Q).log.next_offset
        payloads = [str(base + i).encode() for i in range(n)]
        try:
            got = self.e.enqueue_batch(Q, payloads, self.now)
        except Overloaded:
            assert self.e.queue(Q).log.record_count + n > MAX_RECORDS
            return
        assert got == base
        self.enqueued.update(range(base, base + n))
        self.absorb()

    @rule(conn=st.integers(1, 3), prefetch=st.integers(1, 4))
    def consume(self, conn: int, prefetch: int) -> None:
        cid = self.e.consume(Q, conn, self.now, prefetch=prefetch)
        self.consumers[cid] = (conn, prefetch)
        self.absorb()

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.consumers)))
        self.e.cancel(cid, self.now)
        del self.consumers[cid]
        self.lose(cid)
        self.absorb()

    @rule(conn=st.integers(1, 3))
    def detach(self, conn: int) -> None:
        self.e.detach_connection(conn, self.now)
        gone = {c for c, (k, _) in self.consumers.items() if k == conn}
        for cid in gone:
            del self.consumers[cid]
            self.lose(cid)
        self.paused.discard(conn)
        self.absorb()

    @rule(conn=st.integers(1, 3), pause=st.booleans())
    def pause_or_resume(self, conn: int, pause: bool) -> None:
        if pause:
            self.e.pause_connection(conn)
            self.paused.add(conn)
        else:
            self.e.resume_connection(conn, self.now)
            self.paused.discard(conn)
        self.absorb()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        did = data.draw(st.sampled_from(sorted(self.inflight)))
        offset, cid, _ = self.inflight.pop(did)
        self.e.ack(cid, [did], self.now)
        self.suspected.discard(cid)
        self.finished.add(offset)
        self.absorb()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data(), delay=st.sampled_from([0.0, 0.0, 3.0]), requeue=st.booleans())
    def nack(self, data: st.DataObject, delay: float, requeue: bool) -> None:
        did = data.draw(st.sampled_from(sorted(self.inflight)))
        _, cid, _ = self.inflight.pop(did)
        self.e.nack(cid, [did], self.now, delay=delay, requeue=requeue)
        self.suspected.discard(cid)
        self.stale.append(did)
        self.absorb()

    @precondition(lambda self: self.stale and self.consumers)
    @rule(data=st.data())
    def stale_ack_is_refused(self, data: st.DataObject) -> None:
        did = data.draw(st.sampled_from(self.stale))
        cid = data.draw(st.sampled_from(sorted(self.consumers)))
        try:
            self.e.ack(cid, [did], self.now)
        except NotFound as exc:
            assert exc.details == {"delivery_ids": [did]}
        else:  # pragma: no cover - the failure case
            raise AssertionError("a stale delivery id was accepted")
        self.suspected.discard(cid)  # a late ack still shows the consumer is alive
        self.absorb()

    @rule(dt=st.sampled_from([0.5, 2.0, 5.0, 11.0]))
    def advance(self, dt: float) -> None:
        timer = self.e.get_timer()
        due = [v[2] for v in self.inflight.values()]
        if due:
            assert timer is not None and timer <= min(due)
        self.now += dt
        self.e.handle_timer(self.now)
        for did in self.drop_inflight(lambda v: v[2] <= self.now):
            offset, cid, _ = self.inflight.pop(did)
            if cid in self.suspected:
                self.attempts[offset] -= 1  # not charged
            self.suspected.add(cid)
        self.absorb()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def counters_match(self) -> None:
        stats = self.e.stats(Q, self.now)
        assert stats.in_flight == len(self.inflight)
        if stats.groups:
            assert stats.groups["default"].suspected == len(self.suspected)
        assert stats.redeliveries == self.redeliveries
        assert stats.dead_lettered == self.dead == self.e.queue(DLQ).log.record_count
        assert stats.records <= MAX_RECORDS
        assert self.e.byte_size == stats.bytes + self.e.queue(DLQ).log.byte_size
        totals = self.e.totals(self.now)  # the engine-wide figures agree with per-queue ones
        dlq = self.e.stats(DLQ, self.now)
        assert totals.redeliveries == self.redeliveries
        assert totals.dead_lettered == self.dead
        assert totals.in_flight == stats.in_flight + dlq.in_flight
        assert totals.depth == stats.depth + dlq.depth
        assert (totals.records, totals.bytes) == (stats.records + dlq.records, self.e.byte_size)
        if stats.groups:
            held = {off for off, _, _ in self.inflight.values()}
            assert stats.depth == len(self.enqueued - self.finished - held)

    def teardown(self) -> None:
        for conn in list(self.paused):
            self.e.resume_connection(conn, self.now)
        self.paused.clear()
        self.absorb()
        cid = self.e.consume(Q, 9, self.now, prefetch=64)
        self.consumers[cid] = (9, 64)
        for _ in range(4 * MAX_ATTEMPTS):
            self.absorb()
            for did, (offset, owner, _) in list(self.inflight.items()):
                self.e.ack(owner, [did], self.now)
                self.suspected.discard(owner)
                self.finished.add(offset)
                del self.inflight[did]
            self.now += VT
            self.e.handle_timer(self.now)
        self.absorb()
        assert self.finished == self.enqueued, "a message was lost"
        stats = self.e.stats(Q, self.now)
        assert stats.depth == stats.in_flight == stats.records == 0


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestQueueMachine = QueueMachine.TestCase
