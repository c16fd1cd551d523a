"""A durable log belongs to one incarnation of its resource (its metadata ``uid``): a stream
deleted and created again under the same name starts empty, even when the old files outlived
the delete (a failed removal, a crash before it), and a restart removes such leftovers
without opening them. Engine on DiskLogStore over MemoryFileSystem."""

from __future__ import annotations

from engine_calls import Calls
from storage_helpers import run_jobs

from felix_core import Broker, BrokerConfig
from felix_core.disklog import DiskLogStore, LogCommitted
from felix_core.filesystem import IOFailure, MemoryFileSystem
from felix_core.metadata import Kind

S = ("default", "default", "s")
DURABLE = {"durability": "durable", "batch_max_delay_us": 0}


def _engine(fs: MemoryFileSystem) -> tuple[DiskLogStore, Calls]:
    store = DiskLogStore(fs)
    calls = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    calls.attach(1, now=0.0)
    return store, calls


def _publish_committed(store: DiskLogStore, calls: Calls, payloads: list[bytes]) -> None:
    calls.broker.publish(1, 1000, *S, payloads, committed=True, now=1.0)
    for notice in run_jobs(store.take_jobs(1.0), 1.0):
        assert isinstance(notice, LogCommitted)
        calls.broker.log_committed(Kind(notice.kind), notice.path, notice.offset, 1.0)
    log = store.log("stream", S)
    assert log is not None and log.committed_offset == len(payloads)
    calls.broker.drain_events()


def test_a_durable_stream_deleted_and_created_again_is_empty() -> None:
    fs = MemoryFileSystem()
    store, calls = _engine(fs)
    calls.create("stream", *S, DURABLE, now=0.0)
    _publish_committed(store, calls, [b"a", b"b"])
    calls.delete("stream", *S, now=2.0)
    calls.create("stream", *S, DURABLE, now=3.0)
    log = store.log("stream", S)
    assert log is not None and (log.first_offset, log.next_offset) == (0, 0)


def test_old_files_left_by_a_failed_removal_are_never_opened_again() -> None:
    fs = MemoryFileSystem()
    store, calls = _engine(fs)
    calls.create("stream", *S, DURABLE, now=0.0)
    _publish_committed(store, calls, [b"a", b"b", b"c"])
    old = store.log("stream", S)
    assert old is not None
    fs.fail_next("remove_tree", IOFailure("EIO"))
    calls.delete("stream", *S, now=2.0)
    assert fs.exists(old.directory)  # left behind
    calls.create("stream", *S, DURABLE, now=3.0)
    new = store.log("stream", S)
    assert new is not None and new.directory != old.directory
    assert new.next_offset == 0


def test_a_crash_between_delete_and_removal_never_brings_old_records_back() -> None:
    fs = MemoryFileSystem()
    store, calls = _engine(fs)
    calls.create("stream", *S, DURABLE, now=0.0)
    _publish_committed(store, calls, [b"a", b"b", b"c"])
    old = store.log("stream", S)
    assert old is not None
    fs.fail_next("remove_tree", IOFailure("killed"))  # the broker dies before removing
    calls.delete("stream", *S, now=2.0)
    fs.crash()

    # Restart: metadata names no incarnation of s; the old one is removed, never opened.
    again = DiskLogStore(fs)
    report = again.sweep([])
    assert report.removed == [old.directory] and report.failed == []
    assert not fs.exists(old.directory)
    assert again.log("stream", S) is None

    # Even an engine whose uids start over (the old uid handed out again) sees nothing old.
    restarted = Calls(Broker(BrokerConfig(), logs=again, now=5.0))
    restarted.create("stream", *S, DURABLE, now=5.0)
    log = again.log("stream", S)
    assert log is not None and log.next_offset == 0


def test_the_sweep_keeps_named_incarnations_and_open_logs() -> None:
    fs = MemoryFileSystem()
    store, calls = _engine(fs)
    calls.create("stream", *S, DURABLE, now=0.0)
    calls.create("queue", "default", "default", "q", {"durability": "durable"}, now=0.0)
    _publish_committed(store, calls, [b"a"])
    stream, queue = store.log("stream", S), store.log("queue", ("default", "default", "q"))
    assert stream is not None and queue is not None
    fs.make_dirs("logs/cache/default/default/gone/9")
    fs.write_atomic("logs/cache/default/default/gone/9/00000000000000000000.log", b"old")
    fs.write_atomic("logs/stray", b"not a log")  # not a kind's directory: untouched
    queue_uid = int(queue.directory.rsplit("/", 1)[1])

    report = store.sweep([("queue", ("default", "default", "q"), queue_uid)])

    assert report.removed == ["logs/cache/default/default/gone/9"]
    assert fs.exists(stream.directory) and fs.exists(queue.directory) and fs.exists("logs/stray")
    fresh = DiskLogStore(fs)  # nothing open: only what metadata names stays
    state = queue.directory.replace("/q/", "/q~state/")  # the durable queue's state log
    assert sorted(fresh.sweep([]).removed) == sorted([queue.directory, state, stream.directory])
