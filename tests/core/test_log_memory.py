"""What a retained record costs a :class:`MemoryLog` beyond its payload: the bound the
``memory`` bench scenario rests on (a stream's retention counts record bytes, and the
broker's RSS with a stalled subscriber is the retained records plus this bookkeeping).

tracemalloc counts the bytes Python asked for, so the figure is exact and does not depend
on the machine or the allocator.
"""

from __future__ import annotations

import tracemalloc

from felix_core.log import MemoryLog, Retention

RECORDS = 64 * 800
PAYLOAD = 100
BOOKKEEPING = 56
"""Bytes per retained record beyond the payload object: five slots (payload, timestamp, key,
headers, cumulative size) of 8 bytes, and the lists' over-allocation."""


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


def test_a_retained_record_costs_its_payload_and_a_few_slots() -> None:
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
