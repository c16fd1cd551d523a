"""Batches as their frames want them: records encoded once, deliveries as columns.

The engine hands every subscription at the same position the *same*
:class:`~felix_core.log.LogSlice` object. :class:`EncodedBatches` turns a slice into its
``EventBatch`` frame the first time a session asks and gives every later asker the same
bytes, until the server's pass is over (:meth:`EncodedBatches.flush`), which tells the
observer how many subscriptions shared each frame.

A queue dispatch hands the session a list of
:class:`~felix_core.queue_types.QueueDelivery` per consumer; the ``DeliveryBatch`` frame
wants parallel lists. :func:`delivery_columns` transposes the list in one C-level walk and
cuts it where a frame would exceed the receiver's msgpack value budget; each
:class:`DeliveryColumns` is packed as it is by
:func:`~felix_proto.codec.encode_delivery_batch` (no message object, no list copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from felix_core.log import LogSlice
from felix_core.queue_types import QueueDelivery
from felix_proto import messages as m
from felix_proto._expansion import MAX_VALUES
from felix_proto.codec import encode_delivery_batch, encode_event_batch
from felix_server.observer import ServerObserver

__all__ = [
    "BATCH_VALUES",
    "SMALL_FRAME",
    "DeliveryColumns",
    "EncodedBatches",
    "delivery_columns",
    "delivery_size",
]

SMALL_FRAME = 256
"""What a gap or end frame, or a delivery's framing, is counted as before it is encoded."""
BATCH_VALUES = MAX_VALUES - 32
"""The msgpack values one ``DeliveryBatch`` may spend on its deliveries: the receiver's
budget (docs/wire-protocol.md §3) less the envelope (array, type, map, 7 field names)."""


class _Encoded:
    __slots__ = ("frame", "payload_bytes", "slice", "uses")

    def __init__(self, sl: LogSlice) -> None:
        self.slice = sl  # kept alive, so its id() is not reused while it is remembered
        self.frame = encode_event_batch(
            sl.base_offset, sl.payloads, sl.timestamps_ms, sl.keys, sl.headers
        )
        self.payload_bytes = sum(map(len, sl.payloads))
        self.uses = 0


class EncodedBatches:
    """The frames of the slices seen in this pass, by slice identity."""

    def __init__(self) -> None:
        self._encoded: dict[int, _Encoded] = {}

    def frame(self, sl: LogSlice) -> tuple[bytes, int]:
        """The ``EventBatch`` frame of ``sl`` and the sum of its payload lengths."""
        encoded = self._encoded.get(id(sl))
        if encoded is None:
            encoded = self._encoded[id(sl)] = _Encoded(sl)
        encoded.uses += 1
        return encoded.frame, encoded.payload_bytes

    def flush(self, observer: ServerObserver) -> None:
        """The pass is over: report each frame's use to ``observer`` and forget them."""
        if not self._encoded:
            return
        for encoded in self._encoded.values():
            observer.event_batch_encoded(encoded.uses, len(encoded.frame))
        self._encoded.clear()


class DeliveryColumns:
    """Deliveries one ``DeliveryBatch`` frame carries, as the frame's parallel lists.

    Built in one C-level walk (``zip(*deliveries)``: a delivery is a NamedTuple) instead of a
    Python pass per list; halves (:meth:`halves`) slice the columns. ``deliveries`` keeps
    the engine's objects for the ``Delivery`` fallback, the traces and error texts.
    """

    __slots__ = (
        "attempts",
        "deliveries",
        "delivery_ids",
        "headers",
        "keys",
        "offsets",
        "payload_bytes",
        "payloads",
        "timestamps_ms",
    )

    def __init__(
        self,
        deliveries: Sequence[QueueDelivery],
        columns: Sequence[Sequence[Any]],
        keys: bool,
        headers: bool,
    ) -> None:
        self.deliveries = deliveries
        ids, attempts, offsets, payloads, key_col, header_col, stamps = columns[:7]
        self.delivery_ids: Sequence[int] = ids
        self.attempts: Sequence[int] = attempts
        self.offsets: Sequence[int] = offsets
        self.payloads: Sequence[bytes] = payloads
        self.timestamps_ms: Sequence[int] = stamps
        self.keys: Sequence[bytes | None] | None = key_col if keys else None
        self.headers: Sequence[dict[str, bytes] | None] | None = header_col if headers else None
        self.payload_bytes = sum(map(len, payloads))

    def __len__(self) -> int:
        return len(self.delivery_ids)

    def frame(self) -> bytes:
        """The ``DeliveryBatch`` frame of these deliveries, the columns packed as they are.

        Raises:
            LocalProtocolError: msgpack cannot pack a value.
        """
        return encode_delivery_batch(
            self.delivery_ids,
            self.attempts,
            self.offsets,
            self.payloads,
            self.timestamps_ms,
            self.keys,
            self.headers,
        )

    def message(self) -> m.DeliveryBatch:
        """The ``DeliveryBatch`` message of these deliveries (what :meth:`frame` encodes)."""
        keys, headers = self.keys, self.headers
        return m.DeliveryBatch(
            delivery_ids=list(self.delivery_ids),
            attempts=list(self.attempts),
            offsets=list(self.offsets),
            payloads=list(self.payloads),
            timestamps_ms=list(self.timestamps_ms),
            keys=None if keys is None else list(keys),
            headers=None if headers is None else list(headers),
        )

    def halves(self) -> tuple[DeliveryColumns, DeliveryColumns]:
        """The first and the second half (by count), for a frame over ``max_frame_size``."""
        half = len(self.delivery_ids) // 2
        return self._cut(0, half), self._cut(half, len(self.delivery_ids))

    def _cut(self, start: int, stop: int) -> DeliveryColumns:
        keys = self.keys[start:stop] if self.keys is not None else ()
        headers = self.headers[start:stop] if self.headers is not None else ()
        columns = (
            self.delivery_ids[start:stop],
            self.attempts[start:stop],
            self.offsets[start:stop],
            self.payloads[start:stop],
            keys,
            headers,
            self.timestamps_ms[start:stop],
        )
        has_keys = len(keys) != keys.count(None)
        has_headers = len(headers) != headers.count(None)
        return DeliveryColumns(self.deliveries[start:stop], columns, has_keys, has_headers)


def delivery_columns(deliveries: Sequence[QueueDelivery]) -> list[tuple[DeliveryColumns, int]]:
    """Cut a dispatch's deliveries, in order, into ``DeliveryBatch`` column sets that stay
    within the receiver's msgpack value budget (a delivery takes 7 values, one entry in each
    list, plus two per header), each with the bytes it is counted as before it is encoded
    (per delivery :data:`SMALL_FRAME` plus its payload, key and header bytes)."""
    columns = list(zip(*deliveries, strict=True))
    key_col, header_col = columns[4], columns[5]
    n = len(deliveries)
    keys = key_col.count(None) != n
    headers = header_col.count(None) != n
    size = SMALL_FRAME * n + sum(map(len, columns[3]))
    if keys:
        size += sum(map(len, filter(None, key_col)))
    if not headers and n * 7 <= BATCH_VALUES:
        return [(DeliveryColumns(deliveries, columns, keys, False), size)]
    out: list[tuple[DeliveryColumns, int]] = []
    start = values = 0
    for i, hdrs in enumerate(header_col):
        cost = 7 + 2 * len(hdrs) if hdrs else 7
        if i > start and values + cost > BATCH_VALUES:
            out.append(_piece(deliveries, start, i))
            start, values = i, 0
        values += cost
    out.append(_piece(deliveries, start, n))
    return out


def _piece(
    deliveries: Sequence[QueueDelivery], start: int, stop: int
) -> tuple[DeliveryColumns, int]:
    part = deliveries[start:stop]
    columns = list(zip(*part, strict=True))
    n = len(part)
    keys = columns[4].count(None) != n
    headers = columns[5].count(None) != n
    return DeliveryColumns(part, columns, keys, headers), sum(map(delivery_size, part))


def delivery_size(d: QueueDelivery) -> int:
    """What a delivery is counted as before it is encoded."""
    size = SMALL_FRAME + len(d.payload) + len(d.key or b"")
    if d.headers:
        size += sum(len(k) + len(v) + 8 for k, v in d.headers.items())
    return size
