"""DiskLog and DiskLogStore over MemoryFileSystem: appends, commits, faults, recovery,
rotation, retention, cold reads, the memory bound."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from storage_helpers import Meter, read_all, run_jobs, settle

from felix_core.disklog import (
    DiskLog,
    DiskLogConfig,
    DiskLogStore,
    FsyncPolicy,
    LogCommitted,
    LogFailed,
    LogReadable,
    ReadJob,
    RemoveJob,
    SyncJob,
    UnlinkJob,
)
from felix_core.errors import InvalidArgument, StorageFailed, StorageFull, TooLarge
from felix_core.filesystem import IOFailure, MemoryFileSystem, NoSpace
from felix_core.log import Log, LogSlice, MemoryLog, ReadPending, Retention, TooOld
from felix_core.segments import CorruptBatch, index_name, log_name, retention_deletions

PATH = ("t", "ns", "s")
DURABLE = {"durability": "durable"}


def _store(
    fs: MemoryFileSystem | None = None, **config: object
) -> tuple[MemoryFileSystem, DiskLogStore]:
    fs = fs or MemoryFileSystem()
    return fs, DiskLogStore(fs, DiskLogConfig(**config))  # type: ignore[arg-type]


def _open(store: DiskLogStore, settings: dict[str, object] | None = None) -> DiskLog:
    log = store.open_log("stream", PATH, settings or DURABLE, Meter())
    assert isinstance(log, DiskLog)
    return log


def test_is_a_log_and_ephemeral_resources_get_memory_logs() -> None:
    _, store = _store()
    assert store.durable
    assert isinstance(_open(store), Log)
    assert isinstance(store.open_log("stream", ("t", "ns", "e"), {}, Meter()), MemoryLog)


def test_append_read_and_reopen() -> None:
    fs, store = _store()
    log = _open(store)
    assert log.append(b"a", 10, b"k", {"h": b"v"}) == 0
    assert log.append_batch([b"b", b"c"], 5) == 1  # time clamped to 10
    got = log.read(0, 10, 1 << 20)
    assert isinstance(got, LogSlice)
    assert got.payloads == [b"a", b"b", b"c"]
    assert got.timestamps_ms == [10, 10, 10]
    assert got.keys == [b"k", None, None]
    assert got.headers == [{"h": b"v"}, None, None]
    settle(store)
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert isinstance(again, DiskLog)
    assert (again.first_offset, again.next_offset) == (0, 3)
    whole = read_all(again)
    assert whole.payloads == [b"a", b"b", b"c"]
    assert whole.keys == [b"k", None, None]
    assert whole.headers == [{"h": b"v"}, None, None]
    assert again.append(b"d", 11) == 3


def test_committed_moves_only_when_a_sync_job_finishes() -> None:
    _, store = _store()
    log = _open(store)
    log.append(b"a", 1)
    log.append(b"b", 1)
    assert log.committed_offset == 0
    assert log.unsynced_bytes > 0
    log.request_commit(2)
    jobs = store.take_jobs()
    assert len(jobs) == 1 and isinstance(jobs[0], SyncJob)
    log.append(b"c", 1)  # after the job was made: not covered by it
    assert store.take_jobs() == []  # one sync in flight per log
    notices = run_jobs(jobs)
    assert notices == [LogCommitted(kind="stream", path=PATH, offset=2)]
    assert log.committed_offset == 2
    log.request_commit(3)
    assert run_jobs(store.take_jobs()) == [LogCommitted(kind="stream", path=PATH, offset=3)]
    assert log.unsynced_bytes == 0


def test_group_commit_one_sync_for_many_waiters() -> None:
    fs, store = _store(fsync=FsyncPolicy.NONE)
    log = _open(store)
    for i in range(64):
        log.append(b"x", 1)
        log.request_commit(i + 1)
    before = fs.sync_count
    notices = settle(store)
    assert fs.sync_count - before == 1
    assert notices == [LogCommitted(kind="stream", path=PATH, offset=64)]


def test_commit_requests_during_a_sync_get_the_next_one() -> None:
    _, store = _store(fsync=FsyncPolicy.NONE)
    log = _open(store)
    log.append(b"a", 1)
    log.request_commit(1)
    first = store.take_jobs()
    log.append(b"b", 1)
    log.request_commit(2)
    assert store.take_jobs() == []
    assert run_jobs(first)[0] == LogCommitted(kind="stream", path=PATH, offset=1)
    assert settle(store) == [LogCommitted(kind="stream", path=PATH, offset=2)]


def test_interval_policy_syncs_on_the_timer() -> None:
    _, store = _store(fsync_interval_ms=100)
    log = _open(store)
    settle(store)  # the empty log has nothing to sync
    assert store.get_timer() is None
    log.append(b"a", 1)
    assert store.get_timer() == 0.0  # never synced: due at once
    store.handle_timer(5.0)
    assert run_jobs(store.take_jobs(), 5.0) == [LogCommitted(kind="stream", path=PATH, offset=1)]
    assert store.get_timer() is None
    log.append(b"b", 1)
    assert store.get_timer() == pytest.approx(5.1)
    store.handle_timer(5.05)
    assert store.take_jobs() == []
    store.handle_timer(5.1)
    assert len(store.take_jobs()) == 1


def test_none_policy_has_no_timer() -> None:
    _, store = _store()
    log = _open(store, {**DURABLE, "fsync": "none"})
    log.append(b"a", 1)
    assert store.get_timer() is None
    store.handle_timer(100.0)
    assert store.take_jobs() == []


def test_bad_settings_are_invalid_arguments() -> None:
    _, store = _store()
    for bad in ({"fsync": "always"}, {"fsync_interval_ms": 0}, {"segment_bytes": "x"}):
        with pytest.raises(InvalidArgument):
            _open(store, {**DURABLE, **bad})


def test_disk_full_refuses_and_leaves_nothing_behind() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a" * 100, 1)
    fs.quota = fs.total_bytes() + 60  # the next batch does not fit: a prefix is written
    with pytest.raises(StorageFull) as info:
        log.append_batch([b"b" * 100, b"c"], 2)
    assert info.value.retryable
    assert log.next_offset == 1
    assert fs.size(f"{log.directory}/{log_name(0)}") == log.active.size
    got = log.read(0, 10, 1 << 20)
    assert isinstance(got, LogSlice) and got.payloads == [b"a" * 100]
    fs.quota = None  # space returns
    assert log.append(b"d", 3) == 1
    settle(store)
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert isinstance(again, DiskLog)
    assert read_all(again).payloads == [b"a" * 100, b"d"]
    assert again.recovery.truncated_bytes == 0


def test_a_failed_write_that_cannot_be_undone_fails_the_log() -> None:
    fs, store = _store()
    log = _open(store)
    fs.fail_next_append(IOFailure("EIO"), partial=5)
    with pytest.raises(StorageFailed):
        log.append(b"abcdefgh", 1)
    assert log.failed is not None
    with pytest.raises(StorageFailed):
        log.append(b"x", 1)


def test_failed_fsync_fails_the_log_and_is_never_retried() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a", 1)
    log.request_commit(1)
    fs.fail_next_sync(IOFailure("EIO"))
    notices = run_jobs(store.take_jobs())
    assert len(notices) == 1 and isinstance(notices[0], LogFailed)
    assert not notices[0].error.retryable
    assert log.committed_offset == 0
    with pytest.raises(StorageFailed):
        log.append(b"b", 1)
    log.request_commit(1)
    store.handle_timer(100.0)
    assert store.take_jobs() == []
    assert log.stats.sync_failures == 1


def test_rotation_by_size_writes_indexes_and_recovery_trusts_them() -> None:
    fs, store = _store(segment_bytes=4096, index_interval=512)
    log = _open(store)
    for i in range(200):
        log.append(bytes([i % 256]) * 100, 1000 + i)
    assert log.stats.segments_rolled >= 5
    settle(store)
    names = fs.list_dir(log.directory)
    indexes = [n for n in names if n.endswith(".index")]
    assert len(indexes) == log.segment_count - 1  # every closed segment
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=4096)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert isinstance(again, DiskLog)
    assert again.recovery.rebuilt_indexes == []
    assert again.recovery.scanned_bytes == again.active.size  # only the tail was scanned
    assert read_all(again).payloads == [bytes([i % 256]) * 100 for i in range(200)]
    assert again.offset_for_timestamp(1000) == 0
    assert again.offset_for_timestamp(5000) == 200


def test_rotation_by_age() -> None:
    _, store = _store(segment_ms=1000)
    log = _open(store)
    log.append(b"a", 0)
    log.append(b"b", 999)
    assert log.segment_count == 1
    log.append(b"c", 1000)
    assert log.segment_count == 2


def test_missing_or_stale_index_is_rebuilt() -> None:
    fs, store = _store(segment_bytes=4096)
    log = _open(store)
    for i in range(100):
        log.append(bytes(100), i)
    settle(store)
    d = log.directory
    fs.remove(f"{d}/{index_name(0)}")
    stale_base = log._segments[1].base
    fs.append(f"{d}/{index_name(stale_base)}", b"junk")
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=4096)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert isinstance(again, DiskLog)
    assert again.recovery.rebuilt_indexes == [0, stale_base]
    assert len(read_all(again)) == 100
    job = again.make_sync_job(0.0)  # recovery never writes; the first sync job does
    assert job is not None
    run_jobs([job])
    assert fs.exists(f"{d}/{index_name(0)}")


def test_torn_tail_is_truncated_and_counted() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a" * 50, 1)
    log.request_commit(1)
    settle(store)
    log.append(b"b" * 50, 2)
    fs.crash(tear_at=30)
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert isinstance(again, DiskLog)
    assert again.recovery.truncated_bytes == 30
    assert again.stats.truncated_bytes == 30
    assert again.next_offset == 1
    assert read_all(again).payloads == [b"a" * 50]


def test_mid_segment_corruption_makes_the_log_read_only_below_it() -> None:
    fs, store = _store()
    log = _open(store)
    for i in range(5):
        log.append(bytes([65 + i]) * 20, i)
    settle(store)
    second = log.active.index.positions[0] + (log.active.size // 5)  # inside batch 1
    fs.corrupt(f"{log.directory}/{log_name(0)}", second + 45)
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert isinstance(again, DiskLog)
    assert again.recovery.corrupt_offset == 1
    assert again.next_offset == 1
    assert read_all(again).payloads == [b"A" * 20]
    with pytest.raises(StorageFailed) as info:
        again.append(b"x", 9)
    assert info.value.details["offset"] == 1
    assert fs.size(f"{log.directory}/{log_name(0)}") == log.active.size  # left for an operator


def test_cold_reads_go_through_jobs_and_a_bounded_cache() -> None:
    _, store = _store(tail_bytes=1000, read_cache_bytes=3000, read_chunk_bytes=1024)
    meter = Meter()
    log = store.open_log("stream", PATH, DURABLE, meter)
    assert isinstance(log, DiskLog)
    for i in range(100):
        log.append(bytes([i]) * 100, i)
    assert log.memory_bytes <= 1000
    got = log.read(0, 5, 1 << 20)
    assert got == ReadPending(offset=0)
    assert log.read(0, 5, 1 << 20) == ReadPending(offset=0)
    jobs = store.take_jobs()
    reads = [j for j in jobs if isinstance(j, ReadJob)]
    assert len(reads) == 1  # the second read did not queue another
    assert run_jobs(reads) == [LogReadable(kind="stream", path=PATH)]
    got = log.read(0, 5, 1 << 20)
    assert isinstance(got, LogSlice) and got.payloads == [bytes([i]) * 100 for i in range(5)]
    assert read_all(log).payloads == [bytes([i]) * 100 for i in range(100)]
    assert log.memory_bytes <= 1000 + 3000 + 1100
    assert meter.held == log.memory_bytes


def test_a_cold_read_of_a_batch_larger_than_a_chunk() -> None:
    _, store = _store(tail_bytes=10, read_chunk_bytes=64)
    log = _open(store)
    log.append(b"x" * 5000, 1)
    log.append(b"y", 2)
    assert read_all(log).payloads == [b"x" * 5000, b"y"]


def test_a_failing_cold_read_is_retried_then_fails_the_log() -> None:
    fs, store = _store(tail_bytes=10)
    log = _open(store)
    log.append(b"x" * 100, 1)
    log.append(b"y" * 100, 1)
    for attempt in range(3):
        assert isinstance(log.read(0, 1, 100), ReadPending)
        fs.fail_next("read", IOFailure("bad sector"))
        notices = run_jobs(store.take_jobs())
        reads = [n for n in notices if not isinstance(n, LogCommitted)]
        if attempt < 2:
            assert reads == [LogReadable(kind="stream", path=PATH)]
        else:
            assert isinstance(reads[0], LogFailed)


def test_memory_tail_is_bounded_with_100_mib_on_disk() -> None:
    fs, store = _store(segment_bytes=8 << 20, tail_bytes=1 << 20)
    meter = Meter()
    log = store.open_log("stream", PATH, DURABLE, meter)
    assert isinstance(log, DiskLog)
    payload = bytes(64 << 10)
    for i in range(1600):  # 100 MiB of records
        log.append_batch([payload], i)
        if i % 100 == 0:
            settle(store)
    assert fs.total_bytes() > 100 << 20
    assert log.byte_size >= 100 << 20
    assert meter.held <= (1 << 20) + len(payload)
    assert log.memory_bytes == meter.held


def test_the_tail_is_trimmed_with_slack_not_on_every_append() -> None:
    """Once over ``tail_bytes`` the tail goes down to 7/8 of it, so the appends that follow
    (up to an eighth of the bound) trim nothing: the trim is not a per-append cost."""
    _, store = _store(tail_bytes=8000)
    log = _open(store)
    for i in range(81):  # 8100 bytes: one over the bound
        log.append_batch([bytes(100)], i)
    held = log.memory_bytes
    assert held <= 7000
    first = log._tail.first_offset
    for i in range(9):  # 900 more bytes stay under the bound: nothing trimmed
        log.append_batch([bytes(100)], 100 + i)
    assert log._tail.first_offset == first
    assert log.memory_bytes == held + 900


def test_retention_deletes_whole_segments() -> None:
    fs, store = _store(segment_bytes=2048)
    log = _open(store)
    for i in range(100):
        log.append(bytes(100), i)
    settle(store)
    segments = log.segment_count
    dropped = log.apply_retention(Retention(max_records=30), 100)
    assert dropped > 0
    assert 30 <= log.record_count < 30 + 20  # at most one segment more than the limit
    assert log.segment_count < segments
    assert log.stats.segments_deleted == segments - log.segment_count
    assert log.read(0, 1, 100) == TooOld(requested=0, first_offset=log.first_offset)
    files = [n for n in fs.list_dir(log.directory) if n.endswith(".log")]
    assert len(files) == segments  # the unlinks are a job's, off the event loop
    jobs = store.take_jobs()
    assert [type(job) for job in jobs] == [UnlinkJob]
    assert log.jobs_in_flight
    run_jobs(jobs)
    assert not log.jobs_in_flight
    files = [n for n in fs.list_dir(log.directory) if n.endswith(".log")]
    assert len(files) == log.segment_count
    indexes = [n for n in fs.list_dir(log.directory) if n.endswith(".index")]
    assert len(indexes) == log.segment_count - 1  # the active segment has none yet
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=2048)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert (again.first_offset, again.next_offset) == (log.first_offset, 100)


def test_age_retention_rolls_the_active_segment_and_keeps_next_offset() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a", 0)
    log.append(b"b", 10)
    settle(store)
    assert log.apply_retention(Retention(max_age_ms=100), 50) == 0
    assert log.apply_retention(Retention(max_age_ms=100), 1000) == 0  # rolled; new not synced
    settle(store)
    assert log.apply_retention(Retention(max_age_ms=100), 1000) == 2
    assert log.record_count == 0
    settle(store)  # the unlink
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert (again.first_offset, again.next_offset) == (2, 2)  # offsets are never reused


def test_age_retention_time_is_when_a_whole_segment_can_go() -> None:
    _, store = _store(segment_bytes=1024)
    log = _open(store)
    assert log.first_timestamp_ms is None
    for i in range(30):
        log.append(bytes(100), 1000 + i)
    settle(store)
    first = log._segments[0]
    assert log.first_timestamp_ms == first.summary.last_timestamp_ms
    retention = Retention(max_age_ms=100)
    due = log.first_timestamp_ms + 100 + 1  # what the stream's timer arms
    assert log.apply_retention(retention, due - 1) == 0
    assert log.apply_retention(retention, due) == first.next_offset
    assert log.first_timestamp_ms == log._segments[0].summary.last_timestamp_ms


def test_a_segment_read_by_a_job_is_deleted_after_it() -> None:
    fs, store = _store(segment_bytes=1024, tail_bytes=10)
    log = _open(store)
    for i in range(30):
        log.append(bytes(100), i)
    settle(store)
    assert isinstance(log.read(0, 1, 100), ReadPending)
    jobs = store.take_jobs()
    log.apply_retention(Retention(max_records=5), 0)
    assert fs.exists(f"{log.directory}/{log_name(0)}")  # still being read
    run_jobs(jobs)
    assert fs.exists(f"{log.directory}/{log_name(0)}")  # the read done: an unlink is queued
    settle(store)
    assert not fs.exists(f"{log.directory}/{log_name(0)}")


def test_a_failed_unlink_is_tried_again_after_the_next_job() -> None:
    fs, store = _store(segment_bytes=1024)
    log = _open(store)
    for i in range(30):
        log.append(bytes(100), i)
    settle(store)
    log.apply_retention(Retention(max_records=5), 0)
    fs.fail_next("remove", IOFailure("EIO"))
    assert run_jobs(store.take_jobs()) == []
    assert fs.exists(f"{log.directory}/{log_name(0)}")
    assert store.take_jobs() == []  # not at once: no busy loop on a failing disk
    log.append(bytes(100), 30)
    settle(store, 1.0)  # a sync job finishes, then the unlink goes again
    assert not fs.exists(f"{log.directory}/{log_name(0)}")
    assert log.failed is None


def test_an_unlink_queued_when_the_log_is_dropped_leaves_it_to_the_directory_removal() -> None:
    fs, store = _store(segment_bytes=1024)
    log = _open(store)
    for i in range(30):
        log.append(bytes(100), i)
    settle(store)
    log.apply_retention(Retention(max_records=5), 0)
    store.drop_log("stream", PATH)
    jobs = store.take_jobs()
    assert [type(job) for job in jobs] == [RemoveJob]
    run_jobs(jobs)
    assert not fs.exists(log.directory)


def test_queue_logs_keep_every_record_in_memory_and_truncate() -> None:
    fs, store = _store(segment_bytes=1024, tail_bytes=10)
    log = store.open_log("queue", PATH, DURABLE, Meter())
    assert isinstance(log, DiskLog)
    for i in range(30):
        log.append(bytes([i]) * 100, i)
    got = log.read(0, 100, 1 << 20)
    assert isinstance(got, LogSlice) and len(got) == 30
    assert log.byte_size == 3000
    settle(store)
    assert log.truncate_before(25) == 25
    assert log.segment_count < 10
    assert log.first_offset == 25 and log.byte_size == 500
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=1024)).open_log(
        "queue", PATH, DURABLE, Meter()
    )
    got = again.read(again.first_offset, 100, 1 << 20)
    assert isinstance(got, LogSlice) and got.next_offset == 30


def test_drop_log_removes_the_files_on_a_job_after_the_jobs_in_flight() -> None:
    """The directory is not removed on the loop thread: a RemoveJob does it, handed out
    once the sync in flight (whose result is ignored) finished."""
    fs, store = _store()
    log = _open(store)
    log.append(b"a", 1)
    log.request_commit(1)
    jobs = store.take_jobs()
    store.drop_log("stream", PATH)
    assert store.log("stream", PATH) is None
    assert fs.list_dir(log.directory) == ["00000000000000000000.log"]
    assert store.take_jobs() == []  # the sync is still in flight
    assert run_jobs(jobs) == []
    removal = store.take_jobs()
    assert [type(job) for job in removal] == [RemoveJob]
    assert fs.exists(log.directory)
    assert run_jobs(removal) == []
    assert not fs.exists(log.directory)
    assert store.take_jobs() == []


def test_a_removal_that_fails_is_left_for_the_sweep() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a", 1)
    settle(store)
    store.drop_log("stream", PATH)
    fs.fail_next("remove_tree", IOFailure("EIO"))
    assert run_jobs(store.take_jobs()) == []
    assert fs.exists(log.directory)
    assert store.take_jobs() == []  # not tried again: the next start's sweep removes it
    assert DiskLogStore(fs).sweep([]).removed == [log.directory]


def test_a_read_queued_but_never_handed_out_does_not_hold_a_removal() -> None:
    _, store = _store(tail_bytes=10, read_chunk_bytes=64)
    log = _open(store)
    for i in range(20):
        log.append(bytes(20), i)
    settle(store)
    assert isinstance(log.read(0, 1, 100), ReadPending)  # queued, not taken
    store.drop_log("stream", PATH)
    assert [type(job) for job in store.take_jobs()] == [RemoveJob]


def test_stray_files_are_removed_at_recovery() -> None:
    fs, store = _store()
    log = _open(store)
    log.append(b"a", 1)
    settle(store)
    fs.write_atomic(f"{log.directory}/x.tmp", b"1")
    fs.write_atomic(f"{log.directory}/{index_name(99)}", b"1")
    again = DiskLogStore(fs).open_log("stream", PATH, DURABLE, Meter())
    assert isinstance(again, DiskLog)
    assert sorted(again.recovery.strays) == sorted(["x.tmp", index_name(99)])
    assert fs.list_dir(log.directory) == [log_name(0)]


def test_offset_for_timestamp_in_memory_is_exact() -> None:
    _, store = _store()
    log = _open(store)
    for ts in (10, 20, 30):
        log.append(b"x", ts)
    assert log.offset_for_timestamp(15) == 1
    assert log.offset_for_timestamp(5) == 0
    assert log.offset_for_timestamp(31) == 3


def test_sync_failure_of_index_write_is_not_fatal() -> None:
    fs, store = _store(segment_bytes=1024)
    log = _open(store)
    for i in range(20):
        log.append(bytes(100), i)
    fs.fail_next("write_atomic", NoSpace("full"))
    log.request_commit(20)
    notices = settle(store)
    assert notices == [LogCommitted(kind="stream", path=PATH, offset=20)]
    d = log.directory
    missing = [s.base for s in log._segments[:-1] if not fs.exists(f"{d}/{index_name(s.base)}")]
    assert len(missing) == 1  # written by the next sync
    log.append(b"more", 30)
    log.request_commit(21)
    settle(store)
    assert all(fs.exists(f"{d}/{index_name(s.base)}") for s in log._segments[:-1])


def test_a_crash_after_an_unsynced_roll_is_a_torn_tail_not_corruption() -> None:
    fs, store = _store(segment_bytes=620)
    log = _open(store)
    for i in range(9):
        log.append(bytes(9), i)
    log.request_commit(9)
    settle(store)
    log.append(b"", 9)  # 9 batches of 62 bytes + this one of 53: 611 bytes
    log.append_batch([b"", b""], 10)  # 62 more: rolls, a new segment at offset 10
    assert log.segment_count == 2
    fs.crash(tear_at=1)  # offset 9 never reached the disk; the new segment is torn
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=620)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert isinstance(again, DiskLog)
    assert again.recovery.corrupt_offset is None
    assert again.recovery.truncated_bytes == 1
    assert (again.next_offset, again.segment_count) == (9, 1)
    assert fs.list_dir(again.directory) == [log_name(0)]
    assert again.append(b"x", 20) == 9


def test_a_missing_synced_segment_is_corruption() -> None:
    fs, store = _store(segment_bytes=1024)
    log = _open(store)
    for i in range(40):
        log.append(bytes(100), i)
    log.request_commit(40)
    settle(store)
    assert log.segment_count >= 4
    lost = log._segments[1].base
    fs.remove(f"{log.directory}/{log_name(lost)}")  # an operator's mistake
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=1024)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert isinstance(again, DiskLog)
    assert again.recovery.corrupt_offset == lost
    assert again.next_offset == lost and again.failed is not None


def test_a_read_job_on_a_file_shorter_than_expected_ends() -> None:
    fs, store = _store(tail_bytes=10, read_chunk_bytes=64)
    log = _open(store)
    log.append(b"x" * 500, 1)
    log.append(b"y", 2)
    assert isinstance(log.read(0, 1, 1000), ReadPending)
    (job,) = [j for j in store.take_jobs() if isinstance(j, ReadJob)]
    fs.truncate(f"{log.directory}/{log_name(0)}", 100)  # as if the disk lost it
    with pytest.raises(CorruptBatch):
        job.run()


def test_evictions_for_counts_whole_segments() -> None:
    _, store = _store(segment_bytes=1000)
    log = _open(store)
    for i in range(50):
        log.append(bytes(100), i)  # 144-byte batches: 6 per segment
    settle(store)
    per = log._segments[0].summary.record_count
    assert log.evictions_for(1, 100, Retention()) == 0
    assert log.evictions_for(1, 100, Retention(max_records=100)) == 0
    # keep at least 45 of 51 records: only the first segment can go
    assert log.evictions_for(1, 100, Retention(max_records=45)) == per
    assert log.evictions_for(1, 100, Retention(max_bytes=100 * 40)) == per  # 5100 -> 4500
    assert log.evictions_for(1, 100, Retention(max_age_ms=1)) == 0  # age is not considered


def test_a_disk_full_at_a_roll_then_a_crash_reopens_after_the_closed_segment() -> None:
    fs, store = _store(segment_bytes=1000)
    log = _open(store)
    for i in range(6):
        log.append(bytes(100), i)
    fs.fail_next_append(NoSpace("full"))
    with pytest.raises(StorageFull):
        log.append(bytes(100), 6)  # rolls first: the new segment's file never appears
    log.request_commit(6)
    settle(store)
    fs.crash()
    again = DiskLogStore(fs, DiskLogConfig(segment_bytes=1000)).open_log(
        "stream", PATH, DURABLE, Meter()
    )
    assert isinstance(again, DiskLog)
    assert again.recovery.scanned_bytes == 0  # the one segment is trusted by its index
    assert (again.next_offset, again.segment_count) == (6, 2)
    assert again.append(b"x", 7) == 6


def test_a_directory_that_cannot_be_read_refuses_the_resource() -> None:
    fs, store = _store()
    fs.fail_next("list_dir", IOFailure("EACCES"))
    with pytest.raises(StorageFailed):
        _open(store)


def test_a_batch_larger_than_the_format_allows_is_too_large() -> None:
    _, store = _store()
    log = _open(store)
    with pytest.raises(TooLarge):
        log.append_batch([bytes(16 << 20)] * 5, 1)
    assert log.next_offset == 0 and log.active.size == 0


def test_a_sync_job_of_a_dropped_log_writes_no_index_into_its_directory() -> None:
    fs, store = _store(segment_bytes=1024)
    log = _open(store)
    for i in range(20):
        log.append(bytes(100), i)
    jobs = store.take_jobs()
    assert any(isinstance(j, SyncJob) and j.indexes for j in jobs)
    store.drop_log("stream", PATH)
    fresh = _open(store)  # the same directory, a new log with files of the same names
    for i in range(20):
        fresh.append(bytes(100), i)
    run_jobs(jobs)
    assert not [n for n in fs.list_dir(fresh.directory) if n.endswith(".index")]


def test_a_cold_read_finishing_after_its_records_were_trimmed_caches_nothing() -> None:
    _, store = _store(segment_bytes=1024, tail_bytes=10)
    log = _open(store)
    for i in range(30):
        log.append(bytes(100), i)
    settle(store)
    assert isinstance(log.read(0, 1, 100), ReadPending)
    jobs = store.take_jobs()
    log.apply_retention(Retention(max_records=5), 0)
    run_jobs(jobs)
    assert log._cache_bytes == 0


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 200), min_size=1, max_size=40),
    records_shift=st.none() | st.integers(-2, 2),
    bytes_shift=st.none() | st.integers(-2, 2),
    trimmed=st.integers(0, 10),
)
@example(sizes=[100] * 30, records_shift=0, bytes_shift=None, trimmed=0)
@example(sizes=[100] * 30, records_shift=None, bytes_shift=0, trimmed=0)
@example(sizes=[100] * 30, records_shift=1, bytes_shift=None, trimmed=0)
@example(sizes=[100] * 30, records_shift=None, bytes_shift=1, trimmed=0)
def test_the_append_fast_path_of_retention_agrees_with_retention_deletions(
    sizes: list[int], records_shift: int | None, bytes_shift: int | None, trimmed: int
) -> None:
    _, store = _store(segment_bytes=4096)
    log = store.open_log("queue", PATH, DURABLE, Meter())  # a queue's log can be trimmed
    assert isinstance(log, DiskLog)
    for i, size in enumerate(sizes):
        log.append(bytes(size), i)
    log.truncate_before(min(trimmed, log.next_offset))
    first = log._segments[0].summary
    all_records = sum(s.summary.record_count for s in log._segments)
    all_bytes = sum(s.summary.record_bytes for s in log._segments)
    retention = Retention(  # limits around what is left without the oldest segment
        max_records=None
        if records_shift is None
        else max(1, all_records - first.record_count + records_shift),
        max_bytes=None
        if bytes_shift is None
        else max(1, all_bytes - first.record_bytes + bytes_shift),
    )
    if log.segment_count > 1:
        active = log.active.summary
        slow = retention_deletions(
            log._closed_summaries(),
            retention,
            0,
            tail_records=active.record_count,
            tail_bytes=active.record_bytes,
            totals=log._closed_totals,
        )
        assert log._oldest_over(log._segments, retention) == (slow > 0)
    before = log.record_count
    dropped = log.apply_retention(retention, 0)
    assert log.record_count == before - dropped


def test_the_store_looks_only_at_logs_with_work_on_its_loop_passes() -> None:
    _, store = _store(fsync_interval_ms=100)
    logs = [
        store.open_log("stream", ("t", "ns", f"s{i}"), DURABLE, Meter(), uid=i) for i in range(50)
    ]
    settle(store)  # the new directories' first syncs
    assert store._busy == {}
    assert store.get_timer() is None
    quiet, written, read = logs[0], logs[1], logs[2]
    assert isinstance(quiet, DiskLog) and isinstance(written, DiskLog)
    written.append(b"x", 1)
    assert list(store._busy) == [written]
    assert store.get_timer() == 0.0  # never synced: at once
    store.handle_timer(0.0)
    (job,) = store.take_jobs(0.0)
    assert isinstance(job, SyncJob) and list(store._busy) == [written]  # in flight
    run_jobs([job], 0.0)
    assert store.take_jobs(0.0) == [] and store._busy == {}
    written.request_commit(written.next_offset)  # nothing to commit: stays idle
    assert store._busy == {}
    written.append(b"y", 2)
    written.request_commit(written.next_offset)
    jobs = store.take_jobs(0.5)
    assert [type(j) for j in jobs] == [SyncJob]
    run_jobs(jobs, 0.5)
    assert isinstance(read, DiskLog)
    for i in range(20):
        read.append(bytes(100), i)
    read.request_commit(read.next_offset)
    settle(store, 1.0)
    assert store._busy == {}
    read._tail.truncate_before(read.next_offset)  # as if the tail had moved on
    assert isinstance(read.read(0, 1, 100), ReadPending)
    assert read in store._busy
    settle(store, 1.0)
    assert isinstance(read.read(0, 1, 100), LogSlice)
    store.drop_log("stream", ("t", "ns", "s1"))
    assert written not in store._busy
