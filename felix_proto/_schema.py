"""Per-message-class schema: field checks, the generic (authoritative) decoder and the
generated fast encoders and decoders. Private to :mod:`felix_proto.codec`.

Everything here is built once, at import, from the dataclass declarations in
:mod:`felix_proto.messages` plus :data:`ENUM_FIELDS`, :data:`U16_FIELDS` and
:data:`INT_MAXIMA`.

Two kinds of field error exist. A value that is not of the field's wire type (a str for an
int, a negative or bool for a uint, an int above 65535 for a uint16, an enum value not
listed) is ``BadFrame``; a uint of the right type above the field's semantic maximum
(:data:`INT_MAXIMA`, e.g. a TTL above ``MAX_DURATION_MS``) is ``InvalidField``
(``INVALID_ARGUMENT``). Both are non-fatal, name the field and carry ``details["field"]``.

Two decoders exist per class:

* the *generic* one (:func:`_make_generic_decoder`) loops over field specs, raises a
  ``BadFrame`` naming the field, and is the reference for the rules;
* the *fast* one is Python source generated per class (as :mod:`dataclasses` itself does)
  with the scalar checks inlined and the instance filled through its slot descriptors
  (the frozen ``__init__`` costs about twice as much). On any doubt it hands the fields to
  the generic decoder, which either raises the precise error or returns its result, so the
  fast path can never accept what the generic one rejects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from . import messages as m
from .errors import BadFrame, InvalidField, RemoteProtocolError

__all__ = [
    "DECODERS",
    "ENUM_FIELDS",
    "GENERIC_DECODERS",
    "INT_MAXIMA",
    "MAX_ANY_DEPTH",
    "TO_FIELDS",
    "U16_FIELDS",
    "U64_MAX",
    "make_encoder",
    "make_field_encoder",
    "make_record_factory",
    "tname",
    "valid_request_id",
]

_R = TypeVar("_R")

U64_MAX = (1 << 64) - 1
"""Largest value of an unsigned 64-bit field."""
_U16_MAX = 0xFFFF

ENUM_FIELDS: dict[tuple[type[m.Message], str], type[Enum]] = {
    (m.Publish, "ack"): m.AckMode,
    (m.PublishBatch, "ack"): m.AckMode,
    (m.Enqueue, "ack"): m.AckMode,
    (m.Ack, "mode"): m.AckMode,
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

INT_MAXIMA: dict[tuple[type[m.Message], str], int] = {
    (m.Hello, "max_frame_size"): m.MAX_FRAME_SIZE_FIELD,
    (m.GoAway, "deadline_ms"): m.MAX_DURATION_MS,
    (m.TokenIssued, "expires_in_ms"): m.MAX_DURATION_MS,
    (m.Nack, "delay_ms"): m.MAX_DURATION_MS,
    (m.CachePut, "ttl_ms"): m.MAX_DURATION_MS,
}
"""uint64 fields whose value may not exceed a semantic maximum: a larger one is
``InvalidField`` (``INVALID_ARGUMENT``) naming the field. Every other integer field takes
its wire type's whole range (uint64, or uint16 for :data:`U16_FIELDS`)."""

MAX_ANY_DEPTH = 32
"""How deeply a value of type ``any`` (``dict[str, Any]`` fields) may nest arrays and maps,
the field's own map counting as the first level. Deeper values are ``BadFrame``: they would
make recursive code (``repr``, ``==``, JSON) fail on the decoded message."""

_PARALLEL_LISTS: dict[type[m.Message], tuple[str, tuple[str, ...]]] = {
    m.PublishBatch: ("payloads", ("keys", "headers")),
    m.Enqueue: ("payloads", ("keys", "headers")),
    m.EventBatch: ("payloads", ("timestamps_ms", "keys", "headers")),
    m.DeliveryBatch: (
        "payloads",
        ("delivery_ids", "attempts", "offsets", "timestamps_ms", "keys", "headers"),
    ),
}
"""Lists that, when present, must have one entry per element of the first list."""


# ------------------------------------------------------------------------ checkers


class _Invalid(Exception):
    """A value failed its check; the text says how (the caller adds the field name)."""


class _AboveMaximum(_Invalid):
    """A uint of the right type above its field's semantic maximum (``InvalidField``)."""


_Check = Callable[[Any], None]


def tname(value: object) -> str:
    """The msgpack-ish name of a value's type, for error messages."""
    return "nil" if value is None else type(value).__name__


def _expected(what: str, value: object) -> _Invalid:
    return _Invalid(f"expected {what}, got {tname(value)}")


def _uint(limit: int) -> _Check:
    text = "2**64-1" if limit == U64_MAX else str(limit)

    def check(v: Any) -> None:
        if type(v) is not int:
            raise _expected("int", v)
        if not 0 <= v <= limit:
            raise _Invalid(f"{v} out of range 0..{text}")

    return check


def _uint_max(limit: int) -> _Check:
    """A uint64 field with a semantic maximum: above it is :class:`_AboveMaximum`."""
    as_uint = _uint(U64_MAX)

    def check(v: Any) -> None:
        as_uint(v)
        if v > limit:
            raise _AboveMaximum(f"{v} is above the maximum {limit}")

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
            return _Invalid(f"[{i}]: expected {what}, got {tname(item)}")
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
                raise _Invalid(f"key {key!r}: expected str, got {tname(key)}")
            if type(item) not in value_types:
                raise _Invalid(f"[{key!r}]: expected {value_what}, got {tname(item)}")

    return check


_check_headers = _map_of(frozenset({bytes}), "bytes")
_check_limits_values = _map_of(frozenset({int}), "int")


def _check_limits(v: Any) -> None:
    _check_limits_values(v)
    for key, item in v.items():
        if not 0 <= item <= U64_MAX:
            raise _Invalid(f"[{key!r}]: {item} out of range 0..2**64-1")


_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _check_any(v: Any, depth: int = 1) -> None:
    """Accept any msgpack value built from nil, bool, int, float, str, bin, array and map
    with str keys (no ext types), nesting at most :data:`MAX_ANY_DEPTH` levels of arrays
    and maps (``v`` itself at ``depth``). Iterative, level by level."""
    level = [v]
    while level:
        below: list[Any] = []
        for item in level:
            tp = type(item)
            if tp in _PLAIN_SCALARS:
                continue
            if tp is list:
                below.extend(item)
            elif tp is dict:
                for key, value in item.items():
                    if type(key) is not str:
                        raise _Invalid(f"map key {key!r}: expected str, got {tname(key)}")
                    below.append(value)
            else:
                raise _Invalid(f"unsupported msgpack value of type {tname(item)}")
            if depth > MAX_ANY_DEPTH:
                raise _Invalid(f"arrays and maps nest more than {MAX_ANY_DEPTH} levels deep")
        level = below
        depth += 1


def _check_any_map(v: Any) -> None:
    if type(v) is not dict:
        raise _expected("map", v)
    _check_any(v)


def _check_any_map_list(v: Any) -> None:
    if type(v) is not list:
        raise _expected("list", v)
    for i, item in enumerate(v):
        if type(item) is not dict:
            raise _Invalid(f"[{i}]: expected map, got {tname(item)}")
    _check_any(v, depth=0)  # the list is not an `any` value; each map in it is


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


def _inline_uint_list(limit: int) -> str:
    # All elements >= 2 and an int sum <= limit imply each element is an int in 2..limit:
    # min() raises TypeError for values not comparable with int (nil, str, bin, list, map)
    # and catches negatives and bools (a bool is 0 or 1); sum() turns float if one is a
    # float. Lists holding 0 or 1 (or summing past the limit) take the generic path.
    return (
        "type(v) is not list or (v and (min(v) < 2 or type(_t := sum(v)) is not int"
        f" or _t > {limit}))"
    )


def _inline_min_list(tp: str) -> str:
    # Among the values msgpack yields, a str (bin) compares only with another str (bin):
    # any other element makes min() raise TypeError or return a non-str (non-bytes) value.
    return f"type(v) is not list or (v and type(min(v)) is not {tp})"


_INLINE: dict[str, str] = {
    "int": f"type(v) is not int or v < 0 or v > {U64_MAX}",
    "str": "type(v) is not str",
    "bytes": "type(v) is not bytes",
    "bool": "type(v) is not bool",
    "list[int]": _inline_uint_list(U64_MAX),
    "list[str]": _inline_min_list("str"),
    "list[bytes]": _inline_min_list("bytes"),
}
"""Inline conditions on ``v``, true whenever the field's check would reject ``v`` *for the
values msgpack yields* (nil, bool, int in -2**63..2**64-1, float, str, bytes, list, dict, and
msgpack's ``Timestamp``); they may also be true for some valid values, which then take the
generic path. They may raise ``TypeError`` or ``ValueError``, which also means "generic"."""
_INLINE_U16: dict[str, str] = {
    "int": f"type(v) is not int or v < 0 or v > {_U16_MAX}",
    "list[int]": _inline_uint_list(_U16_MAX),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    check: _Check
    required: bool
    optional: bool
    """The annotation allows ``None`` (the encoder omits the field when it is ``None``)."""
    fail_if: str | None
    """An inline Python condition on ``v`` that is true when ``check(v)`` would fail; an
    enum field's condition refers to its set of values as ``_ENUM``."""
    enum_values: frozenset[Any] | None
    default: Any
    factory: Callable[[], Any] | None


def _field_specs(cls: type[m.Message]) -> tuple[_FieldSpec, ...]:
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        annotation = str(f.type)
        optional = annotation.endswith(" | None")
        if optional:
            annotation = annotation[: -len(" | None")]
        enum_cls = ENUM_FIELDS.get((cls, f.name))
        fail_if = _INLINE.get(annotation)
        enum_values = None
        if enum_cls is not None:
            base = "int" if annotation == "int" else "str"
            check = _enum(enum_cls, int if base == "int" else str)
            enum_values = frozenset(member.value for member in enum_cls)
            fail_if = f"type(v) is not {base} or v not in _ENUM"
        elif (cls, f.name) in U16_FIELDS:
            check = _U16_BY_ANNOTATION[annotation]
            fail_if = _INLINE_U16.get(annotation)
        elif (cls, f.name) in INT_MAXIMA:
            limit = INT_MAXIMA[(cls, f.name)]
            assert annotation == "int", f"{cls.__name__}.{f.name}: a maximum needs an int"
            check = _uint_max(limit)
            fail_if = f"type(v) is not int or v < 0 or v > {limit}"
        else:
            check = _BY_ANNOTATION[annotation]  # a KeyError here is a bug in messages.py
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        required = f.default is dataclasses.MISSING and factory is None
        default = None if f.default is dataclasses.MISSING else f.default
        specs.append(
            _FieldSpec(f.name, check, required, optional, fail_if, enum_values, default, factory)
        )
    return tuple(specs)


def valid_request_id(fields: Any) -> int | None:
    """The ``request_id`` in a decoded field map, if it holds a valid one."""
    if type(fields) is not dict:
        return None
    rid = fields.get("request_id")
    if type(rid) is int and 0 <= rid <= U64_MAX:
        return rid
    return None


def _bad(
    cls: type[m.Message], name: str, exc: _Invalid | str, fields: dict[str, Any]
) -> RemoteProtocolError:
    """The error for field ``name``: ``InvalidField`` above a maximum, else ``BadFrame``."""
    kind = InvalidField if isinstance(exc, _AboveMaximum) else BadFrame
    return kind(
        f"{cls.__name__}.{name}: {exc}",
        fatal=False,
        request_id=valid_request_id(fields),
        details={"field": name},
    )


def _make_generic_decoder(cls: type[m.Message]) -> Callable[[dict[str, Any]], m.Message]:
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
                raise _bad(cls, name, exc, fields) from None
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


GENERIC_DECODERS: dict[int, Callable[[dict[str, Any]], m.Message]] = {
    code: _make_generic_decoder(cls) for code, cls in m.MESSAGE_TYPES.items()
}
"""The reference decoder of each message type's field map, by type code."""


# ------------------------------------------------------------------------ generated fast paths


def _builder_class(cls: Any) -> type | None:
    """A mutable twin of a frozen slots dataclass: same base, same slots, no ``__setattr__``.

    The fast decoders fill a twin with plain attribute stores (specialised by the
    interpreter, a few ns each) and then assign ``__class__``, which CPython allows between
    classes of identical layout. That is ~3x cheaper than the slot descriptors' ``__set__``
    and ~6x cheaper than the frozen ``__init__``. ``None`` if this interpreter refuses the
    switch; the decoder then uses the descriptors.
    """
    twin = type(
        f"_{cls.__name__}Builder",
        cls.__bases__,
        {"__slots__": cls.__slots__, "__module__": __name__},
    )
    try:
        probe: Any = object.__new__(twin)
        probe.__class__ = cls
    except TypeError:  # pragma: no cover - CPython 3.11+ allows it
        return None
    return twin


def make_record_factory(cls: type[_R]) -> Callable[..., _R]:
    """A positional constructor of the frozen slots dataclass ``cls`` (fields in declaration
    order, every one given), filled through :func:`_builder_class`'s twin: the same object
    as ``cls(**fields)`` for about a third of the cost, for records the machines build on
    every request or reply (events made from values that were already checked)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    builder = _builder_class(cls)
    ns: dict[str, Any] = {"_new": object.__new__, "_builder": builder, "_cls": cls}
    args = ", ".join(names)
    if builder is None:  # pragma: no cover - CPython 3.11+ allows the switch
        keywords = ", ".join(f"{n}={n}" for n in names)
        body = [f"def new({args}):", f"    return _cls({keywords})"]
    else:
        body = [f"def new({args}):", "    o = _new(_builder)"]
        body.extend(f"    o.{n} = {n}" for n in names)
        body.extend(["    o.__class__ = _cls", "    return o"])
    exec("\n".join(body), ns)
    fn: Callable[..., _R] = ns["new"]
    return fn


def _inline_condition(spec: _FieldSpec, i: int, ns: dict[str, Any]) -> str:
    """Field ``i``'s inline failure condition (``spec.fail_if``, which must exist), its enum
    values bound in the generated function's namespace ``ns`` as ``_e{i}``."""
    fail_if = spec.fail_if
    assert fail_if is not None
    if spec.enum_values is not None:
        ns[f"_e{i}"] = spec.enum_values
        fail_if = fail_if.replace("_ENUM", f"_e{i}")
    return fail_if


def _parallel_list_lines(
    cls: type[m.Message], specs: tuple[_FieldSpec, ...], give_up: str
) -> list[str]:
    """Generated lines (inside the ``try`` of a generated function, the fields' values in
    ``a0``, ``a1`` ...) that run ``give_up`` when a parallel list of ``cls`` has another
    length than its lead list (the rule :func:`_make_generic_decoder` reports)."""
    parallel = _PARALLEL_LISTS.get(cls)
    if parallel is None:
        return []
    names = [s.name for s in specs]
    lead = names.index(parallel[0])
    lines = []
    for other in parallel[1]:
        j = names.index(other)
        lines.append(f"        if a{j} is not None and len(a{j}) != len(a{lead}):")
        lines.append(f"            {give_up}")
    return lines


def _make_fast_decoder(cls: type[m.Message]) -> Callable[[dict[str, Any]], m.Message]:
    """Generate the fast decoder of ``cls``: ``f`` is a field map msgpack produced.

    Required fields are read with ``f[name]`` (a missing one raises ``KeyError``), optional
    ones with ``f.get``; each value is checked by its inline condition or its checker. Any
    failure (a true condition, ``_Invalid``, ``KeyError``, ``TypeError``, ``ValueError``)
    hands ``f`` to the generic decoder, so the fast path never accepts what the generic one
    rejects, and every error message comes from the generic one.
    """
    specs = _field_specs(cls)
    ns: dict[str, Any] = {
        "_slow": GENERIC_DECODERS[cls.TYPE],
        "_Invalid": _Invalid,
        "_new": object.__new__,
        "_cls": cls,
    }
    body = ["def decode_fields(f):", "    try:"]
    for i, spec in enumerate(specs):
        if spec.required:
            body.append(f"        v = f[{spec.name!r}]")
        else:
            body.append(f"        v = f.get({spec.name!r})")
            body.append("        if v is None:")
            if spec.factory is not None:
                ns[f"_f{i}"] = spec.factory
                body.append(f"            v = _f{i}()")
            else:
                ns[f"_d{i}"] = spec.default
                body.append(f"            v = _d{i}")
        else_ = "" if spec.required else "el"
        if spec.fail_if is not None:
            fail_if = _inline_condition(spec, i, ns)
            body.append(f"        {else_}if {fail_if}:")
            body.append("            return _slow(f)")
        else:
            ns[f"_c{i}"] = spec.check
            if spec.required:
                body.append(f"        _c{i}(v)")
            else:
                body.append("        else:")
                body.append(f"            _c{i}(v)")
        body.append(f"        a{i} = v")
    body.extend(_parallel_list_lines(cls, specs, "return _slow(f)"))
    body.append("    except (_Invalid, KeyError, TypeError, ValueError):")
    body.append("        return _slow(f)")
    builder = _builder_class(cls)
    if builder is not None:
        ns["_builder"] = builder
        body.append("    o = _new(_builder)")
        body.extend(f"    o.{spec.name} = a{i}" for i, spec in enumerate(specs))
        body.append("    o.__class__ = _cls")
    else:  # pragma: no cover
        body.append("    o = _new(_cls)")
        for i, spec in enumerate(specs):
            ns[f"_s{i}"] = getattr(cls, spec.name).__set__  # the slot's member descriptor
            body.append(f"    _s{i}(o, a{i})")
    body.append("    return o")
    exec("\n".join(body), ns)
    fn: Callable[[dict[str, Any]], m.Message] = ns["decode_fields"]
    return fn


def _field_map_lines(specs: tuple[_FieldSpec, ...], values: list[str] | None = None) -> list[str]:
    """Source lines that build ``d``, the field map of ``msg``: the leading required fields
    as one dict display, then each later field, an optional one only when not None.
    ``values`` are the expressions of the fields' values (default ``msg.NAME``)."""
    exprs = values if values is not None else [f"msg.{spec.name}" for spec in specs]
    leading = []
    for spec in specs:
        if spec.optional:
            break
        leading.append(spec.name)
    items = ", ".join(f"{name!r}: {exprs[i]}" for i, name in enumerate(leading))
    lines = [f"    d = {{{items}}}"]
    for i in range(len(leading), len(specs)):
        spec = specs[i]
        if spec.optional:
            lines.append(f"    v = {exprs[i]}")
            lines.append("    if v is not None:")
            lines.append(f"        d[{spec.name!r}] = v")
        else:
            lines.append(f"    d[{spec.name!r}] = {exprs[i]}")
    return lines


def _make_to_fields(cls: type[m.Message]) -> Callable[[Any], dict[str, Any]]:
    specs = _field_specs(cls)
    body = ["def to_fields(msg):"]
    body.extend(_field_map_lines(specs))
    body.append("    return d")
    ns: dict[str, Any] = {}
    exec("\n".join(body), ns)
    fn: Callable[[Any], dict[str, Any]] = ns["to_fields"]
    return fn


DECODERS: dict[int, Callable[[dict[str, Any]], m.Message]] = {
    code: _make_fast_decoder(cls) for code, cls in m.MESSAGE_TYPES.items()
}
"""The fast decoder of each message type's field map, by type code (falls back to generic)."""


def make_encoder(
    cls: type[m.Message],
    pack_small: Callable[[Any], bytes],
    pack_large: Callable[[Any], bytes],
    small_limit: int,
) -> Callable[[Any], bytes]:
    """Generate ``encode(msg) -> frame`` for ``cls``: builds ``[TYPE, fields]`` (fields as
    :data:`TO_FIELDS` builds them) and hands it to ``pack_small`` or ``pack_large``.

    Batches always go to ``pack_large``; a class whose only big values are ``bytes`` fields
    goes to ``pack_large`` when their lengths add up to more than ``small_limit``; every
    other class goes to ``pack_small``.
    """
    specs = _field_specs(cls)
    ns: dict[str, Any] = {"_small": pack_small, "_large": pack_large}
    body = ["def encode(msg):"]
    body.extend(_field_map_lines(specs))
    blobs = [s.name for s in specs if _annotation(cls, s.name) == "bytes"]
    if cls in _PARALLEL_LISTS:
        body.append(f"    return _large([{cls.TYPE}, d])")
    elif blobs:
        for i, name in enumerate(blobs):
            body.append(f"    b{i} = msg.{name}")
        size = " + ".join(f"(len(b{i}) if type(b{i}) is bytes else 0)" for i in range(len(blobs)))
        body.append(f"    if {size} > {small_limit}:")
        body.append(f"        return _large([{cls.TYPE}, d])")
        body.append(f"    return _small([{cls.TYPE}, d])")
    else:
        body.append(f"    return _small([{cls.TYPE}, d])")
    exec("\n".join(body), ns)
    fn: Callable[[Any], bytes] = ns["encode"]
    return fn


_EXACT_SCALARS = frozenset({"int", "str", "bytes", "bool"})
"""Annotations whose inline condition is exact for *any* Python value, not only for what
msgpack yields (``type(v) is ...`` tests): the field encoders may inline them."""


def make_field_encoder(
    cls: type[m.Message],
    pack_small: Callable[[Any], bytes],
    pack_large: Callable[[Any], bytes],
    small_limit: int,
) -> Callable[[dict[str, Any]], bytes | None]:
    """Generate ``encode_fields(f) -> frame | None`` for ``cls``: ``f`` maps field names (a
    subset of the class's, as the typed API passes them) to values, missing or ``None``
    meaning the field's default. Each value gets the check the generic decoder gives it
    (scalars inline, the rest through their checker), then the frame is built as
    :func:`make_encoder` builds ``encode(cls(**f))``, byte for byte, without the message.

    ``None`` means "doubt": an unknown field name, a value the generic decoder would reject
    (a missing required field, a wrong type or range, parallel lists of different
    lengths), or anything raising; the caller then takes the reference path, which states
    the error. So a frame is returned only for field values
    :func:`~felix_proto.codec.validate` accepts.
    """
    specs = _field_specs(cls)
    ns: dict[str, Any] = {"_small": pack_small, "_large": pack_large, "_Invalid": _Invalid}
    ns["_names"] = frozenset(spec.name for spec in specs)
    body = ["def encode_fields(f):", "    if not f.keys() <= _names:", "        return None"]
    body.append("    try:")
    for i, spec in enumerate(specs):
        exact = spec.fail_if is not None and (
            spec.enum_values is not None or _annotation(cls, spec.name) in _EXACT_SCALARS
        )
        if spec.factory is not None:
            ns[f"_f{i}"] = spec.factory
            body.append(f"        v = f[{spec.name!r}] if {spec.name!r} in f else _f{i}()")
        elif spec.optional or spec.required:
            body.append(f"        v = f.get({spec.name!r})")
        else:
            ns[f"_d{i}"] = spec.default
            body.append(f"        v = f.get({spec.name!r}, _d{i})")
        if spec.required:
            body.append("        if v is None:")
            body.append("            return None")
        if exact:
            fail_if = _inline_condition(spec, i, ns)
            body.append(f"        if v is not None and ({fail_if}):")
            body.append("            return None")
        else:
            ns[f"_c{i}"] = spec.check
            body.append("        if v is not None:")
            body.append(f"            _c{i}(v)")
        body.append(f"        a{i} = v")
    body.extend(_parallel_list_lines(cls, specs, "return None"))
    body.append("    except (_Invalid, KeyError, TypeError, ValueError):")
    body.append("        return None")
    body.extend(_field_map_lines(specs, [f"a{i}" for i in range(len(specs))]))
    blobs = [f"a{i}" for i, s in enumerate(specs) if _annotation(cls, s.name) == "bytes"]
    if cls in _PARALLEL_LISTS:
        body.append(f"    return _large([{cls.TYPE}, d])")
    elif blobs:
        size = " + ".join(f"(len({b}) if type({b}) is bytes else 0)" for b in blobs)
        body.append(f"    if {size} > {small_limit}:")
        body.append(f"        return _large([{cls.TYPE}, d])")
        body.append(f"    return _small([{cls.TYPE}, d])")
    else:
        body.append(f"    return _small([{cls.TYPE}, d])")
    exec("\n".join(body), ns)
    fn: Callable[[dict[str, Any]], bytes | None] = ns["encode_fields"]
    return fn


def _annotation(cls: type[m.Message], name: str) -> str:
    """A field's annotation without a trailing ``| None``."""
    text = str(cls.__dataclass_fields__[name].type)  # type: ignore[attr-defined]
    return text.removesuffix(" | None")


TO_FIELDS: dict[type[m.Message], Callable[[Any], dict[str, Any]]] = {
    cls: _make_to_fields(cls) for cls in m.MESSAGE_TYPES.values()
}
"""Each message class's field-map builder: fields in declaration order, ``None`` optionals
left out."""
