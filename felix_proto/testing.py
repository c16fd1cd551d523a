"""Hypothesis strategies for every Felix message type (install the ``testing`` extra).

This is the one module of :mod:`felix_proto` that imports hypothesis. Another
implementation can use it to fuzz its own codec against ours: draw messages, encode them
with :func:`felix_proto.codec.encode`, decode them with yours, and compare. Every message
drawn is valid: it survives ``decode(encode(msg)) == msg`` and :func:`felix_proto.codec.validate`.

Example::

    from hypothesis import given
    from felix_proto.testing import messages

    @given(messages())
    def test_round_trip(msg):
        assert decode(encode(msg)[HEADER_SIZE:]) == msg
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from . import messages as m
from .codec import ENUM_FIELDS, INT_MAXIMA, U16_FIELDS, U64_MAX

__all__ = [
    "STRATEGIES",
    "any_values",
    "message_strategy",
    "messages",
    "u64",
]

_SMALL = 6
"""Largest list or map drawn: enough to exercise encoding, small enough to stay fast."""

u64 = st.integers(min_value=0, max_value=U64_MAX)
"""Any unsigned 64-bit integer (ids, offsets, counts, timestamps)."""
_u16 = st.integers(min_value=0, max_value=0xFFFF)
_text = st.text(max_size=24)
_blob = st.binary(max_size=48)
_headers = st.dictionaries(_text, _blob, max_size=_SMALL)


def any_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any value a ``dict[str, Any]`` field may carry: nil, bool, int (-2**63..2**64-1),
    float (no NaN, so values compare equal), str, bytes, and arrays and str-keyed maps of them.

    Args:
        max_leaves: roughly how many scalars one drawn value holds at most.

    Returns:
        The strategy.
    """
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(1 << 63), max_value=U64_MAX),
        st.floats(allow_nan=False),
        _text,
        _blob,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


_any_map = st.dictionaries(_text, any_values(), max_size=4)

_BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "int": u64,
    "str": _text,
    "bytes": _blob,
    "bool": st.booleans(),
    "list[int]": st.lists(u64, max_size=_SMALL),
    "list[str]": st.lists(_text, max_size=_SMALL),
    "list[bytes]": st.lists(_blob, max_size=_SMALL),
    "list[bytes | None]": st.lists(st.none() | _blob, max_size=_SMALL),
    "dict[str, bytes]": _headers,
    "dict[str, int]": st.dictionaries(_text, u64, max_size=_SMALL),
    "dict[str, Any]": _any_map,
    "list[dict[str, Any]]": st.lists(_any_map, max_size=3),
    "list[dict[str, bytes] | None]": st.lists(st.none() | _headers, max_size=_SMALL),
}
_U16_BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "int": _u16,
    "list[int]": st.lists(_u16, max_size=_SMALL),
}

_PARALLEL: dict[type[m.Message], tuple[str, ...]] = {
    m.PublishBatch: ("keys", "headers"),
    m.Enqueue: ("keys", "headers"),
    m.EventBatch: ("timestamps_ms", "keys", "headers"),
    m.DeliveryBatch: ("delivery_ids", "attempts", "offsets", "timestamps_ms", "keys", "headers"),
}
_PARALLEL_ELEMENT: dict[str, st.SearchStrategy[Any]] = {
    "delivery_ids": u64,
    "attempts": u64,
    "offsets": u64,
    "timestamps_ms": u64,
    "keys": st.none() | _blob,
    "headers": st.none() | _headers,
}


def _field_strategy(cls: type[m.Message], f: dataclasses.Field[Any]) -> st.SearchStrategy[Any]:
    annotation = str(f.type)
    optional = annotation.endswith(" | None")
    if optional:
        annotation = annotation[: -len(" | None")]
    enum_cls = ENUM_FIELDS.get((cls, f.name))
    if enum_cls is not None:
        inner: st.SearchStrategy[Any] = st.sampled_from([e.value for e in enum_cls])
    elif (cls, f.name) in U16_FIELDS:
        inner = _U16_BY_ANNOTATION[annotation]
    elif (cls, f.name) in INT_MAXIMA:
        inner = st.integers(min_value=0, max_value=INT_MAXIMA[(cls, f.name)])
    else:
        inner = _BY_ANNOTATION[annotation]
    return st.none() | inner if optional else inner


@st.composite
def _parallel_lists(draw: st.DrawFn, cls: type[m.Message], others: tuple[str, ...]) -> Any:
    fields = {
        f.name: draw(_field_strategy(cls, f))
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in others and f.name != "payloads"
    }
    count = draw(st.integers(min_value=0, max_value=_SMALL))
    fields["payloads"] = draw(st.lists(_blob, min_size=count, max_size=count))
    required = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING
    }
    for name in others:
        lists = st.lists(_PARALLEL_ELEMENT[name], min_size=count, max_size=count)
        fields[name] = draw(lists if name in required else st.none() | lists)
    return cls(**fields)


def message_strategy(cls: type[m.Message]) -> st.SearchStrategy[m.Message]:
    """A strategy for valid instances of one message class.

    Args:
        cls: a class from :data:`felix_proto.messages.MESSAGE_TYPES`.

    Returns:
        The strategy; every field drawn within the codec's rules (types, ranges, enums,
        parallel list lengths).

    Raises:
        KeyError: ``cls`` is not a Felix message class.
    """
    return STRATEGIES[cls]


def _build(cls: type[m.Message]) -> st.SearchStrategy[m.Message]:
    others = _PARALLEL.get(cls)
    if others is not None:
        return _parallel_lists(cls, others)
    kwargs = {
        f.name: _field_strategy(cls, f)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return st.builds(cls, **kwargs)


STRATEGIES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    cls: _build(cls) for cls in m.MESSAGE_TYPES.values()
}
"""A strategy per message class."""


def messages() -> st.SearchStrategy[m.Message]:
    """A strategy for a valid message of any type.

    Returns:
        The strategy (each type equally likely).
    """
    return st.one_of(*STRATEGIES.values())
