"""Partitions: one stream, queue or cache each, with its log and the version it was built from.

A partition is the unit the engine keeps per resource: its :class:`~felix_core.log.Log`,
the projection that serves it (a :class:`~felix_core.streams.Stream`, a
:class:`~felix_core.queues.Queue`, or a :class:`~felix_core.cache.Cache` with the
:class:`~felix_core.streams.Fanout` that follows its change log) and the metadata version it
was built from (``uid``, ``generation``). It is also the unit a shard map places on a broker
and a replicated log backs: everything a request touches lives in one partition (a dead
letter, which crosses to another queue, is the one exception, and goes through the queues'
:class:`~felix_core.queues.QueueContext`).

Every partition answers the same calls: ``reconfigure`` (new settings from a newer
generation), ``get_timer`` / ``handle_timer`` (its own deadlines, kept in the registry's one
heap), ``close`` (the resource is gone: its users end with reason ``deleted`` and its log
lets go of its records) and ``stats``. A stream or queue partition also holds the
completions of *committed* appends until its log says the records are committed
(:class:`Commits`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

from felix_core.cache import Cache
from felix_core.errors import StorageFailed
from felix_core.events import Appended, EngineEvent, RequestCompleted
from felix_core.limits import BrokerConfig
from felix_core.log import Log, MemoryMeter
from felix_core.metadata import Kind, Path, ResourceRecord
from felix_core.queue_journal import QueueJournal
from felix_core.queues import Consumer, Queue, QueueContext
from felix_core.settings import BatchPolicy, StreamSettings, cache_config, queue_config
from felix_core.streams import Fanout, Stream

__all__ = ["CachePartition", "Commits", "Partition", "QueuePartition", "StreamPartition"]


@runtime_checkable
class CommitRequests(Protocol):
    """A log that commits on demand (a durable log: it syncs as soon as it can)."""

    def request_commit(self, offset: int) -> None:
        """A committed append waits until every record below ``offset`` is committed."""
        ...


class Commits:
    """The completions of committed requests that wait for their log to commit them, in
    offset order: committed appends (each waits for its last record), and on a durable
    queue's state log the committed acks (each waits for every state record written up to
    it). A log that commits on demand (:class:`CommitRequests`) is asked to as each one
    starts waiting."""

    __slots__ = ("_log", "_waiting")

    def __init__(self, log: object = None) -> None:
        self._waiting: deque[tuple[int, RequestCompleted]] = deque()
        self._log = log if isinstance(log, CommitRequests) else None

    def wait(self, done: RequestCompleted, until: int | None = None) -> None:
        """Hold ``done`` until every record below ``until`` is committed (None: an
        :class:`~felix_core.events.Appended`'s last record, included)."""
        if until is None:
            assert isinstance(done, Appended)
            until = done.last_offset + 1
        self._waiting.append((until, done))
        if self._log is not None:
            self._log.request_commit(until)

    def fail_all(self) -> list[RequestCompleted]:
        """The log failed: every waiting completion, to be refused."""
        failed = [done for _, done in self._waiting]
        self._waiting.clear()
        return failed

    def committed(self, offset: int) -> list[RequestCompleted]:
        """Every record below ``offset`` is committed: the completions now due."""
        waiting = self._waiting
        due: list[RequestCompleted] = []
        while waiting and waiting[0][0] <= offset:
            due.append(waiting.popleft()[1])
        return due

    def __len__(self) -> int:
        return len(self._waiting)


class StreamPartition:
    """A stream: its log and the :class:`~felix_core.streams.Stream` over it."""

    kind = Kind.STREAM
    __slots__ = ("commits", "generation", "log", "path", "stream", "uid")

    def __init__(
        self, record: ResourceRecord, log: Log, config: BrokerConfig, out: list[EngineEvent]
    ) -> None:
        self.path: Path = record.path
        self.uid = record.uid
        self.generation = record.generation
        self.log = log
        self.stream = Stream(StreamSettings.from_mapping(record.settings, config), out, log=log)
        self.commits = Commits(log)

    def reconfigure(self, record: ResourceRecord, config: BrokerConfig, now: float) -> None:
        """Apply a newer generation's settings at once (retention trims, policies change)."""
        self.stream.update_settings(StreamSettings.from_mapping(record.settings, config), now)
        self.generation = record.generation

    def get_timer(self) -> float | None:
        """The stream's next flush or age-retention deadline."""
        return self.stream.get_timer()

    def handle_timer(self, now: float) -> None:
        """Flush and trim what is due."""
        self.stream.handle_timer(now)

    def close(self) -> None:
        """The stream is gone: its subscriptions end (``deleted``); the log lets go."""
        self.stream.end_all("deleted", "the stream was deleted")
        self.log.close()

    def stats(self, now: float) -> dict[str, Any]:
        """The stream's counters (``AdminResource`` stats)."""
        return self.stream.stats()


class QueuePartition:
    """A queue: its log and the :class:`~felix_core.queues.Queue` over it; a durable queue
    also has a state log (:mod:`felix_core.queue_journal`) its groups are rebuilt from."""

    kind = Kind.QUEUE
    __slots__ = (
        "commits",
        "generation",
        "log",
        "path",
        "queue",
        "state_commits",
        "state_log",
        "uid",
    )

    def __init__(
        self,
        record: ResourceRecord,
        log: Log,
        context: QueueContext,
        state_log: Log | None = None,
        now: float = 0.0,
    ) -> None:
        self.path: Path = record.path
        self.uid = record.uid
        self.generation = record.generation
        self.log = log
        self.queue = Queue(record.path, queue_config(record.settings), context, log)
        self.commits = Commits(log)
        self.state_log = state_log
        self.state_commits = Commits(state_log)
        """Committed acks waiting for their state records to be committed."""
        if state_log is not None:
            self.queue.restore(QueueJournal(state_log), now)

    def reconfigure(self, record: ResourceRecord, config: BrokerConfig, now: float) -> None:
        """Apply a newer generation's settings (bounds that shrink drop nothing)."""
        self.queue.reconfigure(queue_config(record.settings))
        self.generation = record.generation

    def get_timer(self) -> float | None:
        """The queue's next visibility timeout, delayed nack or dead-letter retry."""
        return self.queue.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire what is due."""
        self.queue.fire(now)

    def close(self) -> list[Consumer]:
        """The queue is gone: its consumers end (``deleted``); the log lets go.

        Returns:
            The consumers that ended.
        """
        ended = self.queue.end("deleted")
        self.log.close()
        if self.state_log is not None:
            self.state_log.close()
        return ended

    def stats(self, now: float) -> dict[str, Any]:
        """The queue's figures (``AdminResource`` stats)."""
        return asdict(self.queue.stats(now))


class CachePartition:
    """A cache: its change log, the :class:`~felix_core.cache.Cache` writing it, and the
    fanout that follows it once somebody subscribes to the change feed."""

    kind = Kind.CACHE
    __slots__ = ("cache", "feed", "feed_batch", "generation", "log", "path", "uid")

    def __init__(
        self,
        record: ResourceRecord,
        log: Log,
        meter: MemoryMeter,
        feed_batch: BatchPolicy,
        now: float,
    ) -> None:
        """Build the cache on its change log: rebuilt from what the log holds (a durable
        cache after a restart: its entries, absolute expiries and versions; a new log: an
        empty cache). A durable log (one that commits on request) is compacted: it keeps
        every live entry whatever ``feed_retention`` (see ``Cache._retain``).

        Raises:
            InvalidArgument: a setting is out of range.
            StorageFailed: the change log holds a record that is not a cache change.
        """
        self.path: Path = record.path
        self.uid = record.uid
        self.generation = record.generation
        self.log = log
        try:
            self.cache = Cache.rebuild_from(
                log,
                now,
                cache_config(record.settings),
                meter=meter,
                compact=isinstance(log, CommitRequests),
            )
        except ValueError as exc:
            raise StorageFailed(
                f"cache {'/'.join(record.path)}: its change log cannot be replayed: {exc}"
            ) from exc
        self.feed: Fanout | None = None
        self.feed_batch = feed_batch

    def follow(self, out: list[EngineEvent]) -> Fanout:
        """The fanout following the change log (created on first use)."""
        feed = self.feed
        if feed is None:
            feed = self.feed = Fanout(self.log, out, batch=self.feed_batch)
        return feed

    def log_committed(self, now: float) -> None:
        """The change log committed more records (a compaction may finish)."""
        self.cache.log_committed(now)
        self.changed(now)

    def changed(self, now: float) -> None:
        """The change log may have grown: deliver to the feed's subscriptions."""
        if self.feed is not None:
            self.feed.pump(now)

    def reconfigure(self, record: ResourceRecord, config: BrokerConfig, now: float) -> None:
        """Apply a newer generation's settings (smaller bounds evict at once)."""
        self.cache.reconfigure(cache_config(record.settings), now)
        self.generation = record.generation
        self.changed(now)

    def get_timer(self) -> float | None:
        """The next expiry, feed age-out or feed flush."""
        t = self.cache.get_timer()
        if self.feed is not None:
            flush = self.feed.get_timer()
            if flush is not None and (t is None or flush < t):
                t = flush
        return t

    def handle_timer(self, now: float) -> None:
        """Expire due entries and flush the feed."""
        deadline = self.cache.get_timer()
        if deadline is not None and deadline <= now:
            self.cache.handle_timer(now)
            self.changed(now)
        if self.feed is not None:
            self.feed.handle_timer(now)

    def close(self) -> None:
        """The cache is gone: feed subscriptions end (``deleted``); entries and log go."""
        if self.feed is not None:
            self.feed.end_all("deleted", "the cache was deleted")
        self.cache.close()

    def stats(self, now: float) -> dict[str, Any]:
        """The cache's counters plus its feed's subscriptions (``AdminResource`` stats)."""
        feed = self.feed
        return {
            **asdict(self.cache.stats()),
            "feed_subscriptions": len(feed.subscriptions) if feed is not None else 0,
        }


Partition = StreamPartition | QueuePartition | CachePartition
"""Any partition."""
