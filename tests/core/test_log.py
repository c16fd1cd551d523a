"""Unit tests of felix_core.log.MemoryLog: every branch of the public API."""

from __future__ import annotations

import pytest

from felix_core.log import Log, LogSlice, MemoryLog, Retention, TooOld, record_size


def _slice(got: LogSlice | TooOld) -> LogSlice:
    assert isinstance(got, LogSlice), got
    return got


def test_empty_log() -> None:
    log = MemoryLog()
    assert (log.first_offset, log.next_offset, log.record_count, log.byte_size) == (0, 0, 0, 0)
    got = _slice(log.read(0, 10, 100))
    assert (got.base_offset, len(got), got.next_offset, got.byte_size) == (0, 0, 0, 0)
    assert got.keys is None and got.headers is None
    assert log.offset_for_timestamp(0) == 0
    assert isinstance(log, Log)
    assert "next_offset=0" in repr(log)


def test_start_offset() -> None:
    log = MemoryLog(start_offset=7)
    assert log.append(b"a", 1) == 7
    assert log.first_offset == 7 and log.next_offset == 8
    assert log.read(6, 1, 1) == TooOld(requested=6, first_offset=7)
    with pytest.raises(ValueError):
        MemoryLog(start_offset=-1)


def test_append_and_read_limits() -> None:
    log = MemoryLog()
    assert log.append_batch([b"ab", b"cde", b"f"], 5) == 0
    assert log.append(b"gh", 6) == 3
    assert log.byte_size == 8 and log.record_count == 4
    got = _slice(log.read(0, 10, 100))
    assert got.payloads == [b"ab", b"cde", b"f", b"gh"]
    assert got.timestamps_ms == [5, 5, 5, 6]
    assert got.byte_size == 8
    # count limit
    assert _slice(log.read(1, 2, 100)).payloads == [b"cde", b"f"]
    # byte limit: 2 + 3 = 5 fits, + 1 = 6 does not fit in 5
    assert _slice(log.read(0, 10, 5)).payloads == [b"ab", b"cde"]
    # the first record always comes, even when larger than max_bytes
    assert _slice(log.read(1, 10, 1)).payloads == [b"cde"]
    assert _slice(log.read(0, 10, 0)).payloads == [b"ab"]
    # reading at the end is empty
    assert len(_slice(log.read(4, 10, 10))) == 0
    with pytest.raises(ValueError):
        log.read(5, 1, 1)
    with pytest.raises(ValueError):
        log.read(0, 0, 1)


def test_keys_and_headers_are_none_unless_present_in_slice() -> None:
    log = MemoryLog()
    log.append(b"a", 1)
    log.append(b"b", 1, key=b"k")
    log.append(b"c", 1, headers={"h": b"v"})
    log.append(b"d", 1, headers={})
    assert _slice(log.read(0, 1, 100)).keys is None
    assert _slice(log.read(0, 2, 100)).keys == [None, b"k"]
    assert _slice(log.read(0, 2, 100)).headers is None
    got = _slice(log.read(2, 2, 100))
    assert got.keys is None
    assert got.headers == [{"h": b"v"}, None]
    assert got.byte_size == (1 + 1 + 1) + 1  # header name "h" and value b"v" counted
    assert log.byte_size == 1 + 2 + 3 + 1


def test_append_batch_with_keys_and_headers() -> None:
    log = MemoryLog()
    base = log.append_batch(
        [b"a", b"b", b"c"], 1, keys=[b"k1", None, None], headers=[None, {"x": b"yy"}, {}]
    )
    assert base == 0
    got = _slice(log.read(0, 10, 100))
    assert got.keys == [b"k1", None, None]
    assert got.headers == [None, {"x": b"yy"}, None]
    assert got.byte_size == (1 + 2) + (1 + 1 + 2) + 1
    assert log.append_batch([b"d"], 1, headers=[{"z": b""}]) == 3
    assert _slice(log.read(3, 1, 10)).headers == [{"z": b""}]


def test_append_batch_errors_and_empty() -> None:
    log = MemoryLog()
    with pytest.raises(ValueError):
        log.append_batch([b"a"], 1, keys=[])
    with pytest.raises(ValueError):
        log.append_batch([b"a"], 1, headers=[None, None])
    assert log.append_batch([], 1) == 0
    assert log.next_offset == 0


def test_timestamps_never_decrease_and_lookup() -> None:
    log = MemoryLog()
    log.append(b"a", 100)
    log.append(b"b", 50)  # clock stepped back: stamped 100
    log.append_batch([b"c", b"d"], 40)
    log.append(b"e", 200)
    assert _slice(log.read(0, 10, 100)).timestamps_ms == [100, 100, 100, 100, 200]
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(100) == 0
    assert log.offset_for_timestamp(101) == 4
    assert log.offset_for_timestamp(201) == 5
    log.truncate_before(2)
    assert log.offset_for_timestamp(0) == 2


def test_truncate_before() -> None:
    log = MemoryLog()
    log.append_batch(
        [b"a", b"bb", b"ccc"], 1, keys=[b"k", None, b"k"], headers=[{"h": b"v"}, None, None]
    )
    assert log.truncate_before(0) == 0
    assert log.truncate_before(2) == 2
    assert log.first_offset == 2 and log.byte_size == 4
    assert log.read(1, 1, 1) == TooOld(requested=1, first_offset=2)
    got = _slice(log.read(2, 5, 100))
    assert got.keys == [b"k"] and got.headers is None
    assert log.truncate_before(1) == 0
    with pytest.raises(ValueError):
        log.truncate_before(4)
    assert log.truncate_before(3) == 1
    assert log.record_count == 0 and log.byte_size == 0 and log.first_offset == 3
    # keyed/headered counters went back to zero: slices carry None
    log.append(b"x", 1)
    assert _slice(log.read(3, 1, 10)).keys is None


def test_compaction_keeps_offsets() -> None:
    log = MemoryLog()
    for i in range(3000):
        log.append(str(i).encode(), i)
    assert log.truncate_before(2500) == 2500
    assert log.first_offset == 2500 and log.record_count == 500
    assert _slice(log.read(2999, 1, 10)).payloads == [b"2999"]
    assert log.offset_for_timestamp(2600) == 2600
    assert log.read(2499, 1, 1) == TooOld(requested=2499, first_offset=2500)
    assert log.append(b"x", 5000) == 3000
    assert log.byte_size == sum(len(str(i)) for i in range(2500, 3000)) + 1


def test_evictions_for() -> None:
    log = MemoryLog()
    log.append_batch([b"aa", b"bb", b"cc"], 1)
    assert log.evictions_for(1, 2, Retention()) == 0
    assert log.evictions_for(1, 2, Retention(max_records=3)) == 1
    assert log.evictions_for(2, 2, Retention(max_records=10)) == 0
    assert log.evictions_for(1, 2, Retention(max_bytes=6)) == 1
    assert log.evictions_for(1, 3, Retention(max_bytes=6)) == 2
    assert log.evictions_for(1, 100, Retention(max_bytes=6)) == 3  # capped at record_count
    assert log.evictions_for(5, 0, Retention(max_records=2)) == 3
    assert log.evictions_for(0, 0, Retention(max_age_ms=1)) == 0


def test_apply_retention() -> None:
    log = MemoryLog()
    log.append_batch([b"a", b"b"], 1000)
    log.append_batch([b"c", b"d"], 2000)
    log.append(b"e", 3000)
    assert log.apply_retention(Retention(), 10_000) == 0
    assert log.apply_retention(Retention(max_records=4), 0) == 1
    assert log.first_offset == 1
    assert log.apply_retention(Retention(max_bytes=3), 0) == 1
    assert log.first_offset == 2
    # age: drop records with ts < now - max_age
    assert log.apply_retention(Retention(max_age_ms=1000), 3000) == 0  # cutoff 2000 keeps ts 2000
    assert log.apply_retention(Retention(max_age_ms=1000), 3001) == 2
    assert log.first_offset == 4
    assert log.apply_retention(Retention(max_age_ms=1), 10**9) == 1
    assert log.record_count == 0 and log.next_offset == 5


def test_record_size() -> None:
    assert record_size(b"abc") == 3
    assert record_size(b"abc", b"k") == 4
    assert record_size(b"", None, {"é": b"12"}) == 4  # name counted in UTF-8 bytes
    assert record_size(b"x", None, {}) == 1


def test_log_slice_is_frozen_and_sized() -> None:
    s = LogSlice(3, [b"a", b"b"], [1, 1], None, None, 2)
    assert len(s) == 2 and s.next_offset == 5
    with pytest.raises(AttributeError):
        s.base_offset = 1  # type: ignore[misc]
