"""Unit tests of felix_core.cache: every error path and each documented behaviour."""

from __future__ import annotations

import math

import pytest
from engine_calls import Calls

from felix_core.broker import Broker
from felix_core.cache import (
    MAX_KEY_BYTES,
    Cache,
    CacheConfig,
    CacheEntry,
    WriteResult,
    key_bytes,
)
from felix_core.errors import AlreadyExists, InvalidArgument, NotFound, TooLarge
from felix_core.log import LogSlice, MemoryLog, Retention

T0 = 1_000.0
C = ("t", "ns", "c")


def feed(cache: Cache, start: int = 0) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    sl = cache.changes.read(max(start, cache.changes.first_offset), 10_000, 1 << 40)
    assert isinstance(sl, LogSlice)
    keys = sl.keys or [None] * len(sl)
    headers = sl.headers or [None] * len(sl)
    return [(k, p, h or {}) for k, p, h in zip(keys, sl.payloads, headers, strict=True)]


def ops(cache: Cache) -> list[tuple[bytes | None, bytes]]:
    return [(k, h["op"]) for k, _, h in feed(cache)]


# -- configuration and validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("default_ttl_s", -1.0),
        ("default_ttl_s", math.inf),
        ("default_ttl_s", math.nan),
        ("max_entries", 0),
        ("max_bytes", 0),
        ("max_value_bytes", 0),
        ("sweep_batch", 0),
    ],
)
def test_invalid_config(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        Cache(CacheConfig(**{field: value}))  # type: ignore[arg-type]
    assert info.value.details == {"field": field}


def test_key_validation() -> None:
    assert key_bytes("é" * 512) == "é".encode() * 512  # exactly 1024 bytes
    with pytest.raises(TooLarge) as info:
        key_bytes("é" * 512 + "x")
    assert info.value.details == {"bytes": MAX_KEY_BYTES + 1, "max_bytes": MAX_KEY_BYTES}
    with pytest.raises(InvalidArgument):
        key_bytes("")
    with pytest.raises(InvalidArgument):
        key_bytes("\ud800")
    c = Cache()
    for bad in ("", "\udfff", "k" * 1025):
        with pytest.raises((InvalidArgument, TooLarge)):
            c.get(bad, T0)
        with pytest.raises((InvalidArgument, TooLarge)):
            c.put(bad, b"v", T0)
        with pytest.raises((InvalidArgument, TooLarge)):
            c.delete(bad, T0)
    assert c.stats().misses == 0 and c.changes.next_offset == 0


def test_put_argument_errors() -> None:
    c = Cache(CacheConfig(max_value_bytes=4, max_bytes=5))
    with pytest.raises(TooLarge) as info:
        c.put("k", b"12345", T0)
    assert info.value.details == {"bytes": 5, "max_bytes": 4}
    with pytest.raises(TooLarge):
        c.put("kk", b"1234", T0)  # 6 bytes > max_bytes 5
    for ttl in (-0.5, math.inf, math.nan):
        with pytest.raises(InvalidArgument):
            c.put("k", b"v", T0, ttl=ttl)
    with pytest.raises(InvalidArgument):
        c.put("k", b"v", T0, if_absent=True, if_version=1)
    assert len(c) == 0 and c.changes.next_offset == 0


# -- get / put / delete ----------------------------------------------------------------


def test_put_get_versions_and_feed_records() -> None:
    c = Cache()
    assert c.put("k", b"v1", T0) == WriteResult(True, 1)
    assert c.put("k", b"v2", T0, ttl=2.5) == WriteResult(True, 2)
    hit = c.get("k", T0 + 1)
    assert hit == CacheEntry(b"v2", 2, T0 + 2.5, 3)
    assert hit is not None and hit.ttl_remaining(T0 + 1) == 1.5
    assert c.get("nope", T0) is None
    assert feed(c) == [
        (b"k", b"v1", {"op": b"put", "version": b"1", "ttl_ms": b"0"}),
        (
            b"k",
            b"v2",
            {"op": b"put", "version": b"2", "ttl_ms": b"2500", "expires_ms": b"1002500"},
        ),
    ]
    stats = c.stats()
    assert (stats.hits, stats.misses, stats.puts, stats.version, stats.bytes) == (1, 1, 2, 2, 3)
    assert c.byte_size == 3 + c.changes.byte_size


def test_default_ttl_and_no_expiry() -> None:
    c = Cache(CacheConfig(default_ttl_s=10.0))
    c.put("d", b"v", T0)
    c.put("z", b"v", T0, ttl=0)
    d, z = c.get("d", T0), c.get("z", T0)
    assert d is not None and d.expires_at == T0 + 10
    assert z is not None and z.expires_at == math.inf and z.ttl_remaining(T0) is None
    assert c.get("d", T0 + 10) is None  # expires at exactly T0 + 10
    assert c.get("z", T0 + 1e9) is not None
    assert c.stats().expirations == 1
    assert ops(c)[-1] == (b"d", b"expire")


def test_if_absent() -> None:
    c = Cache()
    assert c.put("k", b"a", T0, if_absent=True, ttl=1) == WriteResult(True, 1)
    assert c.put("k", b"b", T0, if_absent=True) == WriteResult(False, 1)
    assert c.put("k", b"c", T0 + 1, if_absent=True) == WriteResult(True, 3)  # 2 = the expiry
    assert ops(c) == [(b"k", b"put"), (b"k", b"expire"), (b"k", b"put")]


def test_compare_and_set() -> None:
    c = Cache()
    assert c.put("k", b"a", T0, if_version=1) == WriteResult(False, None)
    c.put("k", b"a", T0)
    assert c.put("k", b"b", T0, if_version=7) == WriteResult(False, 1)
    assert c.put("k", b"b", T0, if_version=1) == WriteResult(True, 2)
    assert c.put("k", b"c", T0, if_version=1) == WriteResult(False, 2)
    entry = c.get("k", T0)
    assert entry is not None and entry.value == b"b"


def test_compare_and_set_without_ttl_keeps_the_entrys_expiry() -> None:
    """The README's example: put(ttl=30) then compare_and_set without a ttl used to make
    the 30 s entry permanent (the cache's default TTL, 0). A CAS now keeps the absolute
    expiry unless it gives a ttl; an unconditional put starts afresh from the default."""
    c = Cache()
    version = c.put("bob", b"42", T0, ttl=30).version
    assert c.put("bob", b"43", T0 + 10, if_version=version) == WriteResult(True, 2)
    entry = c.get("bob", T0 + 10)
    assert entry is not None and entry.expires_at == T0 + 30
    assert entry.ttl_remaining(T0 + 10) == 20
    [(_, _, hdrs)] = feed(c, 1)
    assert (hdrs["ttl_ms"], hdrs["expires_ms"]) == (b"20000", b"%d" % ((T0 + 30) * 1000))
    assert c.get("bob", T0 + 30) is None  # expired on time
    v = c.put("k", b"a", T0, ttl=5).version
    v = c.put("k", b"b", T0 + 1, if_version=v, ttl=60).version  # an explicit ttl wins
    assert (e := c.peek("k", T0 + 1)) is not None and e.expires_at == T0 + 61
    v = c.put("k", b"c", T0 + 2, if_version=v, ttl=0).version  # 0: never expires
    assert c.put("k", b"d", T0 + 3, if_version=v).applied
    assert (e := c.peek("k", T0 + 3)) is not None and e.expires_at == math.inf
    d = Cache(CacheConfig(default_ttl_s=10.0))
    d.put("k", b"a", T0, ttl=100)
    d.put("k", b"b", T0 + 1)  # unconditional: the default TTL, like Redis SET
    assert (e := d.get("k", T0 + 1)) is not None and e.expires_at == T0 + 11


def test_delete() -> None:
    c = Cache()
    assert c.delete("k", T0) == WriteResult(False, None)
    c.put("k", b"a", T0)
    assert c.delete("k", T0, if_version=9) == WriteResult(False, 1)
    assert c.delete("k", T0, if_version=1) == WriteResult(True, 2)
    assert c.get("k", T0) is None
    c.put("k", b"a", T0, ttl=1)
    assert c.delete("k", T0 + 1) == WriteResult(False, None)  # expired first
    assert ops(c) == [(b"k", b"put"), (b"k", b"delete"), (b"k", b"put"), (b"k", b"expire")]
    assert feed(c)[1] == (b"k", b"", {"op": b"delete", "version": b"2"})
    assert c.stats().deletes == 1


def test_peek_has_no_effect() -> None:
    c = Cache(CacheConfig(max_entries=2))
    c.put("a", b"1", T0, ttl=1)
    c.put("b", b"2", T0)
    assert c.peek("a", T0) is not None
    assert c.peek("a", T0 + 1) is None and c.peek("x", T0) is None
    c.put("c", b"3", T0)  # evicts a: peek did not refresh it
    assert c.peek("a", T0) is None
    assert (c.stats().hits, c.stats().misses, c.stats().expirations) == (0, 0, 0)


# -- bounds ------------------------------------------------------------------------------


def test_lru_eviction_by_entries_follows_reads() -> None:
    c = Cache(CacheConfig(max_entries=2))
    c.put("a", b"1", T0)
    c.put("b", b"2", T0)
    c.get("a", T0)
    c.put("c", b"3", T0)
    assert c.peek("b", T0) is None and c.peek("a", T0) is not None
    c.put("a", b"4", T0)
    c.put("d", b"5", T0)
    assert c.peek("c", T0) is None
    assert c.stats().evictions == 2
    assert [k for k, op in ops(c) if op == b"evict"] == [b"b", b"c"]


def test_lru_eviction_by_bytes() -> None:
    c = Cache(CacheConfig(max_bytes=10))
    c.put("a", b"1234", T0)  # 5 bytes
    c.put("b", b"1234", T0)  # 10
    c.put("b", b"123", T0)  # 9: replacing does not double count
    assert len(c) == 2 and c.stats().bytes == 9
    c.put("c", b"12", T0)  # 12 -> evict a
    assert c.peek("a", T0) is None and c.stats().bytes == 7


def test_reconfigure_evicts_and_trims_feed() -> None:
    c = Cache()
    for k in "abcd":
        c.put(k, b"v", T0)
    with pytest.raises(InvalidArgument):
        c.reconfigure(CacheConfig(max_entries=0), T0)
    c.reconfigure(CacheConfig(max_entries=2, feed_retention=Retention(max_records=3)), T0)
    assert len(c) == 2 and c.peek("c", T0) is not None
    assert c.changes.record_count == 3 and c.changes.first_offset == 3


def test_feed_retention_by_count() -> None:
    c = Cache(CacheConfig(feed_retention=Retention(max_records=2)))
    for i in range(5):
        c.put("k", b"%d" % i, T0)
    assert c.changes.first_offset == 3 and c.stats().feed_records == 2


# -- expiry sweep ------------------------------------------------------------------------


def test_active_sweep_is_bounded_per_tick() -> None:
    c = Cache(CacheConfig(sweep_batch=2))
    assert c.get_timer() is None
    for i in range(5):
        c.put(f"k{i}", b"v", T0, ttl=1 + i * 0.1)
    c.put("forever", b"v", T0)
    assert c.get_timer() == T0 + 1
    c.handle_timer(T0 + 0.5)
    assert len(c) == 6
    c.handle_timer(T0 + 5)
    assert len(c) == 4
    timer = c.get_timer()
    assert timer is not None and timer <= T0 + 5  # more is due: fire again
    c.handle_timer(T0 + 5)
    c.handle_timer(T0 + 5)
    assert len(c) == 1 and c.get_timer() is None
    assert c.stats().expirations == 5 and c.stats().misses == 0


def test_sweep_skips_superseded_entries() -> None:
    c = Cache()
    c.put("k", b"a", T0, ttl=1)
    c.put("k", b"b", T0, ttl=5)
    assert c.get_timer() == T0 + 1  # the stale heap entry fires early, harmlessly
    c.handle_timer(T0 + 1)
    assert c.peek("k", T0 + 1) is not None and c.stats().expirations == 0
    c.handle_timer(T0 + 5)
    assert len(c) == 0 and c.stats().expirations == 1


def test_expiry_heap_stays_proportional_to_the_table() -> None:
    c = Cache()
    for i in range(1_000):
        c.put("k", b"%d" % i, T0, ttl=100)
    assert len(c._expiry) <= 2 * len(c) + 65
    c.handle_timer(T0 + 100)
    assert len(c) == 0 and c.stats().expirations == 1


def test_sliding_ttl_keeps_one_heap_item_per_key() -> None:
    c = Cache()
    for i in range(1_000):
        c.put("k", b"%d" % i, T0 + i * 0.01, ttl=10)
    last = T0 + 999 * 0.01 + 10
    assert len(c._expiry) == 1  # the later expiries rode on the first put's item
    assert c.get_timer() == T0 + 10
    c.handle_timer(T0 + 10)  # the item fires early and follows the entry
    assert c.stats().expirations == 0 and c.get_timer() == last
    c.handle_timer(last)
    assert len(c) == 0 and c.stats().expirations == 1 and c.get_timer() is None


def test_a_shorter_ttl_or_no_ttl_moves_the_sweep() -> None:
    c = Cache()
    c.put("short", b"a", T0, ttl=10)
    c.put("short", b"b", T0, ttl=1)  # earlier than its item: pushes one
    c.put("never", b"a", T0, ttl=2)
    c.put("never", b"b", T0, ttl=0)  # no longer expires: its item is dropped when it fires
    assert c.get_timer() == T0 + 1
    c.handle_timer(T0 + 1)
    assert c.peek("short", T0) is None and c.stats().expirations == 1
    c.handle_timer(T0 + 10)
    assert c.peek("never", T0 + 10) is not None and c.stats().expirations == 1
    assert c.get_timer() is None


def test_compare_and_set_keeps_the_expiry_and_its_sweep() -> None:
    c = Cache()
    v = c.put("k", b"a", T0, ttl=5).version
    c.put("k", b"b", T0 + 1, if_version=v)
    assert len(c._expiry) == 1 and c.get_timer() == T0 + 5
    c.handle_timer(T0 + 5)
    assert len(c) == 0 and c.stats().expirations == 1


def test_feed_age_retention_drives_the_timer() -> None:
    c = Cache(CacheConfig(feed_retention=Retention(max_age_ms=2_000)))
    assert c.get_timer() is None
    c.put("k", b"v", T0)
    assert c.get_timer() == T0 + 2.001  # strictly older than max_age
    c.handle_timer(T0 + 2)
    assert c.changes.record_count == 1
    c.handle_timer(T0 + 2.001)
    assert c.changes.record_count == 0 and c.peek("k", T0 + 3) is not None
    assert c.get_timer() is None


# -- replay ------------------------------------------------------------------------------


def copy_log(log: MemoryLog) -> MemoryLog:
    new = MemoryLog(log.first_offset)
    sl = log.read(log.first_offset, 1 << 30, 1 << 62)
    assert isinstance(sl, LogSlice)
    for i, p in enumerate(sl.payloads):
        new.append(
            p,
            sl.timestamps_ms[i],
            sl.keys[i] if sl.keys else None,
            sl.headers[i] if sl.headers else None,
        )
    return new


def test_rebuild_from_feed_restores_values_versions_and_expiry() -> None:
    cfg = CacheConfig(max_entries=4)
    c = Cache(cfg)
    c.put("a", b"1", T0)
    c.put("b", b"2", T0, ttl=5)
    c.put("a", b"3", T0)
    c.delete("b", T0)
    c.put("c", b"4", T0, ttl=5)
    c.put("d", b"5", T0)
    c.put("e", b"6", T0)
    c.put("f", b"7", T0, ttl=0.5)  # evicts a
    c.get("f", T0 + 1)  # expires f
    r = Cache.rebuild_from(copy_log(c.changes), T0 + 2, cfg)
    for k in "abcdef":
        assert r.peek(k, T0 + 2) == c.peek(k, T0 + 2), k
    assert r.stats().version == c.stats().version == 10
    assert r.stats().bytes == c.stats().bytes
    assert r.put("x", b"", T0 + 2).version == 11
    assert r.get("c", T0 + 5) is None  # expiry survived the replay


def test_rebuild_enforces_new_bounds_and_keeps_appending() -> None:
    c = Cache()
    for k in "abc":
        c.put(k, b"v", T0)
    log = copy_log(c.changes)
    r = Cache.rebuild_from(log, T0, CacheConfig(max_entries=1))
    assert len(r) == 1 and r.peek("c", T0) is not None
    assert r.changes is log and log.next_offset == 5  # two evictions logged


def test_rebuild_rejects_foreign_records() -> None:
    log = MemoryLog()
    log.append(b"x", 0)
    with pytest.raises(ValueError, match="not a cache change-feed record"):
        Cache.rebuild_from(log, T0)
    log = MemoryLog()
    log.append(b"x", 0, b"k", {"op": b"frob", "version": b"1"})
    with pytest.raises(ValueError, match="unknown op"):
        Cache.rebuild_from(log, T0)
    log = MemoryLog()
    log.append(b"x", 0, b"k", {"op": b"put"})
    with pytest.raises(ValueError):
        Cache.rebuild_from(log, T0)


# -- in the engine -----------------------------------------------------------------------


def test_caches_in_the_engine_registry_and_timers() -> None:
    """Each cache is a partition of the engine: created and deleted through metadata, its
    expiry in the engine's one timer heap, its memory charged to the engine's budget."""
    b = Calls(Broker(now=T0))
    t, ns = "default", "default"
    assert b.get_timer() is None
    b.create("cache", t, ns, "c", {"default_ttl_ms": 3000}, now=T0)
    with pytest.raises(AlreadyExists):
        b.create("cache", t, ns, "c", now=T0)
    with pytest.raises(NotFound) as info:
        b.cache_get(t, ns, "x", "k", now=T0)
    assert info.value.details == {"kind": "cache"}
    b.create("cache", t, ns, "o", now=T0)
    b.cache_put(t, ns, "o", "k", b"v", ttl_ms=1000, now=T0)
    b.cache_put(t, ns, "c", "k", b"vv", ttl_ms=0, now=T0)
    assert b.get_timer() == T0 + 1
    caches = b.registry.caches
    c, other = caches[(t, ns, "c")].cache, caches[(t, ns, "o")].cache
    assert b.budget.used == c.byte_size + other.byte_size
    b.handle_timer(T0 + 1)
    assert len(other) == 0 and len(c) == 1
    b.update("cache", t, ns, "c", {"max_entries": 1, "default_ttl_ms": 0}, now=T0)
    with pytest.raises(InvalidArgument):
        b.update("cache", t, ns, "c", {"sweep_batch": 0}, now=T0)
    with pytest.raises(InvalidArgument):
        b.create("cache", t, ns, "bad", {"max_bytes": 0}, now=T0)
    assert (t, ns, "bad") not in caches
    b.delete("cache", t, ns, "c", now=T0)
    b.delete("cache", t, ns, "o", now=T0)
    assert b.budget.used == 0 and b.get_timer() is None
    with pytest.raises(NotFound):
        b.delete("cache", t, ns, "c", now=T0)
    assert b.totals(T0).caches.puts == 2  # the deleted caches' counters are kept
