"""DiskLog against a model: whatever appends, reads (cold ones through jobs), retention,
trims, syncs and clean reopens happen, every read returns exactly the records the model
holds at those offsets, the memory tail stays bounded and the meter stays exact."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from storage_helpers import Meter, run_jobs, settle

from felix_core.disklog import DiskLog, DiskLogConfig, DiskLogStore
from felix_core.filesystem import MemoryFileSystem
from felix_core.log import LogSlice, ReadPending, Retention, TooOld

PATH = ("t", "ns", "s")
DURABLE = {"durability": "durable"}
CONFIG = DiskLogConfig(
    segment_bytes=700,
    index_interval=100,
    tail_bytes=250,
    read_cache_bytes=300,
    read_chunk_bytes=150,
)


class DiskLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = MemoryFileSystem()
        self.meter = Meter()
        self.ts = 0
        self.model: dict[int, tuple[bytes, bytes | None, int]] = {}
        self._open()

    def _open(self) -> None:
        self.meter = Meter()
        self.store = DiskLogStore(self.fs, CONFIG)
        log = self.store.open_log("stream", PATH, DURABLE, self.meter)
        assert isinstance(log, DiskLog)
        self.log = log

    @rule(
        payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=5),
        keyed=st.booleans(),
        step=st.integers(0, 50),
    )
    def append(self, payloads: list[bytes], keyed: bool, step: int) -> None:
        self.ts += step
        keys: list[bytes | None] | None = [p[:3] for p in payloads] if keyed else None
        first = self.log.append_batch(payloads, self.ts, keys)
        for i, p in enumerate(payloads):
            self.model[first + i] = (p, keys[i] if keys else None, self.ts)

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        log = self.log
        offset = data.draw(st.integers(log.first_offset, log.next_offset))
        count = data.draw(st.integers(1, 10))
        for _ in range(5):
            got = log.read(offset, count, data.draw(st.integers(0, 200)))
            if not isinstance(got, ReadPending):
                break
            run_jobs(self.store.take_jobs())
        assert isinstance(got, LogSlice), got
        assert len(got) <= count
        if offset < log.next_offset:
            assert len(got) >= 1
        for i, payload in enumerate(got.payloads):
            want = self.model[offset + i]
            assert payload == want[0]
            assert (got.keys[i] if got.keys else None) == want[1]
            assert got.timestamps_ms[i] == want[2]

    @rule(limit=st.integers(1, 40))
    def retain(self, limit: int) -> None:
        before = self.log.first_offset
        dropped = self.log.apply_retention(Retention(max_records=limit), self.ts)
        assert self.log.first_offset == before + dropped
        assert self.log.record_count >= min(limit, len(self.model))
        for offset in range(before, self.log.first_offset):
            del self.model[offset]

    @precondition(lambda self: self.log.record_count > 0)
    @rule(data=st.data())
    def trim(self, data: st.DataObject) -> None:
        log = self.log
        offset = data.draw(st.integers(log.first_offset, log.next_offset))
        before = log.first_offset
        assert log.truncate_before(offset) == offset - before
        for o in range(before, offset):
            del self.model[o]

    @rule()
    def sync(self) -> None:
        self.log.request_commit(self.log.next_offset)
        settle(self.store)
        assert self.log.committed_offset == self.log.next_offset

    @rule()
    def reopen(self) -> None:
        settle(self.store)
        first = self.log.first_offset  # trims are not persisted: whole segments are
        self.log.close()
        self._open()
        assert self.log.first_offset <= first
        for o in range(self.log.first_offset, first):
            assert o not in self.model
        self.log.truncate_before(first)

    @invariant()
    def bounded_and_counted(self) -> None:
        log = self.log
        assert log.next_offset - log.first_offset == len(self.model) or (
            not self.model and log.record_count == 0
        )
        assert self.meter.held == log.memory_bytes
        assert log.unsynced_bytes == sum(seg.size - seg.synced for seg in log._segments)
        closed = [seg.summary for seg in log._segments[:-1]]
        assert log._closed_totals == (
            sum(c.record_count for c in closed),
            sum(c.record_bytes for c in closed),
        )
        assert log._tail.byte_size <= CONFIG.tail_bytes  # type: ignore[operator]
        assert log._cache_bytes <= CONFIG.read_cache_bytes + 5 * 40 + 150
        got = log.read(log.first_offset - 1, 1, 1) if log.first_offset else None
        assert got is None or isinstance(got, TooOld)


TestDiskLog = DiskLogMachine.TestCase
