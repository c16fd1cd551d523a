"""What a retained record costs a :class:`MemoryLog` beyond its payload: the bound the
``memory`` bench scenario rests on (a stream's retention counts record bytes, and the
broker's RSS with a stalled subscriber is the retained records plus this bookkeeping).

tracemalloc counts the bytes Python asked for, so the figure is exact and does not depend
on the machine or the allocator.
"""

from __future__ import annotations

import tracemalloc

from felix_core.log import MemoryLog, Retention, TooOld

RECORDS = 64 * 800
PAYLOAD = 100
BOOKKEEPING = 32
"""Bytes per retained record without key or headers beyond its payload object: three slots
(payload, timestamp, cumulative size) of 8 bytes, and the lists' over-allocation. (It was 73
with the cumulative sizes in a list of ints and a key and a header slot per record.)"""


def _batches(start: int, count: int) -> list[list[bytes]]:
    return [
        [b"%0*d" % (PAYLOAD, i + j) for j in range(64)] for i in range(start, start + count, 64)
    ]


def _overhead_per_record(log: MemoryLog, batches: list[list[bytes]]) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            log.append_batch(batch, 1_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / log.record_count


def test_a_plain_retained_record_costs_its_payload_and_three_slots() -> None:
    batches = _batches(0, RECORDS)  # made before tracing: the payloads are not counted
    log = MemoryLog()
    per_record = _overhead_per_record(log, batches)
    assert log.record_count == RECORDS
    assert per_record <= BOOKKEEPING, per_record


def test_trimming_keeps_the_bookkeeping_bounded_by_twice_the_retained_records() -> None:
    """The dead prefix of the lists is compacted once it is as long as the live part, so a
    log trimmed to retention holds at most twice the retained records' slots."""
    log = MemoryLog()
    retention = Retention(max_bytes=RECORDS // 2 * PAYLOAD)
    batches = _batches(0, 4 * RECORDS)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak = 0
        for n, batch in enumerate(batches):
            log.append_batch(batch, 1_000)
            log.apply_retention(retention, 1_000)
            if n % 16 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    assert log.record_count == RECORDS // 2
    # The retained payloads were allocated before tracing; what grew is the slots.
    assert peak / log.record_count <= 2 * BOOKKEEPING, peak / log.record_count


def test_trimming_one_record_at_a_time() -> None:
    log = MemoryLog()
    log.append(b"a", 1, key=b"k1", headers={"h": b"1"})
    log.append(b"b", 1)
    log.append(b"c", 1, key=b"k3")
    assert log.truncate_before(1) == 1  # the keyed, headered record goes alone
    got = log.read(1, 10, 1 << 20)
    assert not isinstance(got, TooOld)
    assert (got.keys, got.headers) == ([None, b"k3"], None)  # no headered record left
    assert log.truncate_before(2) == 1
    got = log.read(2, 10, 1 << 20)
    assert not isinstance(got, TooOld)
    assert (got.payloads, got.keys) == ([b"c"], [b"k3"])
    assert log.truncate_before(3) == 1 and log.record_count == 0 and log.byte_size == 0
    log.append(b"d", 1)
    got = log.read(3, 10, 1 << 20)
    assert not isinstance(got, TooOld)
    assert (got.payloads, got.keys, got.headers) == ([b"d"], None, None)


def test_the_key_column_comes_with_the_first_keyed_record_and_goes_with_the_last() -> None:
    log = MemoryLog()
    log.append_batch([b"a", b"b"], 1)
    log.append(b"c", 1, key=b"k", headers={"h": b"v"})
    log.append_batch([b"d"], 1)
    whole = log.read(0, 10, 1 << 20)
    assert not isinstance(whole, TooOld)
    assert whole.keys == [None, None, b"k", None]
    assert whole.headers == [None, None, {"h": b"v"}, None]
    assert log.truncate_before(3) == 3
    rest = log.read(3, 10, 1 << 20)
    assert not isinstance(rest, TooOld)
    assert (rest.payloads, rest.keys, rest.headers) == ([b"d"], None, None)
    log.append_batch([b"e", b"f"], 1, keys=[None, b"k2"])
    tail = log.read(3, 10, 1 << 20)
    assert not isinstance(tail, TooOld)
    assert (tail.keys, tail.headers) == ([None, None, b"k2"], None)
