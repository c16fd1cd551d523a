"""The append-only log: the one data structure every projection sits on.

Theory of operation
-------------------
A log is a sequence of records numbered by *offsets*. Offsets start at 0 (or at the offset a
log is created with) and only grow; trimming removes the oldest records but never reuses an
offset. ``first_offset`` is the oldest retained offset and ``next_offset`` the offset the next
append gets; the log is empty exactly when they are equal.

:class:`MemoryLog` keeps records as *parallel Python lists* (payloads, timestamps, keys,
headers) plus an ``array('q')`` of cumulative byte sizes: 8 bytes a record, where a list of
ints cost 40 (an int object and its slot), a sixth of what a retained 100-byte record cost.
List index ``i`` holds offset ``_base + i``; the live records are the indices from ``_head``
to the end. The key and header lists are *columns* that exist only while a retained record
has a key (headers): until then, and again once the last such record is trimmed, the column
is None and so is every record's key (headers), and a stream of plain records pays no slot
for them. Trimming only advances ``_head``
(and drops the references of the trimmed payloads at once, so their memory is released);
the dead prefix of the lists is deleted in one go when it is as long as the live part, so
trimming is amortised O(1) per record.

A read is list slicing: no per-record objects are created, and the byte limit is found by
bisecting the cumulative sizes, so a read costs O(log n) plus the copy of the slice's
references. The result is a :class:`LogSlice`, which maps 1:1 onto the wire ``EventBatch``;
the stream engine hands the *same* slice to every subscriber reading at the same position so
that the runtime encodes it once.

Record timestamps are integer milliseconds and never decrease along the log: an append whose
time is earlier than the last record's (a wall clock stepping back) is stamped with the last
record's time. This keeps :meth:`MemoryLog.offset_for_timestamp` and age retention a bisect.

The byte size of a record is ``len(payload)`` plus ``len(key)`` plus, for each header, the
UTF-8 length of its name plus the length of its value.

Memory. A log is given a :class:`MemoryMeter` (the engine's memory budget) and charges it
with every byte it comes to hold or lets go of, as it happens: appends, trims and
:meth:`MemoryLog.close`. So the engine's count is exact without asking anybody for
before-and-after sizes.

Retention is passed in, not held: :meth:`MemoryLog.apply_retention` trims to a
:class:`Retention` and :meth:`MemoryLog.evictions_for` says how many records an append would
evict, which the ``block`` slow-consumer policy needs *before* appending.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Log",
    "LogPath",
    "LogSlice",
    "LogStore",
    "MemoryLog",
    "MemoryLogStore",
    "MemoryMeter",
    "ReadPending",
    "Retention",
    "TooOld",
    "record_size",
]

# Compact the dead prefix of the lists only once it is at least this long (and at least as
# long as the live part), so small logs do not compact on every trim.
_MIN_COMPACT = 1024


@dataclass(frozen=True, slots=True)
class LogSlice:
    """A run of consecutive records returned by a read; maps 1:1 onto the wire ``EventBatch``.

    The lists are fresh copies made by the read and must not be mutated by receivers: one
    slice may be shared by many subscribers.
    """

    base_offset: int
    """Offset of the first record in the slice (the slice's position when it is empty)."""
    payloads: list[bytes]
    """Record payloads, in offset order."""
    timestamps_ms: list[int]
    """Append time of each record, integer milliseconds since the Unix epoch."""
    keys: list[bytes | None] | None
    """Per-record keys, or None when no record in the slice has a key."""
    headers: list[dict[str, bytes] | None] | None
    """Per-record headers, or None when no record in the slice has headers."""
    byte_size: int
    """Sum of the records' byte sizes (payload + key + header bytes)."""

    @property
    def next_offset(self) -> int:
        """The offset just after the last record of the slice."""
        return self.base_offset + len(self.payloads)

    def __len__(self) -> int:
        return len(self.payloads)


@dataclass(frozen=True, slots=True)
class TooOld:
    """A read below the first retained offset: the records were trimmed by retention."""

    requested: int
    """The offset that was asked for."""
    first_offset: int
    """The oldest offset still retained."""


@dataclass(frozen=True, slots=True)
class ReadPending:
    """A read of records the log does not hold in memory: it is fetching them (from disk)
    and the engine is told when they can be read (``Broker.log_readable``). A
    :class:`MemoryLog` never answers this."""

    offset: int
    """The offset that was asked for."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much a log keeps. ``None`` means "no limit" for that dimension."""

    max_records: int | None = None
    """Keep at most this many records."""
    max_bytes: int | None = None
    """Keep at most this many record bytes."""
    max_age_ms: int | None = None
    """Drop records whose timestamp is more than this many milliseconds before now."""


class MemoryMeter(Protocol):
    """What counts the bytes the engine holds (:class:`~felix_core.limits.MemoryBudget`)."""

    def adjust(self, delta: int) -> None:
        """The holder now holds ``delta`` more bytes (fewer when negative)."""
        ...


@runtime_checkable
class Log(Protocol):
    """The interface of a log. :class:`MemoryLog` now; a disk log later.

    Two things may happen later than the call that causes them, so that a log whose records
    live on disk fits the same interface: a record is *committed* (as durable as the log's
    store makes records: fsynced, for a disk log) some time after it is appended
    (:attr:`committed_offset`, and the engine's ``log_committed`` input when it moves), and
    a read of records that are not in memory answers :class:`ReadPending` (the engine's
    ``log_readable`` input says when to read again). A memory log commits on append and
    holds every record it retains.
    """

    @property
    def committed_offset(self) -> int:
        """Every record below this offset is committed (at most ``next_offset``)."""
        ...

    @property
    def first_timestamp_ms(self) -> int | None:
        """The timestamp of the oldest retained record (None when the log is empty)."""
        ...

    @property
    def first_offset(self) -> int:
        """Oldest retained offset; equal to ``next_offset`` when the log is empty."""
        ...

    @property
    def next_offset(self) -> int:
        """Offset the next append gets."""
        ...

    @property
    def record_count(self) -> int:
        """Number of retained records."""
        ...

    @property
    def byte_size(self) -> int:
        """Sum of the byte sizes of the retained records."""
        ...

    def append(
        self,
        payload: bytes,
        timestamp_ms: int,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        """Append one record and return its offset."""
        ...

    def append_batch(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
    ) -> int:
        """Append records with one timestamp and return the offset of the first."""
        ...

    def read(self, offset: int, max_count: int, max_bytes: int) -> LogSlice | TooOld | ReadPending:
        """Read up to ``max_count`` records / ``max_bytes`` bytes from ``offset`` (or learn
        that they are being fetched: :class:`ReadPending`)."""
        ...

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """First retained offset with timestamp >= ``timestamp_ms``, else ``next_offset``."""
        ...

    def truncate_before(self, offset: int) -> int:
        """Drop the records below ``offset``; return how many were dropped."""
        ...

    def evictions_for(self, count: int, nbytes: int, retention: Retention) -> int:
        """How many retained records an append of (count, nbytes) would evict."""
        ...

    def apply_retention(self, retention: Retention, now_ms: int) -> int:
        """Trim to ``retention`` at time ``now_ms``; return how many records were dropped."""
        ...

    def close(self) -> None:
        """The log's resource is gone: let go of every record (its meter is credited)."""
        ...


def record_size(
    payload: bytes, key: bytes | None = None, headers: dict[str, bytes] | None = None
) -> int:
    """The byte size the log accounts for one record.

    Args:
        payload: the record payload.
        key: the optional key.
        headers: the optional headers.

    Returns:
        ``len(payload)`` + ``len(key)`` + the UTF-8 length of each header name and value.
    """
    size = len(payload)
    if key is not None:
        size += len(key)
    if headers:
        for name, value in headers.items():
            # an ASCII name (the usual case) is as long in UTF-8: no need to encode it
            size += (len(name) if name.isascii() else len(name.encode())) + len(value)
    return size


class MemoryLog:
    """An in-memory :class:`Log` over parallel lists. See the module docstring."""

    __slots__ = (
        "_base",
        "_cum",
        "_head",
        "_headered",
        "_headers",
        "_keyed",
        "_keys",
        "_last_ts",
        "_meter",
        "_payloads",
        "_timestamps",
    )

    def __init__(self, start_offset: int = 0, *, meter: MemoryMeter | None = None) -> None:
        """Create an empty log.

        Args:
            start_offset: the offset the first append gets (a log rebuilt after trimming).
            meter: charged with the bytes the log holds, as they change (none: uncounted).

        Raises:
            ValueError: ``start_offset`` is negative.
        """
        if start_offset < 0:
            raise ValueError("start_offset must be >= 0")
        self._meter = meter
        self._base = start_offset
        self._head = 0
        self._payloads: list[bytes] = []
        self._timestamps: list[int] = []
        # Columns: None (every record's key / headers is None) or parallel to _payloads.
        self._keys: list[bytes | None] | None = None
        self._headers: list[dict[str, bytes] | None] | None = None
        # _cum[i] = total bytes of list indices < i; one longer than the other lists.
        self._cum: array[int] = array("q", [0])
        self._keyed = 0  # retained records that have a key
        self._headered = 0  # retained records that have headers
        self._last_ts = -(1 << 63)  # timestamp of the last append, even if since trimmed

    # -- properties ---------------------------------------------------------------------

    @property
    def first_offset(self) -> int:
        """Oldest retained offset; equal to ``next_offset`` when the log is empty."""
        return self._base + self._head

    @property
    def next_offset(self) -> int:
        """Offset the next append gets."""
        return self._base + len(self._payloads)

    @property
    def record_count(self) -> int:
        """Number of retained records."""
        return len(self._payloads) - self._head

    @property
    def byte_size(self) -> int:
        """Sum of the byte sizes of the retained records."""
        return self._cum[-1] - self._cum[self._head]

    @property
    def committed_offset(self) -> int:
        """``next_offset``: a memory log commits every record as it is appended (it is as
        durable as memory makes it)."""
        return self._base + len(self._payloads)

    @property
    def first_timestamp_ms(self) -> int | None:
        """The timestamp of the oldest retained record (None when the log is empty)."""
        return self._timestamps[self._head] if self._head < len(self._timestamps) else None

    # -- appends ------------------------------------------------------------------------

    def _stamp(self, timestamp_ms: int) -> int:
        if timestamp_ms < self._last_ts:
            return self._last_ts
        self._last_ts = timestamp_ms
        return timestamp_ms

    def append(
        self,
        payload: bytes,
        timestamp_ms: int,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        """Append one record.

        Args:
            payload: the record payload.
            timestamp_ms: append time in integer milliseconds (clamped to never decrease).
            key: optional record key.
            headers: optional record headers (an empty dict is stored as None).

        Returns:
            The offset of the new record.
        """
        length = len(self._payloads)
        offset = self._base + length
        if not headers:
            headers = None
        if key is not None:
            if self._keys is None:
                self._keys = [None] * length
            self._keyed += 1
        if headers is not None:
            if self._headers is None:
                self._headers = [None] * length
            self._headered += 1
        self._timestamps.append(self._stamp(timestamp_ms))
        self._payloads.append(payload)
        if self._keys is not None:
            self._keys.append(key)
        if self._headers is not None:
            self._headers.append(headers)
        size = record_size(payload, key, headers)
        self._cum.append(self._cum[-1] + size)
        if self._meter is not None:
            self._meter.adjust(size)
        return offset

    def append_batch(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
    ) -> int:
        """Append records that share one timestamp.

        Args:
            payloads: the payloads, in order.
            timestamp_ms: append time in integer milliseconds (clamped to never decrease).
            keys: None, or one optional key per payload.
            headers: None, or one optional header dict per payload.

        Returns:
            The offset of the first new record (``next_offset`` before the call; when
            ``payloads`` is empty nothing is appended).

        Raises:
            ValueError: ``keys`` or ``headers`` is not as long as ``payloads``.
        """
        n = len(payloads)
        length = len(self._payloads)
        offset = self._base + length
        if keys is not None and len(keys) != n:
            raise ValueError("keys must be as long as payloads")
        if headers is not None and len(headers) != n:
            raise ValueError("headers must be as long as payloads")
        if n == 0:
            return offset
        cum = self._cum
        keyed = n - keys.count(None) if keys is not None else 0
        headered = n - sum(1 for h in headers if not h) if headers is not None else 0
        if keyed and self._keys is None:
            self._keys = [None] * length
        if headered and self._headers is None:
            self._headers = [None] * length
        self._payloads.extend(payloads)
        self._timestamps.extend([self._stamp(timestamp_ms)] * n)
        if keyed == 0 and headered == 0:
            if self._keys is not None:
                self._keys.extend([None] * n)
            if self._headers is not None:
                self._headers.extend([None] * n)
            sizes = accumulate(map(len, payloads), initial=cum[-1])
        else:
            key_list = keys if keys is not None else [None] * n
            norm = [h or None for h in headers] if headers is not None else [None] * n
            if self._keys is not None:
                self._keys.extend(key_list)
            if self._headers is not None:
                self._headers.extend(norm)
            sizes = accumulate(map(record_size, payloads, key_list, norm), initial=cum[-1])
            self._keyed += keyed
            self._headered += headered
        before = cum[-1]
        next(sizes)
        cum.extend(sizes)
        if self._meter is not None:
            self._meter.adjust(cum[-1] - before)
        return offset

    # -- reads --------------------------------------------------------------------------

    def read(self, offset: int, max_count: int, max_bytes: int) -> LogSlice | TooOld:
        """Read consecutive records starting at ``offset``.

        Args:
            offset: the first offset wanted.
            max_count: at most this many records (>= 1).
            max_bytes: at most this many record bytes, except that the first available
                record is always returned even if it alone is larger.

        Returns:
            A :class:`LogSlice` (empty when ``offset == next_offset``), or :class:`TooOld`
            when ``offset`` is below ``first_offset``.

        Raises:
            ValueError: ``offset`` is beyond ``next_offset`` or ``max_count`` < 1 (a caller
                bug).
        """
        base = self._base
        end = len(self._payloads)
        a = offset - base
        if a < self._head:
            return TooOld(requested=offset, first_offset=base + self._head)
        if a > end:
            raise ValueError(f"offset {offset} is beyond next_offset {base + end}")
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        if a == end:
            return LogSlice(offset, [], [], None, None, 0)
        cum = self._cum
        b = min(a + max_count, end)
        start_bytes = cum[a]
        if cum[b] - start_bytes > max_bytes:
            # cum[b] is known to be too big, so searching [a + 1, b) suffices.
            b = bisect_right(cum, start_bytes + max_bytes, a + 1, b) - 1
            if b <= a:
                b = a + 1
        keys: list[bytes | None] | None = None
        if self._keyed:
            assert self._keys is not None  # a keyed record is retained: the column exists
            keys = self._keys[a:b]
            if keys.count(None) == len(keys):
                keys = None
        headers: list[dict[str, bytes] | None] | None = None
        if self._headered:
            assert self._headers is not None
            headers = self._headers[a:b]
            if headers.count(None) == len(headers):
                headers = None
        return LogSlice(
            offset,
            self._payloads[a:b],
            self._timestamps[a:b],
            keys,
            headers,
            cum[b] - start_bytes,
        )

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """Find where a subscription starting at a point in time begins.

        Args:
            timestamp_ms: the time, integer milliseconds.

        Returns:
            The first retained offset whose timestamp is >= ``timestamp_ms``, or
            ``next_offset`` when there is none.
        """
        i = bisect_left(self._timestamps, timestamp_ms, self._head)
        return self._base + i

    # -- trimming -----------------------------------------------------------------------

    def _drop(self, n: int) -> None:
        """Drop the ``n`` oldest retained records (0 <= n <= record_count)."""
        if n <= 0:
            return
        h0 = self._head
        h1 = h0 + n
        if self._meter is not None:
            self._meter.adjust(self._cum[h0] - self._cum[h1])
        keys = self._keys
        headers = self._headers
        if n == 1:  # one at a time (a full log trimmed on each append): no slices
            if keys is not None and keys[h0] is not None:
                keys[h0] = None
                self._keyed -= 1
            if headers is not None and headers[h0] is not None:
                headers[h0] = None
                self._headered -= 1
            self._payloads[h0] = b""
        else:
            if keys is not None:
                self._keyed -= n - keys[h0:h1].count(None)
                keys[h0:h1] = [None] * n
            if headers is not None:
                self._headered -= n - headers[h0:h1].count(None)
                headers[h0:h1] = [None] * n
            # Release the payloads now; b"" is a shared singleton.
            self._payloads[h0:h1] = [b""] * n
        if keys is not None and not self._keyed:
            self._keys = None  # the last keyed record is gone: so is the column
        if headers is not None and not self._headered:
            self._headers = None
        self._head = h1
        if h1 >= _MIN_COMPACT and h1 >= len(self._payloads) - h1:
            del self._payloads[:h1]
            del self._timestamps[:h1]
            if self._keys is not None:
                del self._keys[:h1]
            if self._headers is not None:
                del self._headers[:h1]
            del self._cum[:h1]
            self._base += h1
            self._head = 0

    def truncate_before(self, offset: int) -> int:
        """Drop every record below ``offset``.

        Args:
            offset: the new first offset (at most ``next_offset``); offsets at or below
                ``first_offset`` drop nothing.

        Returns:
            How many records were dropped.

        Raises:
            ValueError: ``offset`` is beyond ``next_offset``.
        """
        if offset > self.next_offset:
            raise ValueError(f"offset {offset} is beyond next_offset {self.next_offset}")
        n = offset - self.first_offset
        if n <= 0:
            return 0
        self._drop(n)
        return n

    def _excess_records(self, count: int, nbytes: int, retention: Retention) -> int:
        """Oldest retained records to drop so that ``count``/``nbytes`` more fit."""
        live = len(self._payloads) - self._head
        drop = 0
        if retention.max_records is not None:
            drop = live + count - retention.max_records
        if retention.max_bytes is not None:
            cum = self._cum
            first = cum[self._head]
            excess = cum[-1] - first + nbytes - retention.max_bytes
            if excess > 0:
                i = bisect_left(cum, first + excess, self._head)
                drop = max(drop, i - self._head)
        return min(max(drop, 0), live)

    def evictions_for(self, count: int, nbytes: int, retention: Retention) -> int:
        """Say how many retained records an append would evict by count/byte retention.

        Age retention is not considered (it depends on time, not on the append).

        Args:
            count: number of records the append would add.
            nbytes: total byte size of those records.
            retention: the limits to apply.

        Returns:
            The number of currently retained (oldest) records that would be dropped, at most
            ``record_count``. If the new records alone exceed the limits, every retained
            record is counted.
        """
        return self._excess_records(count, nbytes, retention)

    def apply_retention(self, retention: Retention, now_ms: int) -> int:
        """Trim the log to ``retention``.

        Args:
            retention: the limits (records, bytes, age).
            now_ms: the current time, integer milliseconds.

        Returns:
            How many records were dropped.
        """
        drop = self._excess_records(0, 0, retention)
        if retention.max_age_ms is not None:
            cutoff = now_ms - retention.max_age_ms
            i = bisect_left(self._timestamps, cutoff, self._head)
            drop = max(drop, i - self._head)
        self._drop(drop)
        return drop

    def close(self) -> None:
        """Let go of every record (the resource is gone); the meter is credited."""
        self._drop(self.record_count)

    def __repr__(self) -> str:
        return (
            f"MemoryLog(first_offset={self.first_offset}, next_offset={self.next_offset}, "
            f"byte_size={self.byte_size})"
        )


LogPath = tuple[str, str, str]
"""``(tenant, namespace, name)`` of the resource a log belongs to."""


class LogStore(Protocol):
    """Where the broker gets the log of each stream, queue and cache change feed.

    The one seam between the engine and log storage: :class:`MemoryLogStore` today; a disk
    store (segments, fsync policy, recovery) or a replicated one plugs in here without the
    projections changing. ``settings`` are the resource's settings as stored in metadata
    (``durability`` among them), so a store can pick a log kind per resource.
    """

    @property
    def durable(self) -> bool:
        """Whether the store keeps logs across a restart. The broker refuses resources with
        ``durability=durable`` from a store that does not (a setting that did nothing would
        promise what nobody keeps)."""
        ...

    def open_log(
        self,
        kind: str,
        path: LogPath,
        settings: Mapping[str, Any],
        meter: MemoryMeter,
        *,
        uid: int,
    ) -> Log:
        """Return the log of a resource (new, or recovered by a persistent store).

        Args:
            kind: ``"stream"``, ``"queue"`` or ``"cache"`` (a cache's change feed).
            path: the resource's ``(tenant, namespace, name)``.
            settings: the resource's settings.
            meter: to charge with the bytes the log holds in memory.
            uid: the resource's uid (metadata): one incarnation of the resource. A resource
                deleted and created again under the same path has another uid, and a
                persistent store never hands it the records of the one before.
        """
        ...

    def drop_log(self, kind: str, path: LogPath, *, keep_files: bool = False) -> None:
        """Forget the log of a deleted resource (a persistent store deletes its data).

        Args:
            kind: as for :meth:`open_log`.
            path: as for :meth:`open_log`.
            keep_files: forget the log but leave its data (a log the engine could not use,
                e.g. a cache change log it cannot replay: left for an operator).
        """
        ...


class MemoryLogStore:
    """A :class:`LogStore` of in-memory logs: nothing survives the process."""

    __slots__ = ()

    @property
    def durable(self) -> bool:
        """False: nothing survives the process."""
        return False

    def open_log(
        self,
        kind: str,
        path: LogPath,
        settings: Mapping[str, Any],
        meter: MemoryMeter,
        *,
        uid: int = 0,
    ) -> Log:
        """Return a fresh :class:`MemoryLog` charging ``meter`` (every incarnation starts
        empty, whatever its ``uid``)."""
        return MemoryLog(meter=meter)

    def drop_log(self, kind: str, path: LogPath, *, keep_files: bool = False) -> None:
        """Nothing to do: the log's memory goes with its last reference."""
