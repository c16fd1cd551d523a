"""Frame header and FrameDecoder: strict header checks, bounds, every split point."""

from __future__ import annotations

import struct

import pytest

from felix_proto.errors import BadFrame, FrameTooLarge, LocalProtocolError, UnsupportedVersion
from felix_proto.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAGIC,
    FrameDecoder,
    FrameHeader,
    encode_header,
    parse_header,
)


def frame(payload: bytes, *, version: int = 2, flags: int = 0, length: int | None = None) -> bytes:
    declared = len(payload) if length is None else length
    return struct.pack(">IHHI", MAGIC, version, flags, declared) + payload


def drain(decoder: FrameDecoder) -> list[bytes]:
    out = []
    while (payload := decoder.next_frame()) is not None:
        out.append(payload)
    return out


PAYLOADS = [b"", b"a", b"hello world", bytes(range(256)) * 3]
STREAM = b"".join(frame(p) for p in PAYLOADS)


def test_header_layout() -> None:
    assert encode_header(5) == b"FLX1\x00\x02\x00\x00\x00\x00\x00\x05"
    assert len(encode_header(0)) == HEADER_SIZE
    assert parse_header(encode_header(7, flags=3, version=1)) == FrameHeader(1, 3, 7)


@pytest.mark.parametrize(
    ("length", "flags", "version"), [(-1, 0, 2), (1 << 32, 0, 2), (0, 1 << 16, 2), (0, 0, -1)]
)
def test_encode_header_rejects_out_of_range(length: int, flags: int, version: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_header(length, flags, version)


def test_parse_header_needs_magic_and_twelve_bytes() -> None:
    with pytest.raises(BadFrame):
        parse_header(b"FLX1\x00\x02")
    with pytest.raises(BadFrame):
        parse_header(b"FLX2" + bytes(8))


def test_whole_stream_at_once() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM)
    assert drain(decoder) == PAYLOADS
    assert decoder.buffered == 0


def test_every_split_point() -> None:
    for split in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        got = []
        for part in (STREAM[:split], STREAM[split:]):
            decoder.feed(part)
            got.extend(drain(decoder))
        assert got == PAYLOADS, split


def test_byte_by_byte() -> None:
    decoder = FrameDecoder()
    got = []
    for i in range(len(STREAM)):
        decoder.feed(STREAM[i : i + 1])
        got.extend(drain(decoder))
    assert got == PAYLOADS


def test_many_small_frames_compact_buffer() -> None:
    payload = b"x" * 100
    decoder = FrameDecoder()
    data = frame(payload) * 2000 + frame(payload)[:5]
    decoder.feed(data)
    assert drain(decoder) == [payload] * 2000
    assert decoder.buffered == 5


def test_bad_magic_is_fatal_and_sticky() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"FLX2" + frame(b"abc")[4:])
    with pytest.raises(BadFrame) as info:
        decoder.next_frame()
    assert info.value.fatal
    with pytest.raises(BadFrame):
        decoder.next_frame()
    with pytest.raises(BadFrame):
        decoder.feed(b"more")


def test_version_one_recognised() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b'{"type":"ok"}', version=1))
    with pytest.raises(UnsupportedVersion) as info:
        decoder.next_frame()
    assert info.value.version == 1
    assert info.value.supported == (2,)
    assert info.value.details == {"supported_versions": [2]}
    assert "version 1" in str(info.value)


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_other_versions(version: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"", version=version))
    with pytest.raises(UnsupportedVersion) as info:
        decoder.next_frame()
    assert info.value.version == version
    assert info.value.fatal


@pytest.mark.parametrize("flags", [1, 0x8000, 0x0019])
def test_unknown_flags_rejected_not_masked(flags: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"\x90", flags=flags))
    with pytest.raises(BadFrame, match="flag"):
        decoder.next_frame()


def test_oversize_declared_length_before_any_payload() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"", length=DEFAULT_MAX_FRAME_SIZE + 1))  # header only
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.error_code == 204
    assert info.value.details["max_frame_size"] == DEFAULT_MAX_FRAME_SIZE


def test_custom_limit_and_setter() -> None:
    decoder = FrameDecoder(max_frame_size=4)
    decoder.feed(frame(b"1234"))
    assert decoder.next_frame() == b"1234"
    decoder.max_frame_size = 3
    assert decoder.max_frame_size == 3
    decoder.feed(frame(b"123"))
    assert decoder.next_frame() == b"123"
    decoder.feed(frame(b"1234")[:HEADER_SIZE])
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame_size=-1)
    with pytest.raises(LocalProtocolError):
        FrameDecoder().max_frame_size = 1 << 32


def test_feed_caps_incomplete_data() -> None:
    # Fed without draining: once more than one maximum frame is buffered, feed checks the
    # header at the front, so an oversize declaration is caught while feeding.
    decoder = FrameDecoder(max_frame_size=16)
    decoder.feed(frame(b"", length=1000))
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x" * 64)
    assert decoder.buffered == 0  # the buffer was released


def test_incomplete_buffer_never_exceeds_cap() -> None:
    limit = 64
    decoder = FrameDecoder(max_frame_size=limit)
    data = frame(b"y" * limit) * 3
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        drain(decoder)
        assert decoder.buffered <= limit + HEADER_SIZE


def test_empty_feed_is_noop() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.next_frame() is None
