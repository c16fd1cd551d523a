"""The Felix version-2 message codec: frames <-> typed messages, strictly validated.

Theory of operation
-------------------

A frame's payload is the msgpack document ``[type, fields]``: ``type`` is the message's
numeric code (``Message.TYPE``) and ``fields`` a map from field name (str) to value.
:func:`encode` writes every field whose value is not ``None``; :func:`decode` reverses it:

* a missing (or nil) optional field takes its default; a missing required one is an error;
* unknown field names are ignored (newer peers may add fields);
* an unknown ``type`` raises :class:`~felix_proto.errors.UnknownMessageType`;
* a value of the wrong msgpack type, an integer out of range, an unknown enum value, or
  parallel lists of different lengths raise :class:`~felix_proto.errors.BadFrame` whose
  message names the field, e.g. ``"Publish.stream: expected str, got int"``.

Errors raised by :func:`decode` are not fatal (``fatal`` is false: the frame was intact, the
stream goes on) and carry ``request_id`` when the fields held a valid one, so the receiver
can answer the one bad request. msgpack's own exceptions are translated into ``BadFrame`` in
one place, :func:`_unpack`. Type rules: a bool is never an int and an int never a bool;
integers are unsigned 64-bit unless noted (``versions`` and error ``code`` are u16); bytes
are msgpack bin and text is msgpack str (valid UTF-8); map keys are str; no ext types.

The validators are built once per message class when this module is imported, from the
dataclass field declarations and :data:`ENUM_FIELDS`; nothing inspects types per call.
Batches (``PublishBatch``, ``Enqueue``, ``EventBatch``) pass their lists of payloads
straight to and from msgpack: no Python object is made per payload, and their element types
are checked with C-level set operations. :func:`encode_event_batch` builds an
``EventBatch`` frame without a dataclass, once, for every subscriber at that position.

:func:`encode` does not validate field values (that would double its cost); a message built
with wrong types encodes to a frame the peer rejects. Use :func:`validate` to check one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from enum import Enum
from operator import attrgetter
from typing import Any

import msgpack

from . import messages as m
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
    "U16_FIELDS",
    "U64_MAX",
    "MessageDecoder",
    "decode",
    "encode",
    "encode_event_batch",
    "encode_v1_error",
    "validate",
]

U64_MAX = (1 << 64) - 1
"""Largest value of an unsigned 64-bit field."""
_U16_MAX = 0xFFFF

ENUM_FIELDS: dict[tuple[type[m.Message], str], type[Enum]] = {
    (m.Publish, "ack"): m.AckMode,
    (m.PublishBatch, "ack"): m.AckMode,
    (m.Enqueue, "ack"): m.AckMode,
    (m.Subscribe, "start"): m.StartKind,
    (m.Subscribe, "source"): m.SourceKind,
    (m.SubscriptionEnded, "reason"): m.EndReason,
    (m.ConsumerEnded, "reason"): m.EndReason,
    (m.AdminCreate, "kind"): m.ResourceKind,
    (m.AdminDescribe, "kind"): m.ResourceKind,
    (m.AdminList, "kind"): m.ResourceKind,
    (m.AdminUpdate, "kind"): m.ResourceKind,
    (m.AdminDelete, "kind"): m.ResourceKind,
}
"""Fields whose value must be one of an enum's values (the dataclass field holds the value)."""

U16_FIELDS: frozenset[tuple[type[m.Message], str]] = frozenset(
    {
        (m.Hello, "versions"),
        (m.Welcome, "version"),
        (m.Error, "code"),
        (m.GoAway, "code"),
    }
)
"""Integer fields (or lists of integers) limited to 0..65535 instead of 0..2**64-1."""

_PARALLEL_LISTS: dict[type[m.Message], tuple[str, tuple[str, ...]]] = {
    m.PublishBatch: ("payloads", ("keys", "headers")),
    m.Enqueue: ("payloads", ("keys", "headers")),
    m.EventBatch: ("payloads", ("timestamps_ms", "keys", "headers")),
}
"""Optional lists that, when present, must have one entry per element of the first list."""


# ------------------------------------------------------------------------ checkers


class _Invalid(Exception):
    """A value failed its check; the text says how (the caller adds the field name)."""


_Check = Callable[[Any], None]


def _tname(value: object) -> str:
    return "nil" if value is None else type(value).__name__


def _expected(what: str, value: object) -> _Invalid:
    return _Invalid(f"expected {what}, got {_tname(value)}")


def _uint(limit: int) -> _Check:
    text = "2**64-1" if limit == U64_MAX else str(limit)

    def check(v: Any) -> None:
        if type(v) is not int:
            raise _expected("int", v)
        if not 0 <= v <= limit:
            raise _Invalid(f"{v} out of range 0..{text}")

    return check


def _exact(tp: type) -> _Check:
    name = tp.__name__

    def check(v: Any) -> None:
        if type(v) is not tp:
            raise _expected(name, v)

    return check


def _first_bad(items: list[Any], allowed: frozenset[type]) -> _Invalid:
    for i, item in enumerate(items):
        if type(item) not in allowed:
            what = " or ".join(sorted("nil" if t is type(None) else t.__name__ for t in allowed))
            return _Invalid(f"[{i}]: expected {what}, got {_tname(item)}")
    return _Invalid("bad element")  # pragma: no cover - only called when one is bad


def _list_of(*types: type) -> _Check:
    allowed = frozenset(types)

    def check(v: Any) -> None:
        if type(v) is not list:
            raise _expected("list", v)
        if v and not allowed.issuperset(map(type, v)):
            raise _first_bad(v, allowed)

    return check


def _list_of_uint(limit: int) -> _Check:
    each = _uint(limit)
    ints = frozenset({int})

    def check(v: Any) -> None:
        if type(v) is not list:
            raise _expected("list", v)
        if v:
            if not ints.issuperset(map(type, v)):
                raise _first_bad(v, ints)
            if min(v) < 0 or max(v) > limit:
                for i, item in enumerate(v):
                    try:
                        each(item)
                    except _Invalid as exc:
                        raise _Invalid(f"[{i}]: {exc}") from None

    return check


def _map_of(value_types: frozenset[type], value_what: str) -> _Check:
    def check(v: Any) -> None:
        if type(v) is not dict:
            raise _expected("map", v)
        for key, item in v.items():
            if type(key) is not str:
                raise _Invalid(f"key {key!r}: expected str, got {_tname(key)}")
            if type(item) not in value_types:
                raise _Invalid(f"[{key!r}]: expected {value_what}, got {_tname(item)}")

    return check


_check_headers = _map_of(frozenset({bytes}), "bytes")
_check_limits_values = _map_of(frozenset({int}), "int")


def _check_limits(v: Any) -> None:
    _check_limits_values(v)
    for key, item in v.items():
        if not 0 <= item <= U64_MAX:
            raise _Invalid(f"[{key!r}]: {item} out of range 0..2**64-1")


_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _check_any(v: Any) -> None:
    """Accept any msgpack value built from nil, bool, int, float, str, bin, array and map
    with str keys (no ext types). Iterative: nesting is bounded by msgpack's own stack."""
    stack = [v]
    while stack:
        item = stack.pop()
        tp = type(item)
        if tp in _PLAIN_SCALARS:
            continue
        if tp is list:
            stack.extend(item)
        elif tp is dict:
            for key, value in item.items():
                if type(key) is not str:
                    raise _Invalid(f"map key {key!r}: expected str, got {_tname(key)}")
                stack.append(value)
        else:
            raise _Invalid(f"unsupported msgpack value of type {_tname(item)}")


def _check_any_map(v: Any) -> None:
    if type(v) is not dict:
        raise _expected("map", v)
    _check_any(v)


def _check_any_map_list(v: Any) -> None:
    if type(v) is not list:
        raise _expected("list", v)
    for i, item in enumerate(v):
        if type(item) is not dict:
            raise _Invalid(f"[{i}]: expected map, got {_tname(item)}")
    _check_any(v)


def _check_headers_list(v: Any) -> None:
    if type(v) is not list:
        raise _expected("list", v)
    for i, item in enumerate(v):
        if item is not None:
            try:
                _check_headers(item)
            except _Invalid as exc:
                text = str(exc)
                sep = "" if text.startswith("[") else ": "
                raise _Invalid(f"[{i}]{sep}{text}") from None


def _enum(enum_cls: type[Enum], base: type) -> _Check:
    values = frozenset(member.value for member in enum_cls)
    listing = ", ".join(repr(member.value) for member in enum_cls)
    base_name = base.__name__

    def check(v: Any) -> None:
        if type(v) is not base:
            raise _expected(base_name, v)
        if v not in values:
            raise _Invalid(f"{v!r} is not a {enum_cls.__name__} ({listing})")

    return check


_BY_ANNOTATION: dict[str, _Check] = {
    "int": _uint(U64_MAX),
    "str": _exact(str),
    "bytes": _exact(bytes),
    "bool": _exact(bool),
    "list[int]": _list_of_uint(U64_MAX),
    "list[str]": _list_of(str),
    "list[bytes]": _list_of(bytes),
    "list[bytes | None]": _list_of(bytes, type(None)),
    "dict[str, bytes]": _check_headers,
    "dict[str, int]": _check_limits,
    "dict[str, Any]": _check_any_map,
    "list[dict[str, Any]]": _check_any_map_list,
    "list[dict[str, bytes] | None]": _check_headers_list,
}
_U16_BY_ANNOTATION: dict[str, _Check] = {
    "int": _uint(_U16_MAX),
    "list[int]": _list_of_uint(_U16_MAX),
}


# ------------------------------------------------------------------------ per-class tables


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    check: _Check
    required: bool


def _field_specs(cls: type[m.Message]) -> tuple[_FieldSpec, ...]:
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        annotation = str(f.type)
        if annotation.endswith(" | None"):
            annotation = annotation[: -len(" | None")]
        enum_cls = ENUM_FIELDS.get((cls, f.name))
        if enum_cls is not None:
            check = _enum(enum_cls, int if annotation == "int" else str)
        elif (cls, f.name) in U16_FIELDS:
            check = _U16_BY_ANNOTATION[annotation]
        else:
            check = _BY_ANNOTATION[annotation]  # a KeyError here is a bug in messages.py
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append(_FieldSpec(f.name, check, required))
    return tuple(specs)


def _valid_request_id(fields: Any) -> int | None:
    if type(fields) is not dict:
        return None
    rid = fields.get("request_id")
    if type(rid) is int and 0 <= rid <= U64_MAX:
        return rid
    return None


def _bad(cls: type[m.Message], name: str, text: str, fields: dict[str, Any]) -> BadFrame:
    return BadFrame(
        f"{cls.__name__}.{name}: {text}",
        fatal=False,
        request_id=_valid_request_id(fields),
        details={"field": name},
    )


def _make_decoder(cls: type[m.Message]) -> Callable[[dict[str, Any]], m.Message]:
    specs = tuple((s.name, s.check, s.required) for s in _field_specs(cls))
    parallel = _PARALLEL_LISTS.get(cls)

    def decode_fields(fields: dict[str, Any]) -> m.Message:
        kwargs: dict[str, Any] = {}
        for name, check, required in specs:
            value = fields.get(name)
            if value is None:
                if required:
                    raise _bad(cls, name, "missing required field", fields)
                continue
            try:
                check(value)
            except _Invalid as exc:
                raise _bad(cls, name, str(exc), fields) from None
            kwargs[name] = value
        if parallel is not None:
            lead, others = parallel
            count = len(kwargs[lead])
            for name in others:
                value = kwargs.get(name)
                if value is not None and len(value) != count:
                    text = f"expected {count} entries (one per {lead[:-1]}), got {len(value)}"
                    raise _bad(cls, name, text, fields)
        return cls(**kwargs)

    return decode_fields


_DECODERS: dict[int, Callable[[dict[str, Any]], m.Message]] = {
    code: _make_decoder(cls) for code, cls in m.MESSAGE_TYPES.items()
}


def _make_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """One C-level call that returns every field value of a message as a tuple."""
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda msg: (single(msg),)
    return attrgetter(*names)


_ENCODERS: dict[type[m.Message], tuple[int, tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {
    cls: (
        cls.TYPE,
        names := tuple(f.name for f in dataclasses.fields(cls)),  # type: ignore[arg-type]
        _make_getter(names),
    )
    for cls in m.MESSAGE_TYPES.values()
}


# ------------------------------------------------------------------------ the msgpack seam


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


def _unpack(payload: bytes) -> Any:
    """The one place msgpack decodes untrusted bytes; its errors become ``BadFrame``.

    Every length limit is bounded by the payload itself, so a declared count never
    allocates more than the frame could hold.
    """
    n = len(payload)
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise BadFrame(f"malformed msgpack payload: {exc}", fatal=False) from None


def _pack(obj: Any) -> bytes:
    """The one place msgpack encodes; its errors become ``LocalProtocolError``."""
    try:
        return msgpack.packb(obj)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode message: {exc}") from None


def _frame(body: bytes) -> bytes:
    length = len(body)
    if length > MAX_PAYLOAD_LENGTH:
        raise LocalProtocolError(f"encoded payload of {length} bytes does not fit a frame")
    return _HEADER.pack(MAGIC, PROTOCOL_VERSION, 0, length) + body


# ------------------------------------------------------------------------ public API


def encode(msg: m.Message) -> bytes:
    """Encode a message as a complete version-2 frame (header and msgpack payload).

    Args:
        msg: any message from :mod:`felix_proto.messages`.

    Returns:
        The frame bytes.

    Raises:
        LocalProtocolError: ``msg`` is not a known message, a value cannot be packed by
            msgpack, or the payload exceeds 2**32 - 1 bytes. Field types are not checked
            (see :func:`validate`).
    """
    try:
        code, names, getter = _ENCODERS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"not a Felix message: {type(msg).__name__}") from None
    values = getter(msg)
    fields = {name: value for name, value in zip(names, values, strict=True) if value is not None}
    return _frame(_pack([code, fields]))


def decode(payload: bytes) -> m.Message:
    """Decode one frame payload (without its header) into a message.

    Args:
        payload: the msgpack document ``[type, fields]``, as :meth:`FrameDecoder.next_frame`
            returns it.

    Returns:
        The message, a frozen dataclass instance.

    Raises:
        BadFrame: malformed msgpack, a payload that is not ``[int, map]``, or a field of the
            wrong type or range; ``fatal`` is false, ``request_id`` set when known.
        UnknownMessageType: the type code is not one of ours; not fatal.
    """
    obj = _unpack(payload)
    if type(obj) is not list or len(obj) != 2:
        raise BadFrame("payload must be a msgpack array [type, fields]", fatal=False)
    code, fields = obj
    if type(fields) is not dict:
        raise BadFrame(f"message fields: expected map, got {_tname(fields)}", fatal=False)
    decoder = _DECODERS.get(code) if type(code) is int else None
    if decoder is None:
        if type(code) is not int:
            raise BadFrame(f"message type: expected int, got {_tname(code)}", fatal=False)
        raise UnknownMessageType(
            f"unknown message type {code:#x}",
            details={"type": code},
            request_id=_valid_request_id(fields),
        )
    return decoder(fields)


def validate(msg: m.Message) -> None:
    """Check a message's field values against the rules :func:`decode` enforces.

    Args:
        msg: the message to check.

    Raises:
        LocalProtocolError: a field value would make the peer reject the frame.
    """
    try:
        code, names, getter = _ENCODERS[type(msg)]
    except KeyError:
        raise LocalProtocolError(f"not a Felix message: {type(msg).__name__}") from None
    values = getter(msg)
    fields = {name: value for name, value in zip(names, values, strict=True) if value is not None}
    try:
        _DECODERS[code](fields)
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
    count = len(payloads)
    for name, value in (("timestamps_ms", timestamps_ms), ("keys", keys), ("headers", headers)):
        if value is not None:
            if len(value) != count:
                raise LocalProtocolError(
                    f"EventBatch.{name}: {len(value)} entries for {count} payloads"
                )
            fields[name] = value
    return _frame(_pack([m.EventBatch.TYPE, fields]))


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
            UnknownMessageType: not fatal.
        """
        payload = self._frames.next_frame()
        if payload is None:
            return None
        return decode(payload)
