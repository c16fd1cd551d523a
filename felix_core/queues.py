"""Queues: a log plus consumer groups with acknowledgements, redelivery and dead-lettering.

Theory of operation
-------------------
A queue is a :class:`~felix_core.log.MemoryLog` plus named *consumer groups*. Every group
sees every message once (fan-out between groups); inside a group the consumers share the
work (each message goes to one consumer at a time). A group keeps:

* ``cursor``: the next log offset the group has never handed out;
* ``outstanding``: offset -> attempts made, for every message handed out (offset below
  ``cursor``) and not yet finished. Offsets enter at the cursor, so insertion order is offset
  order and the first key is the group's *low watermark*;
* ``ready`` (a heap of offsets due for redelivery), ``delayed`` (a heap of ``(due, offset)``
  for nacks with a delay) and ``parked`` (dead letters waiting for room in the target);
* ``inflight``: delivery id -> consumer, in delivery order. The visibility timeout is one
  number per queue and deadlines are clamped never to decrease, so the first entry always
  holds the earliest deadline and the timer needs no heap.

Per group, a message moves through this table (any other move is a bug)::

    state        input                        next state
    WAITING      dispatch                     IN_FLIGHT (attempt 1)
    IN_FLIGHT    ack                          DONE
    IN_FLIGHT    nack / timeout / consumer    READY or DELAYED, or DEAD if the charged
                 lost                         attempts reach max_attempts (nack with
                                              requeue=False: DEAD at once)
    READY        dispatch                     IN_FLIGHT (charged + 1, a counted redelivery)
    DELAYED      timer (due)                  READY
    DEAD         target accepts / no target   DONE (counted as dead-lettered)
    DEAD         target missing or full       PARKED, retried every ``DEAD_LETTER_RETRY_S``
    WAITING, READY, DELAYED, PARKED   purge   DONE

*Attempts and silent consumers*: ``outstanding`` counts the attempts *charged* to a
message, and a delivery carries that count plus one. A nack is charged. A consumer that lets
a delivery time out, or leaves (cancel, lost connection) while holding deliveries, is charged
once, on its oldest delivery (the one it was most likely working on); the deliveries behind it
in its prefetch go back uncharged (``outstanding`` is decremented, the redelivery repeats the
attempt number). A timeout also makes the consumer *suspected* until it acks or nacks
anything (even an id that is no longer in flight): a suspected consumer gets no delivery while
its group has a consumer that is not suspected, so redeliveries go to consumers that are
alive, and while it stays suspected its further timeouts are not charged. A group whose
consumers are all suspected is served as usual (uncharged), so a lone slow consumer still
sees its redelivery. A consumer that died therefore costs each message it held at most one
attempt, and a poison message that kills or hangs every consumer it reaches is still
dead-lettered after ``max_attempts`` consumers.

*Dispatch* runs after every input that can make progress (enqueue, consume, ack, nack,
resume, timer). It hands messages to the group's consumers round-robin, skipping paused
consumers, those whose prefetch is full and suspected ones (unless all are); redeliveries go
first, then new messages from the cursor. Deliveries are not returned from calls: they are
buffered as :mod:`felix_core.events` records which the caller drains with
:meth:`QueueEngine.drain_outputs` (STYLE habit 7), one
:class:`~felix_core.events.MessagesDelivered` per consumer per dispatch.

*Dead letters* (the clean design chosen): a queue's ``dead_letter_queue`` names another queue
in the same tenant and namespace, and the engine itself appends the message there (the
engine owns every queue, so the facade has nothing to do). The copy keeps payload, key and
headers and adds ``x-felix-dead-letter-reason`` (``max_attempts`` or ``rejected``),
``x-felix-last-failure`` (``timeout``, ``nack``, ``consumer_lost`` or ``rejected``),
``x-felix-original-queue``, ``x-felix-original-offset``, ``x-felix-group`` and
``x-felix-attempts``. Without a dead-letter queue the message is dropped (and counted). If
the target does not exist or is full the message stays *parked* in its source (still
counted in the source's bounds), so nothing accepted is ever lost.

*Bounds and trimming*: a log record is dropped only once every group has finished it (below
the minimum low watermark); a queue with no group keeps everything. Trimming runs when an
enqueue finds the queue full, after every ``TRIM_EVERY`` finished messages, on purge and on
the timer. An enqueue that still does not fit is refused with :class:`Overloaded`: it is
retryable, because the condition is transient (consumers acking make room), which
``LimitExceeded`` (a configured count, not retryable) would misstate. A message that could
never fit is :class:`TooLarge`. Age retention does not apply to queues.

The engine is pure: time arrives as ``now`` (seconds), ids come from counters, and
:meth:`QueueEngine.get_timer` / :meth:`QueueEngine.handle_timer` drive timeouts, delayed
nacks and parked dead letters.

Modules
-------
This module holds the engine's registry, enqueue and administration and re-exports the
public names of the others (import them from here):

* :mod:`felix_core.queue_types`: configuration, :class:`QueueDelivery` and the stats;
* :mod:`felix_core.queue_state`: :class:`Queue` and the per-group and per-consumer records;
* :mod:`felix_core.queue_delivery`: dispatch, redelivery, dead-lettering and the timer;
* :mod:`felix_core.queue_consumers`: consume, cancel, ack, nack and connection flow control.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from felix_core.errors import AlreadyExists, InvalidArgument, NotFound, Overloaded, TooLarge
from felix_core.log import Log, record_size
from felix_core.queue_consumers import _ConsumerOperations
from felix_core.queue_state import Queue, _make_room
from felix_core.queue_types import (
    DEAD_LETTER_RETRY_S,
    TRIM_EVERY,
    GroupStats,
    QueueConfig,
    QueueDelivery,
    QueueKey,
    QueueStats,
    QueueTotals,
)

__all__ = [
    "DEAD_LETTER_RETRY_S",
    "TRIM_EVERY",
    "GroupStats",
    "Queue",
    "QueueConfig",
    "QueueDelivery",
    "QueueEngine",
    "QueueKey",
    "QueueStats",
    "QueueTotals",
]


class QueueEngine(_ConsumerOperations):
    """Every queue of a broker, their consumers, and the events they produce.

    Inputs are the method calls (each takes ``now``, seconds since the epoch) and
    :meth:`handle_timer`: the registry, enqueue and administration below, the consumer
    operations inherited from :mod:`felix_core.queue_consumers`, and the lookup, outputs
    and timer inherited from :mod:`felix_core.queue_delivery`. Outputs are
    :meth:`drain_outputs` (deliveries, ended consumers, dead-letter notices) and
    :meth:`get_timer`. Reply to the request first, then drain: a ``consume`` call may
    already have produced deliveries for the new consumer.
    """

    __slots__ = ()

    # -- registry -----------------------------------------------------------------------

    def create_queue(
        self, queue: QueueKey, config: QueueConfig | None = None, *, log: Log | None = None
    ) -> Queue:
        """Create a queue.

        Args:
            queue: ``(tenant, namespace, name)``; names are validated by the metadata layer.
            config: its settings; None for the defaults.
            log: the queue's log (an empty :class:`MemoryLog` when None).

        Returns:
            The new :class:`Queue`.

        Raises:
            AlreadyExists: the queue exists.
            InvalidArgument: a setting is out of range.
        """
        config = config or QueueConfig()
        config.validate(queue[2])
        if queue in self._queues:
            raise AlreadyExists(f"queue {queue[2]!r} exists", details={"queue": queue[2]})
        q = self._queues[queue] = Queue(queue, config, self._usage, log)
        return q

    def update_queue(self, queue: QueueKey, config: QueueConfig) -> None:
        """Replace a queue's settings. Nothing retained is dropped if the bounds shrink.

        Args:
            queue: the queue.
            config: the new settings (prefetch of existing consumers is kept).

        Raises:
            NotFound: no such queue.
            InvalidArgument: a setting is out of range.
        """
        q = self.queue(queue)
        config.validate(queue[2])
        q.config = config

    def delete_queue(self, queue: QueueKey) -> None:
        """Delete a queue with its messages; its consumers end with reason ``deleted``.

        Args:
            queue: the queue.

        Raises:
            NotFound: no such queue.
        """
        q = self.queue(queue)
        for g in q.groups.values():
            self._end_group(g)
        del self._queues[queue]
        self._usage.bytes -= q.log.byte_size

    def __contains__(self, queue: object) -> bool:
        return queue in self._queues

    def __iter__(self) -> Iterator[QueueKey]:
        return iter(self._queues)

    def __len__(self) -> int:
        return len(self._queues)

    @property
    def byte_size(self) -> int:
        """Record bytes held by every queue (for global memory accounting)."""
        return self._usage.bytes

    def stats(self, queue: QueueKey, now: float) -> QueueStats:
        """Observable state of one queue.

        Args:
            queue: the queue.
            now: the current time (for the oldest message's age).

        Returns:
            A :class:`QueueStats` snapshot.

        Raises:
            NotFound: no such queue.
        """
        return self.queue(queue).stats(now)

    def totals(self, now: float) -> QueueTotals:
        """Figures over every queue, for metrics: cheap enough to call on every scrape.

        The counters are kept by the engine as things happen (O(1), and they include deleted
        queues and groups, so they never decrease); the gauges cost O(groups) per queue and
        one record read per queue with unfinished messages, never a walk over messages.

        Args:
            now: the current time (for the oldest message's age).

        Returns:
            A :class:`QueueTotals` snapshot.
        """
        records = depth = in_flight = 0
        oldest: int | None = None
        for q in self._queues.values():
            records += q.log.record_count
            depth += q.depth()
            in_flight += q.in_flight()
            stamp = q.oldest_timestamp_ms()
            if stamp is not None and (oldest is None or stamp < oldest):
                oldest = stamp
        usage = self._usage
        return QueueTotals(
            queues=len(self._queues),
            records=records,
            bytes=usage.bytes,
            depth=depth,
            in_flight=in_flight,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest / 1000.0),
            redeliveries=usage.redeliveries,
            dead_lettered=usage.dead_lettered,
        )

    # -- producing ----------------------------------------------------------------------

    def enqueue(
        self,
        queue: QueueKey,
        payload: bytes,
        now: float,
        *,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        """Append one message and hand it to consumers with room.

        Args:
            queue: the queue.
            payload: the message.
            now: the current time.
            key: an optional message key.
            headers: optional message headers.

        Returns:
            The message's offset.

        Raises:
            NotFound: no such queue.
            TooLarge: the message alone exceeds the queue's byte bound.
            Overloaded: the queue is full of unfinished messages (retryable).
        """
        q = self.queue(queue)
        self._admit(q, 1, record_size(payload, key, headers))
        offset = q.append_one(payload, now, key, headers)
        for g in q.groups.values():
            self._dispatch(g, now)
        return offset

    def enqueue_batch(
        self,
        queue: QueueKey,
        payloads: Sequence[bytes],
        now: float,
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
    ) -> int:
        """Append messages atomically (all or none) and hand them to consumers.

        Args:
            queue: the queue.
            payloads: one or more messages.
            now: the current time.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.

        Returns:
            The offset of the first message; the others follow consecutively.

        Raises:
            NotFound: no such queue.
            InvalidArgument: no payloads, or ``keys``/``headers`` of the wrong length.
            TooLarge: the batch alone exceeds the queue's bounds.
            Overloaded: the batch does not fit beside the unfinished messages (retryable).
        """
        q = self.queue(queue)
        n = len(payloads)
        if n == 0:
            raise InvalidArgument("an enqueue needs at least one payload")
        if (keys is not None and len(keys) != n) or (headers is not None and len(headers) != n):
            raise InvalidArgument("keys and headers must be as long as payloads")
        if keys is None and headers is None:
            size = sum(map(len, payloads))
        else:
            ks = keys if keys is not None else [None] * n
            hs = headers if headers is not None else [None] * n
            size = sum(map(record_size, payloads, ks, hs))
        self._admit(q, n, size)
        offset = q.append(payloads, now, keys, headers)
        for g in q.groups.values():
            self._dispatch(g, now)
        return offset

    def _admit(self, q: Queue, count: int, nbytes: int) -> None:
        cfg = q.config
        if (cfg.max_bytes is not None and nbytes > cfg.max_bytes) or (
            cfg.max_records is not None and count > cfg.max_records
        ):
            raise TooLarge(
                "the messages can never fit in the queue",
                details={"bytes": nbytes, "max_bytes": cfg.max_bytes, "count": count},
            )
        if not _make_room(q, count, nbytes):
            raise Overloaded(
                f"queue {q.key[2]!r} is full",
                details={"records": q.log.record_count, "bytes": q.log.byte_size},
            )

    # -- administration -----------------------------------------------------------------

    def purge(self, queue: QueueKey, now: float) -> int:
        """Drop every message not in flight (new, ready, delayed and parked).

        In-flight deliveries stay; they can still be acked (or are redelivered if nacked).

        Args:
            queue: the queue.
            now: the current time.

        Returns:
            The largest number of messages a group lost, or the number of retained
            messages when the queue has no group.

        Raises:
            NotFound: no such queue.
        """
        q = self.queue(queue)
        log = q.log
        if not q.groups:
            return q.truncate(log.next_offset)
        purged = 0
        for g in q.groups.values():
            purged = max(purged, g.waiting())
            out = g.outstanding
            for offset in g.ready:
                del out[offset]
            for _, offset in g.delayed:
                del out[offset]
            for offset in g.parked:
                del out[offset]
            g.ready.clear()
            g.delayed.clear()
            g.parked.clear()
            g.retry_at = math.inf
            g.cursor = log.next_offset
        q.trim()
        return purged

    def delete_group(self, queue: QueueKey, group: str) -> None:
        """Forget a group and its position; its consumers end with reason ``deleted``.

        An abandoned group holds back trimming, so an operator deletes it to free the queue.

        Args:
            queue: the queue.
            group: the group's name.

        Raises:
            NotFound: no such queue or group.
        """
        q = self.queue(queue)
        g = q.groups.get(group)
        if g is None:
            raise NotFound(f"group {group!r} not found", details={"group": group})
        self._end_group(g)
        del q.groups[group]
        q.trim()
