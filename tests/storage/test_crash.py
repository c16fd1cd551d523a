"""Power loss at any point: hypothesis drives appends, syncs and the crash (with a torn
write) over MemoryFileSystem; recovery must return every record below the last finished
sync, with its content, order and offset, and never a record that was not written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from storage_helpers import Meter, read_all, run_jobs

from felix_core.disklog import DiskLog, DiskLogConfig, DiskLogStore
from felix_core.filesystem import MemoryFileSystem
from felix_core.log import Retention

PATH = ("t", "ns", "s")
DURABLE = {"durability": "durable"}
CONFIG = DiskLogConfig(segment_bytes=600, index_interval=128, tail_bytes=300)

_op = st.one_of(
    st.tuples(st.just("append"), st.lists(st.binary(max_size=60), min_size=1, max_size=4)),
    st.tuples(st.just("sync"), st.just([])),
    st.tuples(st.just("sync_unfinished"), st.just([])),
    st.tuples(st.just("retain"), st.just([])),
)


def _open(fs: MemoryFileSystem, kind: str = "stream") -> tuple[DiskLogStore, DiskLog]:
    store = DiskLogStore(fs, CONFIG)
    log = store.open_log(kind, PATH, DURABLE, Meter())
    assert isinstance(log, DiskLog)
    return store, log


@given(
    kind=st.sampled_from(["stream", "queue"]),  # a queue's log keeps every record in memory
    cycles=st.lists(
        st.tuples(st.lists(_op, max_size=25), st.integers(0, 200)), min_size=1, max_size=3
    ),
)
def test_recovery_keeps_every_committed_record_and_nothing_else(
    kind: str, cycles: list[tuple[list[tuple[str, list[bytes]]], int]]
) -> None:
    fs = MemoryFileSystem()
    written: dict[int, bytes] = {}  # offset -> payload of every append that returned
    committed = 0
    first = 0
    ts = 0
    for ops, tear in cycles:
        store, log = _open(fs, kind)
        assert log.first_offset >= first or log.first_offset == 0
        assert log.next_offset >= committed, "a committed record was lost"
        got = read_all(log)
        for i, payload in enumerate(got.payloads):
            offset = got.base_offset + i
            assert written.get(offset) == payload, f"offset {offset} is not what was written"
        # records above what survived may be rewritten from here on
        for offset in [o for o in written if o >= log.next_offset]:
            del written[offset]
        first = log.first_offset
        for op, payloads in ops:
            if op == "append":
                ts += 1
                offset = log.append_batch(payloads, ts)
                for i, p in enumerate(payloads):
                    written[offset + i] = p
            elif op == "sync":
                log.request_commit(log.next_offset)
                run_jobs(store.take_jobs())
                committed = max(committed, log.committed_offset)
            elif op == "sync_unfinished":
                log.request_commit(log.next_offset)
                for job in store.take_jobs():
                    job.run()  # the fsync happened; the loop never learned it
            else:
                log.apply_retention(_retain(), ts)
                first = log.first_offset
        fs.crash(tear_at=tear)
    _, log = _open(fs, kind)
    assert log.next_offset >= committed
    got = read_all(log)
    for i, payload in enumerate(got.payloads):
        assert written.get(got.base_offset + i) == payload


def _retain() -> Retention:

    return Retention(max_records=20)
