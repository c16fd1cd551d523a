"""Garbage in: decoders either produce messages or raise the typed remote error.

Also: one chunk and any chunking give the same results, and declared sizes never make
the decoder allocate beyond what the frame holds.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, decode, encode
from felix_proto.errors import RemoteProtocolError
from felix_proto.frames import HEADER_SIZE, MAGIC, FrameDecoder
from felix_proto.testing import messages

Outcome = tuple[str, Any]


def run(decoder: MessageDecoder, chunks: list[bytes]) -> list[Outcome]:
    """Feed chunks, draining after each; record messages and errors until a fatal one."""
    out: list[Outcome] = []
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except RemoteProtocolError as exc:
            out.append(("fatal", type(exc).__name__))
            return out
        while True:
            try:
                msg = decoder.next_message()
            except RemoteProtocolError as exc:
                out.append(("fatal" if exc.fatal else "error", type(exc).__name__))
                if exc.fatal:
                    return out
                continue
            if msg is None:
                break
            out.append(("message", msg))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def framed(payload: bytes) -> bytes:
    return struct.pack(">IHHI", MAGIC, 2, 0, len(payload)) + payload


@given(st.binary(max_size=512))
def test_arbitrary_payload_decodes_or_raises_remote_error(raw: bytes) -> None:
    try:
        decode(raw)
    except RemoteProtocolError as exc:
        assert not exc.fatal


@given(st.binary(max_size=512))
def test_arbitrary_stream_never_escapes(raw: bytes) -> None:
    run(MessageDecoder(max_frame_size=256), [raw])


@given(messages(), st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_frames(msg: m.Message, where: int, value: int) -> None:
    frame = bytearray(encode(msg))
    frame[HEADER_SIZE + where % (len(frame) - HEADER_SIZE)] = value
    # The header is intact, so the frame is still one frame: one message or one error that
    # leaves the stream usable.
    (outcome,) = run(MessageDecoder(), [bytes(frame)])
    assert outcome[0] in ("message", "error")


@given(messages(), st.integers(1, 8))
def test_truncated_payloads(msg: m.Message, cut: int) -> None:
    body = encode(msg)[HEADER_SIZE:]
    with pytest.raises(RemoteProtocolError) as caught:  # a msgpack prefix is never complete
        decode(body[: max(0, len(body) - cut)])
    assert not caught.value.fatal


@given(
    st.lists(messages() | st.binary(max_size=40).map(framed), max_size=6),
    st.lists(st.integers(0, 10_000), max_size=10),
    st.binary(max_size=16),
)
def test_chunking_does_not_change_results(
    items: list[Any], cuts: list[int], trailer: bytes
) -> None:
    data = b"".join(encode(i) if isinstance(i, m.Message) else i for i in items) + trailer
    whole = run(MessageDecoder(), [data])
    assert run(MessageDecoder(), split(data, cuts)) == whole
    assert run(MessageDecoder(), [data[i : i + 1] for i in range(len(data))]) == whole


@given(st.binary(max_size=600), st.integers(16, 128))
def test_buffer_bounded(raw: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    for i in range(len(raw)):
        try:
            decoder.feed(raw[i : i + 1])
            while decoder.next_frame() is not None:
                pass
        except RemoteProtocolError:
            return
        assert decoder.buffered <= limit + HEADER_SIZE


@pytest.mark.parametrize(
    "raw",
    [
        b"\x92\x10\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
        b"\x92\x10\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\x92\x10\xdd\xff\xff\xff\xff",  # array32 of 4G elements
        b"\x92\x10\xdf\xff\xff\xff\xff",  # map32 of 4G pairs
        b"\xdd\xff\xff\xff\xff" + b"\x90" * 64,
    ],
)
def test_declared_sizes_do_not_allocate(raw: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            decode(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
