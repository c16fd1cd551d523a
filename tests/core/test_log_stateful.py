"""Stateful test of MemoryLog against a list model: retention, trimming and too-old reads."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from felix_core.log import LogSlice, MemoryLog, Retention, TooOld, record_size

payloads = st.binary(max_size=12)
maybe_key = st.none() | st.binary(max_size=4)
maybe_headers = st.none() | st.dictionaries(st.text(max_size=2), st.binary(max_size=3), max_size=2)
retentions = st.builds(
    Retention,
    max_records=st.none() | st.integers(1, 40),
    max_bytes=st.none() | st.integers(1, 200),
    max_age_ms=st.none() | st.integers(1, 50),
)


class LogMachine(RuleBasedStateMachine):
    """The model keeps (offset, payload, ts, key, headers) of retained records."""

    def __init__(self) -> None:
        super().__init__()
        self.log = MemoryLog()
        self.records: list[tuple[int, bytes, int, bytes | None, dict[str, bytes] | None]] = []
        self.first = 0
        self.next = 0
        self.now_ms = 0
        self.last_ts = -(10**18)

    def _stamp(self, ts: int) -> int:
        self.last_ts = max(self.last_ts, ts)
        return self.last_ts

    def _size(self, rec: tuple[int, bytes, int, bytes | None, dict[str, bytes] | None]) -> int:
        return record_size(rec[1], rec[3], rec[4])

    def _drop(self, n: int) -> None:
        del self.records[:n]
        self.first = self.records[0][0] if self.records else self.next

    @rule(dt=st.integers(-5, 20))
    def tick(self, dt: int) -> None:
        self.now_ms = max(self.now_ms + dt, 0)  # dt < 0: a wall clock stepping back

    @rule(payload=payloads, key=maybe_key, headers=maybe_headers)
    def append(self, payload: bytes, key: bytes | None, headers: dict[str, bytes] | None) -> None:
        offset = self.log.append(payload, self.now_ms, key, headers)
        assert offset == self.next
        self.records.append((offset, payload, self._stamp(self.now_ms), key, headers or None))
        self.next += 1

    @rule(
        batch=st.lists(st.tuples(payloads, maybe_key, maybe_headers), max_size=6),
        plain=st.booleans(),
    )
    def append_batch(
        self, batch: list[tuple[bytes, bytes | None, dict[str, bytes] | None]], plain: bool
    ) -> None:
        ps = [b[0] for b in batch]
        keys = None if plain else [b[1] for b in batch]
        headers = None if plain else [b[2] for b in batch]
        base = self.log.append_batch(ps, self.now_ms, keys, headers)
        assert base == self.next
        if batch:
            ts = self._stamp(self.now_ms)
            for i, (p, k, h) in enumerate(batch):
                self.records.append(
                    (base + i, p, ts, None if plain else k, None if plain else (h or None))
                )
            self.next += len(batch)

    @rule(retention=retentions)
    def apply_retention(self, retention: Retention) -> None:
        expected = 0
        n = len(self.records)
        if retention.max_records is not None:
            expected = max(expected, n - retention.max_records)
        if retention.max_bytes is not None:
            total = sum(map(self._size, self.records))
            drop = 0
            while total > retention.max_bytes:
                total -= self._size(self.records[drop])
                drop += 1
            expected = max(expected, drop)
        if retention.max_age_ms is not None:
            cutoff = self.now_ms - retention.max_age_ms
            expected = max(expected, sum(1 for r in self.records if r[2] < cutoff))
        evictions = self.log.evictions_for(0, 0, retention)
        assert self.log.apply_retention(retention, self.now_ms) == expected
        assert evictions <= expected
        self._drop(expected)

    @rule(retention=retentions, count=st.integers(0, 5), nbytes=st.integers(0, 60))
    def evictions_for(self, retention: Retention, count: int, nbytes: int) -> None:
        n = len(self.records)
        expected = 0
        if retention.max_records is not None:
            expected = n + count - retention.max_records
        if retention.max_bytes is not None:
            total = sum(map(self._size, self.records)) + nbytes
            drop = 0
            while drop < n and total > retention.max_bytes:
                total -= self._size(self.records[drop])
                drop += 1
            if total > retention.max_bytes:
                drop = n
            expected = max(expected, drop)
        expected = min(max(expected, 0), n)
        assert self.log.evictions_for(count, nbytes, retention) == expected

    @precondition(lambda self: self.next > 0)
    @rule(data=st.data())
    def truncate_before(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.next))
        expected = max(offset - self.first, 0)
        assert self.log.truncate_before(offset) == expected
        self._drop(expected)

    @rule(data=st.data(), max_count=st.integers(1, 10), max_bytes=st.integers(0, 40))
    def read(self, data: st.DataObject, max_count: int, max_bytes: int) -> None:
        offset = data.draw(st.integers(0, self.next))
        got = self.log.read(offset, max_count, max_bytes)
        if offset < self.first:
            assert got == TooOld(requested=offset, first_offset=self.first)
            return
        assert isinstance(got, LogSlice)
        avail = [r for r in self.records if r[0] >= offset]
        take: list[tuple[int, bytes, int, bytes | None, dict[str, bytes] | None]] = []
        total = 0
        for r in avail[:max_count]:
            size = self._size(r)
            if take and total + size > max_bytes:
                break
            take.append(r)
            total += size
        assert got.base_offset == offset
        assert got.payloads == [r[1] for r in take]
        assert got.timestamps_ms == [r[2] for r in take]
        keys = [r[3] for r in take]
        assert got.keys == (keys if any(k is not None for k in keys) else None)
        headers = [r[4] for r in take]
        assert got.headers == (headers if any(h is not None for h in headers) else None)
        assert got.byte_size == total

    @rule(ts=st.integers(-5, 200))
    def offset_for_timestamp(self, ts: int) -> None:
        expected = next((r[0] for r in self.records if r[2] >= ts), self.next)
        assert self.log.offset_for_timestamp(ts) == expected

    @invariant()
    def bounds_match(self) -> None:
        assert self.log.first_offset == self.first
        assert self.log.next_offset == self.next
        assert self.log.record_count == len(self.records)
        assert self.log.byte_size == sum(map(self._size, self.records))


TestLogMachine = LogMachine.TestCase
