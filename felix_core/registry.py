"""The registry of resources: one partition per stream, queue and cache, and their timers.

The registry is fed the metadata of leaf resources (:meth:`Registry.apply`, from the engine's
``metadata_changed``) and keeps exactly one partition per record it holds: built when a
record appears (its log opened from the :class:`~felix_core.log.LogStore`), reconfigured when
a newer generation arrives, closed when the record goes (or is replaced by one with another
``uid``: a resource deleted and created again). A request looks its partition up by path and
nothing else: no store is asked, no version compared.

Every partition's deadline is kept in one :class:`~felix_proto.deadlines.Deadlines` heap. A
request that touched a partition says so (:meth:`Registry.reschedule`, a dictionary insert);
the touched partitions' deadlines are recomputed once, before the next
:meth:`Registry.get_timer` or :meth:`Registry.handle_timer`, which fires the due ones.

The pass-end flush. A publish that leaves a partial batch for the end of the loop's pass
(the default batching, :mod:`felix_core.streams` "Batching") has a deadline that is due at
once and fired by the very next :meth:`Registry.handle_timer`: the glue's pass end. Such a
stream, when its other deadline (age retention) is the one the heap holds already, is
listed for the pass end (:meth:`Registry.published`) instead of going through the heap (a
push when recomputed, a pop when due, another recomputation after): :meth:`get_timer`
reports the earliest listed flush, :meth:`handle_timer` fires the listed streams first,
and a stream whose deadline moved meanwhile (a flush not yet due at an earlier ``now``,
age retention applied) goes back to the heap as a touched partition.
Engine-wide figures (queue and cache totals, counters of deleted caches) are computed here,
over the partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from felix_core.cache import CACHE_COUNTERS, CacheStats, CacheTotals
from felix_core.errors import EngineError, NotFound
from felix_core.events import EngineEvent, RequestRefused
from felix_core.limits import BrokerConfig, MemoryBudget
from felix_core.log import Log, LogStore, MemoryMeter
from felix_core.metadata import Kind, Path, ResourceRecord
from felix_core.partitions import (
    CachePartition,
    Commits,
    Partition,
    QueuePartition,
    StreamPartition,
)
from felix_core.queue_journal import STATE_SEGMENT_BYTES, state_path
from felix_core.queues import Consumer, Queue, QueueContext, QueueKey, QueueStats, QueueTotals
from felix_core.quotas import InflightBytes
from felix_core.settings import BatchPolicy
from felix_proto.deadlines import Deadlines

__all__ = ["Registry"]


class Registry:
    """The partitions of one engine. See the module docstring.

    Args:
        config: the engine configuration (stream defaults and caps, feed batching).
        logs: where partitions' logs come from.
        budget: the memory meter every log and cache charges.
        out: the engine's event list.
        cache_meter: the meter the caches of a tenant charge with their entries (one that
            forwards to ``budget``: the per-tenant cache-bytes quota); None: ``budget``.
        inflight: the in-flight bytes of a tenant, shared by its queues (the per-tenant
            quota); None: unlimited, per queue.
    """

    def __init__(
        self,
        config: BrokerConfig,
        logs: LogStore,
        budget: MemoryBudget,
        out: list[EngineEvent],
        *,
        cache_meter: Callable[[str], MemoryMeter] | None = None,
        inflight: Callable[[str], InflightBytes] | None = None,
    ) -> None:
        self.config = config
        self.logs = logs
        self.budget = budget
        self._cache_meter = cache_meter
        self.out = out
        self.streams: dict[Path, StreamPartition] = {}
        self.queues: dict[Path, QueuePartition] = {}
        self.caches: dict[Path, CachePartition] = {}
        self.queue_context = QueueContext(out, self._queue_for, inflight)
        self.deadlines: Deadlines[Partition] = Deadlines()
        self._touched: dict[Partition, None] = {}  # deadlines to recompute
        self._pass_end: dict[StreamPartition, None] = {}  # flushes due at the pass end
        self._pass_end_at: float | None = None  # the earliest of their deadlines
        self._feed_batch = BatchPolicy(
            max_events=config.batch_max_events,
            max_bytes=config.batch_max_bytes,
            max_delay_s=config.batch_max_delay_us / 1e6,
        )
        self._retired = dict.fromkeys(CACHE_COUNTERS, 0)  # counters of deleted caches

    # -- lookups ----------------------------------------------------------------------------

    def stream(self, path: Path) -> StreamPartition:
        """The stream at ``path``.

        Raises:
            NotFound: no such stream.
        """
        p = self.streams.get(path)
        if p is None:
            raise _not_found(Kind.STREAM, path)
        return p

    def queue(self, path: Path) -> QueuePartition:
        """The queue at ``path``.

        Raises:
            NotFound: no such queue.
        """
        p = self.queues.get(path)
        if p is None:
            raise _not_found(Kind.QUEUE, path)
        return p

    def cache(self, path: Path) -> CachePartition:
        """The cache at ``path``.

        Raises:
            NotFound: no such cache.
        """
        p = self.caches.get(path)
        if p is None:
            raise _not_found(Kind.CACHE, path)
        return p

    def find(self, kind: Kind, path: Path) -> Partition | None:
        """The partition of a leaf resource, or None."""
        table: dict[Path, StreamPartition] | dict[Path, QueuePartition] | dict[Path, CachePartition]
        if kind is Kind.STREAM:
            table = self.streams
        elif kind is Kind.QUEUE:
            table = self.queues
        elif kind is Kind.CACHE:
            table = self.caches
        else:
            return None
        return table.get(path)

    def partitions(self) -> Iterator[Partition]:
        """Every partition."""
        yield from self.streams.values()
        yield from self.queues.values()
        yield from self.caches.values()

    def _queue_for(self, key: QueueKey) -> Queue | None:
        p = self.queues.get(key)
        return p.queue if p is not None else None

    # -- metadata ---------------------------------------------------------------------------

    def apply(
        self, kind: Kind, path: Path, record: ResourceRecord | None, now: float
    ) -> list[Consumer]:
        """Follow one metadata change of a leaf resource.

        Args:
            kind: stream, queue or cache (other kinds are ignored).
            path: the resource.
            record: the record now, or None (deleted).
            now: the current time.

        Returns:
            The queue consumers that ended (their queue went).
        """
        current = self.find(kind, path)
        ended: list[Consumer] = []
        if current is not None and (record is None or record.uid != current.uid):
            ended = self._drop(current)
            meter = current.queue.inflight_bytes if isinstance(current, QueuePartition) else None
            if meter is not None and meter.waiting:  # its deliveries' room is free again
                meter.wake(now)
            current = None
        if record is None or kind not in (Kind.STREAM, Kind.QUEUE, Kind.CACHE):
            return ended
        if current is None:
            try:
                self._build(kind, record, now)
            except EngineError:
                return ended  # settings this engine cannot take: the resource stays absent
        elif record.generation > current.generation:
            current.reconfigure(record, self.config, now)
            self.reschedule(current)
        return ended

    def _build(self, kind: Kind, record: ResourceRecord, now: float) -> None:
        path = record.path
        log = self.logs.open_log(kind.value, path, record.settings, self.budget, uid=record.uid)
        state_log: Log | None = None
        if (
            kind is Kind.QUEUE
            and self.logs.durable
            and record.settings.get("durability") == "durable"
        ):
            try:  # the group state of a durable queue: an internal log beside it
                state_log = self.logs.open_log(
                    kind.value,
                    state_path(path),
                    {**record.settings, "segment_bytes": STATE_SEGMENT_BYTES},
                    self.budget,
                    uid=record.uid,
                )
            except EngineError:
                log.close()  # not served; its files stay for an operator and the next start
                self.logs.drop_log(kind.value, path, keep_files=True)
                raise
        try:
            if kind is Kind.STREAM:
                self.streams[path] = StreamPartition(record, log, self.config, self.out)
            elif kind is Kind.QUEUE:
                queue = self.queues[path] = QueuePartition(
                    record, log, self.queue_context, state_log, now
                )
                self.reschedule(queue)  # a rebuilt queue may have parked dead letters
            else:
                meter = self.budget if self._cache_meter is None else self._cache_meter(path[0])
                self.caches[path] = CachePartition(record, log, meter, self._feed_batch, now)
        except EngineError:
            log.close()
            # Never delete data here: the log may hold a recovered resource's records that
            # this engine cannot use (left for an operator).
            self.logs.drop_log(kind.value, path, keep_files=True)
            if state_log is not None:
                state_log.close()
                self.logs.drop_log(kind.value, state_path(path), keep_files=True)
            raise

    def _drop(self, partition: Partition) -> list[Consumer]:
        self.deadlines.discard(partition)
        self._touched.pop(partition, None)
        if isinstance(partition, StreamPartition):
            self._pass_end.pop(partition, None)
        kind, path = partition.kind, partition.path
        ended: list[Consumer] = []
        if isinstance(partition, StreamPartition):
            del self.streams[path]
            self._refuse_waiting(partition.commits, kind, path)
            partition.close()
        elif isinstance(partition, QueuePartition):
            del self.queues[path]
            self._refuse_waiting(partition.commits, kind, path)
            self._refuse_waiting(partition.state_commits, kind, path)
            ended = partition.close()
            if partition.state_log is not None:
                self.logs.drop_log(kind.value, state_path(path))
        else:
            del self.caches[path]
            for name in CACHE_COUNTERS:
                self._retired[name] += getattr(partition.cache, name)
            partition.close()
        self.logs.drop_log(kind.value, path)
        return ended

    def _refuse_waiting(self, commits: Commits, kind: Kind, path: Path) -> None:
        """The resource goes with its files: what waited for an fsync can never be
        committed, so it is answered now rather than left to the client's timeout."""
        error = NotFound(
            f"{kind.value} {'/'.join(path)} was deleted before the request was committed",
            details={"kind": kind.value},
        )
        self.out.extend(
            RequestRefused(connection_id=done.connection_id, request=done.request, error=error)
            for done in commits.fail_all()
        )

    # -- timers -----------------------------------------------------------------------------

    def reschedule(self, partition: Partition) -> None:
        """``partition`` was touched: its deadline may have moved (recomputed on the next
        :meth:`get_timer` or :meth:`handle_timer`, once however often it was touched)."""
        self._touched[partition] = None

    def published(self, partition: StreamPartition) -> None:
        """A publish touched a stream: as :meth:`reschedule`, except that a partial batch
        left for the pass end, with the stream's other deadline unchanged in the heap, is
        listed for the pass end (see the module docstring)."""
        stream = partition.stream
        if stream.flushes_at_pass_end() and self.deadlines.get(partition) == stream.age_timer():
            flush_at = stream.get_timer()
            pass_end_at = self._pass_end_at
            if pass_end_at is None or (flush_at is not None and flush_at < pass_end_at):
                self._pass_end_at = flush_at
            self._pass_end[partition] = None
        else:
            self._touched[partition] = None

    def _refresh(self) -> None:
        """Recompute the deadlines of the partitions touched since the last call, and of the
        queues a dead letter was appended to."""
        touched = self._touched
        moved = self.queue_context.touched
        if moved:
            for queue in moved:
                p = self.queues.get(queue.key)
                if p is not None:
                    touched[p] = None
            moved.clear()
        if not touched:
            return
        deadlines = self.deadlines
        for partition in touched:
            if self.find(partition.kind, partition.path) is partition:  # still registered
                deadlines.set(partition, partition.get_timer())
        touched.clear()

    def get_timer(self) -> float | None:
        """The earliest deadline of any partition, or None."""
        self._refresh()
        earliest = self.deadlines.earliest()
        pass_end_at = self._pass_end_at
        if pass_end_at is not None and (earliest is None or pass_end_at < earliest):
            return pass_end_at
        return earliest

    def handle_timer(self, now: float) -> None:
        """Fire every partition whose deadline is due: the streams listed for the pass end
        first, then the heap's."""
        if self._pass_end:
            listed, self._pass_end = self._pass_end, {}
            self._pass_end_at = None
            deadlines = self.deadlines
            for stream_partition in listed:
                stream_partition.handle_timer(now)
                if deadlines.get(stream_partition) != stream_partition.get_timer():
                    self._touched[stream_partition] = None  # not flushed yet, or trimmed
        self._refresh()
        for partition in self.deadlines.pop_due(now):
            partition.handle_timer(now)
            self._touched[partition] = None

    # -- figures ----------------------------------------------------------------------------

    def queue_totals(self, now: float) -> QueueTotals:
        """Figures over every queue: O(groups) per queue, never a walk over messages."""
        records = depth = in_flight = nbytes = 0
        oldest: int | None = None
        for p in self.queues.values():
            q = p.queue
            records += q.log.record_count
            nbytes += q.log.byte_size
            depth += q.depth()
            in_flight += q.in_flight()
            stamp = q.oldest_timestamp_ms()
            if stamp is not None and (oldest is None or stamp < oldest):
                oldest = stamp
        ctx = self.queue_context
        return QueueTotals(
            queues=len(self.queues),
            records=records,
            bytes=nbytes,
            depth=depth,
            in_flight=in_flight,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest / 1000.0),
            redeliveries=ctx.redeliveries,
            dead_lettered=ctx.dead_lettered,
        )

    def cache_totals(self) -> CacheTotals:
        """Figures over every cache (deleted ones' counters included): O(caches)."""
        counts = dict(self._retired)
        entries = nbytes = 0
        for p in self.caches.values():
            c = p.cache
            entries += len(c)
            nbytes += c.entry_bytes
            for name in CACHE_COUNTERS:
                counts[name] += getattr(c, name)
        return CacheTotals(caches=len(self.caches), entries=entries, bytes=nbytes, **counts)

    def queue_detail(self, now: float) -> dict[Path, QueueStats]:
        """Each queue's stats."""
        return {path: p.queue.stats(now) for path, p in self.queues.items()}

    def cache_detail(self) -> dict[Path, CacheStats]:
        """Each cache's stats."""
        return {path: p.cache.stats() for path, p in self.caches.items()}


def _not_found(kind: Kind, path: Path) -> NotFound:
    return NotFound(f"{kind.value} {'/'.join(path)} not found", details={"kind": kind})
