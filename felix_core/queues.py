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
consumers, those whose prefetch is full and suspected ones (unless all are), in runs: a
consumer takes up to ``Consumer.run`` messages in a row (a quarter of its prefetch, see
:func:`~felix_core.queue_types.run_length`) before the next one's turn, so a burst reaches a
consumer in one frame rather than a few messages in each consumer's; redeliveries go
first, then new messages from the cursor. Deliveries are not returned from calls: they are
appended as :mod:`felix_core.events` records to the engine's event list (STYLE habit 7), one
:class:`~felix_core.events.MessagesDelivered` per consumer per dispatch.

*Dead letters* (the clean design chosen): a queue's ``dead_letter_queue`` names another queue
in the same tenant and namespace, and the queue itself appends the message there (it finds
the target through the :class:`QueueContext` every queue of an engine shares). The copy
keeps payload, key and headers and adds ``x-felix-dead-letter-reason`` (``max_attempts`` or
``rejected``), ``x-felix-last-failure`` (``timeout``, ``nack``, ``consumer_lost`` or
``rejected``), ``x-felix-original-queue``, ``x-felix-original-offset``, ``x-felix-group``
and ``x-felix-attempts``. Without a dead-letter queue the message is dropped (and counted).
If the target does not exist or is full the message stays *parked* in its source (still
counted in the source's bounds), so nothing accepted is ever lost.

*Bounds and trimming*: a log record is dropped only once every group has finished it (below
the minimum low watermark); a queue with no group keeps everything. Trimming runs when an
enqueue finds the queue full, after every ``TRIM_EVERY`` finished messages, and on the
timer. An enqueue that still does not fit is refused with :class:`Overloaded`: it is
retryable, because the condition is transient (consumers acking make room), which
``LimitExceeded`` (a configured count, not retryable) would misstate. A message that could
never fit is :class:`TooLarge`. Age retention does not apply to queues.

*Durability*: a durable queue has a :class:`~felix_core.queue_journal.QueueJournal` (its
state log). Every change of a group's cursor, charged attempts, timing or unfinished offsets
is written there as it happens: a group created, messages handed out (with their attempts
and visibility deadline) or given back (with the absolute time they are due: a delayed
nack), dead letters parked, messages acked or dead-lettered, a group deleted; a checkpoint
follows every few thousand records. :meth:`Queue.restore` rebuilds the groups from it at
start: unfinished messages come back with their charged attempts (a delivery in flight at
the crash was charged when it was made), invisible until their recorded time (in flight:
the visibility deadline; delayed: the due time), parked dead letters stay parked, finished
ones never come back. A committed ack (:meth:`Consumers.ack
<felix_core.consumers.Consumers.ack>`) completes once the state log has committed its
record. An ephemeral queue has no journal and pays one ``is None`` test per operation.

Structure. A :class:`Queue` is the projection of one queue partition (its log, settings
and groups); a :class:`ConsumerGroup` runs the table above for one group; a
:class:`Consumer` is one member of a group, indexed by id by the engine (which knows which
connection holds it). Every queue of an engine shares a :class:`QueueContext`: the event
list, the delivery id counter, engine-wide counters and the lookup of dead-letter targets.
The queue is pure: time arrives as ``now`` (seconds), ids come from counters, and
:meth:`Queue.next_deadline` / :meth:`Queue.fire` drive timeouts, delayed nacks and parked
dead letters. Batches are validated by the engine before they reach a queue.

"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from heapq import heappop, heappush

from felix_core.errors import (
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Overloaded,
    StorageFailed,
    StorageFull,
    TooLarge,
)
from felix_core.events import ConsumerClosed, EngineEvent, MessageDeadLettered, MessagesDelivered
from felix_core.log import Log, LogSlice, record_size
from felix_core.names import validate_name
from felix_core.queue_journal import GroupState, QueueJournal
from felix_core.queue_types import (
    DEAD_LETTER_RETRY_S,
    TRIM_EVERY,
    GroupStats,
    QueueConfig,
    QueueDelivery,
    QueueKey,
    QueueStats,
    QueueTotals,
    run_length,
)
from felix_core.quotas import InflightBytes

__all__ = [
    "DEAD_LETTER_RETRY_S",
    "TRIM_EVERY",
    "Consumer",
    "ConsumerGroup",
    "GroupStats",
    "Queue",
    "QueueConfig",
    "QueueContext",
    "QueueDelivery",
    "QueueKey",
    "QueueStats",
    "QueueTotals",
]


def _ms(now: float) -> int:
    return int(now * 1000)


def _until_ms(t: float) -> int:
    """An absolute time as the state log keeps it: ms since the epoch, never early (a time
    read back from the log, ``ms / 1000``, gives the same ms again)."""
    ms = t * 1000
    whole = round(ms)
    return whole if abs(ms - whole) < 0.01 else math.ceil(ms)


class Queue:
    """One queue: its log, settings, consumer groups and counters. See the module docstring.

    Args:
        key: ``(tenant, namespace, name)``.
        config: its settings (validated).
        context: what every queue of the engine shares.
        log: the queue's log.
    """

    __slots__ = (
        "config",
        "context",
        "enqueued",
        "finished",
        "groups",
        "inflight_bytes",
        "journal",
        "key",
        "log",
    )

    def __init__(self, key: QueueKey, config: QueueConfig, context: QueueContext, log: Log):
        config.validate(key[2])
        self.key = key
        self.config = config
        self.context = context
        self.log = log
        self.inflight_bytes = meter = context.inflight(key[0])
        """The tenant's in-flight bytes (shared by its queues): charged by deliveries."""
        meter.holders[self] = None
        self.groups: dict[str, ConsumerGroup] = {}
        self.enqueued = 0
        self.finished = 0  # messages finished since the last trim
        self.journal: QueueJournal | None = None
        """A durable queue's state log (None: the group state lives in memory only)."""

    # -- durability -------------------------------------------------------------------------

    def restore(self, journal: QueueJournal, now: float) -> None:
        """Rebuild the groups from a durable queue's state log, then write to it.

        Every unfinished offset comes back with the attempts it was charged (a delivery in
        flight at the crash was charged when it was made): a parked dead letter stays
        parked (retried at the first timer); an offset whose attempts are used up is
        dead-lettered; one whose time has not come (in flight: its visibility deadline; a
        delayed nack: its due time) is delayed until then; the others are ready. Finished
        offsets never come back. A cursor or offset outside the recovered log (it lost a
        tail, or trimmed past it) is clamped to it. Dispatch afterwards.
        """
        log = self.log
        first, end = log.first_offset, log.next_offset
        limit = self.config.max_attempts
        spent: list[tuple[ConsumerGroup, int]] = []
        for name, state in sorted(journal.load().items()):
            g = self.groups[name] = ConsumerGroup(name, self)
            g.cursor = min(max(state.cursor, first), end)
            for offset in sorted(state.attempts):
                if not first <= offset < g.cursor:
                    continue
                attempts = g.outstanding[offset] = state.attempts[offset]
                if offset in state.parked:
                    g.parked[offset] = state.parked[offset]
                    g.retry_at = now
                elif limit is not None and attempts >= limit:
                    spent.append((g, offset))
                elif offset in state.until and state.until[offset] > now * 1000:
                    heappush(g.delayed, (state.until[offset] / 1000, offset))
                else:
                    heappush(g.ready, offset)
        self.journal = journal
        for g, offset in spent:
            g.dead_letter(offset, "max_attempts", "consumer_lost", now, journal=False)
        journal.checkpoint(self.snapshot())

    def snapshot(self) -> dict[str, GroupState]:
        """Every group's cursor and unfinished offsets with their charged attempts, the
        time before which each may not be handed out, and its parked dead letters."""
        return {name: g.snapshot() for name, g in self.groups.items()}

    def _journal_tick(self) -> None:
        journal = self.journal
        if journal is not None and journal.due():
            journal.checkpoint(self.snapshot())

    # -- producing --------------------------------------------------------------------------

    def enqueue(
        self,
        payloads: Sequence[bytes],
        now: float,
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
        nbytes: int,
    ) -> int:
        """Append a validated batch atomically (all or none); dispatch with :meth:`dispatch`.

        Args:
            payloads: one or more messages.
            now: the current time.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.
            nbytes: the batch's byte size (:func:`~felix_core.log.record_size` summed).

        Returns:
            The offset of the first message; the others follow consecutively.

        Raises:
            TooLarge: the batch alone exceeds the queue's bounds.
            Overloaded: it does not fit beside the unfinished messages (retryable).
        """
        cfg = self.config
        n = len(payloads)
        if (cfg.max_bytes is not None and nbytes > cfg.max_bytes) or (
            cfg.max_records is not None and n > cfg.max_records
        ):
            raise TooLarge(
                "the messages can never fit in the queue",
                details={"bytes": nbytes, "max_bytes": cfg.max_bytes, "count": n},
            )
        if not self.make_room(n, nbytes):
            raise Overloaded(
                f"queue {self.key[2]!r} is full",
                details={"records": self.log.record_count, "bytes": self.log.byte_size},
            )
        offset = self.log.append_batch(payloads, _ms(now), keys, headers)
        self.enqueued += n
        return offset

    def dispatch(self, now: float) -> None:
        """Hand what became deliverable to every group's consumers."""
        for g in self.groups.values():
            g.dispatch(now)
        self._journal_tick()

    def append_one(
        self, payload: bytes, now: float, key: bytes | None, headers: dict[str, bytes] | None
    ) -> int:
        """Append one record (room already made: a dead letter); return its offset.

        Raises:
            StorageFull, StorageFailed: a durable queue's log could not take it.
        """
        offset = self.log.append(payload, _ms(now), key, headers)
        self.enqueued += 1
        return offset

    def fits(self, count: int, nbytes: int) -> bool:
        """Whether ``count`` more records of ``nbytes`` bytes fit in the bounds right now."""
        cfg = self.config
        log = self.log
        if cfg.max_records is not None and log.record_count + count > cfg.max_records:
            return False
        return cfg.max_bytes is None or log.byte_size + nbytes <= cfg.max_bytes

    def make_room(self, count: int, nbytes: int) -> bool:
        """Whether ``count`` records of ``nbytes`` fit, trimming finished records if needed."""
        if self.fits(count, nbytes):
            return True
        self.trim()
        return self.fits(count, nbytes)

    def trim(self) -> int:
        """Drop the log records every group has finished.

        Returns:
            How many records were dropped (none when the queue has no group).
        """
        self.finished = 0
        if not self.groups:
            return 0
        return self.log.truncate_before(min(g.low_watermark() for g in self.groups.values()))

    def read_one(self, offset: int) -> LogSlice:
        """Read the single retained record at ``offset`` (a bug if it was trimmed)."""
        sl = self.log.read(offset, 1, 0)
        assert isinstance(sl, LogSlice) and len(sl) == 1, "finished messages only are trimmed"
        return sl

    # -- consuming --------------------------------------------------------------------------

    def join(
        self, consumer_id: int, connection_id: int, group: str, prefetch: int, paused: bool
    ) -> Consumer:
        """Add a consumer to a group (creating the group if needed); dispatch afterwards.

        A new group starts at the oldest message some existing group has not finished, or
        at the oldest retained message when the queue had no group.

        Args:
            consumer_id: the new consumer's id (unique in the engine).
            connection_id: the connection holding it.
            group: the consumer group's name (a name: see :mod:`felix_core.names`).
            prefetch: how many unacknowledged deliveries the consumer may hold.
            paused: start paused (its connection is).

        Raises:
            InvalidArgument: bad group name or prefetch < 1.
            LimitExceeded: prefetch above the queue's ``max_prefetch``.
        """
        validate_name("group", group)
        if prefetch < 1:
            raise InvalidArgument("prefetch must be >= 1", details={"prefetch": prefetch})
        if prefetch > self.config.max_prefetch:
            raise LimitExceeded(
                "prefetch above the queue's max_prefetch",
                details={"prefetch": prefetch, "max_prefetch": self.config.max_prefetch},
            )
        g = self.groups.get(group)
        if g is None:
            self.trim()
            g = self.groups[group] = ConsumerGroup(group, self)
            if self.journal is not None:
                self.journal.group(group, g.cursor)
        c = Consumer(consumer_id, connection_id, g, prefetch, paused)
        g.consumers.append(c)
        return c

    def leave(self, c: Consumer, now: float) -> None:
        """Unlink a consumer; its in-flight deliveries go back in delivery order (dispatch
        its group afterwards, once every consumer that leaves has left).

        Like a timeout, the loss is charged once, to the oldest delivery (the one the
        consumer was most likely working on), and only if the consumer was live; the
        deliveries behind it in its prefetch go back uncharged.
        """
        g = c.group
        g.consumers.remove(c)
        c.closed = True
        charged = not c.suspected
        g.alive(c)
        freed = 0
        leases: list[tuple[int, int, int]] = []
        for did, d in c.inflight.items():
            del g.inflight[did]
            freed += _size(d)
            g.give_back(d.offset, now, now, "consumer_lost", charged, leases)
            charged = False
        c.inflight.clear()
        g.journal_leases(leases)
        if freed:
            self.inflight_bytes.release(freed, now)

    def ack(self, c: Consumer, delivery_ids: Iterable[int], now: float) -> None:
        """Finish deliveries made to ``c``.

        Known ids are acked even when some are unknown; the error then lists the unknown
        ones (typically deliveries that timed out and were handed out again).

        Raises:
            NotFound: some ids are not in flight to it (``details['delivery_ids']``).
        """
        g = c.group
        g.alive(c)
        take = c.inflight.pop
        ginflight, outstanding = g.inflight, g.outstanding
        unknown: list[int] = []
        offsets: list[int] = []
        finish = offsets.append
        meter = self.inflight_bytes
        counted = meter.limit is not None
        freed = 0
        for did in delivery_ids:
            d = take(did, None)
            if d is None:
                unknown.append(did)
                continue
            del ginflight[did]
            offset = d.offset
            del outstanding[offset]
            finish(offset)
            if counted:
                freed += _size(d)
        if freed:
            meter.release(freed, now)
        done = len(offsets)
        if self.journal is not None:
            self.journal.finished(g.name, offsets)
        g.acked += done
        self.finished += done
        if self.finished >= TRIM_EVERY:
            self.trim()
        g.dispatch(now)
        self._journal_tick()
        _raise_unknown(unknown)

    def nack(
        self,
        c: Consumer,
        delivery_ids: Iterable[int],
        now: float,
        *,
        delay: float = 0.0,
        requeue: bool = True,
    ) -> None:
        """Return deliveries: redeliver after ``delay``, or dead-letter them at once.

        A returned message whose attempts are used up is dead-lettered instead.

        Raises:
            NotFound: some ids are not in flight to it (the known ones are still returned).
            InvalidArgument: ``delay`` is negative or not finite.
        """
        if not (delay >= 0 and math.isfinite(delay)):
            raise InvalidArgument("delay must be a finite number >= 0", details={"delay": delay})
        g = c.group
        g.alive(c)
        unknown: list[int] = []
        freed = 0
        leases: list[tuple[int, int, int]] = []
        for did in delivery_ids:
            d = c.inflight.pop(did, None)
            if d is None:
                unknown.append(did)
                continue
            del g.inflight[did]
            freed += _size(d)
            g.nacked += 1
            if requeue:
                g.give_back(d.offset, now, now + delay, "nack", leases=leases)
            else:
                g.dead_letter(d.offset, "rejected", "rejected", now)
        g.journal_leases(leases)
        if freed:
            self.inflight_bytes.release(freed, now)
        g.dispatch(now)
        self._journal_tick()
        _raise_unknown(unknown)

    def backlog(self, c: Consumer) -> tuple[int, int]:
        """What ``c``'s group still has to hand out, and what ``c`` holds: ``(waiting,
        unacked)``; waiting counts new, ready and delayed messages (not parked dead
        letters)."""
        g = c.group
        return g.waiting() - len(g.parked), len(c.inflight)

    # -- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest visibility timeout, delayed nack or dead-letter retry, or None."""
        t = min((g.next_deadline() for g in self.groups.values()), default=math.inf)
        return None if t == math.inf else t

    def fire(self, now: float) -> None:
        """Fire everything due at ``now`` and deliver what became ready."""
        for g in self.groups.values():
            g.fire(now)
        if self.finished:
            self.trim()
        self._journal_tick()

    # -- administration ---------------------------------------------------------------------

    def reconfigure(self, config: QueueConfig) -> None:
        """New settings; nothing retained is dropped if the bounds shrink, and existing
        consumers keep their prefetch.

        Raises:
            InvalidArgument: a setting is out of range.
        """
        config.validate(self.key[2])
        self.config = config

    def end(self, reason: str) -> list[Consumer]:
        """The queue is gone: end every consumer (``ConsumerClosed`` with ``reason``);
        nothing is redelivered. Returns the consumers that ended."""
        ended: list[Consumer] = []
        for g in self.groups.values():
            ended += self._end_group(g, reason)
        self.inflight_bytes.holders.pop(self, None)
        return ended

    def inflight_payload_bytes(self) -> int:
        """Payload + key bytes of the deliveries not settled yet, over all groups (what
        the tenant's in-flight bytes count of this queue)."""
        return sum(
            _size(d) for g in self.groups.values() for c in g.consumers for d in c.inflight.values()
        )

    def delete_group(self, group: str) -> list[Consumer]:
        """Forget a group and its position; its consumers end with reason ``deleted``. An
        abandoned group holds back trimming, so an operator deletes it to free the queue (no
        request reaches this yet: an admin route is to come).

        Returns:
            The consumers that ended.

        Raises:
            NotFound: no such group.
        """
        g = self.groups.get(group)
        if g is None:
            raise NotFound(f"group {group!r} not found", details={"group": group})
        ended = self._end_group(g, "deleted")
        del self.groups[group]
        if self.journal is not None:
            self.journal.deleted(group)
        self.trim()
        return ended

    def _end_group(self, g: ConsumerGroup, reason: str) -> list[Consumer]:
        out = self.context.out
        ended = list(g.consumers)
        freed = 0
        for c in ended:
            freed += sum(_size(d) for d in c.inflight.values())
            c.inflight.clear()
            c.closed = True
            out.append(
                ConsumerClosed(
                    connection_id=c.connection_id, consumer_id=c.id, queue=self.key, reason=reason
                )
            )
        g.consumers.clear()
        g.suspects = 0
        g.inflight.clear()
        meter = self.inflight_bytes
        meter.waiting.pop(g, None)
        if freed and meter.limit is not None:
            meter.held -= freed  # the queue or group is going: woken on the next release
        return ended

    # -- figures ----------------------------------------------------------------------------

    def depth(self) -> int:
        """Waiting messages of the slowest group; the retained records when there is none."""
        return max((g.waiting() for g in self.groups.values()), default=self.log.record_count)

    def in_flight(self) -> int:
        """Deliveries not yet settled, over all groups."""
        return sum(len(g.inflight) for g in self.groups.values())

    def oldest_timestamp_ms(self) -> int | None:
        """Enqueue time of the oldest message some group has not finished (the oldest
        retained one when there is no group); None when there is none. O(groups)."""
        log = self.log
        low = min((g.low_watermark() for g in self.groups.values()), default=log.first_offset)
        if low >= log.next_offset:
            return None
        return self.read_one(low).timestamps_ms[0]

    def stats(self, now: float) -> QueueStats:
        """Observable state; see :class:`~felix_core.queue_types.QueueStats`.

        Args:
            now: the current time in seconds (for the oldest message's age).
        """
        groups = {g.name: g.stats() for g in self.groups.values()}
        log = self.log
        oldest = self.oldest_timestamp_ms()
        age = None if oldest is None else max(0.0, now - oldest / 1000.0)
        return QueueStats(
            records=log.record_count,
            bytes=log.byte_size,
            enqueued=self.enqueued,
            depth=max((s.depth for s in groups.values()), default=log.record_count),
            in_flight=sum(s.in_flight for s in groups.values()),
            redeliveries=sum(s.redeliveries for s in groups.values()),
            dead_lettered=sum(s.dead_lettered for s in groups.values()),
            oldest_age_s=age,
            groups=groups,
        )


def _raise_unknown(unknown: list[int]) -> None:
    if unknown:
        raise NotFound(
            f"{len(unknown)} delivery id(s) not in flight to this consumer",
            details={"delivery_ids": unknown},
        )


class QueueContext:
    """What every queue of an engine shares.

    Args:
        out: the engine's event list (deliveries and dead-letter notices are appended).
        resolve: finds a queue by key (for dead-letter targets); None when there is none.
        inflight: the in-flight bytes of a tenant, shared by its queues (None: each queue
            counts its own, unlimited).
    """

    __slots__ = (
        "dead_lettered",
        "inflight",
        "next_delivery_id",
        "out",
        "redeliveries",
        "resolve",
        "touched",
    )

    def __init__(
        self,
        out: list[EngineEvent],
        resolve: Callable[[QueueKey], Queue | None],
        inflight: Callable[[str], InflightBytes] | None = None,
    ):
        self.out = out
        self.resolve = resolve
        self.inflight: Callable[[str], InflightBytes] = inflight or _unlimited
        """The in-flight bytes of a tenant (its quota), shared by its queues."""
        self.next_delivery_id = 1
        """Delivery ids are unique in the engine."""
        self.redeliveries = 0
        """Redeliveries made since the engine started (deleted queues too)."""
        self.dead_lettered = 0
        """Dead letters made since the engine started (deleted queues too)."""
        self.touched: set[Queue] = set()
        """Queues a dead letter was appended to (their timers may have moved)."""


class Consumer:
    """One consumer of a group: its prefetch window and the deliveries it holds."""

    __slots__ = (
        "closed",
        "connection_id",
        "group",
        "id",
        "inflight",
        "paused",
        "prefetch",
        "run",
        "suspected",
    )

    def __init__(
        self, cid: int, connection_id: int, group: ConsumerGroup, prefetch: int, paused: bool
    ) -> None:
        self.id = cid
        self.connection_id = connection_id
        self.group = group
        self.prefetch = prefetch
        self.run = run_length(prefetch)
        """Messages in a row a dispatch hands it before the next consumer's turn."""
        self.paused = paused
        self.suspected = False  # a delivery timed out on it and it has not acked or nacked since
        self.inflight: dict[int, QueueDelivery] = {}
        self.closed = False
        """Set when it leaves its group (whoever else indexes it drops it then)."""

    @property
    def queue(self) -> Queue:
        """The queue it consumes from."""
        return self.group.queue


class ConsumerGroup:
    """One group of a queue: its position, the messages it owes, its consumers. See the
    theory of operation in :mod:`felix_core.queues` for what each field means."""

    __slots__ = (
        "acked",
        "consumers",
        "cursor",
        "dead_lettered",
        "delayed",
        "delivered",
        "inflight",
        "last_deadline",
        "nacked",
        "name",
        "outstanding",
        "parked",
        "queue",
        "ready",
        "redeliveries",
        "retry_at",
        "rr",
        "suspects",
        "timeouts",
    )

    def __init__(self, name: str, queue: Queue) -> None:
        self.name = name
        self.queue = queue
        self.cursor = queue.log.first_offset
        self.outstanding: OrderedDict[int, int] = OrderedDict()
        self.ready: list[int] = []
        self.delayed: list[tuple[float, int]] = []
        self.parked: dict[int, tuple[str, str]] = {}  # offset -> (reason, last failure)
        self.retry_at = math.inf
        self.inflight: OrderedDict[int, Consumer] = OrderedDict()
        self.last_deadline = -math.inf
        self.consumers: list[Consumer] = []
        self.suspects = 0  # consumers with ``suspected`` set
        self.rr = 0
        self.delivered = self.redeliveries = self.acked = self.nacked = 0
        self.timeouts = self.dead_lettered = 0

    # -- figures --------------------------------------------------------------------------

    def low_watermark(self) -> int:
        """The oldest offset the group has not finished."""
        for offset in self.outstanding:
            return offset
        return self.cursor

    def waiting(self) -> int:
        """Messages waiting to be (re)delivered: new, ready, delayed and parked."""
        log_next = self.queue.log.next_offset
        return log_next - self.cursor + len(self.ready) + len(self.delayed) + len(self.parked)

    def next_deadline(self) -> float:
        """The earliest visibility timeout, delayed nack or dead-letter retry (inf: none)."""
        t = self.retry_at
        for cid in self.inflight:
            t = min(t, self.inflight[cid].inflight[cid].deadline)
            break
        if self.delayed:
            t = min(t, self.delayed[0][0])
        return t

    def stats(self) -> GroupStats:
        """Observable state; see :class:`~felix_core.queue_types.GroupStats`."""
        return GroupStats(
            consumers=len(self.consumers),
            suspected=self.suspects,
            depth=self.waiting(),
            in_flight=len(self.inflight),
            cursor=self.cursor,
            low_watermark=self.low_watermark(),
            delivered=self.delivered,
            redeliveries=self.redeliveries,
            acked=self.acked,
            nacked=self.nacked,
            timeouts=self.timeouts,
            dead_lettered=self.dead_lettered,
            dead_letter_pending=len(self.parked),
        )

    def snapshot(self) -> GroupState:
        """The group as the state log keeps it (see :class:`GroupState`)."""
        until = {off: _until_ms(due) for due, off in self.delayed}
        for did, c in self.inflight.items():
            d = c.inflight[did]
            until[d.offset] = _until_ms(d.deadline)
        return GroupState(self.cursor, dict(self.outstanding), until, dict(self.parked))

    # -- consumers' liveness ----------------------------------------------------------------

    def suspect(self, c: Consumer) -> bool:
        """A delivery of ``c`` timed out: suspect it; return whether that costs an attempt.

        Only a live consumer's failure is charged: one that is suspected already has shown
        no sign of life since an earlier delivery of its timed out, so the message most
        likely never reached a working consumer.
        """
        if c.suspected:
            return False
        c.suspected = True
        self.suspects += 1
        return True

    def alive(self, c: Consumer) -> None:
        """``c`` acked or nacked: it is live again (deliveries may go to it)."""
        if c.suspected:
            c.suspected = False
            self.suspects -= 1

    # -- message moves ----------------------------------------------------------------------

    def fire(self, now: float) -> None:
        """Time out due deliveries, make due delayed messages ready, retry parked dead
        letters, then dispatch."""
        inflight = self.inflight
        freed = 0
        leases: list[tuple[int, int, int]] = []
        while inflight:
            did, c = next(iter(inflight.items()))
            d = c.inflight[did]
            if d.deadline > now:
                break
            del inflight[did]
            del c.inflight[did]
            freed += _size(d)
            self.timeouts += 1
            self.give_back(d.offset, now, now, "timeout", self.suspect(c), leases)
        self.journal_leases(leases)
        if freed:
            self.queue.inflight_bytes.release(freed, now)
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            heappush(self.ready, heappop(delayed)[1])
        if self.retry_at <= now:
            self.retry_at = math.inf
            parked = list(self.parked.items())
            self.parked.clear()
            for offset, (reason, failure) in parked:  # parked again: recorded already
                self.dead_letter(offset, reason, failure, now, journal=False)
        self.dispatch(now)

    def give_back(
        self,
        offset: int,
        now: float,
        due: float,
        failure: str,
        charged: bool = True,
        leases: list[tuple[int, int, int]] | None = None,
    ) -> None:
        """Make an offset deliverable again at ``due``, or dead-letter it.

        ``charged`` False gives the attempt back: the delivery does not count towards
        ``max_attempts`` and the redelivery carries the same attempt number. ``leases``:
        a caller giving back many offsets in one pass collects their state-log entries
        there and writes them as one ``LEASED`` record (:meth:`journal_leases`) before
        anything else is recorded, instead of a record each.
        """
        if not charged:
            self.outstanding[offset] -= 1
        attempts = self.outstanding[offset]
        limit = self.queue.config.max_attempts
        if limit is not None and attempts >= limit:
            self.dead_letter(offset, "max_attempts", failure, now)
            return
        if due <= now:
            heappush(self.ready, offset)
        else:
            heappush(self.delayed, (due, offset))
        journal = self.queue.journal
        if journal is not None:
            lease = (offset, attempts, 0 if due <= now else _until_ms(due))
            if leases is None:
                journal.leased(self.name, [lease])
            else:
                leases.append(lease)

    def journal_leases(self, leases: list[tuple[int, int, int]]) -> None:
        """Record the entries :meth:`give_back` collected, as one ``LEASED`` record."""
        journal = self.queue.journal
        if journal is not None and leases:
            journal.leased(self.name, leases)

    def dead_letter(
        self, offset: int, reason: str, failure: str, now: float, *, journal: bool = True
    ) -> None:
        """Move a message to the dead-letter queue, drop it, or park it (``journal`` False:
        a parking is not recorded again, a retry of one recorded already or a rebuild)."""
        q = self.queue
        ctx = q.context
        attempts = self.outstanding[offset]
        target = q.config.dead_letter_queue
        if target is not None:
            sl = q.read_one(offset)
            hdrs = dict(sl.headers[0] or {}) if sl.headers is not None else {}
            hdrs["x-felix-dead-letter-reason"] = reason.encode()
            hdrs["x-felix-last-failure"] = failure.encode()
            hdrs["x-felix-original-queue"] = q.key[2].encode()
            hdrs["x-felix-original-offset"] = str(offset).encode()
            hdrs["x-felix-group"] = self.name.encode()
            hdrs["x-felix-attempts"] = str(attempts).encode()
            payload = sl.payloads[0]
            key = sl.keys[0] if sl.keys is not None else None
            tq = ctx.resolve((q.key[0], q.key[1], target))
            if tq is None or not _dead_letter_into(tq, payload, key, hdrs, now):
                self.parked[offset] = (reason, failure)
                self.retry_at = min(self.retry_at, now + DEAD_LETTER_RETRY_S)
                if journal and q.journal is not None:
                    q.journal.parked(self.name, [(offset, attempts, reason, failure)])
                return
            for tg in tq.groups.values():
                tg.dispatch(now)
            ctx.touched.add(tq)
        del self.outstanding[offset]
        if q.journal is not None:
            q.journal.finished(self.name, [offset])
        self.dead_lettered += 1
        ctx.dead_lettered += 1
        q.finished += 1
        ctx.out.append(
            MessageDeadLettered(
                queue=q.key,
                group=self.name,
                offset=offset,
                attempts=attempts,
                reason=reason,
                target=target,
            )
        )

    def wake(self, now: float) -> None:
        """The tenant's in-flight bytes have room again: dispatch (the queue's timer may
        have moved)."""
        self.dispatch(now)
        self.queue.context.touched.add(self.queue)

    def _hold_back(
        self, slices: list[tuple[LogSlice, int]], n_slice: int, index: int, redelivered: int
    ) -> int:
        """Give back what a dispatch read but cannot hand out (the tenant's in-flight bytes
        are full) from message ``index`` of ``slices[n_slice]`` on, and wait for room.

        ``slices`` holds ``redelivered`` single-message redeliveries, then possibly the
        slice read from the cursor. Returns how many redeliveries went back to ``ready``.
        """
        back = 0
        for sl, _ in slices[n_slice:redelivered]:
            heappush(self.ready, sl.base_offset)
            back += 1
        if len(slices) > redelivered:
            fresh = slices[redelivered][0]
            self.cursor = fresh.base_offset + (index if n_slice == redelivered else 0)
        self.queue.inflight_bytes.hold_back(self)
        return back

    def dispatch(self, now: float) -> None:
        """Hand ready and new messages to the group's consumers, round-robin in runs of
        ``Consumer.run`` (see the module docstring), as far as the tenant's in-flight bytes
        allow (the rest waits for room)."""
        q = self.queue
        log = q.log
        if not self.ready and self.cursor >= log.next_offset:
            return
        consumers = self.consumers
        # Suspected consumers get nothing while the group has a live one (paused or full or
        # not): redeliveries go to consumers that are alive. A group of suspects only is
        # served as before; their timeouts are not charged (see ``suspect``).
        avoid = 0 < self.suspects < len(consumers)
        free = 0
        for c in consumers:
            if not c.paused and len(c.inflight) < c.prefetch and not (avoid and c.suspected):
                free += c.prefetch - len(c.inflight)
        if free == 0:
            return
        meter = q.inflight_bytes
        if not meter.admits(1):  # the tenant's in-flight bytes are full
            meter.hold_back(self)
            return
        ctx = q.context
        deadline = max(now + q.config.visibility_timeout_s, self.last_deadline)
        self.last_deadline = deadline
        n = len(consumers)
        rr = self.rr % n
        first_id = did = ctx.next_delivery_id
        outstanding = self.outstanding
        ginflight = self.inflight
        batches: dict[Consumer, list[QueueDelivery]] = {}
        slices: list[tuple[LogSlice, int]] = []
        redelivered = 0
        while free and self.ready:
            offset = heappop(self.ready)
            slices.append((q.read_one(offset), outstanding[offset] + 1))
            free -= 1
            redelivered += 1
        if free and self.cursor < log.next_offset:
            sl = log.read(self.cursor, free, 1 << 62)
            assert isinstance(sl, LogSlice), "a group's cursor is never trimmed"
            slices.append((sl, 1))
            self.cursor = sl.next_offset
        limit = meter.limit  # None: nothing is counted
        held = meter.held
        new = tuple.__new__
        c = consumers[rr]  # replaced before its first delivery: its run is 0
        run = 0
        cinflight = c.inflight
        batch: list[QueueDelivery] = []
        for n_slice, (sl, attempt) in enumerate(slices):
            base = sl.base_offset
            keys = sl.keys
            headers = sl.headers
            stamps = sl.timestamps_ms
            for i, payload in enumerate(sl.payloads):
                key = keys[i] if keys is not None else None
                if limit is not None:
                    size = len(payload) if key is None else len(payload) + len(key)
                    if held and held + size > limit:
                        redelivered -= self._hold_back(slices, n_slice, i, redelivered)
                        break
                    held += size
                if run == 0:  # the next consumer's turn (this one's run or prefetch is over)
                    c = consumers[rr]
                    rr = (rr + 1) % n
                    while c.paused or len(c.inflight) >= c.prefetch or (avoid and c.suspected):
                        c = consumers[rr]
                        rr = (rr + 1) % n
                    cinflight = c.inflight
                    run = min(c.run, c.prefetch - len(cinflight))
                    got = batches.get(c)
                    if got is None:
                        batch = batches[c] = []
                    else:
                        batch = got
                run -= 1
                offset = base + i
                d = new(  # the NamedTuple's own __new__ is a Python frame per message
                    QueueDelivery,
                    (
                        did,
                        attempt,
                        offset,
                        payload,
                        key,
                        headers[i] if headers is not None else None,
                        stamps[i],
                        deadline,
                    ),
                )
                outstanding[offset] = attempt
                cinflight[did] = d
                ginflight[did] = c
                batch.append(d)
                did += 1
            else:
                continue
            break  # held back: the rest went back
        if limit is not None:
            meter.held = held
        if redelivered:
            self.redeliveries += redelivered
            ctx.redeliveries += redelivered
        self.delivered += did - first_id
        ctx.next_delivery_id = did
        if q.journal is not None:
            until = _until_ms(deadline)
            q.journal.leased(
                self.name, [(d.offset, d.attempt, until) for ds in batches.values() for d in ds]
            )
        self.rr = rr
        out = ctx.out
        for c, ds in batches.items():
            out.append(
                MessagesDelivered(
                    connection_id=c.connection_id, consumer_id=c.id, queue=q.key, deliveries=ds
                )
            )


def _unlimited(tenant: str) -> InflightBytes:
    return InflightBytes(None)


def _size(d: QueueDelivery) -> int:
    """What a delivery counts in its tenant's in-flight bytes: payload + key bytes."""
    key = d.key
    return len(d.payload) if key is None else len(d.payload) + len(key)


def _dead_letter_into(
    target: Queue, payload: bytes, key: bytes | None, headers: dict[str, bytes], now: float
) -> bool:
    """Append a dead letter to ``target``; False when it cannot take it now (full, or a
    durable target's disk is full or failed): the message is parked and retried."""
    if not target.make_room(1, record_size(payload, key, headers)):
        return False
    try:
        target.append_one(payload, now, key, headers)
    except (StorageFull, StorageFailed):
        return False
    return True
