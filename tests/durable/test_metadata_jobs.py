"""Admin writes on a file-backed metadata store run as storage jobs, off the loop: the
checks on the loop, the definition's file (and a new durable resource's log directories)
in the job, the answer and the change back on the loop when it is done, one write at a
time. Sans-IO: MemoryFileSystem, jobs run inline, no sockets."""

from __future__ import annotations

from felix_core.disklog import DiskLogStore
from felix_core.events import (
    Appended,
    EngineEvent,
    RequestCompleted,
    RequestRefused,
    ResourceDescribed,
)
from felix_core.filesystem import IOFailure, MemoryFileSystem, NoSpace
from felix_core.metadata import Kind, MemoryMetadataStore, MetadataStore
from felix_proto.errors import ErrorCode
from felix_runtime.metadata_store import FileMetadataStore
from felix_server.config import ServerConfig
from felix_server.local_route import MetadataJob
from felix_server.server import FelixServer, make_quic_configuration

S = ("default", "default", "s")
T0 = 1_000.0
RECORD = "records/stream+default+default+s.rec"


def server_on(logs: MemoryFileSystem, metadata: MetadataStore) -> FelixServer:
    config = ServerConfig()
    server = FelixServer(
        config,
        make_quic_configuration(config),
        now=T0,
        logs=DiskLogStore(logs),
        metadata=metadata,
    )
    server.router.attach(1, T0)
    return server


def create(server: FelixServer, request: int, kind: str, path: tuple[str, str, str]) -> None:
    server.broker.create(1, request, kind, *path, {"durability": "durable"}, now=T0)
    server.router.collect(T0)


def answers(server: FelixServer) -> list[tuple[type[EngineEvent], int]]:
    server.router.collect(T0)
    return [
        (RequestCompleted if isinstance(e, ResourceDescribed) else type(e), e.request)
        for e in server.router.take(1, T0)
        if isinstance(e, RequestCompleted | RequestRefused | Appended)
    ]


def test_a_create_is_answered_by_its_job_once_the_definition_is_written() -> None:
    logs, meta_fs = MemoryFileSystem(), MemoryFileSystem()
    server = server_on(logs, FileMetadataStore(meta_fs))
    create(server, 1, "stream", S)
    assert answers(server) == []  # not before its file is written
    assert not meta_fs.exists(RECORD)
    (job,) = server.take_storage_jobs(T0)
    assert isinstance(job, MetadataJob)
    assert not meta_fs.exists(RECORD)  # the loop wrote nothing: the job does
    job.run()
    assert meta_fs.exists(RECORD)
    uid = job.prepared.record.uid
    assert server.storage is not None
    directory = server.storage.store.directory("stream", S, uid)
    assert directory == f"logs/stream/default/default/s/{uid}"
    assert logs.list_dir(directory) == []  # made by the job, empty
    assert answers(server) == []  # the answer comes on the loop, with the job's outcome
    server.storage_job_done(job, None, T0)
    assert answers(server) == [(RequestCompleted, 1)]
    assert server.storage.store.log("stream", S) is not None
    server.broker.publish(1, 2, *S, [b"x"], now=T0)
    assert answers(server) == [(Appended, 2)]
    assert server.storage.in_flight == 0


def test_a_durable_queue_gets_the_directories_of_both_its_logs_in_the_job() -> None:
    logs = MemoryFileSystem()
    server = server_on(logs, FileMetadataStore(MemoryFileSystem()))
    q = ("default", "default", "q")
    create(server, 1, "queue", q)
    (job,) = server.take_storage_jobs(T0)
    job.run()
    assert {"q", "q~state"} <= set(logs.list_dir("logs/queue/default/default"))
    server.storage_job_done(job, None, T0)
    assert answers(server) == [(RequestCompleted, 1)]


def test_writes_run_one_at_a_time_and_each_is_checked_after_the_last() -> None:
    """A second create of the same name waits for the first to be written, then fails its
    check (no job); a third, of another name, runs next."""
    server = server_on(MemoryFileSystem(), FileMetadataStore(MemoryFileSystem()))
    create(server, 1, "stream", S)
    create(server, 2, "stream", S)
    create(server, 3, "stream", ("default", "default", "t"))
    (first,) = server.take_storage_jobs(T0)
    assert server.take_storage_jobs(T0) == []  # one in flight at a time
    server.storage_job_done(first, first.run(), T0)
    (third,) = server.take_storage_jobs(T0)
    assert isinstance(third, MetadataJob) and third.path == ("default", "default", "t")
    server.storage_job_done(third, third.run(), T0)
    assert answers(server) == [(RequestCompleted, 1), (RequestRefused, 2), (RequestCompleted, 3)]


def test_a_failed_write_is_refused_and_changes_nothing() -> None:
    meta_fs = MemoryFileSystem()
    store = FileMetadataStore(meta_fs)
    server = server_on(MemoryFileSystem(), store)
    for request, error, code in (
        (1, NoSpace("full"), ErrorCode.STORAGE_FULL),
        (2, IOFailure("eio"), ErrorCode.STORAGE_FAILED),
    ):
        create(server, request, "stream", S)
        (job,) = server.take_storage_jobs(T0)
        meta_fs.fail_next("write_atomic", error)
        outcome: object = None
        try:
            job.run()
        except Exception as exc:  # what run_job hands to the job's finish
            outcome = exc
        server.storage_job_done(job, outcome, T0)
        server.router.collect(T0)
        (refused,) = server.router.take(1, T0)
        assert isinstance(refused, RequestRefused) and refused.error.code == code
        assert store.get(Kind.STREAM, S) is None
    create(server, 3, "stream", S)  # space is back
    (job,) = server.take_storage_jobs(T0)
    server.storage_job_done(job, job.run(), T0)
    assert answers(server) == [(RequestCompleted, 3)]


def test_a_memory_store_still_answers_at_once_without_jobs() -> None:
    server = server_on(MemoryFileSystem(), MemoryMetadataStore())
    create(server, 1, "stream", S)
    assert answers(server) == [(RequestCompleted, 1)]
    assert server.take_storage_jobs(T0) == []


def test_a_create_lists_its_log_directory_in_the_job_and_the_open_lists_nothing() -> None:
    """The job makes and lists the new log's directory; the open on the loop (when the job
    is done) takes that listing and touches no directory: a list_dir failing then would
    fail the open. A create whose definition cannot be written leaves no listing behind."""
    logs, meta_fs = MemoryFileSystem(), MemoryFileSystem()
    server = server_on(logs, FileMetadataStore(meta_fs))
    assert server.storage is not None
    store = server.storage.store
    create(server, 1, "queue", ("default", "default", "q"))
    (job,) = server.take_storage_jobs(T0)
    job.run()
    assert len(store._listings) == 2  # the queue's log and its state log
    logs.fail_next("list_dir", IOFailure("a list_dir on the loop"))
    logs.fail_next("make_dirs", IOFailure("a mkdir on the loop"))
    server.storage_job_done(job, None, T0)
    assert answers(server) == [(RequestCompleted, 1)]
    assert store.log("queue", ("default", "default", "q")) is not None
    assert store._listings == {}
    assert len(logs._failures["list_dir"]) == len(logs._failures["make_dirs"]) == 1  # unused
    logs._failures.clear()
    create(server, 2, "stream", S)
    (job,) = [j for j in server.take_storage_jobs(T0) if isinstance(j, MetadataJob)]
    meta_fs.fail_next("write_atomic", IOFailure("eio"))
    outcome: object = None
    try:
        job.run()
    except Exception as exc:  # what run_job hands to the job's finish
        outcome = exc
    assert len(store._listings) == 1  # made before the definition failed
    server.storage_job_done(job, outcome, T0)
    assert [kind for kind, _ in answers(server)] == [RequestRefused]
    assert store._listings == {}
