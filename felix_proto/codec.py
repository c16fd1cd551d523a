"""The Felix version-2 message codec: frames <-> typed messages, strictly validated.

Theory of operation
-------------------

A frame's payload is the msgpack document ``[type, fields]``: ``type`` is the message's
numeric code (``Message.TYPE``) and ``fields`` a map from field name (str) to value.
:func:`encode` writes every field whose value is not ``None``; :func:`decode` reverses it:

* a missing (or nil) optional field takes its default; a missing required one is an error;
* unknown field names are ignored (newer peers may add fields);
* an unknown ``type`` raises :class:`~felix_proto.errors.UnknownMessageType`;
* a value of the wrong msgpack type, an integer outside its wire type (uint64 or uint16),
  an unknown enum value, an ``any`` value nested deeper than :data:`MAX_ANY_DEPTH`, or
  parallel lists of different lengths raise :class:`~felix_proto.errors.BadFrame` whose
  message names the field, e.g. ``"Publish.stream: expected str, got int"``;
* a uint above its field's semantic maximum (:data:`INT_MAXIMA`, e.g. ``CachePut.ttl_ms``
  above ``MAX_DURATION_MS``) raises :class:`~felix_proto.errors.InvalidField`
  (``INVALID_ARGUMENT``), which names the field too;
* a payload holding more than :data:`MAX_VALUES` msgpack values in all raises
  :class:`~felix_proto.errors.TooManyValues` (``TOO_LARGE``) before msgpack builds anything
  (see :mod:`felix_proto._expansion`): what one frame may expand into is bounded.

Errors raised by :func:`decode` are not fatal (``fatal`` is false: the frame was intact, the
stream goes on) and carry ``request_id`` when the fields held a valid one, so the receiver
can answer the one bad request. msgpack's own exceptions are translated into ``BadFrame`` in
one place, the ``unpackb`` call of :func:`decode`. Type rules: a bool is never an int and an
int never a bool; integers are unsigned 64-bit unless noted (``versions`` and error ``code``
are u16); bytes are msgpack bin and text is msgpack str (valid UTF-8); map keys are str; no
ext types.

The validators are built once per message class when this module is imported, from the
dataclass field declarations and :data:`ENUM_FIELDS`; nothing inspects types per call.
Batches (``PublishBatch``, ``Enqueue``, ``EventBatch``) pass their lists of payloads
straight to and from msgpack: no Python object is made per payload, and their element types
are checked by C-level ``min``/``sum`` passes (see ``_schema._INLINE``); anything doubtful
goes to the generic decoder, which names the bad element. :func:`encode_event_batch` builds an
``EventBatch`` frame without a dataclass, once, for every subscriber at that position.

:func:`encode` does not validate field values (that would double its cost); a message built
with wrong types encodes to a frame the peer rejects. Use :func:`validate` to check one.
:func:`encode_fields` is the typed API's request path: it checks field values as
:func:`validate` would and encodes them without building a message (one generated function
per class, see ``_schema.make_field_encoder``), falling back to ``validate`` + ``encode``
for the error's text. A
value msgpack cannot pack at all (an int above 2**64-1) makes :func:`encode` raise
``LocalProtocolError`` naming the field, never a bare msgpack exception.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgpack

from . import messages as m
from ._expansion import MAX_VALUES, check_values
from ._schema import (
    DECODERS,
    ENUM_FIELDS,
    INT_MAXIMA,
    MAX_ANY_DEPTH,
    TO_FIELDS,
    U16_FIELDS,
    U64_MAX,
    make_encoder,
    make_field_encoder,
    tname,
    valid_request_id,
)
from .errors import BadFrame, LocalProtocolError, RemoteProtocolError, UnknownMessageType
from .frames import (
    _HEADER,
    DEFAULT_MAX_FRAME_SIZE,
    MAGIC,
    MAX_PAYLOAD_LENGTH,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    V1_VERSION,
    FrameDecoder,
)

__all__ = [
    "ENUM_FIELDS",
    "INT_MAXIMA",
    "MAX_ANY_DEPTH",
    "MAX_VALUES",
    "U16_FIELDS",
    "U64_MAX",
    "MessageDecoder",
    "decode",
    "encode",
    "encode_delivery_batch",
    "encode_event_batch",
    "encode_fields",
    "encode_v1_error",
    "validate",
]

_PACKERS: list[msgpack.Packer] = []
"""Idle packers. Reusing one is about 40% cheaper than ``packb``, which builds a packer per
call. A caller pops one (``list.pop`` and ``append`` are atomic, so threads never share one)
and puts it back unless its buffer grew for a large message."""
_PACKER_KEEP_LIMIT = 1 << 20
_SMALL_PACKERS: list[msgpack.Packer] = []
"""Idle ``autoreset`` packers for :func:`_pack_small_frame` (same pooling rules)."""
_SMALL_FRAME = 16 * 1024
"""Messages whose blobs add up to at most this many bytes take :func:`_pack_small_frame`."""


# ------------------------------------------------------------------------ the msgpack seam


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def _pack_frame(obj: Any) -> bytes:
    """The one place msgpack encodes: ``obj`` packed into a complete version-2 frame.

    The payload is packed into a pooled packer's buffer and copied once, after the header.

    Raises:
        LocalProtocolError: msgpack cannot pack a value, or the payload exceeds a u32.
    """
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(autoreset=False)
    try:
        packer.pack(obj)
    except (ValueError, TypeError, OverflowError) as exc:
        packer.reset()
        _PACKERS.append(packer)
        raise LocalProtocolError(f"cannot encode message: {exc}") from None
    view = packer.getbuffer()
    length = len(view)
    if length > MAX_PAYLOAD_LENGTH:
        view.release()
        packer.reset()
        raise LocalProtocolError(f"encoded payload of {length} bytes does not fit a frame")
    frame = _HEADER.pack(MAGIC, PROTOCOL_VERSION, 0, length) + view
    view.release()
    packer.reset()
    if length <= _PACKER_KEEP_LIMIT:
        _PACKERS.append(packer)
    return frame


def _pack_small_frame(obj: Any) -> bytes:
    """:func:`_pack_frame` for small messages: ``Packer.pack`` returns the payload as bytes
    and the header is prepended with a second copy, which for a few hundred bytes costs
    less than the buffer export :func:`_pack_frame` needs to avoid it (~100 ns).

    Raises:
        LocalProtocolError: msgpack cannot pack a value, or the payload exceeds a u32.
    """
    try:
        packer = _SMALL_PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer()
    try:
        body = packer.pack(obj)  # an autoreset packer empties its buffer even on errors
    except (ValueError, TypeError, OverflowError) as exc:
        _SMALL_PACKERS.append(packer)
        raise LocalProtocolError(f"cannot encode message: {exc}") from None
    length = len(body)
    if length <= _PACKER_KEEP_LIMIT:
        _SMALL_PACKERS.append(packer)
    elif length > MAX_PAYLOAD_LENGTH:
        raise LocalProtocolError(f"encoded payload of {length} bytes does not fit a frame")
    return _HEADER.pack(MAGIC, PROTOCOL_VERSION, 0, length) + body


_ENCODERS = {
    cls: make_encoder(cls, _pack_small_frame, _pack_frame, _SMALL_FRAME)
    for cls in m.MESSAGE_TYPES.values()
}
"""Each message class's generated ``encode(msg) -> frame``."""
_FIELD_ENCODERS = {
    cls: make_field_encoder(cls, _pack_small_frame, _pack_frame, _SMALL_FRAME)
    for cls in m.MESSAGE_TYPES.values()
}
"""Each message class's generated checked ``encode_fields(fields) -> frame | None``."""


# ------------------------------------------------------------------------ public API


def encode(msg: m.Message) -> bytes:
    """Encode a message as a complete version-2 frame (header and msgpack payload).

    Args:
        msg: any message from :mod:`felix_proto.messages`.

    Returns:
        The frame bytes.

    Raises:
        LocalProtocolError: ``msg`` is not a known message, a value cannot be packed by
            msgpack (the message names the field when :func:`validate` finds it, e.g.
            ``"cannot encode CacheValue: CacheValue.ttl_remaining_ms: ... out of range"``),
            or the payload exceeds 2**32 - 1 bytes. Field values msgpack can pack are not
            checked (see :func:`validate`).
    """
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"not a Felix message: {type(msg).__name__}") from None
    try:
        return encoder(msg)
    except LocalProtocolError as exc:
        raise _encode_error(msg, exc) from None


def encode_fields(cls: type[m.Message], fields: dict[str, Any]) -> bytes:
    """Encode the message ``cls(**fields)`` as a frame, checked, without building it.

    The result is ``encode(cls(**fields))`` after ``validate`` of that message, byte for
    byte; the field values are checked as the peer's decoder will check them, but no
    message object is made when they pass (the typed API's request path).

    Args:
        cls: the message class.
        fields: field values by name, each one of ``cls``'s fields; a missing or ``None``
            optional field takes its default.

    Returns:
        The frame bytes.

    Raises:
        LocalProtocolError: an unknown field name or a missing required one, a field
            value the peer would reject (the message :func:`validate` gives), or as
            :func:`encode`.
    """
    frame = _FIELD_ENCODERS[cls](fields)
    if frame is not None:
        return frame
    try:  # the reference path states what is wrong
        factory: Any = cls
        msg = factory(**fields)
    except TypeError as exc:
        raise LocalProtocolError(f"{cls.__name__}: {exc}") from None
    validate(msg)
    return encode(msg)


def _encode_error(msg: m.Message, exc: LocalProtocolError) -> LocalProtocolError:
    """``exc`` (msgpack could not pack ``msg``), restated with the bad field if found."""
    try:
        validate(msg)
    except LocalProtocolError as found:
        return LocalProtocolError(f"cannot encode {type(msg).__name__}: {found}")
    return exc


def decode(payload: bytes) -> m.Message:
    """Decode one frame payload (without its header) into a message.

    Args:
        payload: the msgpack document ``[type, fields]``, as :meth:`FrameDecoder.next_frame`
            returns it.

    Returns:
        The message, a frozen dataclass instance.

    Raises:
        BadFrame: malformed msgpack, a payload that is not ``[int, map]``, or a field of the
            wrong type; ``fatal`` is false, ``request_id`` set when known.
        InvalidField: a uint above its field's maximum (:data:`INT_MAXIMA`); not fatal.
        TooManyValues: the payload holds more than :data:`MAX_VALUES` msgpack values;
            not fatal, raised before any is built.
        UnknownMessageType: the type code is not one of ours; not fatal.
    """
    if len(payload) > MAX_VALUES:  # smaller payloads cannot hold more values than that
        check_values(payload)
    # The one place msgpack decodes untrusted bytes. unpackb bounds every declared length
    # (str, bin, array, map, ext) by len(payload), so a declared count never allocates more
    # than the frame could hold; its other defaults are the strict ones needed (raw=False,
    # use_list=True, strict_map_key=True). Passing them again would cost ~150 ns of argument
    # parsing per message, so only ext_hook is given.
    try:
        obj = msgpack.unpackb(payload, ext_hook=_reject_ext)
    except _UNPACK_ERRORS as exc:
        raise BadFrame(f"malformed msgpack payload: {exc}", fatal=False) from None
    if type(obj) is list and len(obj) == 2:
        code, fields = obj
        if type(code) is int and type(fields) is dict:
            decoder = DECODERS.get(code)
            if decoder is not None:
                return decoder(fields)
    raise _envelope_error(obj)


def _envelope_error(obj: Any) -> RemoteProtocolError:
    """The error for a decoded payload that is not ``[known type code, map]``."""
    if type(obj) is not list or len(obj) != 2:
        return BadFrame("payload must be a msgpack array [type, fields]", fatal=False)
    code, fields = obj
    if type(fields) is not dict:
        return BadFrame(f"message fields: expected map, got {tname(fields)}", fatal=False)
    if type(code) is not int:
        return BadFrame(f"message type: expected int, got {tname(code)}", fatal=False)
    return UnknownMessageType(
        f"unknown message type {code:#x}",
        details={"type": code},
        request_id=valid_request_id(fields),
    )


def validate(msg: m.Message) -> None:
    """Check a message's field values against the rules :func:`decode` enforces.

    Args:
        msg: the message to check.

    Raises:
        LocalProtocolError: a field value would make the peer reject the frame (of the
            wrong type or range, or above its field's maximum).
    """
    try:
        to_fields = TO_FIELDS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"not a Felix message: {type(msg).__name__}") from None
    # The fast decoder hands anything it does not accept to the generic one, so this
    # raises exactly when (and with the message with which) the generic decoder would.
    try:
        DECODERS[msg.TYPE](to_fields(msg))
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.message) from None


def encode_event_batch(
    base_offset: int,
    payloads: Sequence[bytes],
    timestamps_ms: Sequence[int] | None = None,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[dict[str, bytes] | None] | None = None,
) -> bytes:
    """Encode a complete ``EventBatch`` frame without building a message object.

    The result is meant to be written, unchanged, to every subscription stream positioned
    at ``base_offset``. It is byte-for-byte what ``encode(EventBatch(...))`` produces.

    Args:
        base_offset: the offset of the first payload.
        payloads: the record payloads, in offset order (passed to msgpack as is).
        timestamps_ms: ``None`` or one timestamp per payload.
        keys: ``None`` or one key (or ``None``) per payload.
        headers: ``None`` or one header map (or ``None``) per payload.

    Returns:
        The frame bytes.

    Raises:
        LocalProtocolError: a parallel list's length differs from ``payloads``, or msgpack
            cannot pack a value.
    """
    fields: dict[str, Any] = {"base_offset": base_offset, "payloads": payloads}
    if timestamps_ms is not None:
        if len(timestamps_ms) != len(payloads):
            raise _length_mismatch("timestamps_ms", timestamps_ms, payloads)
        fields["timestamps_ms"] = timestamps_ms
    if keys is not None:
        if len(keys) != len(payloads):
            raise _length_mismatch("keys", keys, payloads)
        fields["keys"] = keys
    if headers is not None:
        if len(headers) != len(payloads):
            raise _length_mismatch("headers", headers, payloads)
        fields["headers"] = headers
    return _pack_frame([_EVENT_BATCH, fields])


_EVENT_BATCH = m.EventBatch.TYPE


def _length_mismatch(name: str, value: Sequence[Any], payloads: Sequence[bytes]) -> Exception:
    text = f"EventBatch.{name}: {len(value)} entries for {len(payloads)} payloads"
    return LocalProtocolError(text)


def encode_delivery_batch(
    delivery_ids: Sequence[int],
    attempts: Sequence[int],
    offsets: Sequence[int],
    payloads: Sequence[bytes],
    timestamps_ms: Sequence[int] | None = None,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[dict[str, bytes] | None] | None = None,
) -> bytes:
    """Encode a complete ``DeliveryBatch`` frame from its columns, without a message object.

    It is byte-for-byte what ``encode(DeliveryBatch(...))`` produces with these lists; the
    columns may be any sequences (tuples pack as arrays) and are passed to msgpack as is.

    Raises:
        LocalProtocolError: a column's length differs from ``payloads``, or msgpack cannot
            pack a value.
    """
    n = len(payloads)
    fields: dict[str, Any] = {
        "delivery_ids": delivery_ids,
        "attempts": attempts,
        "offsets": offsets,
        "payloads": payloads,
    }
    if timestamps_ms is not None:
        fields["timestamps_ms"] = timestamps_ms
    if keys is not None:
        fields["keys"] = keys
    if headers is not None:
        fields["headers"] = headers
    for name, column in fields.items():
        if len(column) != n:
            text = f"DeliveryBatch.{name}: {len(column)} entries for {n} payloads"
            raise LocalProtocolError(text)
    return _pack_frame([_DELIVERY_BATCH, fields])


_DELIVERY_BATCH = m.DeliveryBatch.TYPE


def encode_v1_error(message: str | None = None) -> bytes:
    """Encode a version-1 (reference implementation) JSON ``error`` frame.

    A broker answers a client that sent a version-1 header with this frame, in the framing
    that client understands, then closes the stream.

    Args:
        message: the text; by default one that lists the versions this package speaks.

    Returns:
        The frame bytes: a version-1 header (flags 0) and ``{"type":"error","message":...}``.
    """
    if message is None:
        speaks = ", ".join(map(str, SUPPORTED_VERSIONS))
        message = (
            f"unsupported protocol version 1; this broker speaks version {speaks} "
            f"(supported_versions=[{speaks}])"
        )
    body = json.dumps(
        {"type": "error", "message": message}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    return _HEADER.pack(MAGIC, V1_VERSION, 0, len(body)) + body


class MessageDecoder:
    """A :class:`~felix_proto.frames.FrameDecoder` and :func:`decode` for one QUIC stream.

    Feed bytes with :meth:`feed`, then call :meth:`next_message` until it returns ``None``.
    A fatal error (framing) is raised again on every later call; a non-fatal one (a bad
    message in an intact frame) consumes that frame only, and the next call goes on.
    Every exception raised is a :class:`~felix_proto.errors.RemoteProtocolError`; any
    other is a bug.

    Args:
        max_frame_size: the largest payload accepted.
    """

    __slots__ = ("_frames",)

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._frames = FrameDecoder(max_frame_size)

    @property
    def max_frame_size(self) -> int:
        """The largest payload accepted; may be changed, e.g. after the handshake."""
        return self._frames.max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        self._frames.max_frame_size = value

    @property
    def buffered(self) -> int:
        """How many received bytes are buffered and not yet decoded."""
        return self._frames.buffered

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.

        Args:
            data: the next bytes of the stream.

        Raises:
            RemoteProtocolError: the stream already failed, or an oversize frame was detected.
        """
        self._frames.feed(data)

    def next_message(self) -> m.Message | None:
        """Return the next complete message, or ``None`` if more bytes are needed.

        Returns:
            A message or ``None``.

        Raises:
            BadFrame: fatal for framing errors, not fatal for a bad payload.
            UnsupportedVersion: fatal; ``version`` is the peer's (1: reference framing).
            FrameTooLarge: fatal.
            InvalidField: not fatal.
            TooManyValues: not fatal.
            UnknownMessageType: not fatal.
        """
        payload = self._frames.next_frame()
        if payload is None:
            return None
        return decode(payload)
