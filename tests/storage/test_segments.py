"""The segment format: round trips, scans of damaged bytes, indexes, recovery and retention
decisions (felix_core.segments; pure, no file system)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix_core.log import Retention, record_size
from felix_core.segments import (
    BATCH_HEADER_SIZE,
    Batch,
    BatchInfo,
    CorruptBatch,
    IndexBuilder,
    SegmentSummary,
    TailState,
    decode_batch,
    decode_index,
    encode_batch,
    encode_index,
    encode_stamped_batch,
    index_name,
    log_name,
    parse_segment_name,
    plan_recovery,
    retention_deletions,
    scan,
    scan_chunks,
)

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_records = st.lists(
    st.tuples(
        st.binary(max_size=40),
        st.none() | st.binary(max_size=8),
        st.none() | st.dictionaries(_names, st.binary(max_size=8), max_size=3),
    ),
    min_size=1,
    max_size=6,
)


def _encode(base: int, records: list[tuple[bytes, bytes | None, dict[str, bytes] | None]]) -> bytes:
    return encode_batch(
        base,
        [r[0] for r in records],
        [1_700_000_000_000 + i for i in range(len(records))],
        [r[1] for r in records],
        [r[2] for r in records],
    )


@given(base=st.integers(0, 2**63), records=_records)
def test_batch_round_trip(
    base: int, records: list[tuple[bytes, bytes | None, dict[str, bytes] | None]]
) -> None:
    data = _encode(base, records)
    batch, end = decode_batch(data)
    assert end == len(data)
    assert batch.base_offset == base
    assert batch.payloads == [r[0] for r in records]
    assert batch.keys == [r[1] for r in records]
    assert batch.headers == [r[2] or None for r in records]
    assert batch.timestamps_ms == [1_700_000_000_000 + i for i in range(len(records))]
    assert batch.byte_size() == sum(record_size(*r) for r in records)


def _batches(
    groups: list[list[tuple[bytes, bytes | None, dict[str, bytes] | None]]],
) -> tuple[bytes, list[bytes]]:
    parts = []
    offset = 0
    for records in groups:
        parts.append(_encode(offset, records))
        offset += len(records)
    return b"".join(parts), parts


@given(groups=st.lists(_records, min_size=1, max_size=5), cut=st.integers(0, 10_000))
def test_scan_of_a_torn_write_keeps_every_whole_batch(
    groups: list[list[tuple[bytes, bytes | None, dict[str, bytes] | None]]], cut: int
) -> None:
    data, parts = _batches(groups)
    cut = min(cut, len(data))
    result = scan(data[:cut], expected_base=0)
    whole = 0
    ends = []
    for p in parts:
        if whole + len(p) > cut:
            break
        whole += len(p)
        ends.append(whole)
    assert result.valid_end == whole
    assert [b.end for b in result.batches] == ends
    assert result.state is (TailState.CLEAN if cut == whole else TailState.TORN)


@given(
    groups=st.lists(_records, min_size=1, max_size=4),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    extra=st.binary(max_size=64),
)
def test_damaged_bytes_never_yield_a_record_that_was_not_written(
    groups: list[list[tuple[bytes, bytes | None, dict[str, bytes] | None]]],
    flips: list[tuple[int, int]],
    extra: bytes,
) -> None:
    data, parts = _batches(groups)
    damaged = bytearray(data + extra)
    for pos, mask in flips:
        damaged[pos % len(damaged)] ^= mask
    result = scan(bytes(damaged), expected_base=0)
    written = set(parts)
    for info in result.batches:
        raw = bytes(damaged[info.position : info.end])
        assert raw in written
        decode_batch(raw)
    if result.state is TailState.CLEAN:
        assert result.valid_end == len(damaged)


@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_scan_or_decode(data: bytes) -> None:
    result = scan(data)
    assert 0 <= result.valid_end <= len(data)
    for info in result.batches:
        decode_batch(data, info.position)
    with contextlib.suppress(CorruptBatch):
        decode_batch(data)


@given(groups=st.lists(_records, min_size=1, max_size=4), data=st.data())
def test_scanning_in_one_chunk_or_split_finds_the_same_batches(
    groups: list[list[tuple[bytes, bytes | None, dict[str, bytes] | None]]], data: st.DataObject
) -> None:
    whole, _ = _batches(groups)
    one = scan(whole)
    split = data.draw(st.integers(0, len(whole)))
    first = scan(whole[:split])
    second = scan(whole[first.valid_end :])
    assert [b.end for b in one.batches] == [b.end for b in first.batches] + [
        b.end + first.valid_end for b in second.batches
    ]
    assert second.state is TailState.CLEAN


@given(
    groups=st.lists(_records, min_size=1, max_size=5),
    chunk=st.integers(1, 300),
    flip=st.none() | st.integers(0, 2000),
    zeros=st.integers(0, 100),
)
def test_scan_in_chunks_is_scan_of_the_whole(
    groups: list[list[tuple[bytes, bytes | None, dict[str, bytes] | None]]],
    chunk: int,
    flip: int | None,
    zeros: int,
) -> None:
    data, _ = _batches(groups)
    damaged = bytearray(data + bytes(zeros))
    if flip is not None:
        damaged[flip % len(damaged)] ^= 0x20
    raw = bytes(damaged)
    reads = []

    def read(pos: int, n: int) -> bytes:
        reads.append(n)
        return raw[pos : pos + n]

    assert scan_chunks(read, len(raw), 0, chunk) == scan(raw, 0)


def test_corruption_followed_by_data_is_not_a_torn_tail() -> None:
    a = encode_batch(0, [b"a" * 10], [1])
    b = encode_batch(1, [b"b" * 10], [2])
    c = encode_batch(2, [b"c" * 10], [3])
    damaged = bytearray(a + b + c)
    damaged[len(a) + BATCH_HEADER_SIZE + 3] ^= 1  # a record byte of the middle batch
    result = scan(bytes(damaged), expected_base=0)
    assert result.state is TailState.CORRUPT
    assert result.valid_end == len(a)
    assert result.next_offset == 1
    header = bytearray(a + b + c)
    header[len(a)] = 0  # the magic of the middle batch
    assert scan(bytes(header)).state is TailState.CORRUPT
    # a bad last batch, or only zeros after a bad header, is a torn tail
    last = bytearray(a + b)
    last[-1] ^= 1
    assert scan(bytes(last)).state is TailState.TORN
    assert scan(a + bytes(100)).state is TailState.TORN


def test_an_offset_gap_is_corruption() -> None:
    a = encode_batch(0, [b"a"], [1])
    b = encode_batch(5, [b"b"], [1])
    assert scan(a + b, expected_base=0).state is TailState.TORN  # b is the last thing
    assert scan(a + b + a, expected_base=0).state is TailState.CORRUPT
    assert scan(b + a + a).state is TailState.CORRUPT  # batches always follow each other
    assert scan(b).next_offset == 6  # without expected_base the first batch may be anywhere
    assert scan(b"", expected_base=7).next_offset == 7


def _spec_batch(base: int, payloads: list[bytes], ts: int) -> bytes:
    """A plain batch (one timestamp, no keys or headers) built field by field from
    docs/storage-format.md, as a reference for the encoder's fast paths."""
    import struct

    from crc32c import crc32c

    records = b"".join(struct.pack("<IIB", len(p), 0, 0) + p for p in payloads)
    body = struct.pack("<QIIqq", base, len(payloads), sum(map(len, payloads)), ts, ts) + records
    head = struct.pack("<2sBBI", b"FX", 1, 0, 12 + len(body))
    return head + struct.pack("<I", crc32c(body, crc32c(head))) + body


@given(
    base=st.integers(0, 2**63),
    payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=8)
    | st.integers(0, 40).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1)),
)
def test_plain_batches_are_the_specified_bytes(base: int, payloads: list[bytes]) -> None:
    """The encoder's plain paths (every payload the same length: one join; mixed lengths:
    C loops) write exactly the bytes the spec describes, keys and headers given as all
    None or not at all."""
    expected = _spec_batch(base, payloads, 1_700_000_000_000)
    n = len(payloads)
    stamps = [1_700_000_000_000] * n
    assert encode_batch(base, payloads, stamps) == expected
    assert encode_batch(base, payloads, stamps, [None] * n, [None] * n) == expected
    batch, _ = decode_batch(expected)
    assert batch.payloads == payloads


@given(base=st.integers(0, 2**63), records=_records, stamp=st.integers(0, 2**62))
def test_a_stamped_batch_is_the_batch_of_one_timestamp(
    base: int, records: list[tuple[bytes, bytes | None, dict[str, bytes] | None]], stamp: int
) -> None:
    """An append's encoder (one timestamp for every record) writes the bytes of
    encode_batch with that timestamp repeated, and says the records' byte size."""
    payloads, keys, headers = (
        [r[0] for r in records],
        [r[1] for r in records],
        [r[2] for r in records],
    )
    n = len(records)
    for k, h in ((None, None), (keys, headers), ([None] * n, [None] * n)):
        data, nbytes = encode_stamped_batch(base, payloads, stamp, k, h)
        assert data == encode_batch(base, payloads, [stamp] * n, k, h)
        assert nbytes == decode_batch(data)[0].byte_size()


def test_a_timestamp_dip_between_equal_ends_is_refused() -> None:
    """First and last timestamps equal is not enough to take the one-timestamp path: one
    in between that goes back is refused, never written as the batch's timestamp."""
    with pytest.raises(ValueError):
        encode_batch(0, [b"a", b"b", b"c"], [5, 3, 5])


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_batch(0, [], [])
    with pytest.raises(ValueError):
        encode_batch(0, [b"a"], [1, 2])
    with pytest.raises(ValueError):
        encode_batch(0, [b"a", b"b"], [2, 1])
    with pytest.raises(ValueError):
        encode_batch(0, [b"a"], [1], headers=[None, None])
    for bad in (
        ([], 1, None, None),
        ([b"a"], 1, [None, None], None),
        ([b"a"], 1, None, [None] * 2),
    ):
        with pytest.raises(ValueError):
            encode_stamped_batch(0, *bad)


def test_records_that_do_not_fit_their_checked_batch_are_refused() -> None:
    good = bytearray(encode_batch(0, [b"abc"], [1]))
    good[40] = 200  # the payload length, then fix the checksum so only the layout is wrong
    from crc32c import crc32c

    good[8:12] = crc32c(bytes(good[12:]), crc32c(bytes(good[:8]))).to_bytes(4, "little")
    with pytest.raises(CorruptBatch):
        decode_batch(bytes(good))


def test_names() -> None:
    assert log_name(42) == "00000000000000000042.log"
    assert index_name(42) == "00000000000000000042.index"
    assert parse_segment_name("00000000000000000042.log") == (42, "log")
    assert parse_segment_name("00000000000000000042.index") == (42, "index")
    for bad in ("42.log", "0000000000000000004x.log", "00000000000000000042.tmp", "x"):
        assert parse_segment_name(bad) is None


def _indexed(n: int, size: int = 100, interval: int = 4096) -> tuple[bytes, IndexBuilder]:
    builder = IndexBuilder(10, interval)
    parts = []
    pos = 0
    for i in range(n):
        raw = encode_batch(10 + i, [bytes(size)], [1000 + i])
        parts.append(raw)
        info = scan(raw).batches[0]
        from dataclasses import replace

        builder.add(replace(info, position=pos))
        pos += len(raw)
    return b"".join(parts), builder


def test_index_is_sparse_and_finds_offsets_and_times() -> None:
    data, builder = _indexed(200, size=100, interval=1000)
    idx = builder.index
    assert 20 <= len(idx.offsets) <= 30  # one per ~1000 bytes of 140-byte batches
    assert idx.summary.next_offset == 210
    assert idx.summary.record_bytes == 200 * 100
    assert idx.summary.file_size == len(data)
    for offset in (10, 11, 100, 209):
        pos = idx.position_for(offset)
        batch, _ = decode_batch(data, pos)
        assert batch.base_offset <= offset
        assert offset - batch.base_offset < 10
    # the first record with timestamp >= t is at or after offset_for_time(t)
    assert idx.offset_for_time(1000) == 10
    assert idx.offset_for_time(1100) <= 110
    assert idx.offset_for_time(1100) > 95


def test_index_file_round_trip_and_staleness() -> None:
    data, builder = _indexed(50)
    raw = encode_index(builder.index)
    got = decode_index(raw, 10, len(data))
    assert got == builder.index
    assert decode_index(raw, 10, len(data) + 1) is None  # stale: the .log grew
    assert decode_index(raw, 11, len(data)) is None
    assert decode_index(raw[:-1], 10, len(data)) is None
    damaged = bytearray(raw)
    damaged[20] ^= 1
    assert decode_index(bytes(damaged), 10, len(data)) is None
    assert decode_index(b"", 10, 0) is None


def test_an_index_costs_about_8_bytes_an_entry() -> None:
    """Every open segment's index stays in memory: 50,000 indexed batches (a 350 MB
    segment of 7 KB batches) hold 4 x 50,000 entries in well under 16 bytes each (Python
    int lists took 40)."""
    import tracemalloc

    n = 50_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        builder = IndexBuilder(0, 4096)
        for i in range(n):  # fresh ints each time, as appends and scans make them
            builder.add(BatchInfo(i * 7000, 7000, 64 * i, 64, 6400, 10**12 + i, 10**12 + i))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(builder.index.offsets) == n
    assert held < 4 * n * 16, held / n
    raw = encode_index(builder.index)
    assert decode_index(raw, 0, n * 7000) == builder.index


def test_plan_recovery() -> None:
    files = {
        log_name(0): 100,
        index_name(0): 64,
        log_name(50): 70,
        index_name(99): 64,
        "00000000000000000050.index.tmp": 3,
    }
    plan = plan_recovery(files)
    assert [(s.base_offset, s.log_size, s.has_index, s.is_tail) for s in plan.segments] == [
        (0, 100, True, False),
        (50, 70, False, True),
    ]
    assert plan.strays == ["00000000000000000050.index.tmp", index_name(99)]


def _seg(base: int, n: int, nbytes: int, last_ts: int) -> SegmentSummary:
    return SegmentSummary(base, base + n, nbytes, last_ts - 1, last_ts, nbytes + 40)


def test_retention_deletes_whole_segments_only() -> None:
    segs = [_seg(0, 10, 100, 1000), _seg(10, 10, 100, 2000), _seg(20, 10, 100, 3000)]
    # 35 records (5 in the active segment), keep at least 15 / 20 / 5
    assert retention_deletions(segs, Retention(max_records=15), 0, tail_records=5) == 2
    assert retention_deletions(segs, Retention(max_records=20), 0, tail_records=5) == 1
    assert retention_deletions(segs, Retention(max_records=5), 0, tail_records=5) == 3
    assert retention_deletions(segs, Retention(max_records=50), 0, tail_records=5) == 0
    assert retention_deletions(segs, Retention(max_bytes=150), 0, tail_bytes=0) == 1
    assert retention_deletions(segs, Retention(max_age_ms=1500), 3000) == 1
    assert retention_deletions(segs, Retention(max_age_ms=10), 10_000) == 3
    assert retention_deletions(segs, Retention(), 10_000) == 0
    empty = [SegmentSummary(0, 0, 0, None, None, 0), *segs]
    assert retention_deletions(empty, Retention(), 0) == 1


def test_batch_dataclass_next_offset() -> None:
    b = Batch(5, [b"a", b"b"], [1, 1], [None, None], [None, None])
    assert b.next_offset == 7
