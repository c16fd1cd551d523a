"""An ``Ack`` with mode ``COMMITTED`` through the server (wire message -> route -> engine ->
storage jobs): answered only by the sync job that fsyncs its state record, so a power loss
right after the answer keeps the message finished; an ``ACCEPTED`` ack answered before any
sync is undone by the same power loss (the message comes back). Sans-IO: MemoryFileSystem,
jobs run inline, no sockets."""

from __future__ import annotations

from felix_core.disklog import DiskLogStore
from felix_core.events import (
    Appended,
    EngineEvent,
    MessagesDelivered,
    RequestCompleted,
    RequestRefused,
)
from felix_core.filesystem import MemoryFileSystem
from felix_core.metadata import MemoryMetadataStore
from felix_proto import messages as m
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

Q = ("default", "default", "q")
T0 = 1_000.0


def start(
    fs: MemoryFileSystem, meta: MemoryMetadataStore, create: bool, now: float = T0
) -> FelixServer:
    config = ServerConfig()
    server = FelixServer(
        config, make_quic_configuration(config), now=now, logs=DiskLogStore(fs), metadata=meta
    )
    server.router.attach(1, T0)
    if create:
        settings = {"durability": "durable", "fsync": "none"}
        server.broker.create(1, 1, "queue", *Q, settings, now=T0)
    server.router.collect(T0)
    server.router.take(1, T0)
    run_all(server)
    return server


def run_all(server: FelixServer) -> None:
    for _ in range(10):
        jobs = server.take_storage_jobs(T0)
        if not jobs:
            return
        for job in jobs:
            server.storage_job_done(job, job.run(), T0)
    raise AssertionError("jobs never settle")


def deliveries(server: FelixServer, now: float = T0) -> tuple[int, list[int]]:
    consume = m.Consume(request_id=10, tenant="default", namespace="default", queue="q")
    server.router.submit(1, 10, consume, now)
    mail = server.router.take(1, now)
    ids = [d.delivery_id for e in mail if isinstance(e, MessagesDelivered) for d in e.deliveries]
    (cid,) = {e.consumer_id for e in mail if isinstance(e, MessagesDelivered)} or {0}
    return cid, ids


def answers(server: FelixServer) -> list[EngineEvent]:
    return [
        e for e in server.router.take(1, T0) if isinstance(e, RequestCompleted | RequestRefused)
    ]


def offsets_after_power_loss(mode: m.AckMode) -> list[int]:
    """Enqueue 2, deliver both, ack the first with ``mode``; once answered, power loss;
    restart: the offsets delivered again."""
    fs, meta = MemoryFileSystem(), MemoryMetadataStore()
    server = start(fs, meta, create=True)
    server.broker.enqueue(1, 2, *Q, [b"a", b"b"], committed=True, now=T0)
    server.router.collect(T0)
    cid, ids = deliveries(server)
    run_all(server)  # the committed enqueue's sync: the messages are on disk
    assert [(type(e), e.request) for e in answers(server)] == [(Appended, 2)]
    server.router.submit(
        1, 20, m.Ack(consumer_id=cid, delivery_ids=ids[:1], request_id=20, mode=mode), T0
    )
    done = answers(server)
    if mode == m.AckMode.COMMITTED:
        assert done == []  # its state record is not fsynced yet
        run_all(server)
        done = answers(server)
    assert [(type(e), e.request) for e in done] == [(RequestCompleted, 20)]
    fs.crash()  # power loss: what was not fsynced is gone
    later = T0 + 60  # past the visibility deadline of "b" (in flight at the crash)
    server = start(fs, meta, create=False, now=later)
    server.handle_timer(later)
    _, again = deliveries(server, now=later)
    return again


def test_a_committed_ack_survives_a_power_loss_right_after_its_answer() -> None:
    assert len(offsets_after_power_loss(m.AckMode.COMMITTED)) == 1  # only "b" comes back


def test_an_accepted_ack_does_not_survive_a_power_loss_before_a_sync() -> None:
    assert len(offsets_after_power_loss(m.AckMode.ACCEPTED)) == 2  # "a" comes back too
