"""A durable queue's group state survives a restart (issue 10): its state log's records
(golden bytes), the rebuild after a kill -9 or a power loss, max-attempts counting across
restarts, compaction, and hypothesis-driven crash points checked against the engine's own
state just before the crash."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from engine_calls import Calls
from hypothesis import example, given, settings
from hypothesis import strategies as st
from storage_helpers import settle

from felix_core import Broker, BrokerConfig
from felix_core import queue_journal as qj
from felix_core import queues as queues_module
from felix_core import registry as registry_module
from felix_core.disklog import DiskLogStore, LogCommitted
from felix_core.errors import NotFound, StorageFailed, StorageFull
from felix_core.events import MessageDeadLettered, MessagesDelivered, RequestCompleted
from felix_core.filesystem import MemoryFileSystem
from felix_core.log import LogSlice, MemoryLog
from felix_core.metadata import Kind, MemoryMetadataStore
from felix_core.queue_types import QueueDelivery

Q = ("default", "default", "q")
DURABLE = {"durability": "durable", "max_attempts": 3, "visibility_timeout_ms": 1000}


# -- record format ----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage-format.md"

PARKED_CHECKPOINT = qj.GroupState(9, {5: 3, 6: 2}, {6: 1000}, {5: ("rejected", "rejected")})
GOLDEN = {
    "`GROUP` cursor 7": qj.encode_group("g", 7),
    "`LEASED` (5, 1, 0), (6, 2, 1000)": qj.encode_leased("g", [(5, 1, 0), (6, 2, 1000)]),
    "`PARKED` (7, 3, max_attempts, timeout)": qj.encode_parked(
        "g", [(7, 3, "max_attempts", "timeout")]
    ),
    "`FINISHED` 5": qj.encode_finished("g", [5]),
    "`DELETED`": qj.encode_deleted("g"),
    "`CHECKPOINT` g: cursor 9, (5, 3, 0) parked (rejected, rejected), (6, 2, 1000)": (
        qj.encode_checkpoint({"g": PARKED_CHECKPOINT})
    ),
    "`ATTEMPTS` (5, 1), (6, 2)": qj.encode_attempts("g", [(5, 1), (6, 2)]),
    "`CHECKPOINT_V1` g: cursor 9, (6, 2)": qj.encode_checkpoint_v1({"g": qj.GroupState(9, {6: 2})}),
}


def _doc_golden() -> dict[str, bytes]:
    section = DOC.read_text().split("## 7. Queue state log", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`[A-Z_0-9]+`[^|]*?) \| `([0-9a-f ]+)` \|$", section, re.M)
    return {label: bytes.fromhex(hexed) for label, hexed in rows}


def test_state_records_match_the_golden_bytes_of_the_spec() -> None:
    """docs/storage-format.md ("Queue state log") gives these bytes; they decode back."""
    assert _doc_golden() == GOLDEN
    decoded = [qj.decode(payload) for payload in GOLDEN.values()]
    assert decoded == [
        (qj.GROUP, "g", 7),
        (qj.LEASED, "g", [(5, 1, 0), (6, 2, 1000)]),
        (qj.PARKED, "g", [(7, 3, "max_attempts", "timeout")]),
        (qj.FINISHED, "g", [5]),
        (qj.DELETED, "g", None),
        (qj.CHECKPOINT, "", {"g": PARKED_CHECKPOINT}),
        (qj.ATTEMPTS, "g", [(5, 1), (6, 2)]),
        (qj.CHECKPOINT_V1, "", {"g": qj.GroupState(9, {6: 2})}),
    ]


def test_replay_applies_records_in_order_and_restarts_at_a_checkpoint() -> None:
    records = [
        qj.encode_group("a", 0),
        qj.encode_attempts("a", [(0, 1), (1, 1), (2, 1)]),
        qj.encode_finished("a", [1]),
        qj.encode_attempts("a", [(0, 2)]),
        qj.encode_group("b", 0),
        qj.encode_deleted("b"),
    ]
    state = qj.replay(records)
    assert state == {"a": qj.GroupState(3, {0: 2, 2: 1})}
    checkpoint = qj.encode_checkpoint({"c": qj.GroupState(4, {3: 1})})
    # records before a checkpoint are superseded; those after it apply, even to a group
    # whose GROUP record was compacted away
    after = qj.replay([*records, checkpoint, qj.encode_finished("c", [3])])
    assert after == {"c": qj.GroupState(4, {})}
    assert qj.replay([qj.encode_attempts("z", [(8, 1)])]) == {"z": qj.GroupState(9, {8: 1})}


@pytest.mark.parametrize(
    "payload", [b"", b"\x09\x00", b"\x01\x01g", b"\x04\x01g!", b"\x04\x01\xff", b"\x03\x01g\x02"]
)
def test_a_bad_state_record_is_a_typed_error(payload: bytes) -> None:
    with pytest.raises(qj.StateRecordError):
        qj.decode(payload)


def test_a_refused_write_is_counted_and_forces_a_checkpoint() -> None:
    class Full(MemoryLog):
        refuse = True

        def append(self, *args: Any, **kwargs: Any) -> int:
            if self.refuse:
                raise StorageFull("disk full")
            return super().append(*args, **kwargs)

    log = Full()
    journal = qj.QueueJournal(log, checkpoint_every=100)
    journal.group("g", 0)
    assert (journal.lost, journal.due()) == (1, True)
    log.refuse = False
    journal.checkpoint({"g": qj.GroupState(0)})
    assert (journal.lost, journal.due(), log.record_count) == (0, False, 1)


# -- the engine over a data directory ---------------------------------------------------------


class World:
    """A broker on a MemoryFileSystem; :meth:`restart` builds a new one on the same files."""

    def __init__(self, queue_settings: dict[str, Any] | None = None) -> None:
        self.fs = MemoryFileSystem()
        self.meta = MemoryMetadataStore()
        self.now = 1.0
        self.fire_at_start = True
        self._start()
        self.calls.create("queue", *Q, queue_settings or DURABLE, now=self.now)

    def _start(self) -> None:
        self.store = DiskLogStore(self.fs)
        self.calls = Calls(Broker(BrokerConfig(), logs=self.store, now=self.now), self.meta)
        self.calls.sync(self.now)
        if self.fire_at_start:  # (Calls rebuilds the queues at time 0)
            self.calls.broker.handle_timer(self.now)
        self.conn = 1
        self.calls.broker.attach(self.conn, self.now)

    def restart(self, power_loss: bool = False) -> None:
        """kill -9 (the page cache survives), or a power loss after a sync of every log."""
        if power_loss:
            self.store.handle_timer(self.now + 1000.0)  # every fsync interval has passed
            settle(self.store, self.now)
            self.fs.crash()
        self.now += 1.0
        self._start()

    def enqueue(self, n: int, tag: str = "m") -> None:
        payloads = [f"{tag}{i}".encode() for i in range(n)]
        self.calls.enqueue(self.conn, *Q, payloads, now=self.now)

    def consume(self, prefetch: int, group: str = "g") -> tuple[int, list[QueueDelivery]]:
        cid = self.calls.consume(self.conn, *Q, group=group, prefetch=prefetch, now=self.now)
        return cid, self.deliveries()

    def deliveries(self) -> list[QueueDelivery]:
        return [
            d
            for e in self.calls.drain_events()
            if isinstance(e, MessagesDelivered)
            for d in e.deliveries
        ]

    def queue(self) -> Any:
        return self.calls.broker.registry.queue(Q).queue


@pytest.mark.parametrize("power_loss", [False, True])
def test_acked_messages_never_come_back_and_in_flight_ones_count_an_attempt(
    power_loss: bool,
) -> None:
    w = World()
    w.enqueue(10)
    cid, got = w.consume(prefetch=10)
    assert [d.offset for d in got] == list(range(10))
    w.calls.ack(w.conn, cid, [d.delivery_id for d in got[:4]], now=w.now)
    w.restart(power_loss)
    _, again = w.consume(prefetch=100)
    assert sorted(d.offset for d in again) == list(range(4, 10))
    assert {d.attempt for d in again} == {2}  # the delivery in flight at the crash counted
    assert {d.payload for d in again} == {f"m{i}".encode() for i in range(4, 10)}


def test_new_messages_after_the_cursor_come_once_and_groups_keep_their_own_state() -> None:
    w = World()
    w.enqueue(3)
    _, h_first = w.consume(prefetch=1, group="h")
    assert [d.offset for d in h_first] == [0]
    cid, got = w.consume(prefetch=10)
    w.calls.ack(w.conn, cid, [d.delivery_id for d in got], now=w.now)
    w.restart()
    w.enqueue(2, tag="n")
    _, g_got = w.consume(prefetch=100)
    assert [(d.offset, d.attempt) for d in g_got] == [(3, 1), (4, 1)]
    _, h_got = w.consume(prefetch=100, group="h")
    assert sorted((d.offset, d.attempt) for d in h_got) == [(0, 2), (1, 1), (2, 1), (3, 1), (4, 1)]


def test_max_attempts_counting_goes_on_across_restarts() -> None:
    w = World()
    w.enqueue(1)
    for attempt in (1, 2, 3):
        _, got = w.consume(prefetch=1)
        assert [(d.offset, d.attempt) for d in got] == [(0, attempt)]
        w.restart()
    # three attempts were charged (each in flight at a crash): dead-lettered, not delivered
    events = w.calls.drain_events()
    (dead,) = [e for e in events if isinstance(e, MessageDeadLettered)]
    assert (dead.offset, dead.attempts, dead.reason) == (0, 3, "max_attempts")
    _, got = w.consume(prefetch=1)
    assert got == []
    w.restart()
    assert w.consume(prefetch=1)[1] == []  # the dead letter's move was recorded too


def test_an_uncharged_give_back_is_recorded() -> None:
    w = World()
    w.enqueue(2)
    cid, got = w.consume(prefetch=2)
    assert [d.offset for d in got] == [0, 1]
    w.calls.cancel_consumer(w.conn, cid, now=w.now)  # charged on offset 0, not on offset 1
    w.deliveries()
    w.restart()
    _, again = w.consume(prefetch=10)
    assert sorted((d.offset, d.attempt) for d in again) == [(0, 2), (1, 1)]


def test_a_delayed_nack_stays_delayed_across_a_restart_until_its_absolute_due_time() -> None:
    w = World()
    w.enqueue(2)
    cid, got = w.consume(prefetch=2)
    w.calls.nack(w.conn, cid, [got[0].delivery_id], delay_ms=10_001, now=w.now)  # due 11.001
    w.calls.ack(w.conn, cid, [got[1].delivery_id], now=w.now)
    for _ in range(3):  # the due time read back and written again stays the same ms
        w.restart()
        assert w.calls.broker.get_timer() == 11.001
    _, again = w.consume(prefetch=10)
    assert again == []
    w.now = 10.9
    w.calls.broker.handle_timer(w.now)
    assert w.deliveries() == []
    w.now = 11.001
    w.calls.broker.handle_timer(w.now)
    assert [(d.offset, d.attempt) for d in w.deliveries()] == [(0, 2)]


def test_a_delivery_in_flight_at_the_crash_waits_for_its_visibility_deadline() -> None:
    w = World({**DURABLE, "visibility_timeout_ms": 30_000})
    w.enqueue(1)
    w.consume(prefetch=1)  # deadline 31.0
    w.restart()  # at 2.0: the consumer is gone, the deadline stays
    assert w.consume(prefetch=10)[1] == []
    assert w.calls.broker.get_timer() == 31.0
    w.now = 31.0
    w.calls.broker.handle_timer(w.now)
    assert [(d.offset, d.attempt) for d in w.deliveries()] == [(0, 2)]


def test_a_parked_dead_letter_stays_parked_across_a_restart() -> None:
    w = World({**DURABLE, "dead_letter_queue": "dlq"})  # dlq does not exist yet
    w.enqueue(2)
    cid, got = w.consume(prefetch=2)
    w.calls.nack(w.conn, cid, [got[0].delivery_id], requeue=False, now=w.now)
    w.calls.ack(w.conn, cid, [got[1].delivery_id], now=w.now)
    assert set(w.queue().groups["g"].parked) == {0}
    records = w.queue().journal.log.next_offset
    for _ in range(2):  # the retries re-park it without writing it again
        w.now += 1.5
        w.calls.broker.handle_timer(w.now)
    assert w.queue().journal.log.next_offset == records
    w.restart()
    assert w.queue().groups["g"].parked == {0: ("rejected", "rejected")}
    assert w.consume(prefetch=10)[1] == []  # not redelivered
    w.calls.create("queue", "default", "default", "dlq", {"durability": "durable"}, now=w.now)
    w.now += 1.5
    w.calls.broker.handle_timer(w.now)
    dlq = w.calls.broker.registry.queue(("default", "default", "dlq")).queue
    assert dlq.log.record_count == 1
    assert not w.queue().groups["g"].parked
    w.restart()
    assert w.consume(prefetch=10)[1] == []


def test_a_state_log_of_the_first_version_still_replays() -> None:
    """``ATTEMPTS`` and ``CHECKPOINT_V1`` (no times, no parked dead letters) are read: their
    offsets are ready at once."""
    records = [
        qj.encode_checkpoint_v1({"g": qj.GroupState(4, {1: 2})}),
        qj.encode_attempts("g", [(4, 1)]),
        qj.encode_leased("g", [(5, 1, 9_000)]),
        qj.encode_parked("g", [(1, 3, "max_attempts", "nack")]),
    ]
    assert qj.replay(records) == {
        "g": qj.GroupState(6, {1: 3, 4: 1, 5: 1}, {5: 9_000}, {1: ("max_attempts", "nack")})
    }
    # a later LEASED or FINISHED clears the time and the parking
    after = qj.replay([*records, qj.encode_leased("g", [(5, 2, 0)]), qj.encode_finished("g", [1])])
    assert after == {"g": qj.GroupState(6, {4: 1, 5: 2})}


def test_an_ephemeral_queue_has_no_state_log() -> None:
    w = World({"max_attempts": 3})
    w.enqueue(1)
    w.consume(prefetch=1)
    assert w.queue().journal is None
    assert not any("~state" in d for d in w.fs.list_dir("logs/queue/default/default"))


def test_deleting_a_queue_deletes_its_state_log() -> None:
    w = World()
    w.enqueue(1)
    w.consume(prefetch=1)
    assert w.fs.list_dir("logs/queue/default/default") == ["q", "q~state"]
    uid = w.calls.broker.registry.queue(Q).uid
    assert w.fs.list_dir("logs/queue/default/default/q~state") == [str(uid)]  # as the queue's
    w.calls.delete("queue", *Q, now=w.now)
    settle(w.store)  # the removals run as jobs
    assert w.fs.list_dir("logs/queue/default/default/q~state") == []
    assert w.fs.list_dir("logs/queue/default/default/q") == []


def test_checkpoints_keep_the_state_log_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qj, "CHECKPOINT_EVERY", 50)
    monkeypatch.setattr(registry_module, "STATE_SEGMENT_BYTES", 4096)
    w = World()
    cid, _ = w.consume(prefetch=8)
    sizes = []
    for round_ in range(300):
        w.enqueue(4, tag=f"r{round_}-")
        got = w.deliveries()
        w.calls.ack(w.conn, cid, [d.delivery_id for d in got[:3]], now=w.now)
        w.calls.nack(w.conn, cid, [d.delivery_id for d in got[3:]], now=w.now)
        settle(w.store, w.now)  # the runtime runs the store's jobs after every input
        sizes.append(w.queue().journal.log.byte_size)
    # without checkpoints it grows by every record (about 1,200 records, ~60 KB here)
    assert max(sizes[100:]) < 4 * 4096
    held = dict(w.queue().groups["g"].outstanding)
    cursor = w.queue().groups["g"].cursor
    w.restart()
    restored = w.queue().groups["g"]
    assert restored.cursor == cursor
    # those charged max_attempts (in flight for the 3rd time) are dead-lettered instead
    assert set(restored.outstanding) == {o for o, a in held.items() if a < 3}
    assert len(restored.outstanding) < len(held)


# -- crash points (hypothesis) ----------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(1, 5)),
        st.tuples(st.just("consume"), st.integers(1, 4)),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("nack"), st.integers(0, 3)),
        st.tuples(st.just("nack_later"), st.integers(0, 3)),
        st.tuples(st.just("reject"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 3)),
        st.tuples(st.just("time"), st.integers(1, 3)),
        st.tuples(st.just("restart"), st.booleans()),
    ),
    max_size=40,
)


def _until_ms(t: float) -> int:
    """The state log's ms for a time: the engine's own rule (a time a hair above a whole ms
    from float arithmetic, 4.6 + 1.0, is that ms, not the next)."""
    return queues_module._until_ms(t)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, power_loss=st.booleans(), parking=st.booleans())
@example(ops=[("enqueue", 2), ("consume", 2), ("nack_later", 0)], power_loss=True, parking=False)
@example(ops=[("enqueue", 1), ("consume", 1), ("reject", 0)], power_loss=False, parking=True)
def test_a_restart_at_any_point_rebuilds_what_the_engine_held(
    ops: list[tuple[str, Any]], power_loss: bool, parking: bool
) -> None:
    """Whatever happened before, a kill -9 (or a power loss after a sync) leaves a queue
    that redelivers exactly what its group had not finished, each with the attempts it was
    charged plus one, or dead-letters it when they are used up; then the new messages.
    Timing is kept: what was in flight comes back once its visibility deadline passed, a
    delayed nack once it is due, and a parked dead letter (``parking``: the dead-letter
    queue does not exist) stays parked."""
    w = World({**DURABLE, "dead_letter_queue": "nowhere"} if parking else DURABLE)
    for op, arg in ops:
        group = w.queue().groups.get("g")
        held = {c.id: list(c.inflight) for c in group.consumers} if group else {}
        if op == "enqueue":
            w.enqueue(arg)
        elif op == "consume":
            w.calls.consume(w.conn, *Q, group="g", prefetch=arg, now=w.now)
        elif op == "restart":
            w.restart(arg)
        elif op == "time":
            w.now += arg * 0.6
            w.calls.broker.handle_timer(w.now)
        elif held:
            cid = sorted(held)[arg % len(held)]
            ids = held[cid][:2]
            if op == "ack":
                w.calls.ack(w.conn, cid, ids, now=w.now)
            elif op in ("nack", "nack_later", "reject"):
                delay = 2500 if op == "nack_later" else 0
                w.calls.nack(w.conn, cid, ids, requeue=op != "reject", delay_ms=delay, now=w.now)
            else:
                w.calls.cancel_consumer(w.conn, cid, now=w.now)
        w.deliveries()
    group = w.queue().groups.get("g")
    owed = {} if group is None else dict(group.outstanding)
    parked = set() if group is None else set(group.parked)
    until: dict[int, int] = {}  # offset -> ms before which it may not be handed out
    if group is not None:
        until = {o: _until_ms(due) for due, o in group.delayed}
        until.update(
            (d.offset, _until_ms(d.deadline)) for c in group.consumers for d in c.inflight.values()
        )
    cursor = None if group is None else group.cursor
    end = w.queue().log.next_offset
    w.restart(power_loss)
    events = w.calls.drain_events()
    dead = {e.offset for e in events if isinstance(e, MessageDeadLettered)}
    cid, got = w.consume(prefetch=1000)
    expected_new = [] if cursor is None else list(range(cursor, end))
    if cursor is None:  # the group never existed: everything retained is new
        expected_new = list(range(w.queue().log.first_offset, end))
    spent = {o for o, a in owed.items() if a >= 3 and o not in parked}
    if parking:  # dead letters cannot leave: those parked stay, the spent ones join them
        assert dead == set()
        assert set(w.queue().groups["g"].parked) == parked | spent
    else:
        assert dead == spent and not parked
    again = {o: a + 1 for o, a in owed.items() if o not in spent and o not in parked}
    restart_ms = w.now * 1000
    at_once = {o: a for o, a in again.items() if until.get(o, 0) <= restart_ms}
    assert sorted((d.offset, d.attempt) for d in got) == sorted(
        [*at_once.items(), *((o, 1) for o in expected_new)]
    )
    # the others once their time has come (acked first: none of those times out meanwhile)
    if got:
        w.calls.ack(w.conn, cid, [d.delivery_id for d in got], now=w.now)
    later = {o: a for o, a in again.items() if o not in at_once}
    if later:
        w.now = max(until[o] for o in later) / 1000 + 0.001
        w.calls.broker.handle_timer(w.now)
        assert sorted((d.offset, d.attempt) for d in w.deliveries()) == sorted(later.items())


def test_a_state_record_that_does_not_decode_costs_redeliveries_not_the_queue() -> None:
    w = World()
    w.enqueue(4)
    cid, got = w.consume(prefetch=4)
    w.calls.ack(w.conn, cid, [d.delivery_id for d in got[:2]], now=w.now)
    w.queue().journal.log.append(b"\x09\x00", 0)  # a record no version writes
    w.calls.ack(w.conn, cid, [got[2].delivery_id], now=w.now)  # recorded after it: lost
    w.restart()
    assert w.queue().journal.damaged == 1
    cid, again = w.consume(prefetch=10)
    assert sorted((d.offset, d.attempt) for d in again) == [(2, 2), (3, 2)]
    w.calls.ack(w.conn, cid, [again[-1].delivery_id], now=w.now)  # offset 3
    w.restart()  # replays from the checkpoint the first restart wrote after the bad record
    assert w.queue().journal.damaged == 1
    _, last = w.consume(prefetch=10)
    assert [(d.offset, d.attempt) for d in last] == [(2, 3)]


def test_a_state_log_that_cannot_be_opened_leaves_the_queue_unserved_not_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    w.enqueue(3)
    opened = DiskLogStore.open_log

    def failing(store: DiskLogStore, kind: str, path: Any, *args: Any, **kwargs: Any) -> Any:
        if path[2].endswith(qj.STATE_SUFFIX):
            raise StorageFailed("cannot read the directory")
        return opened(store, kind, path, *args, **kwargs)

    monkeypatch.setattr(DiskLogStore, "open_log", failing)
    w.restart()
    with pytest.raises(NotFound):
        w.calls.broker.registry.queue(Q)
    monkeypatch.setattr(DiskLogStore, "open_log", opened)
    w.restart()
    _, got = w.consume(prefetch=10)
    assert [d.payload for d in got] == [b"m0", b"m1", b"m2"]


def test_records_before_a_checkpoint_stay_until_it_is_synced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(qj, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(registry_module, "STATE_SEGMENT_BYTES", 4096)
    w = World()
    cid, _ = w.consume(prefetch=8)
    for round_ in range(150):  # no job runs: nothing is synced
        w.enqueue(4, tag=f"r{round_}-")
        got = w.deliveries()
        w.calls.ack(w.conn, cid, [d.delivery_id for d in got], now=w.now)
    log = w.queue().journal.log
    assert log.first_offset == 0  # checkpoints were written, none synced: nothing dropped
    settle(w.store, w.now)
    w.enqueue(1)  # the next write finds the last checkpoint synced
    assert log.first_offset > 0


SYNCED_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(1, 5)),
        st.tuples(st.just("consume"), st.integers(1, 4)),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("ack_committed"), st.integers(0, 3)),
        st.tuples(st.just("nack"), st.integers(0, 3)),
        st.tuples(st.just("sync"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops=SYNCED_OPS, tear=st.integers(0, 64), every=st.integers(2, 8))
def test_a_power_loss_at_any_point_loses_no_unfinished_message(
    ops: list[tuple[str, int]], tear: int, every: int
) -> None:
    """Power loss with unsynced records (torn at a random byte): acks not yet synced may be
    undone (the message comes again), but no message the queue still holds after recovery
    and its group had not finished goes missing, and no message whose committed ack was
    answered comes back."""
    qj_every = qj.CHECKPOINT_EVERY
    seg = registry_module.STATE_SEGMENT_BYTES
    qj.CHECKPOINT_EVERY, registry_module.STATE_SEGMENT_BYTES = every, 4096
    try:
        w = World()
        waiting: dict[int, list[int]] = {}  # committed ack request -> its offsets
        committed: set[int] = set()  # offsets whose committed ack was answered
        for op, arg in ops:
            group = w.queue().groups.get("g")
            held = {c.id: dict(c.inflight) for c in group.consumers} if group else {}
            if op == "enqueue":
                w.enqueue(arg)
            elif op == "consume":
                w.calls.consume(w.conn, *Q, group="g", prefetch=arg, now=w.now)
            elif op == "sync":
                w.store.handle_timer(w.now + 1000.0)
                for notice in settle(w.store, w.now):
                    if isinstance(notice, LogCommitted):
                        kind = Kind(notice.kind)
                        w.calls.broker.log_committed(kind, notice.path, notice.offset, w.now)
            elif held:
                cid = sorted(held)[arg % len(held)]
                ids = list(held[cid])[:3]
                if op == "ack":
                    w.calls.ack(w.conn, cid, ids, now=w.now)
                elif op == "ack_committed":
                    request = 10_000 + len(waiting)
                    waiting[request] = [held[cid][i].offset for i in ids]
                    w.calls.broker.ack(w.conn, request, cid, ids, committed=True, now=w.now)
                else:
                    w.calls.nack(w.conn, cid, ids[:1], now=w.now)
            w.deliveries()
            for done in w.calls.completions:
                if isinstance(done, RequestCompleted) and done.request in waiting:
                    committed.update(waiting[done.request])
            w.calls.completions.clear()
        group = w.queue().groups.get("g")
        end = w.queue().log.next_offset
        unfinished = set(range(w.queue().log.first_offset, end))
        if group is not None:
            unfinished = set(group.outstanding) | set(range(group.cursor, end))
        w.fs.crash(tear_at=tear)
        w.restart()
        dead = {e.offset for e in w.calls.drain_events() if isinstance(e, MessageDeadLettered)}
        _, got = w.consume(prefetch=1000)
        recovered = range(w.queue().log.first_offset, w.queue().log.next_offset)
        missing = {o for o in unfinished if o in recovered} - {d.offset for d in got} - dead
        assert not missing
        assert not committed & {d.offset for d in got}
    finally:
        qj.CHECKPOINT_EVERY, registry_module.STATE_SEGMENT_BYTES = qj_every, seg


def test_a_dead_letter_made_while_rebuilding_reaches_a_target_built_after_it() -> None:
    w = World({**DURABLE, "max_attempts": 1, "dead_letter_queue": "zdlq"})
    w.calls.create("queue", "default", "default", "zdlq", {"durability": "durable"}, now=w.now)
    w.enqueue(1)
    w.consume(prefetch=1)  # attempt 1 of 1, in flight at the crash
    w.fire_at_start = False
    w.restart()  # q is rebuilt before zdlq exists (records are applied in path order)
    assert not [e for e in w.calls.drain_events() if isinstance(e, MessageDeadLettered)]
    assert w.queue().groups["g"].parked  # retried on the queue's timer
    w.now += 5.0
    assert w.calls.broker.get_timer() is not None
    w.calls.broker.handle_timer(w.now)
    dlq = w.calls.broker.registry.queue(("default", "default", "zdlq")).queue
    assert dlq.log.record_count == 1
    assert w.consume(prefetch=1)[1] == []


@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_the_typed_error(data: bytes) -> None:
    try:
        kind, _, _ = qj.decode(data)
    except qj.StateRecordError:
        return
    assert kind in (qj.GROUP, qj.ATTEMPTS, qj.FINISHED, qj.DELETED, qj.CHECKPOINT)


NAMES = st.text(min_size=1, max_size=8)
PAIRS = st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), max_size=5)


@given(NAMES, PAIRS, st.lists(st.integers(0, 2**64 - 1), max_size=5))
def test_records_round_trip(name: str, pairs: list[tuple[int, int]], offsets: list[int]) -> None:
    assert qj.decode(qj.encode_attempts(name, pairs)) == (qj.ATTEMPTS, name, pairs)
    assert qj.decode(qj.encode_finished(name, offsets)) == (qj.FINISHED, name, offsets)
    state = {name: qj.GroupState(7, dict(pairs))}
    assert qj.decode(qj.encode_checkpoint(state)) == (qj.CHECKPOINT, "", state)


@given(st.integers(0, 4 * 10**12))
def test_a_time_read_back_from_the_state_log_is_written_again_as_the_same_ms(ms: int) -> None:
    """Restore turns a recorded ``until`` into seconds (``ms / 1000``) and the next
    checkpoint turns it back: never a millisecond later (plain ``ceil`` drifts by one for
    about 0.6% of today's epoch times, e.g. 2191894293556)."""
    assert queues_module._until_ms(ms / 1000) == ms
    assert queues_module._until_ms(2191894293556 / 1000) == 2191894293556


def _state_records_since(w: World, offset: int) -> list[tuple[int, str, object]]:
    log = w.store.log("queue", qj.state_path(Q))
    assert log is not None
    got = log.read(offset, 10_000, 1 << 30)
    assert isinstance(got, LogSlice)
    return [qj.decode(p) for p in got.payloads]


@pytest.mark.parametrize("how", ["consumer_lost", "nack", "timeout"])
def test_offsets_given_back_together_are_one_leased_record(how: str) -> None:
    w = World()
    w.enqueue(50)
    cid, got = w.consume(prefetch=50)
    state = w.store.log("queue", qj.state_path(Q))
    assert state is not None
    before = state.next_offset
    if how == "consumer_lost":
        w.calls.cancel_consumer(w.conn, cid, now=w.now)
    elif how == "nack":
        w.calls.nack(w.conn, cid, [d.delivery_id for d in got], delay_ms=5000, now=w.now)
    else:
        w.now += 1.5  # past the 1 s visibility timeout of every delivery
        w.calls.broker.handle_timer(w.now)
    w.deliveries()
    leased = [r[2] for r in _state_records_since(w, before) if r[0] == qj.LEASED]
    assert isinstance(leased[0], list)
    assert sorted(entry[0] for entry in leased[0]) == list(range(50))
    # then nothing more, or (timeout: the consumer is still there) the redelivery's record
    assert len(leased) == (2 if how == "timeout" else 1)
    if how == "consumer_lost":
        w.restart()
        _, again = w.consume(prefetch=100)
        attempts = sorted((d.offset, d.attempt) for d in again)
        assert attempts == [(0, 2)] + [(i, 1) for i in range(1, 50)]  # only the oldest charged
