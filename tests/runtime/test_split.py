"""split_slice: a batch too large for a client becomes frames that fit, in offset order."""

from __future__ import annotations

from felix_core.log import LogSlice
from felix_proto.codec import MessageDecoder
from felix_proto.frames import HEADER_SIZE
from felix_proto.messages import EventBatch
from felix_server.split import split_slice

LIMIT = 4096


def _slice(payloads: list[bytes], keyed: bool = False) -> LogSlice:
    n = len(payloads)
    return LogSlice(
        base_offset=10,
        payloads=payloads,
        timestamps_ms=[1000 + i for i in range(n)],
        keys=[b"k%d" % i for i in range(n)] if keyed else None,
        headers=[{"h": b"v" * 100} for _ in range(n)] if keyed else None,
        byte_size=sum(map(len, payloads)),
    )


def _decode(frame: bytes) -> EventBatch:
    decoder = MessageDecoder()
    decoder.feed(frame)
    batch = decoder.next_message()
    assert isinstance(batch, EventBatch)
    return batch


def test_records_are_split_into_frames_that_fit_and_keep_everything() -> None:
    sl = _slice([bytes([i]) * 900 for i in range(12)], keyed=True)
    pieces, too_large = split_slice(sl, LIMIT)
    assert too_large is None and len(pieces) > 2
    offset, payloads = 10, []
    for frame, count, nbytes in pieces:
        assert len(frame) - HEADER_SIZE <= LIMIT
        batch = _decode(frame)
        assert batch.base_offset == offset and len(batch.payloads) == count
        assert nbytes == sum(map(len, batch.payloads))
        assert batch.keys == [b"k%d" % i for i in range(offset - 10, offset - 10 + count)]
        assert batch.headers == [{"h": b"v" * 100}] * count
        offset += count
        payloads += batch.payloads
    assert payloads == sl.payloads


def test_a_record_that_fits_no_frame_stops_the_split_there() -> None:
    sl = _slice([b"a" * 100, b"b" * 5000, b"c" * 100])
    pieces, too_large = split_slice(sl, LIMIT)
    assert [_decode(f).payloads for f, _, _ in pieces] == [[b"a" * 100]]
    assert too_large == (11, 5000)


def test_a_record_just_under_the_limit_is_sent_alone() -> None:
    sl = _slice([b"x" * 4000, b"y" * 4000])  # each fits alone; the estimate may overshoot
    pieces, too_large = split_slice(sl, LIMIT)
    assert too_large is None and [count for _, count, _ in pieces] == [1, 1]
