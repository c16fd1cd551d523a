"""Cut an event batch into frames that fit a client's ``max_frame_size``.

The server encodes each :class:`~felix_core.log.LogSlice` once for every subscriber
(:func:`~felix_proto.codec.encode_event_batch`). A client that announced a smaller
``max_frame_size`` than that frame gets the same records in several ``EventBatch`` frames
instead, consecutive offsets each (docs/wire-protocol.md §5.4). A record that fits no frame
on its own cannot be delivered to that client at all: :func:`split_slice` stops before it
and reports its offset, and the session ends the subscription there.
"""

from __future__ import annotations

from felix_core.log import LogSlice
from felix_proto.codec import encode_event_batch
from felix_proto.frames import HEADER_SIZE

__all__ = ["split_slice"]

_BATCH_OVERHEAD = 64
"""Bytes an ``EventBatch`` frame payload spends outside its records (type, field names,
``base_offset``, array headers), rounded up."""
_RECORD_OVERHEAD = 32
"""Bytes one record spends outside its payload, key and header text (msgpack headers, the
timestamp), rounded up."""

Piece = tuple[bytes, int, int]
"""``(frame, record count, payload bytes)``."""


def split_slice(sl: LogSlice, max_frame_size: int) -> tuple[list[Piece], tuple[int, int] | None]:
    """Encode ``sl`` as consecutive ``EventBatch`` frames of at most ``max_frame_size``
    payload bytes each.

    Args:
        sl: the records.
        max_frame_size: the client's limit on a frame's payload.

    Returns:
        The frames in offset order, and ``(offset, size)`` of the first record that fits no
        frame on its own (the frames stop before it), or None when every record was encoded.
    """
    sizes = [_record_size(sl, i) for i in range(len(sl.payloads))]
    budget = max_frame_size - _BATCH_OVERHEAD
    pieces: list[Piece] = []
    start, n = 0, len(sizes)
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + sizes[end] <= budget):
            used += sizes[end]
            end += 1
        while True:  # the estimate is generous; shrink if a frame still does not fit
            frame = _encode(sl, start, end)
            if len(frame) - HEADER_SIZE <= max_frame_size:
                break
            if end - start == 1:
                return pieces, (sl.base_offset + start, sizes[start] - _RECORD_OVERHEAD)
            end = start + (end - start) // 2
        pieces.append((frame, end - start, sum(map(len, sl.payloads[start:end]))))
        start = end
    return pieces, None


def _record_size(sl: LogSlice, i: int) -> int:
    size = _RECORD_OVERHEAD + len(sl.payloads[i])
    if sl.keys is not None:
        size += len(sl.keys[i] or b"")
    if sl.headers is not None:
        headers = sl.headers[i]
        if headers:
            size += sum(len(k.encode()) + len(v) + 8 for k, v in headers.items())
    return size


def _encode(sl: LogSlice, start: int, end: int) -> bytes:
    return encode_event_batch(
        sl.base_offset + start,
        sl.payloads[start:end],
        sl.timestamps_ms[start:end],
        None if sl.keys is None else sl.keys[start:end],
        None if sl.headers is None else sl.headers[start:end],
    )
