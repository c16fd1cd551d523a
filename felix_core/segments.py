"""The on-disk format of a durable log (version 1): segments, batches, indexes, and the
decisions of recovery and retention. Pure: bytes in, bytes and dataclasses out.

Theory of operation
-------------------
A durable log is a directory of *segments*. A segment holds the records from its *base
offset* (in its name: ``{base:020d}.log``) up to the next segment's base offset, as a run of
*record batches* written back to back; its sparse index (``{base:020d}.index``) is written
once, when the segment is closed. docs/storage-format.md specifies every byte, with golden
bytes that tests/storage/test_format.py checks.

A batch is one append: a fixed 44-byte header (magic ``FX``, format version, flags naming
the checksum, total length, checksum, base offset, record count, first and last timestamp)
then the records. The checksum covers every byte of the batch except itself, so a torn or
rotten batch is never decoded: :func:`scan` stops at the first batch that is incomplete or
fails its checksum and says whether that is a *torn tail* (nothing valid can follow: the
batch runs past the end, or it is the last thing in the file, or only zeros follow) or
*corruption* (bytes follow a bad batch). Recovery truncates a torn tail; corruption is
reported and the log becomes read-only below it (see :mod:`felix_core.disklog`).

The checksum is CRC32C (Castagnoli) from the ``crc32c`` package (a C implementation using
the CPU's CRC instructions when present). Flag bit 0 set would mean CRC-32 (zlib) instead;
this implementation writes CRC32C only and reads both.

Indexes are sparse: one offset entry and one time entry per :data:`INDEX_INTERVAL` bytes of
batches (at batch boundaries), so finding an offset or a time costs a bisect plus a read of
at most one interval (and one batch). The index header repeats the segment's summary (next
offset, record count and bytes, timestamps, the length of the ``.log`` it describes), so a
closed segment whose index is valid and whose length matches is trusted without reading it;
a missing, damaged or stale index is rebuilt from a scan.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import chain, repeat
from typing import NamedTuple

from crc32c import crc32c

from felix_core.log import Retention, record_size

__all__ = [
    "BATCH_HEADER_SIZE",
    "FORMAT_VERSION",
    "INDEX_INTERVAL",
    "MAX_BATCH_SIZE",
    "Batch",
    "BatchInfo",
    "CorruptBatch",
    "IndexBuilder",
    "RecoveryPlan",
    "ScanResult",
    "SegmentIndex",
    "SegmentPlan",
    "SegmentSummary",
    "TailState",
    "decode_batch",
    "decode_index",
    "encode_batch",
    "encode_index",
    "encode_stamped_batch",
    "index_name",
    "log_name",
    "parse_segment_name",
    "plan_recovery",
    "retention_deletions",
    "scan",
    "scan_chunks",
]

MAGIC = b"FX"
FORMAT_VERSION = 1
FLAG_CRC32 = 0x01
"""Flag bit 0: the checksum is CRC-32 (zlib) rather than CRC32C."""
BATCH_HEADER_SIZE = 44
MAX_BATCH_SIZE = (64 << 20) + (1 << 20)
"""Largest batch a reader accepts: 64 MiB of records plus room for the framing."""
INDEX_INTERVAL = 4096
"""Default bytes of batches between two sparse index entries (as the reference)."""

INDEX_MAGIC = b"FXI"
_HEADER = struct.Struct("<2sBBII")  # magic, version, flags, length, crc
_HEAD_NO_CRC = struct.Struct("<2sBBI")  # the part of the header before the crc
_BODY_HEAD = struct.Struct("<QIIqq")  # base offset, count, record bytes, first/last ts
_REC_HEAD = struct.Struct("<IIB")  # payload length, timestamp delta, flags
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_REC_KEY = 0x01
_REC_HEADERS = 0x02
_INDEX_HEADER = struct.Struct("<3sBIQQIQqqQI")
_OFFSET_ENTRY = struct.Struct("<II")  # offset - base, position
_TIME_ENTRY = struct.Struct("<qI")  # first timestamp of the batch, offset - base


class CorruptBatch(ValueError):
    """Bytes that are not a valid batch (bad magic, version, length or checksum, or records
    that do not fit the length). Raised by :func:`decode_batch`; :func:`scan` never raises
    it but reports where it stopped."""


def _checksum(flags: int, head: bytes | memoryview, rest: bytes | memoryview) -> int:
    if flags & FLAG_CRC32:
        return zlib.crc32(rest, zlib.crc32(head))
    return crc32c(rest, crc32c(head))


# -- names --------------------------------------------------------------------------------


def log_name(base_offset: int) -> str:
    """The file name of the segment starting at ``base_offset``."""
    return f"{base_offset:020d}.log"


def index_name(base_offset: int) -> str:
    """The file name of the index of the segment starting at ``base_offset``."""
    return f"{base_offset:020d}.index"


def parse_segment_name(name: str) -> tuple[int, str] | None:
    """Parse ``{base:020d}.log`` / ``.index``.

    Returns:
        ``(base_offset, "log" | "index")``, or None for any other name.
    """
    stem, dot, ext = name.partition(".")
    if dot != "." or ext not in ("log", "index") or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), ext


# -- batches ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: consecutive records from ``base_offset``."""

    base_offset: int
    """Offset of the first record."""
    payloads: list[bytes]
    """Record payloads."""
    timestamps_ms: list[int]
    """Record timestamps (integer milliseconds), never decreasing."""
    keys: list[bytes | None]
    """Record keys (None: no key)."""
    headers: list[dict[str, bytes] | None]
    """Record headers (None: no headers)."""

    @property
    def next_offset(self) -> int:
        """The offset after the last record."""
        return self.base_offset + len(self.payloads)

    def byte_size(self) -> int:
        """The records' byte size as the log counts it (:func:`felix_core.log.record_size`)."""
        return sum(map(record_size, self.payloads, self.keys, self.headers))


def encode_batch(
    base_offset: int,
    payloads: Sequence[bytes],
    timestamps_ms: Sequence[int],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[dict[str, bytes] | None] | None = None,
) -> bytes:
    """Encode records as one batch.

    Args:
        base_offset: the offset of the first record (>= 0).
        payloads: at least one payload.
        timestamps_ms: one timestamp per record, never decreasing, spanning < 2**32 ms.
        keys: None, or one optional key per record.
        headers: None, or one optional header dict per record (empty dicts: None).

    Returns:
        The batch's bytes.

    Raises:
        ValueError: the sequences differ in length, there are no records, timestamps
            decrease, or a field is too large for the format.
    """
    n = len(payloads)
    if n == 0:
        raise ValueError("a batch holds at least one record")
    if len(timestamps_ms) != n or (keys is not None and len(keys) != n):
        raise ValueError("timestamps and keys must be as long as payloads")
    if headers is not None and len(headers) != n:
        raise ValueError("headers must be as long as payloads")
    first_ts = timestamps_ms[0]
    last_ts = timestamps_ms[-1]
    plain = (
        first_ts == last_ts
        and timestamps_ms.count(first_ts) == n
        and (keys is None or keys.count(None) == n)
        and (headers is None or not any(headers))
    )
    if plain:  # the common case, one timestamp and no keys or headers: no Python loop
        records, nbytes = _plain_records(payloads)
    else:
        records, nbytes = _records(payloads, timestamps_ms, keys, headers)
    length = BATCH_HEADER_SIZE + len(records)
    if length > MAX_BATCH_SIZE:
        raise ValueError(f"batch of {length} bytes exceeds {MAX_BATCH_SIZE}")
    head = _HEAD_NO_CRC.pack(MAGIC, FORMAT_VERSION, 0, length)
    body_head = _BODY_HEAD.pack(base_offset, n, nbytes, first_ts, last_ts)
    crc = crc32c(records, crc32c(body_head, crc32c(head)))
    return b"".join((head, _U32.pack(crc), body_head, records))


def encode_stamped_batch(
    base_offset: int,
    payloads: Sequence[bytes],
    timestamp_ms: int,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[dict[str, bytes] | None] | None = None,
) -> tuple[bytes, int]:
    """Encode records that share one timestamp (an append's) as one batch: the bytes of
    :func:`encode_batch` with that timestamp for each record, and the records' byte size
    (the header's), without building a list of timestamps or checking them.

    Raises:
        ValueError: as :func:`encode_batch`.
    """
    n = len(payloads)
    if n == 0 or (keys is not None and len(keys) != n):
        raise ValueError("a batch holds at least one record, and one key per record")
    if headers is not None and len(headers) != n:
        raise ValueError("headers must be as long as payloads")
    if (keys is None or keys.count(None) == n) and (headers is None or not any(headers)):
        records, nbytes = _plain_records(payloads)
    else:
        records, nbytes = _records(payloads, [timestamp_ms] * n, keys, headers)
    length = BATCH_HEADER_SIZE + len(records)
    if length > MAX_BATCH_SIZE:
        raise ValueError(f"batch of {length} bytes exceeds {MAX_BATCH_SIZE}")
    head = _HEAD_NO_CRC.pack(MAGIC, FORMAT_VERSION, 0, length)
    body_head = _BODY_HEAD.pack(base_offset, n, nbytes, timestamp_ms, timestamp_ms)
    crc = crc32c(records, crc32c(body_head, crc32c(head)))
    return b"".join((head, _U32.pack(crc), body_head, records)), nbytes


def _plain_records(payloads: Sequence[bytes]) -> tuple[bytes, int]:
    """The records of a batch without keys, headers or timestamp deltas, and their byte
    size: each a 9-byte head (its length, two zero fields) then the payload, built by C
    loops (one ``join`` when every payload has the same length)."""
    lengths = list(map(len, payloads))
    first = lengths[0]
    if lengths.count(first) == len(lengths):
        rec_head = _REC_HEAD.pack(first, 0, 0)
        return rec_head + rec_head.join(payloads), first * len(lengths)
    zeros = repeat(0)
    heads = map(_REC_HEAD.pack, lengths, zeros, zeros)
    return b"".join(chain.from_iterable(zip(heads, payloads, strict=True))), sum(lengths)


def _records(
    payloads: Sequence[bytes],
    timestamps_ms: Sequence[int],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[dict[str, bytes] | None] | None,
) -> tuple[bytes, int]:
    """The records of a batch in general (keys, headers, timestamp deltas), and their byte
    size.

    Raises:
        ValueError: timestamps decrease.
    """
    parts: list[bytes] = []
    append = parts.append
    first_ts = prev = timestamps_ms[0]
    nbytes = 0
    for i, payload in enumerate(payloads):
        ts = timestamps_ms[i]
        if ts < prev:
            raise ValueError("timestamps must not decrease")
        prev = ts
        key = keys[i] if keys is not None else None
        hdrs = headers[i] if headers is not None else None
        flags = (_REC_KEY if key is not None else 0) | (_REC_HEADERS if hdrs else 0)
        append(_REC_HEAD.pack(len(payload), ts - first_ts, flags))
        nbytes += len(payload)
        if key is not None:
            append(_U32.pack(len(key)))
            append(key)
            nbytes += len(key)
        if hdrs:
            append(_U16.pack(len(hdrs)))
            for name, value in hdrs.items():
                raw = name.encode()
                append(_U16.pack(len(raw)))
                append(raw)
                append(_U32.pack(len(value)))
                append(value)
                nbytes += len(raw) + len(value)
        append(payload)
    return b"".join(parts), nbytes


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Where a valid batch is and what its header says (a scan's unit)."""

    position: int
    """Byte position of the batch in the scanned data."""
    length: int
    """The batch's length in bytes."""
    base_offset: int
    """Offset of its first record."""
    count: int
    """Number of records."""
    record_bytes: int
    """The records' byte size as the log counts it (from the header)."""
    first_timestamp_ms: int
    """Timestamp of its first record."""
    last_timestamp_ms: int
    """Timestamp of its last record."""

    @property
    def next_offset(self) -> int:
        """The offset after its last record."""
        return self.base_offset + self.count

    @property
    def end(self) -> int:
        """Byte position just after the batch."""
        return self.position + self.length


def _check_header(data: bytes | memoryview, pos: int) -> tuple[str, int]:
    """Check the batch at ``pos``: ``("ok", length)``; ``("short", 0)`` when fewer than a
    header's bytes or fewer than its length remain; ``("header", 0)`` when the header is
    invalid (its length cannot be trusted); ``("checksum", length)`` when the checksum
    fails."""
    end = len(data)
    if end - pos < _HEADER.size:
        return "short", 0
    magic, version, flags, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC or version != FORMAT_VERSION or flags & ~FLAG_CRC32:
        return "header", 0
    if length < BATCH_HEADER_SIZE or length > MAX_BATCH_SIZE:
        return "header", 0
    if end - pos < length:
        return "short", 0
    view = memoryview(data)
    if _checksum(flags, view[pos : pos + 8], view[pos + 12 : pos + length]) != crc:
        return "checksum", length
    return "ok", length


def decode_batch(data: bytes | memoryview, pos: int = 0) -> tuple[Batch, int]:
    """Decode the batch at ``data[pos:]``.

    Returns:
        The batch and the position just after it.

    Raises:
        CorruptBatch: no complete valid batch starts at ``pos``.
    """
    status, length = _check_header(data, pos)
    if status != "ok":
        raise CorruptBatch(f"batch at {pos}: {status}")
    base, n, nbytes, first_ts, last_ts = _BODY_HEAD.unpack_from(data, pos + _HEADER.size)
    raw = bytes(data[pos : pos + length])
    p = BATCH_HEADER_SIZE
    payloads: list[bytes] = []
    stamps: list[int] = []
    keys: list[bytes | None] = []
    headers: list[dict[str, bytes] | None] = []
    try:
        for _ in range(n):
            size, delta, flags = _REC_HEAD.unpack_from(raw, p)
            p += _REC_HEAD.size
            key: bytes | None = None
            if flags & _REC_KEY:
                (klen,) = _U32.unpack_from(raw, p)
                key = _take(raw, p + 4, klen)
                p += 4 + klen
            hdrs: dict[str, bytes] | None = None
            if flags & _REC_HEADERS:
                (count,) = _U16.unpack_from(raw, p)
                p += 2
                hdrs = {}
                for _ in range(count):
                    (nlen,) = _U16.unpack_from(raw, p)
                    name = _take(raw, p + 2, nlen).decode()
                    p += 2 + nlen
                    (vlen,) = _U32.unpack_from(raw, p)
                    hdrs[name] = _take(raw, p + 4, vlen)
                    p += 4 + vlen
            payloads.append(_take(raw, p, size))
            p += size
            stamps.append(first_ts + delta)
            keys.append(key)
            headers.append(hdrs)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptBatch(f"records do not fit the batch at {pos}") from exc
    batch = Batch(base, payloads, stamps, keys, headers)
    if p != length or (stamps and stamps[-1] != last_ts) or batch.byte_size() != nbytes:
        raise CorruptBatch(f"records do not fit the batch at {pos}")
    return batch, pos + length


def _take(raw: bytes, p: int, n: int) -> bytes:
    if p + n > len(raw):
        raise CorruptBatch("a field runs past the batch")
    return raw[p : p + n]


class TailState(Enum):
    """How the scanned bytes end."""

    CLEAN = "clean"
    """Every byte belongs to a valid batch."""
    TORN = "torn"
    """An incomplete or invalid last batch (or zeros) ends the data: a torn write."""
    CORRUPT = "corrupt"
    """An invalid batch is followed by more bytes: damage inside the data."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What :func:`scan` found."""

    batches: list[BatchInfo]
    """The valid batches, in order, up to the first problem."""
    valid_end: int
    """Byte position after the last valid batch (the length to keep)."""
    state: TailState
    """How the data ends after ``valid_end``."""
    next_offset: int | None
    """The offset after the last valid batch (None when there is none)."""


def scan(data: bytes | memoryview, expected_base: int | None = None) -> ScanResult:
    """Walk the batches of a segment's bytes without decoding records. Never raises.

    Args:
        data: the bytes, from the start of a segment.
        expected_base: when given, the first batch must start at this offset. Each later
            batch must start at the offset the previous one ended; a batch that does not
            is treated like one that fails its checksum.

    Returns:
        The valid batches, where they end, and whether the rest is a torn tail or
        corruption (see :class:`TailState`).
    """
    pos = 0
    end = len(data)
    batches: list[BatchInfo] = []
    expected = expected_base
    state = TailState.CLEAN
    while pos < end:
        status, length = _check_header(data, pos)
        if status == "short":
            state = TailState.TORN
            break
        if status != "ok":
            state = _after_bad(data, pos, length or None)
            break
        base, count, nbytes, first_ts, last_ts = _BODY_HEAD.unpack_from(data, pos + _HEADER.size)
        if count == 0 or first_ts > last_ts or (expected is not None and base != expected):
            state = _after_bad(data, pos, length)
            break
        batches.append(BatchInfo(pos, length, base, count, nbytes, first_ts, last_ts))
        expected = base + count
        pos += length
    return ScanResult(batches, pos, state, batches[-1].next_offset if batches else expected_base)


SCAN_CHUNK = 4 << 20
"""Bytes :func:`scan_chunks` reads at a time (more when one batch is larger)."""


def scan_chunks(
    read: Callable[[int, int], bytes],
    size: int,
    expected_base: int | None = None,
    chunk: int = SCAN_CHUNK,
) -> ScanResult:
    """:func:`scan` a file of ``size`` bytes read a chunk at a time, so that memory stays
    bounded by one chunk (or one batch). Same result as scanning the whole file at once.

    Args:
        read: ``read(pos, n)`` returns up to ``n`` bytes of the file from ``pos``.
        size: the file's length.
        expected_base: as for :func:`scan`.
        chunk: bytes per read.

    Returns:
        The batches (positions in the file), where they end, and how the file ends.
    """
    pos = 0
    batches: list[BatchInfo] = []
    expected = expected_base
    while pos < size:
        want = min(max(chunk, BATCH_HEADER_SIZE), size - pos)
        data = read(pos, want)
        if len(data) >= 8:
            claimed = int.from_bytes(data[4:8], "little")
            if want < claimed <= MAX_BATCH_SIZE:
                data = read(pos, min(claimed, size - pos))
        result = scan(data, expected)
        batches.extend(replace(b, position=b.position + pos) for b in result.batches)
        expected = result.next_offset
        at_end = pos + len(data) >= size or not data
        if result.state is TailState.CLEAN and data:
            pos += result.valid_end
            continue
        if result.state is TailState.TORN and not at_end and result.valid_end > 0:
            pos += result.valid_end  # a batch cut by the chunk's end: read on from it
            continue
        bad = pos + result.valid_end
        state = result.state
        if state is TailState.TORN and not at_end:
            state = _zeros_to_end(read, pos + len(data), size)
        return ScanResult(batches, bad, state, expected)
    return ScanResult(batches, pos, TailState.CLEAN, expected)


def _zeros_to_end(read: Callable[[int, int], bytes], pos: int, size: int) -> TailState:
    while pos < size:
        data = read(pos, min(SCAN_CHUNK, size - pos))
        if not data:
            break
        if data.count(0) != len(data):
            return TailState.CORRUPT
        pos += len(data)
    return TailState.TORN


def _after_bad(data: bytes | memoryview, pos: int, length: int | None) -> TailState:
    """A bad batch at ``pos`` (``length`` None when its header cannot be trusted): torn if
    it is the last thing in the data or only zeros follow it, else corruption."""
    if length is not None and pos + length >= len(data):
        return TailState.TORN
    rest = bytes(data[pos + (length or 0) :])
    return TailState.TORN if rest.count(0) == len(rest) else TailState.CORRUPT


# -- indexes ------------------------------------------------------------------------------


class SegmentSummary(NamedTuple):
    """What a segment holds, as far as retention and reads need to know. A named tuple, not
    a frozen dataclass: the active segment's is made anew on every append, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs four times as
    much."""

    base_offset: int
    """The segment's first offset (its name)."""
    next_offset: int
    """The offset after its last record (``base_offset`` when empty)."""
    record_bytes: int
    """Sum of its records' byte sizes (as the log counts them)."""
    first_timestamp_ms: int | None
    """Timestamp of its first record (None when empty)."""
    last_timestamp_ms: int | None
    """Timestamp of its last record (None when empty)."""
    file_size: int
    """Length in bytes of its ``.log`` file."""

    @property
    def record_count(self) -> int:
        """Number of records."""
        return self.next_offset - self.base_offset


def _unsigned() -> array[int]:
    return array("Q")


def _signed() -> array[int]:
    return array("q")


@dataclass(slots=True)
class SegmentIndex:
    """A segment's sparse indexes and summary (mutable: :class:`IndexBuilder` grows it).

    The entries are machine-integer arrays, 8 bytes an entry: every segment's index stays
    in memory while its log is open, and as lists of Python ints they cost 40 bytes an
    entry (25 MiB per GiB of 7 KB batches, against 5 MiB)."""

    summary: SegmentSummary
    """The segment's summary."""
    offsets: array[int] = field(default_factory=_unsigned)
    """Offsets of indexed batches (ascending)."""
    positions: array[int] = field(default_factory=_unsigned)
    """Byte positions of those batches."""
    times: array[int] = field(default_factory=_signed)
    """First timestamps of the batches of the time index (ascending)."""
    time_offsets: array[int] = field(default_factory=_unsigned)
    """Their base offsets."""

    def position_for(self, offset: int) -> int:
        """The position of an indexed batch at or before ``offset`` (0 if none)."""
        i = bisect_right(self.offsets, offset) - 1
        return self.positions[i] if i >= 0 else 0

    def offset_for_time(self, timestamp_ms: int) -> int:
        """An offset at or before the first record with timestamp >= ``timestamp_ms``:
        the base of the last indexed batch that starts strictly earlier (or the segment's
        base)."""
        i = bisect_right(self.times, timestamp_ms - 1) - 1
        return self.time_offsets[i] if i >= 0 else self.summary.base_offset


class IndexBuilder:
    """Builds a segment's :class:`SegmentIndex` as batches are added (appends, or a scan
    at recovery)."""

    __slots__ = ("_bytes", "_first_ts", "_interval", "_last_ts", "_next", "_since", "index")

    def __init__(self, base_offset: int, interval: int = INDEX_INTERVAL) -> None:
        """Start the index of an empty segment.

        Args:
            base_offset: the segment's first offset.
            interval: bytes of batches between index entries (the first batch is always
                indexed).
        """
        self._interval = interval
        self._since = interval  # so that the first batch gets an entry
        self._next = base_offset
        self._bytes = 0
        self._first_ts: int | None = None
        self._last_ts: int | None = None
        self.index = SegmentIndex(SegmentSummary(base_offset, base_offset, 0, None, None, 0))

    def add(self, info: BatchInfo) -> None:
        """Account one batch appended at ``info.position`` (a scan's)."""
        self.add_batch(
            info.position,
            info.length,
            info.base_offset,
            info.count,
            info.record_bytes,
            info.first_timestamp_ms,
            info.last_timestamp_ms,
        )

    def add_batch(
        self,
        position: int,
        length: int,
        base_offset: int,
        count: int,
        record_bytes: int,
        first_timestamp_ms: int,
        last_timestamp_ms: int,
    ) -> None:
        """Account one batch appended at ``position``: :meth:`add` with the fields of a
        :class:`BatchInfo` (an append's, which makes no BatchInfo)."""
        idx = self.index
        if self._since >= self._interval:
            idx.offsets.append(base_offset)
            idx.positions.append(position)
            idx.times.append(first_timestamp_ms)
            idx.time_offsets.append(base_offset)
            self._since = 0
        self._since += length
        if self._first_ts is None:
            self._first_ts = first_timestamp_ms
        self._last_ts = last_timestamp_ms
        self._bytes += record_bytes
        self._next = base_offset + count
        idx.summary = SegmentSummary(
            idx.summary.base_offset,
            self._next,
            self._bytes,
            self._first_ts,
            last_timestamp_ms,
            position + length,
        )


def encode_index(index: SegmentIndex) -> bytes:
    """Encode a closed segment's index file (header, offset entries, time entries, CRC32C
    of everything before it)."""
    s = index.summary
    base = s.base_offset
    head = _INDEX_HEADER.pack(
        INDEX_MAGIC,
        FORMAT_VERSION,
        len(index.offsets),
        base,
        s.next_offset,
        0,
        s.record_bytes,
        s.first_timestamp_ms if s.first_timestamp_ms is not None else -1,
        s.last_timestamp_ms if s.last_timestamp_ms is not None else -1,
        s.file_size,
        len(index.times),
    )
    rebase = repeat(base)
    offsets = zip(map(int.__sub__, index.offsets, rebase), index.positions, strict=False)
    times = zip(index.times, map(int.__sub__, index.time_offsets, rebase), strict=False)
    body = b"".join(
        (
            head,
            struct.pack(f"<{2 * len(index.offsets)}I", *chain.from_iterable(offsets)),
            struct.pack("<" + "qI" * len(index.times), *chain.from_iterable(times)),
        )
    )
    return body + _U32.pack(crc32c(body))


def decode_index(data: bytes, base_offset: int, log_size: int) -> SegmentIndex | None:
    """Decode an index file and check it describes the segment as it is.

    Args:
        data: the ``.index`` file's bytes.
        base_offset: the segment's base offset (from its name).
        log_size: the current length of the segment's ``.log``.

    Returns:
        The index, or None when it is damaged, of another version, or *stale* (it does not
        describe a ``.log`` of ``log_size`` bytes at ``base_offset``): rebuild it.
    """
    if len(data) < _INDEX_HEADER.size + 4:
        return None
    body = data[:-4]
    if _U32.unpack_from(data, len(data) - 4)[0] != crc32c(body):
        return None
    (magic, version, n_off, base, nxt, _, nbytes, first, last, size, n_time) = (
        _INDEX_HEADER.unpack_from(body, 0)
    )
    expected = _INDEX_HEADER.size + n_off * _OFFSET_ENTRY.size + n_time * _TIME_ENTRY.size
    if magic != INDEX_MAGIC or version != FORMAT_VERSION or len(body) != expected:
        return None
    if base != base_offset or size != log_size or nxt < base:
        return None
    p = _INDEX_HEADER.size
    entries = struct.unpack_from(f"<{2 * n_off}I", body, p)
    offsets = array("Q", map(base.__add__, entries[0::2]))
    positions = array("Q", entries[1::2])
    entries = struct.unpack_from("<" + "qI" * n_time, body, p + n_off * _OFFSET_ENTRY.size)
    times = array("q", entries[0::2])
    time_offsets = array("Q", map(base.__add__, entries[1::2]))
    empty = nxt == base
    summary = SegmentSummary(
        base, nxt, nbytes, None if empty else first, None if empty else last, size
    )
    return SegmentIndex(summary, offsets, positions, times, time_offsets)


# -- recovery and retention decisions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """One segment found in a log directory."""

    base_offset: int
    """Its base offset."""
    log_size: int
    """Length of its ``.log``."""
    has_index: bool
    """Whether an ``.index`` file exists (it may still be stale or damaged)."""
    is_tail: bool
    """Whether it is the last segment (the one appends went to): always scanned."""


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """What recovery must do with a log directory, decided from its file names and sizes."""

    segments: list[SegmentPlan]
    """The segments in offset order."""
    strays: list[str]
    """Files to delete: indexes without a ``.log``, temporary files, unknown names."""


def plan_recovery(files: Mapping[str, int]) -> RecoveryPlan:
    """Decide what to open, scan and delete in a log directory.

    Args:
        files: each file name in the directory and its length.

    Returns:
        The segments in offset order (the last one is the tail) and the stray files.
    """
    logs: dict[int, int] = {}
    indexes: set[int] = set()
    strays: list[str] = []
    for name, size in files.items():
        parsed = parse_segment_name(name)
        if parsed is None:
            strays.append(name)
        elif parsed[1] == "log":
            logs[parsed[0]] = size
        else:
            indexes.add(parsed[0])
    strays.extend(index_name(base) for base in sorted(indexes - logs.keys()))
    bases = sorted(logs)
    segments = [
        SegmentPlan(base, logs[base], base in indexes, i == len(bases) - 1)
        for i, base in enumerate(bases)
    ]
    return RecoveryPlan(segments, sorted(strays))


def retention_deletions(
    closed: Iterable[SegmentSummary],
    retention: Retention,
    now_ms: int,
    *,
    tail_records: int = 0,
    tail_bytes: int = 0,
    totals: tuple[int, int] | None = None,
) -> int:
    """How many of the oldest closed segments retention deletes (whole segments only).

    A segment goes when every one of its records is beyond a limit: the records and bytes
    left after deleting it (the active segment's ``tail_records`` / ``tail_bytes``
    included) still reach ``max_records`` / ``max_bytes``, so the log keeps at least the
    limit and at most the limit plus one segment; or its last record is older than
    ``max_age_ms``; or it is empty. Deletion stops at the first segment kept, so the log
    stays contiguous.

    Args:
        closed: the *closed* segments, oldest first (the active one is never deleted: it is
            rolled first, by age or size).
        retention: the limits.
        now_ms: the current time.
        tail_records: records of the active segment.
        tail_bytes: record bytes of the active segment.
        totals: the records and record bytes of all of ``closed``, when the caller keeps
            them: then ``closed`` is only iterated as far as deletion goes (a log with
            thousands of segments checks retention on every append).

    Returns:
        The number of leading segments to delete.
    """
    if totals is None:
        closed = list(closed)
        totals = (sum(s.record_count for s in closed), sum(s.record_bytes for s in closed))
    total_records = totals[0] + tail_records
    total_bytes = totals[1] + tail_bytes
    n = 0
    for s in closed:
        rest_records = total_records - s.record_count
        rest_bytes = total_bytes - s.record_bytes
        over = (retention.max_records is not None and rest_records >= retention.max_records) or (
            retention.max_bytes is not None and rest_bytes >= retention.max_bytes
        )
        aged = (
            retention.max_age_ms is not None
            and s.last_timestamp_ms is not None
            and s.last_timestamp_ms < now_ms - retention.max_age_ms
        )
        if not (over or aged or s.record_count == 0):
            break
        total_records = rest_records
        total_bytes = rest_bytes
        n += 1
    return n
