"""Stateful hypothesis test of the cache against a dict + LRU model, with fake time.

The model keeps the *physical* table (entries that expired but were not yet swept are still
there, as they still take room) in LRU order, the version counter and the counters. Puts,
gets and deletes are deterministic, so the model predicts their results and the exact
change-feed records they append (lazy expiry, the put, evictions). The active sweep is only
bounded, so for a timer tick the model checks each record the engine appended: an ``expire``
of an entry that is due, at most ``sweep_batch`` heap pops' worth. A rebuild from a copy of
the feed must reproduce the table.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from felix_core.cache import Cache, CacheConfig, WriteResult
from felix_core.log import LogSlice, MemoryLog, Retention

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "é"])
VALUES = st.binary(max_size=12)
TTLS = st.sampled_from([None, 0.0, 1.0, 2.5, 7.0])
MAX_ENTRIES = 4
MAX_BYTES = 40
SWEEP = 2
DEFAULT_TTL = 5.0

Record = tuple[str, str, int]  # (op, key, version)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = CacheConfig(
            default_ttl_s=DEFAULT_TTL,
            max_entries=MAX_ENTRIES,
            max_bytes=MAX_BYTES,
            max_value_bytes=16,
            feed_retention=Retention(),
            sweep_batch=SWEEP,
        )
        self.c = Cache(self.config)
        self.now = 100.0
        self.table: OrderedDict[str, tuple[bytes, int, float]] = OrderedDict()
        self.version = 0
        self.read = 0
        self.hits = self.misses = self.expirations = self.evictions = 0

    # -- model helpers --------------------------------------------------------------------

    def feed(self) -> list[tuple[Record, bytes, dict[str, bytes]]]:
        sl = self.c.changes.read(self.read, 1 << 20, 1 << 62)
        assert isinstance(sl, LogSlice)
        self.read = sl.next_offset
        out = []
        for i, payload in enumerate(sl.payloads):
            assert sl.keys is not None and sl.headers is not None
            key, hdrs = sl.keys[i], sl.headers[i]
            assert key is not None and hdrs is not None
            op = hdrs["op"].decode()
            out.append(((op, key.decode(), int(hdrs["version"])), payload, hdrs))
        return out

    def bump(self) -> int:
        self.version += 1
        return self.version

    def remove(self, key: str, op: str, expected: list[Record]) -> None:
        del self.table[key]
        expected.append((op, key, self.bump()))

    def live(self, key: str, expected: list[Record]) -> tuple[bytes, int, float] | None:
        cur = self.table.get(key)
        if cur is not None and cur[2] <= self.now:
            self.remove(key, "expire", expected)
            self.expirations += 1
            return None
        return cur

    def size(self) -> int:
        return sum(len(k.encode()) + len(v[0]) for k, v in self.table.items())

    def check_feed(self, expected: list[Record]) -> list[tuple[Record, bytes, dict[str, bytes]]]:
        got = self.feed()
        assert [r for r, _, _ in got] == expected
        return got

    # -- rules ----------------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, ttl=TTLS, cond=st.sampled_from(["", "absent", "cur", "old"]))
    def put(self, key: str, value: bytes, ttl: float | None, cond: str) -> None:
        expected: list[Record] = []
        cur_before = self.table.get(key)
        if_version = None
        if cond == "cur":
            if_version = cur_before[1] if cur_before else 1
        elif cond == "old":
            if_version = cur_before[1] - 1 if cur_before else 0
        result = self.c.put(
            key, value, self.now, ttl=ttl, if_absent=cond == "absent", if_version=if_version
        )
        cur = self.live(key, expected)
        ok = (
            (cond == "absent" and cur is None)
            or (if_version is not None and cur is not None and cur[1] == if_version)
            or cond == ""
        )
        if not ok:
            assert result == WriteResult(False, cur[1] if cur else None)
            self.check_feed(expected)
            return
        version = self.bump()
        eff_ttl = DEFAULT_TTL if ttl is None else ttl
        expires = self.now + eff_ttl if eff_ttl > 0 else math.inf
        if ttl is None and if_version is not None:  # compare-and-set keeps the expiry
            assert cur is not None
            expires = cur[2]
        self.table[key] = (value, version, expires)
        self.table.move_to_end(key)
        expected.append(("put", key, version))
        while len(self.table) > MAX_ENTRIES or self.size() > MAX_BYTES:
            self.remove(next(iter(self.table)), "evict", expected)
            self.evictions += 1
        assert result == WriteResult(True, version)
        [(_, payload, hdrs)] = [g for g in self.check_feed(expected) if g[0][0] == "put"]
        assert payload == value
        left = 0 if expires == math.inf else max(1, round((expires - self.now) * 1000))
        assert hdrs["ttl_ms"] == b"%d" % left
        assert ("expires_ms" in hdrs) == (expires != math.inf)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        got = self.c.get(key, self.now)
        expected: list[Record] = []
        cur = self.live(key, expected)
        if cur is None:
            assert got is None
            self.misses += 1
        else:
            assert got is not None
            assert (got.value, got.version, got.expires_at) == cur
            remaining = got.ttl_remaining(self.now)
            assert remaining is None if cur[2] == math.inf else remaining == cur[2] - self.now
            self.table.move_to_end(key)
            self.hits += 1
        self.check_feed(expected)

    @rule(key=KEYS, match=st.sampled_from([None, "cur", "other"]))
    def delete(self, key: str, match: str | None) -> None:
        cur_before = self.table.get(key)
        if_version = None
        if match is not None:
            if_version = (cur_before[1] if cur_before else 1) + (match == "other")
        result = self.c.delete(key, self.now, if_version=if_version)
        expected: list[Record] = []
        cur = self.live(key, expected)
        if cur is None:
            assert result == WriteResult(False, None)
        elif if_version is not None and if_version != cur[1]:
            assert result == WriteResult(False, cur[1])
        else:
            self.remove(key, "delete", expected)
            assert result == WriteResult(True, self.version)
        self.check_feed(expected)

    @rule(dt=st.sampled_from([0.25, 1.0, 2.5, 6.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        timer = self.c.get_timer()
        due = [v[2] for v in self.table.values() if v[2] != math.inf]
        if due:
            assert timer is not None and timer <= min(due)
        self.c.handle_timer(self.now)
        got = self.feed()
        assert len(got) <= SWEEP
        for (op, key, version), payload, _ in got:
            assert op == "expire" and payload == b""
            assert self.table[key][2] <= self.now
            del self.table[key]
            assert version == self.bump()
            self.expirations += 1

    @rule()
    def settle(self) -> None:
        for _ in range(100):
            timer = self.c.get_timer()
            if timer is None or timer > self.now:
                break
            self.tick(0.0)
        assert all(v[2] > self.now for v in self.table.values())

    @rule()
    def rebuild_matches(self) -> None:
        log = self.c.changes
        copy = MemoryLog(log.first_offset)
        sl = log.read(log.first_offset, 1 << 20, 1 << 62)
        assert isinstance(sl, LogSlice)
        for i, p in enumerate(sl.payloads):
            assert sl.keys is not None and sl.headers is not None
            copy.append(p, sl.timestamps_ms[i], sl.keys[i], sl.headers[i])
        r = Cache.rebuild_from(copy, self.now, self.config)
        assert copy.next_offset == log.next_offset  # nothing to evict: bounds already held
        assert r.stats().version == self.version
        assert len(r) == len(self.table)
        for key, (value, version, expires) in self.table.items():
            entry = r.peek(key, self.now)
            if expires > self.now:
                assert entry is not None and (entry.value, entry.version) == (value, version)
                assert entry.expires_at == expires or abs(entry.expires_at - expires) < 0.001

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def counters_match(self) -> None:
        s = self.c.stats()
        assert s.entries == len(self.table) and s.bytes == self.size()
        assert (s.hits, s.misses, s.version) == (self.hits, self.misses, self.version)
        assert (s.expirations, s.evictions) == (self.expirations, self.evictions)
        assert s.entries <= MAX_ENTRIES and s.bytes <= MAX_BYTES


CacheMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestCacheMachine = CacheMachine.TestCase
