"""Encode each batch of records once, however many subscriptions receive it.

The engine hands every subscription at the same position the *same*
:class:`~felix_core.log.LogSlice` object. :class:`EncodedBatches` turns a slice into its
``EventBatch`` frame the first time a session asks and gives every later asker the same
bytes, until the server's pass is over (:meth:`EncodedBatches.flush`), which tells the
observer how many subscriptions shared each frame.
"""

from __future__ import annotations

from felix_core.log import LogSlice
from felix_proto.codec import encode_event_batch
from felix_server.observer import ServerObserver

__all__ = ["EncodedBatches"]


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
