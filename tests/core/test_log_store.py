"""The log-storage seam: every resource's log comes from the broker's LogStore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine_calls import Calls

from felix_core import Broker, BrokerConfig
from felix_core.events import Appended, RecordsDelivered
from felix_core.limits import MemoryBudget
from felix_core.log import (
    Log,
    LogPath,
    LogSlice,
    MemoryLog,
    MemoryLogStore,
    MemoryMeter,
    ReadPending,
    TooOld,
)
from felix_core.metadata import Kind
from felix_core.streams import StartKind


class RecordingStore:
    """A LogStore that hands out memory logs and remembers what it was asked."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, LogPath], MemoryLog] = {}
        self.opened: list[tuple[str, LogPath, dict[str, Any]]] = []
        self.dropped: list[tuple[str, LogPath]] = []

    def open_log(
        self,
        kind: str,
        path: LogPath,
        settings: Mapping[str, Any],
        meter: MemoryMeter,
        *,
        uid: int = 0,
    ) -> Log:
        self.opened.append((kind, path, dict(settings)))
        log = self.logs[(kind, path)] = MemoryLog(meter=meter)
        return log

    def drop_log(self, kind: str, path: LogPath, *, keep_files: bool = False) -> None:
        self.dropped.append((kind, path))

    @property
    def durable(self) -> bool:
        return True  # what a disk store says; lets the test create a durable stream


def test_streams_queues_and_caches_get_their_logs_from_the_store() -> None:
    store = RecordingStore()
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.attach(1, now=0.0)
    b.create("stream", "default", "default", "orders", {"durability": "durable"}, now=0.0)
    b.create("queue", "default", "default", "jobs", now=0.0)
    b.create("cache", "default", "default", "sessions", now=0.0)

    b.publish(1, "default", "default", "orders", [b"a", b"b"], now=1.0)
    b.enqueue(1, "default", "default", "jobs", [b"j"], now=1.0)
    b.cache_put("default", "default", "sessions", "k", b"v", now=1.0)

    path = ("default", "default")
    assert store.logs[("stream", (*path, "orders"))].next_offset == 2
    assert store.logs[("queue", (*path, "jobs"))].next_offset == 1
    assert store.logs[("cache", (*path, "sessions"))].next_offset == 1  # the change feed
    kinds = {(kind, p[2]): settings for kind, p, settings in store.opened}
    assert kinds[("stream", "orders")]["durability"] == "durable"

    b.delete("stream", "default", "default", "orders", now=2.0)
    b.delete("queue", "default", "default", "jobs", now=2.0)
    b.delete("cache", "default", "default", "sessions", now=2.0)
    assert sorted(store.dropped) == [
        ("cache", (*path, "sessions")),
        ("queue", (*path, "jobs")),
        ("stream", (*path, "orders")),
    ]


def test_memory_log_store_gives_fresh_logs() -> None:
    store = MemoryLogStore()
    budget = MemoryBudget(1000)
    first = store.open_log("stream", ("t", "n", "s"), {}, budget)
    first.append(b"x", 0)
    again = store.open_log("stream", ("t", "n", "s"), {}, budget)
    assert again.next_offset == 0 and first.next_offset == 1
    assert budget.used == 1  # the log charges the meter it was opened with
    first.close()
    assert budget.used == 0 and first.record_count == 0
    store.drop_log("stream", ("t", "n", "s"))  # nothing to release, and no error


class DiskLikeLog(MemoryLog):
    """A memory log that behaves like one on disk: records are committed only when the test
    says so, and reads of records below ``cold_below`` are pending until it lowers it."""

    def __init__(self, meter: MemoryMeter) -> None:
        super().__init__(meter=meter)
        self.committed = 0
        self.cold_below = 0
        self.pending_reads = 0

    @property
    def committed_offset(self) -> int:
        return self.committed

    def read(self, offset: int, max_count: int, max_bytes: int) -> LogSlice | TooOld | ReadPending:
        if offset < self.cold_below:
            self.pending_reads += 1
            return ReadPending(offset)
        return super().read(offset, max_count, max_bytes)


class DiskLikeStore(RecordingStore):
    def open_log(
        self,
        kind: str,
        path: LogPath,
        settings: Mapping[str, Any],
        meter: MemoryMeter,
        *,
        uid: int = 0,
    ) -> Log:
        self.opened.append((kind, path, dict(settings)))
        log = self.logs[(kind, path)] = DiskLikeLog(meter)
        return log


def test_committed_appends_complete_when_the_log_says_so() -> None:
    store = DiskLikeStore()
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.create("stream", "default", "default", "s", now=0.0)
    b.create("queue", "default", "default", "q", now=0.0)
    engine = b.broker
    engine.publish(1, 1, "default", "default", "s", [b"a", b"b"], committed=True, now=1.0)
    engine.publish(1, 2, "default", "default", "s", [b"c"], now=1.0)  # accepted: at once
    engine.enqueue(1, 3, "default", "default", "q", [b"j"], committed=True, now=1.0)
    assert [(type(e).__name__, e.request) for e in engine.drain_events()] == [("Appended", 2)]
    s, q = ("default", "default", "s"), ("default", "default", "q")
    engine.log_committed(Kind.STREAM, s, 2, now=2.0)  # offsets 0 and 1: the first publish
    engine.log_committed(Kind.QUEUE, ("default", "default", "nope"), 9, now=2.0)  # ignored
    (done,) = engine.drain_events()
    assert isinstance(done, Appended) and (done.request, done.first_offset) == (1, 0)
    engine.log_committed(Kind.QUEUE, q, 1, now=2.0)
    assert [e.request for e in engine.drain_events() if isinstance(e, Appended)] == [3]


def test_reads_from_disk_deliver_once_the_log_can_read_them() -> None:
    store = DiskLikeStore()
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.create("stream", "default", "default", "s", {"batch_max_delay_us": 0}, now=0.0)
    b.attach(1, 0.0)
    b.publish(9, "default", "default", "s", [b"old-1", b"old-2"], now=1.0)
    log = store.logs[("stream", ("default", "default", "s"))]
    log.cold_below = 2  # the old records went to disk
    b.subscribe(1, "default", "default", "s", start=StartKind.EARLIEST, now=2.0)
    assert log.pending_reads == 1 and b.drain_events() == []  # nothing yet: being fetched
    log.cold_below = 0
    b.broker.log_readable(Kind.STREAM, ("default", "default", "s"), now=3.0)
    (batch,) = b.drain_events()
    assert isinstance(batch, RecordsDelivered) and batch.slice.payloads == [b"old-1", b"old-2"]
