"""Queue delivery: dispatch, redelivery, dead-lettering, the timer and the output buffer.

The base of :class:`~felix_core.queues.QueueEngine`: it holds the engine's state and the
machinery every input ends in. ``_dispatch`` hands messages to a
group's consumers, ``_return`` makes a message deliverable again (or dead-letters it once
its attempts are used up), ``_dead_letter`` moves, drops or parks a message, and
``handle_timer`` fires visibility timeouts, delayed nacks and parked dead letters. The
message state table these moves implement is the theory of operation in
:mod:`felix_core.queues`.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush

from felix_core.errors import NotFound
from felix_core.events import EngineEvent, MessageDeadLettered, MessagesDelivered
from felix_core.log import LogSlice, record_size
from felix_core.queue_state import Queue, _Consumer, _Group, _make_room, _Usage
from felix_core.queue_types import DEAD_LETTER_RETRY_S, QueueDelivery, QueueKey

__all__: list[str] = []


class _DeliveryMachinery:
    """The engine's state, its outputs and timer, and how messages move inside a group.

    Not used on its own: :class:`~felix_core.queues.QueueEngine` is the public class.
    """

    __slots__ = (
        "_by_connection",
        "_consumers",
        "_next_consumer_id",
        "_next_delivery_id",
        "_outputs",
        "_paused",
        "_queues",
        "_usage",
    )

    def __init__(self) -> None:
        """Create an engine with no queues."""
        self._queues: dict[QueueKey, Queue] = {}
        self._usage = _Usage()
        self._consumers: dict[int, _Consumer] = {}
        self._by_connection: dict[int, dict[int, _Consumer]] = {}
        self._paused: set[int] = set()
        self._outputs: list[EngineEvent] = []
        self._next_consumer_id = 1
        self._next_delivery_id = 1

    def queue(self, queue: QueueKey) -> Queue:
        """Look a queue up.

        Args:
            queue: ``(tenant, namespace, name)``.

        Returns:
            The :class:`Queue`.

        Raises:
            NotFound: no such queue.
        """
        q = self._queues.get(queue)
        if q is None:
            raise NotFound(f"queue {queue[2]!r} not found", details={"queue": queue[2]})
        return q

    # -- outputs and time ---------------------------------------------------------------

    def drain_outputs(self) -> list[EngineEvent]:
        """Take the events produced since the last call.

        Returns:
            :class:`MessagesDelivered`, :class:`ConsumerClosed` and
            :class:`MessageDeadLettered` records, in the order they happened.
        """
        out = self._outputs
        self._outputs = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline (visibility timeout, delayed nack, parked dead letter).

        Returns:
            An absolute time in seconds, or None when nothing is scheduled.
        """
        t = math.inf
        for q in self._queues.values():
            for g in q.groups.values():
                t = min(t, g.next_deadline())
        return None if t == math.inf else t

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now`` and deliver what became ready.

        Args:
            now: the current time.
        """
        for q in list(self._queues.values()):
            for g in q.groups.values():
                self._fire(g, now)
            if q.finished:
                q.trim()

    # -- internals ----------------------------------------------------------------------

    def _fire(self, g: _Group, now: float) -> None:
        inflight = g.inflight
        while inflight:
            did, c = next(iter(inflight.items()))
            d = c.inflight[did]
            if d.deadline > now:
                break
            del inflight[did]
            del c.inflight[did]
            g.timeouts += 1
            self._return(g, d.offset, now, now, "timeout", self._suspect(c))
        delayed = g.delayed
        while delayed and delayed[0][0] <= now:
            heappush(g.ready, heappop(delayed)[1])
        if g.retry_at <= now:
            g.retry_at = math.inf
            parked = list(g.parked.items())
            g.parked.clear()
            for offset, (reason, failure) in parked:
                self._dead_letter(g, offset, reason, failure, now)
        self._dispatch(g, now)

    def _suspect(self, c: _Consumer) -> bool:
        """A delivery of ``c`` timed out: suspect it; return whether that costs an attempt.

        Only a live consumer's failure is charged: one that is suspected already has shown
        no sign of life since an earlier delivery of its timed out, so the message most
        likely never reached a working consumer.
        """
        if c.suspected:
            return False
        c.suspected = True
        c.group.suspects += 1
        return True

    def _alive(self, c: _Consumer) -> None:
        """``c`` acked or nacked: it is live again (deliveries may go to it)."""
        if c.suspected:
            c.suspected = False
            c.group.suspects -= 1

    def _return(
        self, g: _Group, offset: int, now: float, due: float, failure: str, charged: bool = True
    ) -> None:
        """Make an offset deliverable again at ``due``, or dead-letter it.

        ``charged`` False gives the attempt back: the delivery does not count towards
        ``max_attempts`` and the redelivery carries the same attempt number.
        """
        if not charged:
            g.outstanding[offset] -= 1
        limit = g.queue.config.max_attempts
        if limit is not None and g.outstanding[offset] >= limit:
            self._dead_letter(g, offset, "max_attempts", failure, now)
        elif due <= now:
            heappush(g.ready, offset)
        else:
            heappush(g.delayed, (due, offset))

    def _dead_letter(self, g: _Group, offset: int, reason: str, failure: str, now: float) -> None:
        """Move a message to the dead-letter queue, drop it, or park it."""
        q = g.queue
        attempts = g.outstanding[offset]
        target = q.config.dead_letter_queue
        if target is not None:
            sl = q.read_one(offset)
            hdrs = dict(sl.headers[0] or {}) if sl.headers is not None else {}
            hdrs["x-felix-dead-letter-reason"] = reason.encode()
            hdrs["x-felix-last-failure"] = failure.encode()
            hdrs["x-felix-original-queue"] = q.key[2].encode()
            hdrs["x-felix-original-offset"] = str(offset).encode()
            hdrs["x-felix-group"] = g.name.encode()
            hdrs["x-felix-attempts"] = str(attempts).encode()
            payload = sl.payloads[0]
            key = sl.keys[0] if sl.keys is not None else None
            tq = self._queues.get((q.key[0], q.key[1], target))
            if tq is None or not _make_room(tq, 1, record_size(payload, key, hdrs)):
                g.parked[offset] = (reason, failure)
                g.retry_at = min(g.retry_at, now + DEAD_LETTER_RETRY_S)
                return
            tq.append_one(payload, now, key, hdrs)
            for tg in tq.groups.values():
                self._dispatch(tg, now)
        del g.outstanding[offset]
        g.dead_lettered += 1
        self._usage.dead_lettered += 1
        q.finished += 1
        self._outputs.append(
            MessageDeadLettered(
                queue=q.key,
                group=g.name,
                offset=offset,
                attempts=attempts,
                reason=reason,
                target=target,
            )
        )

    def _dispatch(self, g: _Group, now: float) -> None:
        """Hand ready and new messages to the group's consumers, round-robin."""
        q = g.queue
        log = q.log
        if not g.ready and g.cursor >= log.next_offset:
            return
        consumers = g.consumers
        # Suspected consumers get nothing while the group has a live one (paused or full or
        # not): redeliveries go to consumers that are alive. A group of suspects only is
        # served as before; their timeouts are not charged (see ``_suspect``).
        avoid = 0 < g.suspects < len(consumers)
        free = 0
        for c in consumers:
            if not c.paused and len(c.inflight) < c.prefetch and not (avoid and c.suspected):
                free += c.prefetch - len(c.inflight)
        if free == 0:
            return
        deadline = max(now + q.config.visibility_timeout_s, g.last_deadline)
        g.last_deadline = deadline
        n = len(consumers)
        rr = g.rr % n
        did = self._next_delivery_id
        outstanding = g.outstanding
        ginflight = g.inflight
        batches: dict[_Consumer, list[QueueDelivery]] = {}
        slices: list[tuple[LogSlice, int]] = []
        redelivered = 0
        while free and g.ready:
            offset = heappop(g.ready)
            slices.append((q.read_one(offset), outstanding[offset] + 1))
            free -= 1
            redelivered += 1
        if redelivered:
            g.redeliveries += redelivered
            self._usage.redeliveries += redelivered
        if free and g.cursor < log.next_offset:
            sl = log.read(g.cursor, free, 1 << 62)
            assert isinstance(sl, LogSlice), "a group's cursor is never trimmed"
            slices.append((sl, 1))
            g.cursor = sl.next_offset
        for sl, attempt in slices:
            base = sl.base_offset
            keys = sl.keys
            headers = sl.headers
            stamps = sl.timestamps_ms
            for i, payload in enumerate(sl.payloads):
                c = consumers[rr]
                rr = (rr + 1) % n
                while c.paused or len(c.inflight) >= c.prefetch or (avoid and c.suspected):
                    c = consumers[rr]
                    rr = (rr + 1) % n
                offset = base + i
                d = QueueDelivery(
                    did,
                    attempt,
                    offset,
                    payload,
                    keys[i] if keys is not None else None,
                    headers[i] if headers is not None else None,
                    stamps[i],
                    deadline,
                )
                outstanding[offset] = attempt
                c.inflight[did] = d
                ginflight[did] = c
                batch = batches.get(c)
                if batch is None:
                    batches[c] = [d]
                else:
                    batch.append(d)
                did += 1
        g.delivered += did - self._next_delivery_id
        self._next_delivery_id = did
        g.rr = rr
        for c, ds in batches.items():
            self._outputs.append(
                MessagesDelivered(
                    connection_id=c.connection_id, consumer_id=c.id, queue=q.key, deliveries=ds
                )
            )
