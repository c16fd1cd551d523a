"""Streams (pub/sub): subscriptions are cursors into a log.

Theory of operation
-------------------
A :class:`Fanout` holds the subscriptions that follow one :class:`~felix_core.log.Log`. A
:class:`Stream` is a fanout that also owns its log and accepts publishes; a cache's change
feed is a plain fanout over the cache's log, which the cache engine appends to.

A subscription is a *cursor* (the next offset it will receive) plus *credit*: how many
records and record bytes it may still receive. Delivery happens in :meth:`Fanout.pump`,
which the owner calls after every append, credit grant, resume and timer. Pump groups the
eligible subscriptions (not paused, some credit, cursor behind the log's end) by cursor and
reads **one** :class:`~felix_core.log.LogSlice` per group: every subscription in the group
whose credit covers that slice receives the very same object (so the runtime can encode it
once); a subscription whose credit is smaller gets a shorter slice of its own. A delivery
moves the cursor to ``slice.next_offset`` and takes ``len(slice)`` records and
``slice.byte_size`` bytes of credit. The first record at a cursor is always deliverable
when some byte credit remains, even if it alone is larger (byte credit may then go
negative), so a small byte credit cannot wedge a subscription.

Records that are not in memory: a read may answer
:class:`~felix_core.log.ReadPending` (a log on disk fetching them); the group it was for
stops there, and the owner pumps again when the log says they can be read.

Batching: a slice of at least ``max_events`` records or ``max_bytes`` bytes goes out at
once; a smaller one waits until the stream's flush deadline, which :meth:`Fanout.get_timer`
reports and :meth:`Fanout.handle_timer` honours. The deadline depends on ``max_delay``:

* at least :data:`PASS_FLUSH_BELOW_S` (1 ms, a delay an event loop can honour): ``now +
  max_delay`` when a partial batch first waited, a real timer;
* above 0 and below it (the default, 250 us): the end of the current pass of the loop.
  The deadline is the ``now`` of the input that left the partial batch, so it is already
  due; the glue fires what is due once the pass has fed every datagram that arrived
  (``FelixServer.datagrams_to_send``), so every record published in one pass leaves in one
  batch, with no timer: asyncio rounds a sub-millisecond wait up to a whole millisecond,
  which made a 250 us delay cost more than 1 ms. :meth:`Stream.flushes_at_pass_end` says
  such a flush waits, so the engine lists the stream for the pass end rather than giving
  the deadline to its timer heap (:mod:`felix_core.registry`);
* 0: no batching, every append is delivered at once.

Credit grants and resumes flush at once: the records that were held back have already
waited.

Ordering and gaps: a cursor only moves forward by the length of the slice it received, so
every subscription sees its records in offset order with no gap, unless a
:class:`~felix_core.events.RecordsSkipped` says exactly how many records it missed. That
happens when retention trimmed records below a cursor (``drop_oldest``, and age retention
under ``block``): at its next read the cursor jumps to the first retained offset and the gap
reports the distance. Under ``disconnect`` a subscription whose unread records are trimmed
by a publish ends at once with reason ``lagged``; under ``block`` a publish that would trim
records some cursor has not read is refused with a retryable
:class:`~felix_core.errors.Overloaded`, so the log never grows past its bound.

Outputs (:class:`~felix_core.events.RecordsDelivered`,
:class:`~felix_core.events.RecordsSkipped`, :class:`~felix_core.events.SubscriptionClosed`)
are appended to a list owned by the caller (the broker facade), which drains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum

from felix_core.errors import CursorTooOld, InvalidArgument, Overloaded, TooLarge
from felix_core.events import EngineEvent, RecordsDelivered, RecordsSkipped, SubscriptionClosed
from felix_core.limits import MemoryBudget
from felix_core.log import Log, LogSlice, MemoryLog, ReadPending, TooOld, record_size
from felix_core.settings import BatchPolicy, SlowConsumerPolicy, StreamSettings

__all__ = [
    "PASS_FLUSH_BELOW_S",
    "BatchPolicy",
    "Fanout",
    "SlowConsumerPolicy",
    "StartKind",
    "Stream",
    "StreamSettings",
    "Subscription",
    "batch_byte_size",
]


PASS_FLUSH_BELOW_S = 0.001
"""A batch delay shorter than this (and above 0) flushes at the end of the loop's pass
instead of on a timer: event loops do not honour shorter waits (asyncio rounds them up to
1 ms). See the module docstring."""


class StartKind(IntEnum):
    """Where a new subscription starts (same values as the wire's ``StartKind``)."""

    LATEST = 0
    EARLIEST = 1
    OFFSET = 2
    TIMESTAMP = 3


# -- subscriptions -------------------------------------------------------------------------


class Subscription:
    """A cursor with credit. Owned by a :class:`Fanout`; the facade reads its fields."""

    __slots__ = (
        "closed",
        "conn_id",
        "credit_bytes",
        "credit_messages",
        "cursor",
        "delivered",
        "id",
        "paused",
        "start_offset",
    )

    def __init__(self, sub_id: int, conn_id: int, cursor: int, messages: int, nbytes: int) -> None:
        self.id = sub_id
        self.conn_id = conn_id
        self.cursor = cursor
        self.credit_messages = messages
        self.credit_bytes = nbytes
        self.paused = False
        self.delivered = 0
        self.start_offset = cursor
        self.closed = False
        """Set when it leaves its fanout (whoever else indexes it drops it then)."""

    def __repr__(self) -> str:
        return (
            f"Subscription(id={self.id}, conn={self.conn_id}, cursor={self.cursor}, "
            f"credit=({self.credit_messages}, {self.credit_bytes}), paused={self.paused})"
        )


def batch_byte_size(
    payloads: Sequence[bytes],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[dict[str, bytes] | None] | None,
) -> int:
    """The log byte size of a batch (see :func:`~felix_core.log.record_size`).

    Args:
        payloads: the payloads.
        keys: None or one optional key per payload.
        headers: None or one optional header dict per payload.

    Returns:
        The sum of the records' byte sizes.
    """
    if keys is None and headers is None:
        return sum(map(len, payloads))
    n = len(payloads)
    return sum(
        map(
            record_size,
            payloads,
            keys if keys is not None else [None] * n,
            headers if headers is not None else [None] * n,
        )
    )


class Fanout:
    """The subscriptions following one log. See the module docstring."""

    def __init__(
        self,
        log: Log,
        out: list[EngineEvent],
        *,
        policy: SlowConsumerPolicy = SlowConsumerPolicy.DROP_OLDEST,
        batch: BatchPolicy | None = None,
    ) -> None:
        """Create a fanout with no subscriptions.

        Args:
            log: the log the subscriptions read.
            out: the list outputs are appended to (owned and drained by the caller).
            policy: the slow-consumer policy.
            batch: the batching policy (defaults when None).
        """
        self.log = log
        self.policy = policy
        self.batch = batch or BatchPolicy()
        self._out = out
        self._subs: dict[int, Subscription] = {}
        self._flush_at: float | None = None
        self.delivered_records = 0
        self.delivered_batches = 0
        self.gap_records = 0
        self.lagged = 0

    # -- subscriptions ---------------------------------------------------------------

    @property
    def subscriptions(self) -> Mapping[int, Subscription]:
        """The live subscriptions by id (read-only view)."""
        return self._subs

    def start_offset(self, start: StartKind | int, value: int | None) -> int:
        """Resolve a start position to an offset.

        Args:
            start: a :class:`StartKind`.
            value: the offset (OFFSET) or timestamp in ms (TIMESTAMP); ignored otherwise.

        Returns:
            The offset a subscription starting there receives first.

        Raises:
            InvalidArgument: unknown start kind, missing value, or an offset in the future.
            CursorTooOld: an offset below the first retained one.
        """
        log = self.log
        if start == StartKind.LATEST:
            return log.next_offset
        if start == StartKind.EARLIEST:
            return log.first_offset
        if start not in (StartKind.OFFSET, StartKind.TIMESTAMP):
            raise InvalidArgument(f"unknown start kind {start!r}", details={"field": "start"})
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(
                "start_value must be a non-negative integer", details={"field": "start_value"}
            )
        if start == StartKind.TIMESTAMP:
            return log.offset_for_timestamp(value)
        if value < log.first_offset:
            raise CursorTooOld(
                f"offset {value} was trimmed; the first retained offset is {log.first_offset}",
                details={"requested": value, "first_offset": log.first_offset},
            )
        if value > log.next_offset:
            raise InvalidArgument(
                f"offset {value} is in the future; the next offset is {log.next_offset}",
                details={"field": "start_value", "next_offset": log.next_offset},
            )
        return value

    def subscribe(
        self,
        sub_id: int,
        conn_id: int,
        start: StartKind | int,
        start_value: int | None,
        credit_messages: int,
        credit_bytes: int,
        now: float,
        *,
        paused: bool = False,
    ) -> Subscription:
        """Add a subscription and deliver what it may already receive.

        Args:
            sub_id: the id (unique in the broker; chosen by the caller).
            conn_id: the connection that holds it.
            start: where to start (:class:`StartKind`).
            start_value: the offset or timestamp for OFFSET / TIMESTAMP.
            credit_messages: initial record credit (>= 0).
            credit_bytes: initial byte credit (>= 0).
            now: the current time.
            paused: start paused (the connection is paused).

        Returns:
            The new subscription; ``cursor`` is the first offset it will receive.

        Raises:
            InvalidArgument: a bad start or negative credit.
            CursorTooOld: the start offset was trimmed.
        """
        if credit_messages < 0 or credit_bytes < 0:
            raise InvalidArgument("credit must be >= 0", details={"field": "credit"})
        cursor = self.start_offset(start, start_value)
        sub = Subscription(sub_id, conn_id, cursor, credit_messages, credit_bytes)
        sub.paused = paused
        self._subs[sub_id] = sub
        self.pump(now, force=True)
        return sub

    def remove(self, sub_id: int, reason: str | None, message: str = "") -> Subscription | None:
        """Remove a subscription.

        Args:
            sub_id: the subscription.
            reason: when not None, a :class:`~felix_core.events.SubscriptionClosed` with this
                reason is output.
            message: detail for the output.

        Returns:
            The removed subscription, or None when there was none with that id.
        """
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return None
        sub.closed = True
        if reason is not None:
            self._out.append(
                SubscriptionClosed(
                    connection_id=sub.conn_id,
                    subscription_id=sub_id,
                    reason=reason,
                    message=message,
                    next_offset=sub.cursor,
                )
            )
        return sub

    def end_all(self, reason: str, message: str = "") -> list[Subscription]:
        """End every subscription with ``reason`` (e.g. the resource was deleted).

        Returns:
            The subscriptions that ended.
        """
        ended = list(self._subs.values())
        for sub in ended:
            self.remove(sub.id, reason, message)
        self._flush_at = None
        return ended

    def add_credit(self, sub: Subscription, messages: int, nbytes: int, now: float) -> None:
        """Grant a subscription more credit and deliver what it allows.

        Args:
            sub: the subscription (one of this fanout's).
            messages: more records (>= 0).
            nbytes: more record bytes (>= 0).
            now: the current time.

        Raises:
            InvalidArgument: a negative grant.
        """
        if messages < 0 or nbytes < 0:
            raise InvalidArgument("credit must be >= 0", details={"field": "credit"})
        sub.credit_messages += messages
        sub.credit_bytes += nbytes
        self.pump(now, force=True)

    # -- delivery --------------------------------------------------------------------

    def pump(self, now: float, force: bool = False) -> None:
        """Deliver to every eligible subscription. See the module docstring.

        Args:
            now: the current time (arms the flush deadline for partial batches).
            force: deliver partial batches too (the flush deadline passed, or the records
                have waited for credit already).
        """
        end = self.log.next_offset
        groups: dict[int, list[Subscription]] = {}
        for sub in self._subs.values():
            if (
                sub.cursor < end
                and not sub.paused
                and sub.credit_messages > 0
                and sub.credit_bytes > 0
            ):
                group = groups.get(sub.cursor)
                if group is None:
                    groups[sub.cursor] = [sub]
                else:
                    group.append(sub)
        waiting = False
        for offset, subs in groups.items():
            waiting |= self._deliver_group(offset, subs, end, force)
        if not waiting:
            self._flush_at = None
        elif self._flush_at is None:
            self._arm_flush(now)

    def _arm_flush(self, now: float) -> None:
        """A partial batch starts waiting: its flush deadline."""
        delay = self.batch.max_delay_s
        # Below what a loop can wait: due now, fired when the pass ends (see above).
        self._flush_at = now + delay if delay >= PASS_FLUSH_BELOW_S else now

    def _deliver_group(self, offset: int, subs: list[Subscription], end: int, force: bool) -> bool:
        """Deliver to subscriptions sharing a cursor; True if a partial batch is waiting."""
        log = self.log
        out = self._out
        max_events = self.batch.max_events
        max_bytes = self.batch.max_bytes
        while subs and offset < end:
            got = log.read(offset, max_events, max_bytes)
            if isinstance(got, TooOld):
                subs = self._handle_trimmed(subs, got.first_offset)
                offset = got.first_offset
                continue
            if isinstance(got, ReadPending):
                return False  # being fetched: the owner pumps again once it can be read
            n = len(got.payloads)
            size = got.byte_size
            got_end = got.base_offset + n  # got.next_offset
            if (
                not force
                and n < max_events
                and size < max_bytes
                and got_end == end
                and self.batch.max_delay_s > 0
            ):
                return True  # a partial batch at the end of the log waits for more
            keep: list[Subscription] = []
            for sub in subs:
                if sub.credit_messages >= n and sub.credit_bytes >= size:
                    piece, count, nbytes, piece_end = got, n, size, got_end
                else:
                    piece = self._credit_slice(offset, sub)
                    count, nbytes, piece_end = len(piece), piece.byte_size, piece.next_offset
                sub.cursor = piece_end
                sub.credit_messages -= count
                sub.credit_bytes -= nbytes
                sub.delivered += count
                self.delivered_records += count
                self.delivered_batches += 1
                out.append(
                    RecordsDelivered(connection_id=sub.conn_id, subscription_id=sub.id, slice=piece)
                )
                if piece is got and sub.credit_messages > 0 and sub.credit_bytes > 0:
                    keep.append(sub)
            subs = keep
            offset = got_end
        return False

    def _credit_slice(self, offset: int, sub: Subscription) -> LogSlice:
        """A slice limited by one subscription's credit (at least one record)."""
        got = self.log.read(
            offset,
            min(self.batch.max_events, sub.credit_messages),
            min(self.batch.max_bytes, sub.credit_bytes),
        )
        assert isinstance(got, LogSlice)  # the shared read at this offset just succeeded
        return got

    def _handle_trimmed(self, subs: list[Subscription], first: int) -> list[Subscription]:
        """Cursors below ``first``: gap (or end under ``disconnect``); returns survivors."""
        keep: list[Subscription] = []
        for sub in subs:
            missed = first - sub.cursor
            if self.policy is SlowConsumerPolicy.DISCONNECT:
                self._end_lagged(sub)
                continue
            self.gap_records += missed
            sub.cursor = first
            self._out.append(
                RecordsSkipped(
                    connection_id=sub.conn_id,
                    subscription_id=sub.id,
                    missed=missed,
                    next_offset=first,
                )
            )
            keep.append(sub)
        return keep

    def _end_lagged(self, sub: Subscription) -> None:
        self.lagged += 1
        self.remove(
            sub.id, "lagged", f"{self.log.first_offset - sub.cursor} unread records were trimmed"
        )

    def end_lagging(self) -> int:
        """Under ``disconnect``, end every subscription whose cursor was trimmed.

        Returns:
            How many subscriptions ended.
        """
        if self.policy is not SlowConsumerPolicy.DISCONNECT:
            return 0
        first = self.log.first_offset
        lagging = [s for s in self._subs.values() if s.cursor < first]
        for sub in lagging:
            self._end_lagged(sub)
        return len(lagging)

    def slowest_cursor(self) -> int | None:
        """The smallest cursor of any subscription, or None without subscriptions."""
        return min((s.cursor for s in self._subs.values()), default=None)

    # -- timers ----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The deadline of the waiting partial batch, or None."""
        return self._flush_at

    def handle_timer(self, now: float) -> None:
        """Flush partial batches when their deadline has passed.

        Args:
            now: the current time.
        """
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_at = None
            self.pump(now, force=True)


class Stream(Fanout):
    """A stream: a fanout that owns its log and accepts publishes."""

    def __init__(
        self, settings: StreamSettings, out: list[EngineEvent], *, log: Log | None = None
    ) -> None:
        """Create an empty stream.

        Args:
            settings: the stream's validated settings.
            out: the list outputs are appended to.
            log: the log to use (a fresh :class:`MemoryLog` when None).
        """
        super().__init__(
            log if log is not None else MemoryLog(),
            out,
            policy=settings.slow_consumer,
            batch=settings.batch,
        )
        self.settings = settings
        self.published_records = 0
        self.published_batches = 0
        self.blocked = 0
        self.trimmed_records = 0
        self._age_at: float | None = None

    def update_settings(self, settings: StreamSettings, now: float) -> None:
        """Apply new settings at once (retention trims, policies change).

        Args:
            settings: the new settings.
            now: the current time.
        """
        self.settings = settings
        self.policy = settings.slow_consumer
        self.batch = settings.batch
        self._trim(now)
        self.pump(now, force=True)

    def publish(
        self,
        payloads: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
        now: float,
        nbytes: int | None = None,
        budget: MemoryBudget | None = None,
    ) -> tuple[int, int]:
        """Append a validated batch and deliver it.

        Args:
            payloads: at least one payload.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.
            now: the current time; records are stamped ``int(now * 1000)``.
            nbytes: the batch's byte size (:func:`batch_byte_size`; computed when None).
            budget: the engine's memory budget: the append must fit it, net of the records
                it evicts (None: not checked).

        Returns:
            ``(first_offset, last_offset)`` of the new records.

        Raises:
            TooLarge: the batch alone exceeds the stream's retention.
            Overloaded: the memory budget would be exceeded, or under ``block`` the append
                would trim records some subscription has not read yet (retryable).
        """
        n = len(payloads)
        if nbytes is None:
            nbytes = batch_byte_size(payloads, keys, headers)
        retention = self.settings.retention
        if (retention.max_records is not None and n > retention.max_records) or (
            retention.max_bytes is not None and nbytes > retention.max_bytes
        ):
            raise TooLarge(
                "the batch is larger than the stream's retention",
                details={"records": n, "bytes": nbytes},
            )
        log = self.log
        evict: int | None = None  # records the append evicts, computed once if needed
        if budget is not None and not budget.fits(nbytes):
            evict = log.evictions_for(n, nbytes, retention)
            freed = 0
            if evict:
                got = log.read(log.first_offset, evict, 1 << 62)
                freed = got.byte_size if isinstance(got, LogSlice) else 0
            budget.check(nbytes - freed, "publish")
        if self.policy is SlowConsumerPolicy.BLOCK and self._subs:
            if evict is None:
                evict = log.evictions_for(n, nbytes, retention)
            if evict:
                slowest = self.slowest_cursor()
                assert slowest is not None
                if slowest < log.first_offset + evict:
                    self.blocked += 1
                    raise Overloaded(
                        "a slow subscriber has not read the records this publish would evict",
                        details={"slowest_offset": slowest, "first_offset": log.first_offset},
                    )
        now_ms = int(now * 1000)
        first = log.append_batch(payloads, now_ms, keys, headers)
        self.published_records += n
        self.published_batches += 1
        self._trim(now)
        if not self._waits_whole(first, n, nbytes, now):
            self.pump(now)
        return first, first + n - 1

    def _waits_whole(self, first: int, n: int, nbytes: int, now: float) -> bool:
        """What :meth:`pump` would find, without reading the log, in the common case of
        one publish at a time: a batch smaller than ``max_events`` and ``max_bytes``,
        appended at ``first`` to a memory log, which every subscription that can take
        records has to read from its start. Read, it is a partial batch at the end of the
        log, so it waits: the flush deadline is armed as :meth:`pump` arms it and True is
        returned. False in every other case (:meth:`pump` decides)."""
        batch = self.batch
        log = self.log
        if (
            n >= batch.max_events
            or nbytes >= batch.max_bytes
            or batch.max_delay_s <= 0
            or type(log) is not MemoryLog  # a disk log's read may stop at a chunk's end
            or first < log.first_offset
        ):
            return False
        waiting = False
        for sub in self._subs.values():
            if sub.paused or sub.credit_messages <= 0 or sub.credit_bytes <= 0:
                continue  # pump passes it by too
            if sub.cursor != first:
                return False
            waiting = True
        if waiting and self._flush_at is None:
            self._arm_flush(now)
        return waiting

    def _trim(self, now: float) -> None:
        """Apply retention; end lagging subscriptions under ``disconnect``."""
        log = self.log
        retention = self.settings.retention
        dropped = log.apply_retention(retention, int(now * 1000))
        if dropped:
            self.trimmed_records += dropped
            self.end_lagging()
        self._age_at = None
        oldest = log.first_timestamp_ms
        if retention.max_age_ms is not None and oldest is not None:
            # A record is dropped once now_ms > ts + max_age; +0.5 ms absorbs float rounding.
            self._age_at = (oldest + retention.max_age_ms + 1.5) / 1000

    def get_timer(self) -> float | None:
        """The earliest of the flush deadline and the next age-retention deadline."""
        flush = self._flush_at
        age = self._age_at
        if flush is None:
            return age
        if age is None or flush < age:
            return flush
        return age

    def flushes_at_pass_end(self) -> bool:
        """Whether a partial batch waits for the end of the loop's pass (its flush deadline
        armed with a ``max_delay`` below :data:`PASS_FLUSH_BELOW_S`): the engine lists such a
        stream for the pass end instead of giving its deadline to the timer heap."""
        return self._flush_at is not None and self.batch.max_delay_s < PASS_FLUSH_BELOW_S

    def age_timer(self) -> float | None:
        """The next age-retention deadline alone (:meth:`get_timer` without the flush)."""
        return self._age_at

    def handle_timer(self, now: float) -> None:
        """Flush partial batches and apply age retention when due.

        Args:
            now: the current time.
        """
        if self._age_at is not None and now >= self._age_at:
            self._trim(now)
            self.pump(now, force=True)
        super().handle_timer(now)

    def stats(self) -> dict[str, int]:
        """Counters and gauges of the stream."""
        return {
            "records": self.log.record_count,
            "bytes": self.log.byte_size,
            "first_offset": self.log.first_offset,
            "next_offset": self.log.next_offset,
            "subscriptions": len(self._subs),
            "published_records": self.published_records,
            "published_batches": self.published_batches,
            "delivered_records": self.delivered_records,
            "delivered_batches": self.delivered_batches,
            "gap_records": self.gap_records,
            "lagged_subscriptions": self.lagged,
            "blocked_publishes": self.blocked,
            "trimmed_records": self.trimmed_records,
        }
