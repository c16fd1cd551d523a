"""A durable cache's change log is compacted: retention never deletes the record holding a
live entry (its put is carried forward first, ``compacted: 1``), so a restart restores every
key that has not expired whatever ``feed_retention`` says, with its version and absolute
expiry; and the old records go only once the carried entries are fsynced, so a crash at any
instant loses nothing that was committed. Cache over a DiskLog over MemoryFileSystem."""

from __future__ import annotations

import re
from math import inf
from pathlib import Path

from engine_calls import Calls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import Meter, run_jobs, settle

from felix_core import Broker, BrokerConfig
from felix_core.cache import Cache, CacheConfig
from felix_core.disklog import DiskLog, DiskLogConfig, DiskLogStore, LogCommitted
from felix_core.filesystem import MemoryFileSystem
from felix_core.log import LogSlice, Retention
from felix_core.metadata import Kind
from felix_core.segments import decode_batch, encode_batch

PATH = ("t", "n", "c")
SETTINGS = {"durability": "durable", "segment_bytes": 4096}
CONFIG = CacheConfig(feed_retention=Retention(max_records=8), max_entries=None, max_bytes=None)
SMALL_SEGMENTS = DiskLogConfig(segment_bytes=4096)
T0 = 1_000.0
KEYS = ("a", "b", "c", "d", "e")
C = ("default", "default", "c")  # through the engine: the default tenant and namespace

State = dict[str, tuple[bytes, int, float]]
"""key -> (value, version, expiry in whole ms: the log's precision)."""


def _open(fs: MemoryFileSystem, now: float) -> tuple[DiskLogStore, Cache]:
    store = DiskLogStore(fs)
    log = store.open_log("cache", PATH, SETTINGS, Meter())
    return store, Cache.rebuild_from(log, now, CONFIG, compact=True)


def _sync(store: DiskLogStore, cache: Cache, now: float) -> None:
    """Fsync what is written (as the runtime does), telling the cache of each commit."""
    log = cache.changes
    assert isinstance(log, DiskLog)
    log.request_commit(log.next_offset)
    for _ in range(20):
        jobs = store.take_jobs()
        if not jobs:
            return
        for notice in run_jobs(jobs, now):
            if isinstance(notice, LogCommitted):
                cache.log_committed(now)
    raise AssertionError("jobs never settle")


def _state(cache: Cache, now: float) -> State:
    out: State = {}
    for key in KEYS:
        entry = cache.peek(key, now)
        if entry is not None:
            expiry = entry.expires_at
            out[key] = (
                entry.value,
                entry.version,
                expiry if expiry == inf else round(expiry * 1000),
            )
    return out


def test_a_key_written_once_survives_retention_and_a_restart() -> None:
    fs = MemoryFileSystem()
    store, cache = _open(fs, T0)
    cache.put("old", b"kept", T0, ttl=3600.0)
    for i in range(400):  # churn: many segments of other keys' writes
        cache.put(KEYS[i % 3], b"x" * 100, T0 + i / 1000)
        _sync(store, cache, T0)
    log = cache.changes
    assert log.first_offset > 1  # retention did delete the segment of the first put
    assert cache.feed_records_kept > 0
    # bounded: the live entries, the retention window and at most a segment or two more
    assert log.record_count < 8 + 4 + 2 * (4096 // 100)
    _sync(store, cache, T0 + 1)
    fs.crash()

    _, again = _open(fs, T0 + 10)
    entry = again.get("old", T0 + 10)
    assert entry is not None
    assert (entry.value, entry.version, entry.expires_at) == (b"kept", 1, T0 + 3600.0)
    assert again.put("old", b"v2", T0 + 11, if_version=1).applied
    assert _state(again, T0 + 10) == _state(cache, T0 + 10)


def test_old_records_stay_until_the_carried_entries_are_fsynced() -> None:
    fs = MemoryFileSystem()
    store, cache = _open(fs, T0)
    cache.put("old", b"kept", T0)
    _sync(store, cache, T0)
    for _ in range(200):  # no fsync: the compaction waits for one
        cache.put("a", b"x" * 100, T0)
    assert cache.changes.first_offset == 0
    fs.crash()  # power loss before the carried put reached the disk

    _, again = _open(fs, T0)
    entry = again.get("old", T0)
    assert entry is not None and entry.value == b"kept"


def test_an_expired_entry_is_not_carried_forward() -> None:
    fs = MemoryFileSystem()
    store, cache = _open(fs, T0)
    cache.put("short", b"s", T0, ttl=1.0)
    for _ in range(200):
        cache.put("a", b"x" * 100, T0 + 2.0)
        _sync(store, cache, T0 + 2.0)
    assert cache.feed_records_kept == 0


_OPS = st.lists(
    st.one_of(
        st.tuples(  # churn on two keys: segments fill while the others sit still
            st.just("put"),
            st.sampled_from(KEYS[:2]),
            st.integers(0, 700),
            st.sampled_from([None, 0.0, 0.5, 5.0, 60.0]),
        ),
        st.tuples(
            st.just("put"),
            st.sampled_from(KEYS),
            st.integers(0, 700),
            st.sampled_from([None, 0.0, 0.5, 5.0, 60.0]),
        ),
        st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(0), st.just(None)),
        st.tuples(st.just("tick"), st.just(""), st.integers(0, 2000), st.just(None)),
        st.tuples(st.just("sync"), st.just(""), st.just(0), st.just(None)),
    ),
    min_size=10,
    max_size=150,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, synced=st.booleans(), tear=st.integers(0, 5000))
def test_a_restart_restores_what_the_model_holds(
    ops: list[tuple[str, str, int, float | None]], synced: bool, tear: int
) -> None:
    """Random puts, deletes, TTLs and fsyncs under a small retention, then a power loss:
    after the restart the cache is the state after some write at or after the last
    committed one (all of them when everything was fsynced), never less."""
    fs = MemoryFileSystem()
    store, cache = _open(fs, T0)
    now = T0
    history: list[tuple[int, State]] = [(0, {})]  # (log next_offset, state) after each write
    for op, key, n, ttl in ops:
        if op == "put":
            cache.put(key, bytes([n % 256]) * n, now, ttl=ttl)
        elif op == "delete":
            cache.delete(key, now)
        elif op == "tick":
            now += n / 1000
            cache.handle_timer(now)
        else:
            _sync(store, cache, now)
        history.append((cache.changes.next_offset, _state(cache, now)))
    if synced:
        _sync(store, cache, now)
    committed = cache.changes.committed_offset
    fs.crash(tear_at=tear)

    later = now + 1.0
    _, again = _open(fs, later)
    got = _state(again, later)

    def live(state: State) -> State:
        return {k: v for k, v in state.items() if v[2] > later * 1000}

    candidates = [live(s) for offset, s in history if offset >= committed]
    assert got in candidates
    if synced:
        assert got == live(history[-1][1])
    if got:  # versions go on past every restored one
        version = again.put(KEYS[0], b"z", later).version
        assert version is not None and version > max(v[1] for v in got.values())


def test_the_engine_compacts_a_durable_cache_and_restores_it() -> None:
    """Through the engine: the partition compacts a durable cache's log, a commit alone
    (``Broker.log_committed``, no further write) lets retention delete the old segments,
    and a restart restores the key written once."""
    fs = MemoryFileSystem()
    store = DiskLogStore(fs, SMALL_SEGMENTS)
    calls = Calls(Broker(BrokerConfig(), logs=store, now=T0))
    settings = {"durability": "durable", "feed_retention_max_records": 8}
    calls.create("cache", *C, settings, now=T0)
    calls.cache_put(*C, "old", b"kept", ttl_ms=3_600_000, now=T0)
    for i in range(200):
        calls.cache_put(*C, KEYS[i % 2], b"x" * 100, now=T0)
    log = store.log("cache", C)
    assert log is not None and log.first_offset == 0  # waiting for a commit

    def commit(broker: Broker, now: float) -> None:
        log = store.log("cache", C)
        assert log is not None
        log.request_commit(log.next_offset)
        for notice in settle(store, now):
            if isinstance(notice, LogCommitted):
                broker.log_committed(Kind(notice.kind), notice.path, notice.offset, now)

    commit(calls.broker, T0)
    assert log.first_offset > 0  # the commit alone finished the compaction
    commit(calls.broker, T0)
    fs.crash()

    store = DiskLogStore(fs, SMALL_SEGMENTS)
    engine = Broker(BrokerConfig(), logs=store, now=T0 + 5)
    parents_first = {Kind.TENANT: 0, Kind.NAMESPACE: 1}
    for record in sorted(calls.store.records(), key=lambda r: parents_first.get(r.kind, 2)):
        engine.metadata_changed(record.kind, record.path, record, T0 + 5)
    again = Calls(engine, calls.store)
    entry = again.cache_get(*C, "old", now=T0 + 5)
    assert (entry.value, entry.version) == (b"kept", 1)


def test_the_golden_carried_record_is_what_the_cache_writes() -> None:
    """docs/storage-format.md §8.1: a carried put, as the cache writes it and as a batch."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "storage-format.md").read_text()
    found = re.search(r"<!-- golden: cache-carried -->\n```text\n(.*?)```", text, re.S)
    assert found
    golden = bytes.fromhex(found.group(1))
    config = CacheConfig(feed_retention=Retention(max_records=1), max_bytes=None)
    cache = Cache(config, compact=True)  # a memory log commits on append: no wait
    now = 1_700_000_000.0
    cache.put("k", b"v", now, ttl=60.0)
    cache.put("j", b"w", now)  # retention drops offset 0: "k" is carried to offset 2
    assert cache.feed_records_kept == 1 and cache.changes.first_offset == 1
    carried = cache.changes.read(2, 1, 1 << 20)
    assert isinstance(carried, LogSlice)
    assert carried.keys is not None and carried.headers is not None
    batch = encode_batch(2, carried.payloads, carried.timestamps_ms, carried.keys, carried.headers)
    assert batch == golden
    decoded, _ = decode_batch(golden)
    assert decoded.base_offset == 2
