"""Committed acks (issue 10): on a durable queue the broker answers an ``Ack`` sent with mode
``committed`` only once its ``FINISHED`` state record is fsynced (many acks share one sync);
on an ephemeral queue it answers at once, as a committed publish on an ephemeral stream."""

from __future__ import annotations

from typing import Any

from engine_calls import Calls
from storage_helpers import run_jobs

from felix_core import Broker, BrokerConfig
from felix_core import queue_journal as qj
from felix_core.disklog import DiskLogStore, LogCommitted, LogFailed
from felix_core.errors import NotFound, StorageFailed, StorageFull
from felix_core.events import (
    MessagesDelivered,
    RequestCompleted,
    RequestRefused,
)
from felix_core.filesystem import IOFailure, MemoryFileSystem
from felix_core.metadata import Kind, MemoryMetadataStore

Q = ("default", "default", "q")
CONN = 1


class Engine:
    """A broker on a MemoryFileSystem whose storage jobs run only when asked."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.fs = MemoryFileSystem()
        self.store = DiskLogStore(self.fs)
        self.calls = Calls(Broker(BrokerConfig(), logs=self.store), MemoryMetadataStore())
        self.broker = self.calls.broker
        self.calls.create("queue", *Q, settings, now=1.0)
        self.broker.attach(CONN, 1.0)
        self.request = 100

    def deliveries(self, n: int) -> tuple[int, list[int]]:
        self.calls.enqueue(CONN, *Q, [b"m%d" % i for i in range(n)], now=1.0)
        cid = self.calls.consume(CONN, *Q, group="g", prefetch=n, now=1.0)
        ids = [
            d.delivery_id
            for e in self.calls.drain_events()
            if isinstance(e, MessagesDelivered)
            for d in e.deliveries
        ]
        return cid, ids

    def ack(self, cid: int, ids: list[int]) -> int:
        """A committed ack; returns its request number (its answer comes in ``answers``)."""
        self.request += 1
        self.broker.ack(CONN, self.request, cid, ids, committed=True, now=1.0)
        return self.request

    def answers(self) -> dict[int, RequestCompleted | RequestRefused]:
        return {
            e.request: e
            for e in self.broker.drain_events()
            if isinstance(e, RequestCompleted | RequestRefused)
        }

    def run_jobs(self) -> int:
        """Run the store's jobs once, feeding the engine what they found; the syncs run."""
        jobs = self.store.take_jobs()
        for notice in run_jobs(jobs):
            if isinstance(notice, LogCommitted):
                self.broker.log_committed(Kind(notice.kind), notice.path, notice.offset, 1.0)
            elif isinstance(notice, LogFailed):
                self.broker.log_failed(Kind(notice.kind), notice.path, notice.error, 1.0)
        return len(jobs)

    def state_log_synced(self) -> bool:
        log = self.broker.registry.queue(Q).state_log
        assert log is not None
        return log.committed_offset == log.next_offset


def test_a_committed_ack_waits_for_the_fsync_of_its_record_and_acks_share_it() -> None:
    e = Engine({"durability": "durable", "fsync": "none"})
    cid, ids = e.deliveries(3)
    e.run_jobs()
    first = e.ack(cid, ids[:1])
    assert e.answers() == {}  # its FINISHED record is written, not yet fsynced
    assert not e.state_log_synced()
    second, third = e.ack(cid, ids[1:2]), e.ack(cid, ids[2:])
    before = e.fs.sync_count
    e.run_jobs()
    assert e.state_log_synced()
    answers = e.answers()
    assert sorted(answers) == [first, second, third]
    assert all(type(a) is RequestCompleted for a in answers.values())
    assert e.fs.sync_count - before == 1  # group commit: one fsync for the three acks


def test_an_accepted_ack_is_answered_at_once_on_a_durable_queue() -> None:
    e = Engine({"durability": "durable", "fsync": "none"})
    cid, ids = e.deliveries(1)
    e.request += 1
    e.broker.ack(CONN, e.request, cid, ids, now=1.0)
    assert list(e.answers()) == [e.request]
    assert not e.state_log_synced()


def test_a_committed_ack_on_an_ephemeral_queue_is_answered_at_once() -> None:
    e = Engine({})
    cid, ids = e.deliveries(1)
    request = e.ack(cid, ids)
    assert type(e.answers()[request]) is RequestCompleted


def test_a_failed_state_log_refuses_the_waiting_committed_acks() -> None:
    e = Engine({"durability": "durable", "fsync": "none"})
    cid, ids = e.deliveries(1)
    e.run_jobs()
    request = e.ack(cid, ids)
    e.fs.fail_next_sync(IOFailure("EIO"))
    e.run_jobs()
    refused = e.answers()[request]
    assert isinstance(refused, RequestRefused) and isinstance(refused.error, StorageFailed)


def test_a_committed_ack_whose_record_was_refused_is_refused() -> None:
    e = Engine({"durability": "durable", "fsync": "none"})
    cid, ids = e.deliveries(2)
    journal = e.broker.registry.queue(Q).queue.journal
    assert isinstance(journal, qj.QueueJournal)
    log = journal.log
    append = log.append

    def full(*args: Any, **kwargs: Any) -> int:
        raise StorageFull("disk full")

    log.append = full  # type: ignore[method-assign]
    request = e.ack(cid, ids[:1])
    refused = e.answers()[request]
    assert isinstance(refused, RequestRefused) and isinstance(refused.error, StorageFull)
    assert "not on disk" in refused.error.message
    log.append = append  # type: ignore[method-assign]
    request = e.ack(cid, ids[1:])  # the checkpoint that follows makes up for the lost record
    e.run_jobs()
    assert type(e.answers()[request]) is RequestCompleted


def test_committed_requests_still_waiting_when_their_resource_is_deleted_are_refused() -> None:
    """Deleting a durable queue or stream answers what waited for its fsync (NOT_FOUND):
    the files go with it, so the request can never be committed, and a client must not wait
    for its timeout to learn that."""
    e = Engine({"durability": "durable", "fsync": "none"})
    cid, ids = e.deliveries(1)
    e.calls.create("stream", "default", "default", "s", {"durability": "durable"}, now=1.0)
    e.run_jobs()
    e.answers()
    ack = e.ack(cid, ids)
    e.broker.publish(CONN, 200, "default", "default", "s", [b"x"], committed=True, now=1.0)
    assert e.answers() == {}  # both wait for an fsync
    e.calls.delete("queue", *Q, now=2.0)
    e.calls.delete("stream", "default", "default", "s", now=2.0)
    refused = {ev.request: ev for ev in e.calls.completions if isinstance(ev, RequestRefused)}
    assert sorted(refused) == [ack, 200]
    assert all(isinstance(r.error, NotFound) for r in refused.values())
    assert "deleted before" in str(refused[200].error)
