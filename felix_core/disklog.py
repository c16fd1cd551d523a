"""Durable logs: :class:`DiskLog` (the :class:`~felix_core.log.Log` of a durable resource)
and :class:`DiskLogStore` (the durable :class:`~felix_core.log.LogStore`). Pure: files are
reached through an injected :class:`~felix_core.filesystem.FileSystem`, time enters as
``now``, and what may block (fsync, cold reads) is handed out as *jobs*.

Theory of operation
-------------------
A DiskLog is a directory of segments (format: :mod:`felix_core.segments`) plus two bounded
in-memory parts: the *tail* (a :class:`~felix_core.log.MemoryLog` of the newest records, at
most ``tail_bytes``) and a small *read cache* of decoded chunks of older records. Both
charge the engine's memory meter.

Appends. :meth:`DiskLog.append_batch` encodes the records as one batch and writes it with
:meth:`FileSystem.append` *synchronously* (into the page cache: what ``accepted`` means for a
durable resource), then adds them to the tail. If the write fails, the partial bytes are
truncated away and the append raises :class:`~felix_core.errors.StorageFull` (disk full,
retryable) or :class:`~felix_core.errors.StorageFailed` *before* the records enter memory,
so a refused publish leaves nothing behind. The active segment rolls when it would exceed
``segment_bytes`` or its first record is ``segment_ms`` old.

Commits. :attr:`DiskLog.committed_offset` moves only when a *sync job* finishes: the job
fsyncs every file written since the last one (a rolled segment first, then writes its
index) and reports "committed up to N", N being ``next_offset`` when the job was made.
Jobs are made by :meth:`DiskLogStore.take_jobs` when a log wants a sync: its
``fsync_interval_ms`` passed (policy ``interval``, via ``get_timer`` / ``handle_timer``),
a committed publish waits (:meth:`DiskLog.request_commit`; at once when no sync is in
flight, else right after it: *group commit*, every waiter below N completes on one
fsync), or a segment rolled. Policy ``none`` syncs only for those last two. At most one
sync job per log is in flight. A failed sync *fails the log*: it refuses every write with
``StorageFailed`` and never fsyncs that file again (its dirty pages may be gone).

Reads. Records in the tail are read from memory. Older ones come from the read cache; a
miss answers :class:`~felix_core.log.ReadPending` and queues a *read job* that reads one
chunk (``read_chunk_bytes`` from the sparse index's position) on a worker thread and
decodes it there; its ``finish`` puts the chunk in the cache and tells the engine the log
is readable (``Broker.log_readable``), whose read then hits the cache.

Deletes. Dropping a deleted resource's log (:meth:`DiskLogStore.drop_log`) forgets it at
once; its directory goes with a *remove job* (``remove_tree`` on a worker thread) as soon
as no job for the log is in flight. One that cannot be removed is left for the sweep at the
next start, never opened again (a new incarnation has its own directory).

Jobs. ``job.run()`` does the I/O and CPU work and is safe on any thread (it touches only
the file system and its own fields). ``job.finish(outcome, now)`` runs on the loop thread
with what ``run`` returned or the exception it raised, updates the log, and returns the
:class:`StorageNotice` list the runtime turns into engine inputs: :class:`LogCommitted` ->
``Broker.log_committed``, :class:`LogReadable` -> ``Broker.log_readable``,
:class:`LogFailed` -> ``Broker.log_failed``. After any engine input, timer or finished
job, the runtime calls :meth:`DiskLogStore.take_jobs` again and re-arms its timer with
:meth:`DiskLogStore.get_timer`.

Recovery (on open). Closed segments whose index is valid and describes their current
length are trusted without reading them; a missing, damaged or stale index is rebuilt by
a scan (and written by the next sync job). The last segment is always scanned: a torn
tail is truncated (counted in ``truncated_bytes``); a checksum failure with data after it
(or a gap between segments) is *corruption*: the log serves the records below the bad
batch and refuses writes with ``StorageFailed`` naming the offset, leaving the files as
they are for an operator.

Retention deletes whole segments (:func:`~felix_core.segments.retention_deletions`): a log
keeps at least what its limits say and at most one segment more; ``first_offset`` moves
and reads below it answer :class:`~felix_core.log.TooOld` as before. Queues' trims
(:meth:`DiskLog.truncate_before`) move ``first_offset`` at once and delete the segments
wholly below it. A deleted segment leaves the log at once; its files go with an
:class:`UnlinkJob` on a worker thread once no job reads or syncs it (unlinking a large
file frees its blocks in the call: tens of milliseconds, never on the event loop). A
failed unlink is tried again after the log's next job; files a crash leaves behind are
valid segments, which recovery takes back in.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Protocol

from felix_core.errors import InvalidArgument, StorageFailed, StorageFull, TooLarge
from felix_core.filesystem import FileSystem, FileSystemError, NoSpace
from felix_core.log import (
    Log,
    LogPath,
    LogSlice,
    MemoryLog,
    MemoryMeter,
    ReadPending,
    Retention,
    TooOld,
)
from felix_core.segments import (
    BATCH_HEADER_SIZE,
    INDEX_INTERVAL,
    MAX_BATCH_SIZE,
    Batch,
    CorruptBatch,
    IndexBuilder,
    SegmentIndex,
    SegmentSummary,
    TailState,
    decode_batch,
    decode_index,
    encode_index,
    encode_stamped_batch,
    index_name,
    log_name,
    plan_recovery,
    retention_deletions,
    scan_chunks,
)

__all__ = [
    "DiskLog",
    "DiskLogConfig",
    "DiskLogStats",
    "DiskLogStore",
    "FsyncPolicy",
    "LogCommitted",
    "LogFailed",
    "LogReadable",
    "ReadJob",
    "RecoveryReport",
    "RemoveJob",
    "StorageJob",
    "StorageNotice",
    "SweepReport",
    "SyncJob",
    "UnlinkJob",
    "list_directory",
]

_READ_FAILURES_BEFORE_FAILING = 3


class FsyncPolicy(Enum):
    """When a durable log fsyncs besides committed publishes and segment rolls."""

    INTERVAL = "interval"
    """Every ``fsync_interval_ms`` while there are unsynced bytes."""
    NONE = "none"
    """Never on its own: the OS writes back when it likes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskLogConfig:
    """How durable logs are laid out and synced (store-wide defaults; a resource's settings
    ``fsync``, ``fsync_interval_ms``, ``segment_bytes`` and ``segment_ms`` override)."""

    segment_bytes: int = 256 << 20
    """Roll the active segment before it would grow past this (the reference's 256 MiB)."""
    segment_ms: int | None = 7 * 24 * 3600 * 1000
    """Roll the active segment once its first record is this old (None: never by age)."""
    index_interval: int = INDEX_INTERVAL
    """Bytes of batches between two sparse index entries."""
    tail_bytes: int | None = 8 << 20
    """Record bytes a stream's log keeps in memory (queues and cache feeds keep every
    retained record: None)."""
    read_cache_bytes: int = 4 << 20
    """Record bytes of decoded cold chunks kept per log."""
    read_chunk_bytes: int = 256 << 10
    """Bytes a read job reads (at least one whole batch)."""
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    """The fsync policy."""
    fsync_interval_ms: int = 100
    """The interval of :attr:`FsyncPolicy.INTERVAL`."""

    def with_settings(self, settings: Mapping[str, Any]) -> DiskLogConfig:
        """This config with a resource's overrides applied.

        Raises:
            InvalidArgument: an override is of the wrong type or out of range.
        """
        fsync = settings.get("fsync", self.fsync.value)
        try:
            policy = FsyncPolicy(fsync)
        except ValueError:
            raise InvalidArgument(f"fsync must be interval or none, not {fsync!r}") from None
        values: dict[str, int | None] = {}
        for name, low in (("fsync_interval_ms", 1), ("segment_bytes", 4096), ("segment_ms", 1)):
            value = settings.get(name, getattr(self, name))
            if name in settings and (type(value) is not int or value < low):
                raise InvalidArgument(f"{name} must be an integer >= {low}")
            values[name] = value
        interval = values["fsync_interval_ms"]
        seg_bytes = values["segment_bytes"]
        assert interval is not None and seg_bytes is not None
        return DiskLogConfig(
            segment_bytes=seg_bytes,
            segment_ms=values["segment_ms"],
            index_interval=self.index_interval,
            tail_bytes=self.tail_bytes,
            read_cache_bytes=self.read_cache_bytes,
            read_chunk_bytes=self.read_chunk_bytes,
            fsync=policy,
            fsync_interval_ms=interval,
        )


# -- notices and jobs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageNotice:
    """What a finished job tells the engine, about the log of ``(kind, path)``."""

    kind: str
    """``"stream"``, ``"queue"`` or ``"cache"``."""
    path: LogPath
    """The resource."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogCommitted(StorageNotice):
    """Every record below ``offset`` is fsynced: call ``Broker.log_committed``."""

    offset: int
    """The log's new ``committed_offset``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogReadable(StorageNotice):
    """Records a read found pending are in memory now: call ``Broker.log_readable``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFailed(StorageNotice):
    """The log failed and refuses writes: call ``Broker.log_failed`` with ``error``."""

    error: StorageFailed
    """Why, for the publishes that waited and for the operator."""


class StorageJob(Protocol):
    """Work a durable log hands out to run off the event loop.

    The runtime calls :meth:`run` on a worker thread, then :meth:`finish` on the loop
    thread with its result (or the exception it raised), and feeds the returned notices to
    the engine.
    """

    @property
    def kind(self) -> str:
        """The log's resource kind."""
        ...

    @property
    def path(self) -> LogPath:
        """The log's resource."""
        ...

    def run(self) -> object:
        """Do the I/O (thread-safe; may raise :class:`FileSystemError`)."""
        ...

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Apply ``run``'s result (or the exception it raised) on the loop thread."""
        ...


class _LogJob:
    """What every :class:`StorageJob` of a log has: the log (its resource's kind and
    path) and the file system the job runs on."""

    __slots__ = ("_fs", "_log")

    def __init__(self, log: DiskLog, fs: FileSystem) -> None:
        self._log = log
        self._fs = fs

    @property
    def kind(self) -> str:
        """The log's resource kind."""
        return self._log.kind

    @property
    def path(self) -> LogPath:
        """The log's resource."""
        return self._log.path


class SyncJob(_LogJob):
    """fsync a log's written files (and write the indexes of rolled segments)."""

    __slots__ = ("_segments", "indexes", "names", "target")

    def __init__(
        self,
        log: DiskLog,
        fs: FileSystem,
        names: list[str],
        indexes: list[tuple[str, bytes]],
        target: int,
        segments: list[tuple[_Segment, int]],
    ) -> None:
        super().__init__(log, fs)
        self._segments = segments  # (segment, its size when the job was made): loop side
        self.names = names
        """The files to fsync, in order (rolled segments first)."""
        self.indexes = indexes
        """``(name, bytes)`` of index files to write once the files are synced."""
        self.target = target
        """The log's ``next_offset`` when the job was made: committed once it finishes."""

    def run(self) -> list[str]:
        """fsync each file; then write each index (an index that cannot be written is
        left for later: it is rebuilt on recovery if missing).

        Returns:
            The names of the indexes that could not be written.

        Raises:
            FileSystemError: an fsync failed (the log fails).
        """
        for name in self.names:
            self._fs.sync(name)
        failed: list[str] = []
        if self._log.closed:
            return failed  # dropped meanwhile: its directory may hold a new log's files
        for name, data in self.indexes:
            try:
                self._fs.write_atomic(name, data)
            except FileSystemError:
                failed.append(name)
        return failed

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Move ``committed_offset`` (or fail the log); see :class:`StorageJob`."""
        return self._log._sync_finished(self, outcome, now)


class RemoveJob(_LogJob):
    """Remove a deleted resource's log directory: ``remove_tree`` walks and unlinks every
    file and fsyncs the parent, work for a worker thread, not the event loop. A directory
    that cannot be removed is left for the sweep at the next start (it removes the
    incarnations no resource names)."""

    __slots__ = ("directory",)

    def __init__(self, log: DiskLog, fs: FileSystem) -> None:
        super().__init__(log, fs)
        self.directory = log.directory
        """The incarnation's directory."""

    def run(self) -> None:
        """Remove the directory.

        Raises:
            FileSystemError: it could not be removed.
        """
        self._fs.remove_tree(self.directory)

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Nothing to tell the engine (the resource is gone from it already); see
        :class:`StorageJob`."""
        return []


class UnlinkJob(_LogJob):
    """Delete the files (segment and index) of segments retention or a trim dropped.

    Unlinking a large file frees its blocks in the system call: on ext4 about 16 ms for a
    synced 64 MiB segment and 67 ms for a 256 MiB one (the default ``segment_bytes``),
    too long a pause for the event loop, so it runs on a worker thread like an fsync. The
    directory entry's removal is made durable by the next sync of a file in the directory
    (``durable_removes=False``); a removal a crash undoes only brings back a segment whose
    records are valid, which recovery takes back in."""

    __slots__ = ("_segments", "names")

    def __init__(self, log: DiskLog, fs: FileSystem, segments: list[_Segment]) -> None:
        super().__init__(log, fs)
        self._segments = segments  # loop side only
        self.names = [
            name
            for seg in segments
            for name in (seg.name, f"{log.directory}/{index_name(seg.base)}")
        ]
        """The files to delete, each segment's log file before its index."""

    def run(self) -> None:
        """Delete the files (one already gone is fine).

        Raises:
            FileSystemError: a removal failed (tried again after the log's next job).
        """
        for name in self.names:
            self._fs.remove(name)

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Nothing to tell the engine; a failure puts the segments back to be deleted
        later; see :class:`StorageJob`."""
        return self._log._unlink_finished(self, outcome)


class ReadJob(_LogJob):
    """Read and decode one chunk of a segment for a cold read."""

    __slots__ = ("_segment", "limit", "n", "name", "offset", "pos")

    def __init__(self, log: DiskLog, fs: FileSystem, segment: _Segment, offset: int) -> None:
        super().__init__(log, fs)
        self._segment = segment  # loop side only
        self.name = segment.name
        """The segment file."""
        self.offset = offset
        """The offset the read wants: the chunk covers it."""
        self.pos = segment.index.position_for(offset)
        """Where to start reading (a batch boundary from the sparse index)."""
        self.limit = segment.size - self.pos
        """The most bytes there are to read (what was written when the job was made)."""
        self.n = min(log.config.read_chunk_bytes, self.limit)
        """How many bytes to read at first."""

    def run(self) -> list[Batch]:
        """Read the chunk and decode its whole batches; read on while the batch holding
        :attr:`offset` is not whole yet.

        Raises:
            FileSystemError: the read failed.
            CorruptBatch: a batch up to the one holding :attr:`offset` does not check out.
        """
        data = self._fs.read(self.name, self.pos, self.n)
        batches: list[Batch] = []
        p = 0
        while p < len(data) or (len(data) < self.limit and not self._covered(batches)):
            if len(data) - p < BATCH_HEADER_SIZE or (
                p + int.from_bytes(data[p + 4 : p + 8], "little") > len(data)
            ):
                if self._covered(batches) or len(data) >= self.limit:
                    break
                want = BATCH_HEADER_SIZE
                if len(data) - p >= BATCH_HEADER_SIZE:
                    want = int.from_bytes(data[p + 4 : p + 8], "little")
                more = min(p + want, self.limit) - len(data)
                extra = self._fs.read(self.name, self.pos + len(data), max(more, 1))
                if not extra:
                    break  # the file is shorter than when the job was made
                data += extra
                continue
            batch, p = decode_batch(data, p)
            batches.append(batch)
        if not self._covered(batches):
            raise CorruptBatch(f"{self.name} does not hold offset {self.offset} where expected")
        return batches

    def _covered(self, batches: list[Batch]) -> bool:
        return bool(batches) and batches[-1].next_offset > self.offset

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Fill the read cache and say the log is readable; see :class:`StorageJob`."""
        return self._log._read_finished(self, outcome)


# -- the log ------------------------------------------------------------------------------


@dataclass(slots=True)
class DiskLogStats:
    """A durable log's counters (the runtime exports them as ``felix_storage_*``)."""

    appends: int = 0
    """Successful appends (batches written)."""
    append_bytes: int = 0
    """Bytes written by them."""
    append_failures: int = 0
    """Appends refused by the file system (disk full, I/O error)."""
    syncs: int = 0
    """Sync jobs finished successfully."""
    sync_failures: int = 0
    """Sync jobs that failed (the log failed)."""
    segments_rolled: int = 0
    """Segments closed by size or age."""
    segments_deleted: int = 0
    """Segments deleted by retention or trims."""
    truncated_bytes: int = 0
    """Bytes of torn tails cut at recovery."""
    cold_reads: int = 0
    """Read jobs made."""
    read_cache_hits: int = 0
    """Reads below the tail served by the read cache."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What recovery found in a log's directory."""

    segments: int
    """Segments opened."""
    scanned_bytes: int
    """Bytes read and scanned (the tail, and segments whose index was rebuilt)."""
    truncated_bytes: int
    """Bytes of a torn tail cut off."""
    rebuilt_indexes: list[int] = field(default_factory=list)
    """Base offsets of closed segments whose index was missing, damaged or stale."""
    corrupt_offset: int | None = None
    """Where corruption starts (the log is read-only below it), or None."""
    strays: list[str] = field(default_factory=list)
    """Files that were not part of the log and were deleted."""


class _Segment:
    __slots__ = (
        "base",
        "builder",
        "busy",
        "closed",
        "created",
        "doomed",
        "entry_synced",
        "index_pending",
        "name",
        "synced",
    )

    def __init__(self, base: int, directory: str, builder: IndexBuilder) -> None:
        self.base = base
        self.name = f"{directory}/{log_name(base)}"
        self.builder = builder
        self.synced = 0  # bytes known fsynced
        self.entry_synced = False
        self.closed = False
        self.created = False  # the file exists (recovered, or appended to)
        self.index_pending = False  # closed, index not yet written
        self.busy = 0  # jobs in flight reading or syncing it
        self.doomed = False  # deleted: remove the file once no job uses it

    @property
    def index(self) -> SegmentIndex:
        return self.builder.index

    @property
    def summary(self) -> SegmentSummary:
        return self.builder.index.summary

    @property
    def size(self) -> int:
        return self.builder.index.summary.file_size

    @property
    def next_offset(self) -> int:
        return self.builder.index.summary.next_offset

    @property
    def dirty(self) -> bool:
        return self.size > self.synced or not self.entry_synced or self.index_pending


def _add_batch(log: MemoryLog, batch: Batch) -> None:
    stamps = batch.timestamps_ms
    if stamps[0] == stamps[-1]:
        log.append_batch(batch.payloads, stamps[0], batch.keys, batch.headers)
    else:
        for i, payload in enumerate(batch.payloads):
            log.append(payload, stamps[i], batch.keys[i], batch.headers[i])


def list_directory(fs: FileSystem, directory: str) -> dict[str, int]:
    """Make ``directory`` if missing and return its files' sizes by name: what recovery
    plans from (:func:`~felix_core.segments.plan_recovery`)."""
    fs.make_dirs(directory)
    return {name: fs.size(f"{directory}/{name}") for name in fs.list_dir(directory)}


def _trusted_builder(index: SegmentIndex, interval: int) -> IndexBuilder:
    builder = IndexBuilder(index.summary.base_offset, interval)
    builder.index = index
    return builder


class DiskLog:
    """A :class:`~felix_core.log.Log` on segments; see the module docstring."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        *,
        kind: str,
        path: LogPath,
        config: DiskLogConfig,
        meter: MemoryMeter | None = None,
        listing: Mapping[str, int] | None = None,
    ) -> None:
        """Open (recover) or create the log in ``directory``.

        Reads what recovery needs through ``fs`` synchronously (the tail segment, and the
        indexes of closed segments); never fsyncs (a rebuilt index is written by the first
        sync job).

        Args:
            fs: the file layer.
            directory: the log's directory (created if missing).
            kind: the resource kind (for notices).
            path: the resource (for notices).
            config: layout and fsync policy.
            meter: charged with the bytes of the tail and the read cache.
            listing: the directory's files and their sizes, if the caller already made the
                directory and listed it (:meth:`DiskLogStore.prepare_directory`, on a worker
                thread): the open then touches no file for an empty one.

        Raises:
            FileSystemError: the directory cannot be read or created.
        """
        self.fs = fs
        self.directory = directory
        self.kind = kind
        self.path = path
        self.config = config
        self.stats = DiskLogStats()
        self._meter = meter
        self._segments: list[_Segment] = []
        self._bases: list[int] = []
        self._first = 0
        self._committed = 0
        self._last_ts = -(1 << 63)
        self._failed: StorageFailed | None = None
        self._closed = False
        self._cache: OrderedDict[int, MemoryLog] = OrderedDict()
        self._cache_bytes = 0
        self._pending_reads: dict[tuple[int, int], ReadJob] = {}
        self._queued: list[StorageJob] = []
        self._read_failures = 0
        self._doomed: list[_Segment] = []
        self._unlinks: set[UnlinkJob] = set()  # queued or in flight
        self._closed_totals = (0, 0)  # records and record bytes of all segments but the last
        self._unsynced = 0
        self.sync_in_flight: SyncJob | None = None
        self._sync_wanted = False
        self._watch: dict[DiskLog, None] | None = None  # the store's logs needing attention
        self._listed = False  # in it
        self.commit_wanted = 0
        """The highest offset a committed publish waits for (0: none)."""
        self.last_sync_at: float | None = None
        """When the last sync job was made (None: never; the interval counts from it)."""
        self.recovery = self._recover(listing)
        self._tail = MemoryLog(start_offset=self._tail_start(), meter=meter)
        if config.tail_bytes is None:
            self._load_all()

    # -- recovery -----------------------------------------------------------------------

    def _recover(self, listing: Mapping[str, int] | None) -> RecoveryReport:
        """Open the directory's segments (see the module docstring, "Recovery"), listed
        now unless ``listing`` is given.

        A segment with a valid index was fsynced whole (its index is written after its
        fsync), and a sync job fsyncs older segments before newer ones. So a problem (a
        torn end, or a gap before the next segment) in a segment with no valid index at or
        after it is what a crash leaves of unsynced writes: it is cut there and the later
        segments (unsynced too) are deleted. Any other problem is corruption.
        """
        fs = self.fs
        d = self.directory
        interval = self.config.index_interval
        plan = plan_recovery(listing if listing is not None else list_directory(fs, d))
        for stray in plan.strays:
            fs.remove(f"{d}/{stray}")
        indexes: list[SegmentIndex | None] = []
        for seg_plan in plan.segments:
            index = None
            if seg_plan.has_index:
                iname = f"{d}/{index_name(seg_plan.base_offset)}"
                data = fs.read(iname, 0, fs.size(iname))
                index = decode_index(data, seg_plan.base_offset, seg_plan.log_size)
            indexes.append(index)
        last_indexed = max((i for i, x in enumerate(indexes) if x is not None), default=-1)
        scanned = 0
        truncated = 0
        rebuilt: list[int] = []
        corrupt: int | None = None
        cut_after: int | None = None  # segments after this position held unsynced data
        for i, seg_plan in enumerate(plan.segments):
            base = seg_plan.base_offset
            if self._segments and base != self._segments[-1].next_offset:
                if i > last_indexed:  # the previous segment lost its unsynced end
                    cut_after = i - 1
                else:
                    corrupt = self._segments[-1].next_offset
                break
            seg = _Segment(base, d, IndexBuilder(base, interval))
            seg.entry_synced = True
            seg.created = True
            self._segments.append(seg)
            index = indexes[i]
            if index is not None:
                seg.builder = _trusted_builder(index, interval)
                seg.closed = True
                seg.synced = seg.size
                continue
            result = scan_chunks(partial(fs.read, seg.name), seg_plan.log_size, base)
            scanned += seg_plan.log_size
            for info in result.batches:
                seg.builder.add(info)
            if result.state is TailState.CORRUPT or (
                result.state is TailState.TORN and i <= last_indexed
            ):
                corrupt = seg.next_offset
                break
            if result.state is TailState.TORN:
                truncated += seg_plan.log_size - result.valid_end
                fs.truncate(seg.name, result.valid_end)
                cut_after = i
                break
            if i < len(plan.segments) - 1:
                seg.closed = True
                seg.index_pending = True
                rebuilt.append(base)
        if cut_after is not None:
            for seg_plan in plan.segments[cut_after + 1 :]:
                truncated += seg_plan.log_size
                fs.remove(f"{d}/{log_name(seg_plan.base_offset)}")
                fs.remove(f"{d}/{index_name(seg_plan.base_offset)}")
            tail = self._segments[-1]
            if tail.index_pending:  # it is the active segment again
                tail.closed = tail.index_pending = False
                rebuilt.remove(tail.base)
        if corrupt is not None:
            self._failed = StorageFailed(
                f"the log of {self.kind} {'/'.join(self.path)} is damaged at offset {corrupt}:"
                " it serves the records below and refuses writes",
                details={"offset": corrupt},
            )
            for seg in self._segments:
                seg.closed = True
                seg.index_pending = False
        if not self._segments:
            self._segments.append(self._new_segment(0))
        elif self._segments[-1].closed and corrupt is None:
            self._segments.append(self._new_segment(self._segments[-1].next_offset))
        self._bases = [s.base for s in self._segments]
        for seg in self._segments[:-1]:
            self._count_closed(seg, +1)
        self._unsynced = sum(s.size - s.synced for s in self._segments)
        self._first = self._segments[0].base
        self._committed = self._segments[-1].next_offset
        for seg in reversed(self._segments):
            if seg.summary.last_timestamp_ms is not None:
                self._last_ts = seg.summary.last_timestamp_ms
                break
        self.stats.truncated_bytes = truncated
        if any(s.created and s.dirty for s in self._segments):
            self.sync_wanted = True  # what survived may not be on disk yet
        return RecoveryReport(
            len(self._segments), scanned, truncated, rebuilt, corrupt, list(plan.strays)
        )

    def _new_segment(self, base: int) -> _Segment:
        return _Segment(base, self.directory, IndexBuilder(base, self.config.index_interval))

    def _tail_start(self) -> int:
        return self._first if self.config.tail_bytes is None else self.next_offset

    def _load_all(self) -> None:
        """Fill the tail with every retained record (queues and cache feeds)."""
        for seg in self._segments:
            if seg.size == 0:
                continue
            data = self.fs.read(seg.name, 0, seg.size)
            p = 0
            while p < len(data):
                batch, p = decode_batch(data, p)
                _add_batch(self._tail, batch)

    # -- attention ----------------------------------------------------------------------

    @property
    def sync_wanted(self) -> bool:
        """A sync should be made as soon as none is in flight (commit waiting, roll, the
        fsync interval, shutdown)."""
        return self._sync_wanted

    @sync_wanted.setter
    def sync_wanted(self, wanted: bool) -> None:
        self._sync_wanted = wanted
        if wanted and not self._listed:
            self._wake()

    def watch(self, busy: dict[DiskLog, None]) -> None:
        """Let the store know, through ``busy``, when this log needs attention (see
        :meth:`DiskLogStore.take_jobs`); it is listed at once if it does now."""
        self._watch = busy
        if not self.idle:
            self._wake()

    def _wake(self) -> None:
        """Something to sync, a job queued or in flight: be in the store's busy logs."""
        if not self._listed and self._watch is not None:
            self._listed = True
            self._watch[self] = None

    def unlist_if_idle(self) -> None:
        """Leave the store's busy logs if there is nothing for it to do (the store calls
        this after taking the log's jobs)."""
        if self._listed and self.idle and self._watch is not None:
            self._listed = False
            self._watch.pop(self, None)

    @property
    def idle(self) -> bool:
        """Nothing to sync (or a failed log, which never syncs), no job queued or in
        flight: the store need not look at this log on its loop passes."""
        return (
            not self._queued
            and not self.jobs_in_flight
            and (
                self._failed is not None
                or self._closed
                or (self._unsynced == 0 and not self._sync_wanted)
            )
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def active(self) -> _Segment:
        return self._segments[-1]

    @property
    def first_offset(self) -> int:
        """Oldest retained offset; equal to ``next_offset`` when the log is empty."""
        return self._first

    @property
    def next_offset(self) -> int:
        """Offset the next append gets."""
        return self._segments[-1].next_offset

    @property
    def committed_offset(self) -> int:
        """Every record below it is fsynced (moved only by a finished sync job)."""
        return self._committed

    @property
    def record_count(self) -> int:
        """Number of retained records."""
        return self.next_offset - self._first

    @property
    def byte_size(self) -> int:
        """Record bytes retained: exact when the memory tail holds every retained record,
        else counted per segment (a segment partly below ``first_offset`` counts whole)."""
        if self._tail.first_offset <= self._first:
            return self._tail.byte_size
        return sum(s.summary.record_bytes for s in self._segments)

    @property
    def first_timestamp_ms(self) -> int | None:
        """The time age retention acts on: the timestamp of the *newest* record of the
        oldest non-empty segment (None when the log is empty).

        Records go a whole segment at a time, when the segment's last record ages out; the
        engine arms its age-retention timer from this value (``first_timestamp_ms +
        max_age_ms``), so it must be when something can go, not the oldest record's time
        (a timer armed from that would fire again and again while nothing can go).
        """
        first = self._first
        for seg in self._segments:
            summary = seg.builder.index.summary
            if summary.next_offset > first and summary.last_timestamp_ms is not None:
                return summary.last_timestamp_ms
        return None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (read from worker threads: a plain flag)."""
        return self._closed

    @property
    def failed(self) -> StorageFailed | None:
        """Why the log refuses writes (a failed fsync or write, or corruption), or None."""
        return self._failed

    @property
    def memory_bytes(self) -> int:
        """Record bytes held in memory (tail and read cache)."""
        return self._tail.byte_size + self._cache_bytes

    @property
    def unsynced_bytes(self) -> int:
        """Bytes written but not yet fsynced (kept as a count: the store reads it for its
        timer on every loop pass)."""
        return self._unsynced

    @property
    def segment_count(self) -> int:
        """Segments retained."""
        return len(self._segments)

    # -- appends ------------------------------------------------------------------------

    def append(
        self,
        payload: bytes,
        timestamp_ms: int,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        """Append one record; see :meth:`append_batch`."""
        return self.append_batch([payload], timestamp_ms, None if key is None else [key], [headers])

    def append_batch(
        self,
        payloads: Sequence[bytes],
        timestamp_ms: int,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
    ) -> int:
        """Write records as one batch through the file system, then keep them in the tail.

        Args:
            payloads: the payloads, in order.
            timestamp_ms: their time (clamped to never decrease).
            keys: None, or one optional key per payload.
            headers: None, or one optional header dict per payload.

        Returns:
            The offset of the first record (``next_offset`` when ``payloads`` is empty).

        Raises:
            ValueError: ``keys`` or ``headers`` is not as long as ``payloads``.
            StorageFull: the disk is full; nothing was appended.
            StorageFailed: the log failed (now or before); nothing was appended.
            TooLarge: the records do not fit one batch of the format (64 MiB; only a
                ``max_batch_bytes`` raised beyond it allows that).
        """
        n = len(payloads)
        seg = self._segments[-1]
        summary = seg.builder.index.summary
        offset = summary.next_offset
        if keys is not None and len(keys) != n:
            raise ValueError("keys must be as long as payloads")
        if headers is not None and len(headers) != n:
            raise ValueError("headers must be as long as payloads")
        if n == 0:
            return offset
        if self._failed is not None:
            raise StorageFailed(self._failed.message, details=dict(self._failed.details))
        ts = timestamp_ms if timestamp_ms > self._last_ts else self._last_ts
        norm = [h or None for h in headers] if headers is not None and any(headers) else None
        try:
            data, nbytes = encode_stamped_batch(offset, payloads, ts, keys, norm)
        except ValueError as exc:  # keys/headers were checked: only the size can be wrong
            raise TooLarge(
                f"a durable log takes batches of at most {MAX_BATCH_SIZE} bytes: {exc}",
                details={"max_batch_size": MAX_BATCH_SIZE},
            ) from exc
        size = len(data)
        pos = summary.file_size
        if pos and self._roll_due(summary, pos + size, ts):
            self._roll()
            seg = self._segments[-1]
            pos = 0
        try:
            self.fs.append(seg.name, data)
            seg.created = True
        except FileSystemError as exc:
            self.stats.append_failures += 1
            self._undo_append(seg, pos, exc)
        self._last_ts = ts
        seg.builder.add_batch(pos, size, offset, n, nbytes, ts, ts)
        stats = self.stats
        stats.appends += 1
        stats.append_bytes += size
        self._unsynced += size
        if not self._listed:
            self._wake()
        tail = self._tail
        tail.append_batch(payloads, ts, keys, norm)
        limit = self.config.tail_bytes
        if limit is not None and tail.byte_size > limit:
            self._bound_tail(limit)
        return offset

    def _undo_append(self, seg: _Segment, pos: int, exc: FileSystemError) -> None:
        """A write failed: cut what it may have written, then raise the engine error."""
        try:
            if self.fs.exists(seg.name) and self.fs.size(seg.name) > pos:
                self.fs.truncate(seg.name, pos)
        except FileSystemError as cut:
            self._fail(f"cannot undo a failed write: {cut}")
            raise StorageFailed(self._failed_message()) from exc
        if isinstance(exc, NoSpace):
            raise StorageFull(
                f"the disk of {self.kind} {'/'.join(self.path)} is full", details={}
            ) from exc
        self._fail(f"write failed: {exc}")
        raise StorageFailed(self._failed_message()) from exc

    def _failed_message(self) -> str:
        assert self._failed is not None
        return self._failed.message

    def _fail(self, why: str) -> None:
        if self._failed is None:
            self._failed = StorageFailed(
                f"the storage of {self.kind} {'/'.join(self.path)} failed ({why}):"
                " it refuses writes",
            )

    def _roll_due(self, summary: SegmentSummary, new_size: int, ts: int) -> bool:
        """Whether the active (non-empty) segment of ``summary`` rolls before an append that
        would make it ``new_size`` bytes, of records stamped ``ts``: by size, or by age."""
        if new_size > self.config.segment_bytes:
            return True
        segment_ms = self.config.segment_ms
        first_ts = summary.first_timestamp_ms
        return segment_ms is not None and first_ts is not None and ts - first_ts >= segment_ms

    def _roll(self) -> None:
        old = self.active
        self._count_closed(old, +1)
        old.closed = True
        old.index_pending = True
        new = self._new_segment(old.next_offset)
        self._segments.append(new)
        self._bases.append(new.base)
        self.stats.segments_rolled += 1
        self.sync_wanted = True

    def _bound_tail(self, limit: int) -> None:
        """Keep the tail within ``limit`` (``tail_bytes``; the caller saw it over): trim it
        to 7/8 of it, so the trim (and its bookkeeping) happens once per ``tail_bytes / 8``
        of appends rather than on every append."""
        drop = self._tail.evictions_for(0, 0, Retention(max_bytes=limit - (limit >> 3)))
        self._tail.truncate_before(self._tail.first_offset + drop)

    # -- commits ------------------------------------------------------------------------

    def request_commit(self, offset: int) -> None:
        """A committed publish waits until every record below ``offset`` is fsynced: sync as
        soon as no sync is in flight (group commit: one fsync serves every waiter)."""
        if offset > self._committed:
            self.commit_wanted = max(self.commit_wanted, offset)
            self.sync_wanted = True

    def make_sync_job(self, now: float | None) -> SyncJob | None:
        """The sync job to run now, if the log wants one and none is in flight (the store
        calls this; see :meth:`DiskLogStore.take_jobs`).

        Args:
            now: the store's current time (recorded as when the sync started).
        """
        if self.sync_in_flight is not None or self._failed is not None or self._closed:
            return None
        dirty = [s for s in self._segments if s.created and s.dirty]
        if not dirty:
            self.sync_wanted = False
            self.commit_wanted = 0
            return None
        names = [s.name for s in dirty if s.size > s.synced or not s.entry_synced]
        indexes = [
            (f"{self.directory}/{index_name(s.base)}", encode_index(s.index))
            for s in dirty
            if s.index_pending
        ]
        for s in dirty:
            s.busy += 1
        job = SyncJob(self, self.fs, names, indexes, self.next_offset, [(s, s.size) for s in dirty])
        self.sync_in_flight = job
        self.sync_wanted = False
        self.last_sync_at = now
        return job

    def _sync_finished(self, job: SyncJob, outcome: object, now: float) -> list[StorageNotice]:
        self.sync_in_flight = None
        state = job._segments
        for seg, _ in state:
            seg.busy -= 1
        self._remove_doomed()
        if self._closed:
            return []
        if isinstance(outcome, BaseException):
            self.stats.sync_failures += 1
            self._fail(f"fsync failed: {outcome}")
            assert self._failed is not None
            return [LogFailed(kind=self.kind, path=self.path, error=self._failed)]
        failed_indexes = set(outcome) if isinstance(outcome, list) else set()
        for seg, size in state:
            if size > seg.synced:
                self._unsynced -= size - seg.synced
                seg.synced = size
            seg.entry_synced = True
            if seg.index_pending and f"{self.directory}/{index_name(seg.base)}" not in (
                failed_indexes
            ):
                seg.index_pending = False
        self.stats.syncs += 1
        notices: list[StorageNotice] = []
        if job.target > self._committed:
            self._committed = job.target
            notices.append(LogCommitted(kind=self.kind, path=self.path, offset=job.target))
        if self.commit_wanted > self._committed:
            self.sync_wanted = True
        else:
            self.commit_wanted = 0
        return notices

    # -- reads --------------------------------------------------------------------------

    def read(self, offset: int, max_count: int, max_bytes: int) -> LogSlice | TooOld | ReadPending:
        """Read from memory (tail or read cache), or queue a read job.

        Returns:
            A :class:`LogSlice` (possibly shorter than asked: it never crosses a cached
            chunk's end), :class:`TooOld` below ``first_offset``, or :class:`ReadPending`
            while the records are fetched (``LogReadable`` follows).

        Raises:
            ValueError: ``offset`` is beyond ``next_offset`` or ``max_count`` < 1.
        """
        if offset < self._first:
            return TooOld(requested=offset, first_offset=self._first)
        if offset > self.next_offset:
            raise ValueError(f"offset {offset} is beyond next_offset {self.next_offset}")
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        tail = self._tail
        if offset >= tail.first_offset:
            got = tail.read(offset, max_count, max_bytes)
            assert isinstance(got, LogSlice)
            return got
        for base, chunk in self._cache.items():
            if base <= offset < chunk.next_offset:
                self._cache.move_to_end(base)
                self.stats.read_cache_hits += 1
                got = chunk.read(offset, max_count, max_bytes)
                assert isinstance(got, LogSlice)
                return got
        self._queue_read(offset)
        return ReadPending(offset=offset)

    def _segment_for(self, offset: int) -> _Segment:
        return self._segments[bisect_right(self._bases, offset) - 1]

    def _queue_read(self, offset: int) -> None:
        seg = self._segment_for(offset)
        key = (seg.base, seg.index.position_for(offset))
        if key in self._pending_reads:
            return
        job = ReadJob(self, self.fs, seg, offset)
        seg.busy += 1
        self._pending_reads[key] = job
        self._queued.append(job)
        self._wake()
        self.stats.cold_reads += 1

    def _read_finished(self, job: ReadJob, outcome: object) -> list[StorageNotice]:
        self._pending_reads.pop((job._segment.base, job.pos), None)
        job._segment.busy -= 1
        self._remove_doomed()
        if self._closed:
            return []
        if isinstance(outcome, BaseException):
            self._read_failures += 1
            if self._read_failures >= _READ_FAILURES_BEFORE_FAILING:
                self._fail(f"reads keep failing: {outcome}")
                assert self._failed is not None
                return [LogFailed(kind=self.kind, path=self.path, error=self._failed)]
            return [LogReadable(kind=self.kind, path=self.path)]  # the engine reads again
        assert isinstance(outcome, list)
        self._read_failures = 0
        if outcome and outcome[-1].next_offset > self._first:  # else all trimmed meanwhile
            chunk = MemoryLog(start_offset=outcome[0].base_offset, meter=self._meter)
            for batch in outcome:
                _add_batch(chunk, batch)
            self._cache_put(chunk)
        return [LogReadable(kind=self.kind, path=self.path)]

    def _cache_put(self, chunk: MemoryLog) -> None:
        old = self._cache.pop(chunk.first_offset, None)
        if old is not None:
            self._cache_bytes -= old.byte_size
            old.close()
        self._cache[chunk.first_offset] = chunk
        self._cache_bytes += chunk.byte_size
        while self._cache_bytes > self.config.read_cache_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= evicted.byte_size
            evicted.close()

    def take_jobs(self) -> list[StorageJob]:
        """The jobs queued since the last call: cold reads, and unlinks of deleted segments."""
        jobs, self._queued = self._queued, []
        return jobs

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """First retained offset with timestamp >= ``timestamp_ms`` (exact when that record
        is in memory; for older records, the sparse time index's entry at or before it, at
        most one index interval early), else ``next_offset``."""
        tail = self._tail
        t0 = tail.first_timestamp_ms
        if t0 is not None and t0 < timestamp_ms:
            return tail.offset_for_timestamp(timestamp_ms)
        if tail.first_offset <= self._first:
            return tail.offset_for_timestamp(timestamp_ms)
        for seg in self._segments:
            last = seg.summary.last_timestamp_ms
            if last is not None and last >= timestamp_ms and seg.next_offset > self._first:
                return max(self._first, seg.index.offset_for_time(timestamp_ms))
        return self.next_offset

    # -- trimming -----------------------------------------------------------------------

    def _closed_summaries(self) -> Iterator[SegmentSummary]:
        """The summaries of every segment but the last, oldest first (lazily)."""
        segments = self._segments
        return (segments[i].summary for i in range(len(segments) - 1))

    def _count_closed(self, seg: _Segment, sign: int) -> None:
        records, nbytes = self._closed_totals
        s = seg.summary
        self._closed_totals = (records + sign * s.record_count, nbytes + sign * s.record_bytes)

    def _delete_leading(self, n: int) -> None:
        """Delete the ``n`` oldest (closed) segments."""
        if n <= 0:
            return
        gone = self._segments[:n]
        del self._segments[:n]
        del self._bases[:n]
        for seg in gone:
            seg.doomed = True
            self._doomed.append(seg)
            self._count_closed(seg, -1)
            self._unsynced -= seg.size - seg.synced
        self.stats.segments_deleted += n
        self._remove_doomed()

    def _remove_doomed(self) -> None:
        """Queue an :class:`UnlinkJob` for the deleted segments no job uses any more."""
        if self._closed:
            return
        ready = [seg for seg in self._doomed if seg.busy == 0]
        if not ready:
            return
        self._doomed = [seg for seg in self._doomed if seg.busy > 0]
        job = UnlinkJob(self, self.fs, ready)
        self._unlinks.add(job)
        self._queued.append(job)
        self._wake()

    def _unlink_finished(self, job: UnlinkJob, outcome: object) -> list[StorageNotice]:
        self._unlinks.discard(job)
        if isinstance(outcome, BaseException) and not self._closed:
            self._doomed.extend(job._segments)  # tried again after the next job
        return []

    def _move_first(self, first: int) -> int:
        """Make ``first`` the first offset; return how many records were dropped."""
        dropped = first - self._first
        if dropped <= 0:
            return 0
        self._first = first
        if self._tail.first_offset < first:
            self._tail.truncate_before(min(first, self._tail.next_offset))
        for base in [b for b, c in self._cache.items() if c.next_offset <= first]:
            chunk = self._cache.pop(base)
            self._cache_bytes -= chunk.byte_size
            chunk.close()
        return dropped

    def _deletable(self, n: int) -> int:
        """At most ``n`` closed segments, and never every closed one while the active
        segment's file is not known to be on disk (its name keeps ``next_offset``)."""
        closed = len(self._segments) - 1
        n = min(n, closed)
        if n == closed and not self.active.entry_synced:
            n = closed - 1
        return max(n, 0)

    def truncate_before(self, offset: int) -> int:
        """Drop every record below ``offset`` (a queue's finished messages); segments
        wholly below it are deleted.

        Raises:
            ValueError: ``offset`` is beyond ``next_offset``.
        """
        if offset > self.next_offset:
            raise ValueError(f"offset {offset} is beyond next_offset {self.next_offset}")
        dropped = self._move_first(offset)
        if dropped:
            n = 0
            for seg in self._segments[:-1]:
                if seg.next_offset > offset:
                    break
                n += 1
            self._delete_leading(self._deletable(n))
        return dropped

    def evictions_for(self, count: int, nbytes: int, retention: Retention) -> int:
        """How many retained records retention would delete after an append of
        ``count`` records / ``nbytes`` bytes (whole closed segments; age not considered)."""
        active = self.active.summary
        n = retention_deletions(
            self._closed_summaries(),
            Retention(max_records=retention.max_records, max_bytes=retention.max_bytes),
            0,
            tail_records=active.record_count + count,
            tail_bytes=active.record_bytes + nbytes,
            totals=self._closed_totals,
        )
        n = self._deletable(n)
        if n == 0:
            return 0
        return max(0, self._segments[n].base - self._first)

    def _oldest_over(self, segments: list[_Segment], retention: Retention) -> bool:
        """Whether the oldest closed segment is beyond the record or byte limit (or empty):
        the first question of :func:`~felix_core.segments.retention_deletions`, asked
        without its generator and calls, on every append (when it says no and age does
        not count, nothing can go)."""
        first = segments[0].builder.index.summary
        count = first.next_offset - first.base_offset
        if count == 0:
            return True
        active = segments[-1].builder.index.summary
        records, nbytes = self._closed_totals
        max_records = retention.max_records
        max_bytes = retention.max_bytes
        return (
            max_records is not None
            and records + active.next_offset - active.base_offset - count >= max_records
        ) or (
            max_bytes is not None and nbytes + active.record_bytes - first.record_bytes >= max_bytes
        )

    def apply_retention(self, retention: Retention, now_ms: int) -> int:
        """Delete the whole segments beyond ``retention`` (rolling an active segment whose
        records all aged out first).

        Returns:
            How many records were dropped.
        """
        segments = self._segments
        if retention.max_age_ms is None and (
            len(segments) == 1 or not self._oldest_over(segments, retention)
        ):
            return 0  # nothing closed to delete, no age to roll for: the common append
        active = segments[-1].builder.index.summary
        if (
            retention.max_age_ms is not None
            and active.last_timestamp_ms is not None
            and active.last_timestamp_ms < now_ms - retention.max_age_ms
            and self._failed is None
        ):
            self._roll()
            try:
                self.fs.append(self.active.name, b"")  # the new name keeps next_offset
                self.active.created = True
            except FileSystemError:
                pass  # created by its first append; nothing is deleted meanwhile
        active = self.active.summary
        n = retention_deletions(
            self._closed_summaries(),
            retention,
            now_ms,
            tail_records=active.record_count,
            tail_bytes=active.record_bytes,
            totals=self._closed_totals,
        )
        n = self._deletable(n)
        if n == 0:
            return 0
        dropped = self._move_first(self._segments[n].base)
        self._delete_leading(n)
        return dropped

    def close(self) -> None:
        """The resource is gone: let go of the memory; jobs in flight are ignored."""
        self._closed = True
        self._tail.close()
        for chunk in self._cache.values():
            chunk.close()
        self._cache.clear()
        self._cache_bytes = 0
        for job in self._queued:  # never handed out: they will not finish
            if isinstance(job, ReadJob):
                self._pending_reads.pop((job._segment.base, job.pos), None)
                job._segment.busy -= 1
            elif isinstance(job, UnlinkJob):
                self._unlinks.discard(job)
        self._queued.clear()

    @property
    def jobs_in_flight(self) -> bool:
        """Whether a job handed out for this log has not finished yet."""
        return self.sync_in_flight is not None or bool(self._pending_reads or self._unlinks)

    def __repr__(self) -> str:
        return (
            f"DiskLog({self.directory!r}, first_offset={self.first_offset}, "
            f"next_offset={self.next_offset}, committed_offset={self.committed_offset})"
        )


# -- the store ----------------------------------------------------------------------------


_LOG_KINDS = ("stream", "queue", "cache")


@dataclass(slots=True)
class SweepReport:
    """What :meth:`DiskLogStore.sweep` did."""

    removed: list[str] = field(default_factory=list)
    """Directories of incarnations no resource names, removed."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """``(directory, error)`` of those that could not be removed."""


class DiskLogStore:
    """A durable :class:`~felix_core.log.LogStore`: a :class:`DiskLog` per durable resource
    (``durability=durable`` in its settings), a :class:`~felix_core.log.MemoryLog` for the
    others. Each durable log lives in ``{root}/{kind}/{tenant}/{namespace}/{name}/{uid}``:
    one directory per *incarnation* (the resource's metadata ``uid``), so a resource deleted
    and created again never meets the records of the one before, even when the old files
    outlived the delete (a failed removal, a crash before it); :meth:`sweep` removes such
    leftovers at start.

    Outputs for the runtime (module docstring, "Jobs"): :meth:`take_jobs` after every
    engine input, timer and finished job; :meth:`get_timer` / :meth:`handle_timer` for the
    fsync interval. Those run on every loop pass, so they look only at the *busy* logs:
    a log joins them when it has bytes to sync, a sync wanted or a job queued, and leaves
    once :meth:`take_jobs` finds it idle with no job in flight (a broker with 1000
    durable resources and one being written paid 0.7 ms a pass looking at all of them).
    """

    def __init__(
        self, fs: FileSystem, config: DiskLogConfig | None = None, *, root: str = "logs"
    ) -> None:
        """Create the store.

        Args:
            fs: the data directory's file layer.
            config: defaults for every log.
            root: the directory of the logs inside the tree.
        """
        self.fs = fs
        self.config = config or DiskLogConfig()
        self.root = root
        self._logs: dict[tuple[str, LogPath], DiskLog] = {}
        self._busy: dict[DiskLog, None] = {}  # logs that may have work: see take_jobs
        self._removals: list[DiskLog] = []  # dropped logs whose directory is to go
        self._listings: dict[str, dict[str, int]] = {}  # prepare_directory's, until opened
        self._now: float = 0.0

    @property
    def durable(self) -> bool:
        """True: durable resources' records survive restarts."""
        return True

    def directory(self, kind: str, path: LogPath, uid: int = 0) -> str:
        """The directory of one incarnation (``uid``) of a resource's log."""
        tenant, namespace, name = path
        prefix = f"{self.root}/" if self.root else ""
        return f"{prefix}{kind}/{tenant}/{namespace}/{name}/{uid}"

    def sweep(self, live: Iterable[tuple[str, LogPath, int]]) -> SweepReport:
        """Remove the directories of log incarnations that metadata no longer names, without
        opening them: a resource deleted while the broker died before its files went, or an
        older incarnation of one deleted and created again. Call at start, before any log
        is opened; open logs are never touched.

        Args:
            live: ``(kind, path, uid)`` of every durable resource in metadata.

        Returns:
            The directories removed, and those that could not be (left for an operator;
            never opened either, as no resource has their uid).
        """
        keep = {self.directory(kind, path, uid) for kind, path, uid in live}
        keep.update(log.directory for log in self._logs.values())
        report = SweepReport()
        for found in self._incarnations():
            if found in keep:
                continue
            try:
                self.fs.remove_tree(found)
            except FileSystemError as exc:
                report.failed.append((found, str(exc)))
            else:
                report.removed.append(found)
        return report

    def _incarnations(self) -> Iterator[str]:
        """Every ``{kind}/{tenant}/{namespace}/{name}/{uid}`` directory under the root."""
        prefix = f"{self.root}/" if self.root else ""
        level = [prefix + kind for kind in _LOG_KINDS if self.fs.exists(prefix + kind)]
        for _ in range(4):  # tenant, namespace, name, uid
            level = [f"{d}/{entry}" for d in level for entry in self._list(d)]
        return iter(level)

    def _list(self, directory: str) -> list[str]:
        try:
            return self.fs.list_dir(directory)
        except FileSystemError:  # a stray file where a directory belongs: not a log
            return []

    def prepare_directory(self, directory: str) -> None:
        """Make and list the directory of a log about to be opened (a new resource's), so
        that :meth:`open_log` touches no file for it on the loop thread. Runs on a worker
        thread (the create's metadata job, before the definition is written): its only
        shared state is one entry of a dict, read by the loop after the job is done.

        Raises:
            FileSystemError: the directory cannot be made or read.
        """
        self._listings[directory] = list_directory(self.fs, directory)

    def forget_listings(self, directories: Iterable[str]) -> None:
        """Drop the listings :meth:`prepare_directory` made that no :meth:`open_log` took
        (the create failed after its directories were made): on the loop thread, once the
        create's job is done."""
        for directory in directories:
            self._listings.pop(directory, None)

    def open_log(
        self,
        kind: str,
        path: LogPath,
        settings: Mapping[str, Any],
        meter: MemoryMeter,
        *,
        uid: int = 0,
    ) -> Log:
        """Return the resource's log: a recovered or new :class:`DiskLog` for a durable
        resource (in the directory of incarnation ``uid``), a :class:`MemoryLog` otherwise.
        A directory :meth:`prepare_directory` listed is not listed again.

        Raises:
            InvalidArgument: a storage setting is invalid.
            StorageFailed: the log's directory cannot be read.
        """
        if settings.get("durability") != "durable":
            return MemoryLog(meter=meter)
        config = self.config.with_settings(settings)
        if kind != "stream":
            config = DiskLogConfig(
                segment_bytes=config.segment_bytes,
                segment_ms=config.segment_ms,
                index_interval=config.index_interval,
                tail_bytes=None,  # queues and cache feeds read their records synchronously
                read_cache_bytes=config.read_cache_bytes,
                read_chunk_bytes=config.read_chunk_bytes,
                fsync=config.fsync,
                fsync_interval_ms=config.fsync_interval_ms,
            )
        directory = self.directory(kind, path, uid)
        try:
            log = DiskLog(
                self.fs,
                directory,
                kind=kind,
                path=path,
                config=config,
                meter=meter,
                listing=self._listings.pop(directory, None),
            )
        except FileSystemError as exc:
            raise StorageFailed(f"cannot open the log of {kind} {'/'.join(path)}: {exc}") from exc
        self._logs[(kind, path)] = log
        log.watch(self._busy)
        return log

    def drop_log(self, kind: str, path: LogPath, *, keep_files: bool = False) -> None:
        """Forget a deleted resource's log and delete its files: :meth:`take_jobs` hands
        out a :class:`RemoveJob` for its directory once no job for it is in flight (their
        results are ignored); ``keep_files``: only forget the log."""
        log = self._logs.pop((kind, path), None)
        if log is None:
            return
        log.close()
        self._busy.pop(log, None)
        if not keep_files:
            self._removals.append(log)  # a RemoveJob once its jobs in flight are done

    def log(self, kind: str, path: LogPath) -> DiskLog | None:
        """The durable log of a resource, if open."""
        return self._logs.get((kind, path))

    def logs(self) -> Iterator[DiskLog]:
        """Every open durable log (for metrics)."""
        return iter(list(self._logs.values()))

    def take_jobs(self, now: float | None = None) -> list[StorageJob]:
        """The jobs to run now: queued cold reads, a sync for each log that wants one and
        has none in flight, and the removal of each deleted resource's directory.

        Args:
            now: the current time, if the caller knows it (a sync's interval counts from
                when it was made; without it, from the last time the store was told).
        """
        if now is not None:
            self._now = max(self._now, now)
        jobs: list[StorageJob] = []
        for log in list(self._busy):  # only those with something to do: O(busy), not O(logs)
            jobs.extend(log.take_jobs())
            if log.sync_wanted:
                job = log.make_sync_job(self._now)
                if job is not None:
                    jobs.append(job)
            log.unlist_if_idle()
        if self._removals:
            waiting = []
            for log in self._removals:
                if log.jobs_in_flight:
                    waiting.append(log)
                else:
                    jobs.append(RemoveJob(log, self.fs))
            self._removals = waiting
        return jobs

    def _interval_deadline(self, log: DiskLog) -> float | None:
        if (
            log.config.fsync is not FsyncPolicy.INTERVAL
            or log.sync_in_flight is not None
            or log.failed is not None
            or log.unsynced_bytes == 0
        ):
            return None
        if log.last_sync_at is None:
            return self._now
        return log.last_sync_at + log.config.fsync_interval_ms / 1000

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next (None: nothing to time)."""
        deadlines = [d for log in self._busy if (d := self._interval_deadline(log)) is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Mark the logs whose fsync interval passed as wanting a sync (then call
        :meth:`take_jobs`)."""
        self._now = max(self._now, now)
        for log in list(self._busy):
            deadline = self._interval_deadline(log)
            if deadline is not None and deadline <= now:
                log.sync_wanted = True
