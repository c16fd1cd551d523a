"""The server glue drives a durable store: its fsync interval is one more deadline of the
server's one timer, the jobs it hands out come back through ``storage_job_done`` and reach
the engine (committed publishes complete, a failed sync refuses them), and the shutdown's
final jobs sync what is left. Sans-IO: MemoryFileSystem, jobs run inline, no sockets."""

from __future__ import annotations

import pytest

from felix_core.disklog import DiskLogStore, SyncJob
from felix_core.errors import StorageFailed
from felix_core.events import Appended, EngineEvent, RequestRefused
from felix_core.filesystem import IOFailure, MemoryFileSystem
from felix_core.metadata import MemoryMetadataStore
from felix_proto.errors import ErrorCode
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

S = ("default", "default", "s")
T0 = 1_000.0


def server_on(fs: MemoryFileSystem, settings: dict[str, object]) -> FelixServer:
    config = ServerConfig()
    server = FelixServer(
        config,
        make_quic_configuration(config),
        now=T0,
        logs=DiskLogStore(fs),
        metadata=MemoryMetadataStore(),
    )
    server.router.attach(1, T0)
    server.broker.create(1, 1, "stream", *S, {"durability": "durable", **settings}, now=T0)
    server.router.collect(T0)
    server.router.take(1, T0)
    return server


def publish(server: FelixServer, request: int, now: float, *, committed: bool) -> None:
    server.broker.publish(1, request, *S, [b"r%d" % request], committed=committed, now=now)
    server.router.collect(now)


def answers(server: FelixServer, now: float) -> list[EngineEvent]:
    return [e for e in server.router.take(1, now) if isinstance(e, Appended | RequestRefused)]


def run_all(server: FelixServer, now: float, *, fail: BaseException | None = None) -> int:
    """Run every job the server hands out, inline; return how many ran."""
    ran = 0
    for _ in range(10):
        jobs = server.take_storage_jobs(now)
        if not jobs:
            return ran
        for job in jobs:
            outcome: object = fail if fail is not None else job.run()
            server.storage_job_done(job, outcome, now)
            ran += 1
    raise AssertionError("jobs never settle")


def test_the_fsync_interval_is_a_deadline_of_the_one_timer() -> None:
    fs = MemoryFileSystem()
    server = server_on(fs, {"fsync": "interval", "fsync_interval_ms": 50})
    run_all(server, T0)
    publish(server, 2, T0 + 0.01, committed=False)
    assert [type(e) for e in answers(server, T0 + 0.01)] == [Appended]  # accepted at once
    assert fs.sync_count == 0
    deadline = server.get_timer()
    assert deadline is not None and deadline <= T0 + 0.05 + 1e-9
    server.handle_timer(deadline)
    assert run_all(server, deadline) == 1 and fs.sync_count >= 1
    log = server.storage.store.log("stream", S) if server.storage else None
    assert log is not None and log.unsynced_bytes == 0 and log.committed_offset == 1


def test_a_committed_publish_is_answered_by_the_job_that_syncs_it() -> None:
    fs = MemoryFileSystem()
    server = server_on(fs, {"fsync": "none"})
    for request in (2, 3, 4):
        publish(server, request, T0, committed=True)
    assert answers(server, T0) == []  # waiting for the fsync
    assert server.storage is not None and server.storage.in_flight == 0
    jobs = server.take_storage_jobs(T0)
    assert [type(j) for j in jobs] == [SyncJob]  # one sync for the three: group commit
    assert server.storage.in_flight == 1
    server.storage_job_done(jobs[0], jobs[0].run(), T0 + 0.002)
    assert server.storage.in_flight == 0
    done = answers(server, T0 + 0.002)
    assert [(type(e), e.request) for e in done] == [(Appended, 2), (Appended, 3), (Appended, 4)]


def test_a_failed_sync_refuses_the_waiting_publishes_and_later_writes() -> None:
    fs = MemoryFileSystem()
    server = server_on(fs, {"fsync": "none"})
    publish(server, 2, T0, committed=True)
    run_all(server, T0, fail=IOFailure("EIO"))
    assert server.storage is not None and server.storage.failed_jobs == 1
    (refused,) = answers(server, T0)
    assert isinstance(refused, RequestRefused) and refused.request == 2
    assert refused.error.code == ErrorCode.STORAGE_FAILED
    publish(server, 3, T0, committed=False)
    (later,) = answers(server, T0)
    assert isinstance(later, RequestRefused) and isinstance(later.error, StorageFailed)


def test_final_jobs_sync_what_is_left_then_close() -> None:
    fs = MemoryFileSystem()
    server = server_on(fs, {"fsync": "none"})
    run_all(server, T0)
    for request in range(2, 6):
        publish(server, request, T0, committed=False)
    assert server.storage is not None
    log = server.storage.store.log("stream", S)
    assert log is not None and log.unsynced_bytes > 0
    assert server.take_storage_jobs(T0) == []  # fsync=none: nothing asks for a sync
    for job in server.storage.final_jobs(T0):
        server.storage_job_done(job, job.run(), T0)
    assert log.unsynced_bytes == 0 and log.committed_offset == 4
    server.storage.close()
    assert log.memory_bytes == 0
    fs.crash()  # a power loss now loses nothing
    uid = server.broker.registry.stream(S).uid
    again = DiskLogStore(fs).open_log(
        "stream", S, {"durability": "durable"}, server.broker.budget, uid=uid
    )
    assert again.next_offset == 4


def test_without_a_durable_store_there_are_no_jobs() -> None:
    config = ServerConfig()
    server = FelixServer(config, make_quic_configuration(config), now=T0)
    assert server.storage is None and server.take_storage_jobs(T0) == []
    with pytest.raises(AssertionError):
        server.storage_job_done(object(), None, T0)  # type: ignore[arg-type]
