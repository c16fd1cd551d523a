"""The engine on a DiskLogStore over MemoryFileSystem: committed publishes wait for a sync
(group commit), a failed fsync refuses them, a full disk refuses publishes (retryable) and
the stream goes on, cold reads reach subscribers through jobs and ``log_readable``."""

from __future__ import annotations

import pytest
from engine_calls import Calls
from storage_helpers import run_jobs

from felix_core import Broker, BrokerConfig
from felix_core.disklog import (
    DiskLogConfig,
    DiskLogStore,
    LogCommitted,
    LogFailed,
    LogReadable,
    StorageNotice,
)
from felix_core.errors import CursorTooOld, StorageFull
from felix_core.events import Appended, EngineEvent, RecordsDelivered, RequestRefused
from felix_core.filesystem import IOFailure, MemoryFileSystem
from felix_core.metadata import Kind
from felix_core.streams import StartKind
from felix_proto.errors import ErrorCode

S = ("default", "default", "s")
DURABLE = {"durability": "durable", "batch_max_delay_us": 0}


def _engine(**config: object) -> tuple[MemoryFileSystem, DiskLogStore, Calls]:
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, DiskLogConfig(**config))  # type: ignore[arg-type]
    calls = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    calls.create("stream", "default", "default", "s", DURABLE, now=0.0)
    return fs, store, calls


def _feed(broker: Broker, notices: list[StorageNotice], now: float) -> None:
    """What the runtime does with a finished job's notices."""
    for n in notices:
        kind = Kind(n.kind)
        if isinstance(n, LogCommitted):
            broker.log_committed(kind, n.path, n.offset, now)
        elif isinstance(n, LogReadable):
            broker.log_readable(kind, n.path, now)
        elif isinstance(n, LogFailed):
            broker.log_failed(kind, n.path, n.error, now)


def _requests(events: list[EngineEvent]) -> list[tuple[str, int]]:
    return [
        (type(e).__name__, e.request) for e in events if isinstance(e, Appended | RequestRefused)
    ]


def test_committed_publishes_share_one_fsync() -> None:
    fs, store, calls = _engine()
    engine = calls.broker
    for i in range(8):
        engine.publish(1, i, *S, [b"x"], committed=True, now=1.0)
    engine.publish(1, 99, *S, [b"y"], now=1.0)  # accepted: at once
    assert _requests(engine.drain_events()) == [("Appended", 99)]
    before = fs.sync_count
    jobs = store.take_jobs()  # the waiting publishes asked for a sync at once
    assert len(jobs) == 1
    _feed(engine, run_jobs(jobs, 1.0), 1.0)
    assert fs.sync_count - before == 1
    assert _requests(engine.drain_events()) == [("Appended", i) for i in range(8)]


def test_a_failed_fsync_refuses_the_waiting_publishes() -> None:
    fs, store, calls = _engine()
    engine = calls.broker
    engine.publish(1, 1, *S, [b"x"], committed=True, now=1.0)
    fs.fail_next_sync(IOFailure("EIO"))
    _feed(engine, run_jobs(store.take_jobs(), 1.0), 1.0)
    (refused,) = engine.drain_events()
    assert isinstance(refused, RequestRefused) and refused.request == 1
    assert refused.error.code is ErrorCode.STORAGE_FAILED
    engine.publish(1, 2, *S, [b"y"], now=2.0)
    (again,) = engine.drain_events()
    assert isinstance(again, RequestRefused) and again.error.code is ErrorCode.STORAGE_FAILED


def test_a_full_disk_refuses_publishes_and_the_stream_goes_on() -> None:
    fs, _, calls = _engine()
    calls.publish(9, *S, [b"a"], now=1.0)
    fs.quota = fs.total_bytes() + 10
    try:
        calls.publish(9, *S, [b"b" * 100], now=1.0)
    except StorageFull as exc:
        assert exc.retryable
    else:
        raise AssertionError("the publish was taken")
    fs.quota = None
    assert calls.publish(9, *S, [b"c"], now=2.0) == (1, 1)
    calls.attach(7, 2.0)
    calls.subscribe(7, *S, start=StartKind.EARLIEST, now=2.0)
    delivered = [e for e in calls.drain_events() if isinstance(e, RecordsDelivered)]
    assert [p for e in delivered for p in e.slice.payloads] == [b"a", b"c"]


def test_cold_reads_reach_subscribers_through_jobs() -> None:
    _, store, calls = _engine(tail_bytes=200, read_chunk_bytes=512)
    for i in range(20):
        calls.publish(9, *S, [bytes([i]) * 100], now=1.0)
    calls.attach(7, 2.0)
    calls.subscribe(7, *S, start=StartKind.EARLIEST, now=2.0)
    payloads: list[bytes] = []
    for _ in range(100):
        payloads += [
            p
            for e in calls.drain_events()
            if isinstance(e, RecordsDelivered)
            for p in e.slice.payloads
        ]
        jobs = store.take_jobs()
        if not jobs:
            break
        _feed(calls.broker, run_jobs(jobs, 3.0), 3.0)
    assert payloads == [bytes([i]) * 100 for i in range(20)]


def test_age_retention_timer_moves_on_after_whole_segments_go() -> None:
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, DiskLogConfig(segment_bytes=1024))
    calls = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    calls.create(
        "stream", "default", "default", "s", {**DURABLE, "retention_max_age_ms": 1000}, now=0.0
    )
    for i in range(30):
        calls.publish(9, *S, [bytes(100)], now=1.0 + i / 100)
    _feed(calls.broker, run_jobs(store.take_jobs(1.3), 1.3), 1.3)
    engine = calls.broker
    log = store.log("stream", S)
    assert log is not None
    fired = 0
    now = 1.3
    while (deadline := engine.get_timer()) is not None and fired < 50:
        now = max(now, deadline)
        engine.handle_timer(now)
        _feed(engine, run_jobs(store.take_jobs(now), now), now)
        fired += 1
    assert fired < 50, "the age-retention timer spins"
    assert log.record_count == 0


def test_a_dead_letter_into_a_full_durable_queue_is_parked_then_moved() -> None:
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, DiskLogConfig())
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.create("queue", "default", "default", "dlq", {"durability": "durable"}, now=0.0)
    b.create(
        "queue", "default", "default", "q", {"dead_letter_queue": "dlq", "max_attempts": 1}, now=0.0
    )
    b.enqueue(1, "default", "default", "q", [b"m"], now=0.0)
    b.attach(1, 0.0)
    cid = b.consume(1, "default", "default", "q", prefetch=10, now=0.0)
    (delivered,) = [e for e in b.drain_events() if hasattr(e, "deliveries")]
    fs.quota = fs.total_bytes()  # the dead-letter queue's disk is full
    b.nack(1, cid, [d.delivery_id for d in delivered.deliveries], now=1.0)  # no exception
    dlq = store.log("queue", ("default", "default", "dlq"))
    assert dlq is not None and dlq.record_count == 0
    fs.quota = None
    for _ in range(10):
        deadline = b.broker.get_timer()
        if deadline is None or dlq.record_count:
            break
        b.broker.handle_timer(deadline)
    assert dlq.record_count == 1


def test_a_durable_cache_on_a_full_disk_refuses_writes_and_still_expires() -> None:
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, DiskLogConfig())
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.create("cache", "default", "default", "c", {"durability": "durable"}, now=0.0)
    assert b.cache_put("default", "default", "c", "k", b"v1", ttl_ms=1000, now=0.0) == (True, 1)
    fs.quota = fs.total_bytes()
    for op in (
        lambda: b.cache_put("default", "default", "c", "k", b"v2", now=0.1),
        lambda: b.cache_delete("default", "default", "c", "k", now=0.1),
    ):
        try:
            op()
        except StorageFull:
            pass
        else:
            raise AssertionError("the write was taken")
    got = b.cache_get("default", "default", "c", "k", now=0.2)
    assert got is not None and got.value == b"v1" and got.version == 1  # unchanged
    deadline = b.broker.get_timer()
    assert deadline is not None
    b.broker.handle_timer(deadline)  # the expiry happens; its feed record is lost
    assert b.cache_get("default", "default", "c", "k", now=deadline) is None
    fs.quota = None
    assert b.cache_put("default", "default", "c", "k", b"v3", now=deadline) == (True, 3)


def test_a_subscribe_below_a_durable_streams_retained_segments_is_cursor_too_old() -> None:
    """Retention of a durable stream deletes whole segments (so it keeps up to one segment
    more than its limit): a start below the first offset left is ``CURSOR_TOO_OLD`` with
    ``details.first_offset``, as on an ephemeral stream; a start at it is served."""
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, DiskLogConfig(segment_bytes=4096))
    calls = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    calls.create("stream", *S, {**DURABLE, "retention_max_records": 10}, now=0.0)
    for i in range(200):
        calls.publish(9, *S, [bytes([i]) * 100], now=1.0)
        _feed(calls.broker, run_jobs(store.take_jobs(1.0), 1.0), 1.0)
    log = store.log("stream", S)
    assert log is not None and 10 <= log.record_count < 200 and log.first_offset > 0
    calls.attach(7, 2.0)
    with pytest.raises(CursorTooOld) as err:
        calls.subscribe(7, *S, start=StartKind.OFFSET, start_value=log.first_offset - 1, now=2.0)
    assert err.value.code == ErrorCode.CURSOR_TOO_OLD
    assert err.value.details["first_offset"] == log.first_offset
    _, first = calls.subscribe(7, *S, start=StartKind.OFFSET, start_value=log.first_offset, now=2.0)
    assert first == log.first_offset
