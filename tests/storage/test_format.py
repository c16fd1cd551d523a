"""The golden bytes of docs/storage-format.md are what felix_core.segments writes and reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from felix_core.segments import (
    IndexBuilder,
    decode_batch,
    decode_index,
    encode_batch,
    encode_index,
    scan,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage-format.md"
TS = 1_700_000_000_000


def _golden(name: str) -> bytes:
    text = DOC.read_text()
    found = re.search(rf"<!-- golden: {name} -->\n```text\n(.*?)```", text, re.S)
    assert found, f"no golden block {name!r} in {DOC.name}"
    return bytes.fromhex(found.group(1))


def _batch() -> bytes:
    return encode_batch(5, [b"hi", b"yo"], [TS, TS], [b"k", None], [None, {"a": b"1"}])


def test_golden_batch() -> None:
    golden = _golden("batch")
    assert _batch() == golden
    batch, end = decode_batch(golden)
    assert end == len(golden) == 81
    assert (batch.base_offset, batch.payloads, batch.keys, batch.headers) == (
        5,
        [b"hi", b"yo"],
        [b"k", None],
        [None, {"a": b"1"}],
    )
    assert batch.timestamps_ms == [TS, TS]


def test_golden_index() -> None:
    golden = _golden("index")
    builder = IndexBuilder(5)
    builder.add(scan(_batch()).batches[0])
    assert encode_index(builder.index) == golden
    index = decode_index(golden, 5, 81)
    assert index is not None
    assert index.summary.next_offset == 7 and index.summary.record_bytes == 7


@pytest.mark.parametrize("flip", [0, 2, 3, 4, 8, 12, 24, 44, 80])
def test_any_flipped_byte_of_the_golden_batch_is_refused(flip: int) -> None:
    damaged = bytearray(_golden("batch"))
    damaged[flip] ^= 0x01
    assert scan(bytes(damaged)).batches == []


def test_the_crc32_flag_is_read() -> None:
    import zlib

    raw = bytearray(_golden("batch"))
    raw[3] = 0x01
    raw[8:12] = zlib.crc32(bytes(raw[12:]), zlib.crc32(bytes(raw[:8]))).to_bytes(4, "little")
    batch, _ = decode_batch(bytes(raw))
    assert batch.payloads == [b"hi", b"yo"]
