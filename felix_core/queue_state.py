"""Per-queue state: a queue's log and bounds, its consumer groups and their consumers.

:class:`Queue` is public (the engine returns it from ``create_queue`` and ``queue``); the
group and consumer records are the engine's private bookkeeping, changed only by
:class:`~felix_core.queues.QueueEngine` (see the theory of operation in
:mod:`felix_core.queues` for what each field of a group means).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from felix_core.log import Log, LogSlice, MemoryLog
from felix_core.queue_types import GroupStats, QueueConfig, QueueDelivery, QueueKey, QueueStats

__all__ = ["Queue"]


class _Consumer:
    __slots__ = ("connection_id", "group", "id", "inflight", "paused", "prefetch", "suspected")

    def __init__(
        self, cid: int, connection_id: int, group: _Group, prefetch: int, paused: bool
    ) -> None:
        self.id = cid
        self.connection_id = connection_id
        self.group = group
        self.prefetch = prefetch
        self.paused = paused
        self.suspected = False  # a delivery timed out on it and it has not acked or nacked since
        self.inflight: dict[int, QueueDelivery] = {}


class _Group:
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
        self.inflight: OrderedDict[int, _Consumer] = OrderedDict()
        self.last_deadline = -math.inf
        self.consumers: list[_Consumer] = []
        self.suspects = 0  # consumers with ``suspected`` set
        self.rr = 0
        self.delivered = self.redeliveries = self.acked = self.nacked = 0
        self.timeouts = self.dead_lettered = 0

    def low_watermark(self) -> int:
        for offset in self.outstanding:
            return offset
        return self.cursor

    def waiting(self) -> int:
        log_next = self.queue.log.next_offset
        return log_next - self.cursor + len(self.ready) + len(self.delayed) + len(self.parked)

    def next_deadline(self) -> float:
        t = self.retry_at
        for cid in self.inflight:
            t = min(t, self.inflight[cid].inflight[cid].deadline)
            break
        if self.delayed:
            t = min(t, self.delayed[0][0])
        return t


def _ms(now: float) -> int:
    return int(now * 1000)


class _Usage:
    """Engine-wide figures of all the queues of an engine, kept current on every change:
    record bytes held, and redeliveries and dead letters made (unlike the per-group counters
    these survive deleting a queue or group, so a metric read from them never decreases)."""

    __slots__ = ("bytes", "dead_lettered", "redeliveries")

    def __init__(self) -> None:
        self.bytes = 0
        self.redeliveries = 0
        self.dead_lettered = 0


class Queue:
    """One queue: its log, configuration, groups and counters. Built by :class:`QueueEngine`.

    Callers read ``key``, ``config``, ``log`` and ``byte_size`` (the log is read-only to
    them); every change goes through the engine, which owns consumers, outputs and
    dead-letter routing.
    """

    __slots__ = ("config", "enqueued", "finished", "groups", "key", "log", "usage")

    def __init__(
        self, key: QueueKey, config: QueueConfig, usage: _Usage, log: Log | None = None
    ) -> None:
        self.key = key
        self.config = config
        self.log: Log = log if log is not None else MemoryLog()
        self.usage = usage
        self.groups: dict[str, _Group] = {}
        self.enqueued = 0
        self.finished = 0  # messages finished since the last trim

    @property
    def byte_size(self) -> int:
        """Record bytes the queue holds (for the facade's global memory accounting)."""
        return self.log.byte_size

    def trim(self) -> int:
        """Drop the log records every group has finished.

        Returns:
            How many records were dropped (none when the queue has no group).
        """
        self.finished = 0
        if not self.groups:
            return 0
        return self.truncate(min(g.low_watermark() for g in self.groups.values()))

    def truncate(self, offset: int) -> int:
        """Drop the records below ``offset``; return how many (the engine's usage follows)."""
        before = self.log.byte_size
        dropped = self.log.truncate_before(offset)
        self.usage.bytes -= before - self.log.byte_size
        return dropped

    def append_one(
        self, payload: bytes, now: float, key: bytes | None, headers: dict[str, bytes] | None
    ) -> int:
        """Append one record (admission already checked); return its offset."""
        log = self.log
        before = log.byte_size
        offset = log.append(payload, _ms(now), key, headers)
        self.usage.bytes += log.byte_size - before
        self.enqueued += 1
        return offset

    def append(
        self,
        payloads: Sequence[bytes],
        now: float,
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
    ) -> int:
        """Append records (admission already checked); return the first offset."""
        before = self.log.byte_size
        offset = self.log.append_batch(payloads, _ms(now), keys, headers)
        self.usage.bytes += self.log.byte_size - before
        self.enqueued += len(payloads)
        return offset

    def fits(self, count: int, nbytes: int) -> bool:
        """Whether ``count`` more records of ``nbytes`` bytes fit in the bounds right now."""
        cfg = self.config
        log = self.log
        if cfg.max_records is not None and log.record_count + count > cfg.max_records:
            return False
        return cfg.max_bytes is None or log.byte_size + nbytes <= cfg.max_bytes

    def read_one(self, offset: int) -> LogSlice:
        """Read the single retained record at ``offset`` (a bug if it was trimmed)."""
        sl = self.log.read(offset, 1, 0)
        assert isinstance(sl, LogSlice) and len(sl) == 1, "finished messages only are trimmed"
        return sl

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
        """Observable state; see :class:`QueueStats`.

        Args:
            now: the current time in seconds (for the oldest message's age).

        Returns:
            A snapshot of the queue's counters.
        """
        groups = {g.name: _group_stats(g) for g in self.groups.values()}
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


def _group_stats(g: _Group) -> GroupStats:
    return GroupStats(
        consumers=len(g.consumers),
        suspected=g.suspects,
        depth=g.waiting(),
        in_flight=len(g.inflight),
        cursor=g.cursor,
        low_watermark=g.low_watermark(),
        delivered=g.delivered,
        redeliveries=g.redeliveries,
        acked=g.acked,
        nacked=g.nacked,
        timeouts=g.timeouts,
        dead_lettered=g.dead_lettered,
        dead_letter_pending=len(g.parked),
    )


def _make_room(q: Queue, count: int, nbytes: int) -> bool:
    """Whether ``count`` records of ``nbytes`` fit, trimming finished records if needed."""
    if q.fits(count, nbytes):
        return True
    q.trim()
    return q.fits(count, nbytes)
