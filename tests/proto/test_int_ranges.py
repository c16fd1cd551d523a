"""Every integer field of every message has a range, checked at decode, naming the field.

* outside the wire type (negative, or above 65535 for a uint16): BadFrame (BAD_FRAME);
* a uint above the field's semantic maximum (INT_MAXIMA, e.g. a TTL above
  MAX_DURATION_MS): InvalidField (INVALID_ARGUMENT);
* the extremes of each range round-trip; a value msgpack cannot carry makes encode raise a
  LocalProtocolError naming the field instead of a bare msgpack error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_proto import messages as m
from felix_proto.codec import (
    ENUM_FIELDS,
    INT_MAXIMA,
    U16_FIELDS,
    U64_MAX,
    decode,
    encode,
    validate,
)
from felix_proto.errors import (
    BadFrame,
    ErrorCode,
    InvalidField,
    LocalProtocolError,
    RemoteProtocolError,
)
from felix_proto.frames import HEADER_SIZE
from felix_proto.testing import message_strategy

INT_SHAPES = ("int", "list[int]", "dict[str, int]")
FEW = settings(max_examples=20)
"""Per (class, field) case: ~50 cases x 5 properties, so each gets a few examples."""


def int_fields() -> list[tuple[type[m.Message], str, str]]:
    """(class, field, shape) of every integer field that is not an enum."""
    found = []
    for cls in m.MESSAGE_TYPES.values():
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            shape = str(f.type).removesuffix(" | None")
            if shape in INT_SHAPES and (cls, f.name) not in ENUM_FIELDS:
                found.append((cls, f.name, shape))
    return found


INT_FIELDS = int_fields()
IDS = [f"{cls.__name__}.{name}" for cls, name, _ in INT_FIELDS]


def upper(cls: type[m.Message], name: str) -> int:
    if (cls, name) in U16_FIELDS:
        return 0xFFFF
    return INT_MAXIMA.get((cls, name), U64_MAX)


def shaped(shape: str, value: int) -> Any:
    """``value`` as the field's shape carries it (alone, in a list, in a map)."""
    return {"int": value, "list[int]": [0, value], "dict[str, int]": {"k": value}}[shape]


PARALLEL_INTS = ("delivery_ids", "attempts", "offsets", "timestamps_ms")
"""Integer lists of batches (``EventBatch``, ``DeliveryBatch``): one entry per payload."""


def with_field(msg: m.Message, name: str, value: Any) -> bytes:
    """``msg``'s payload with one wire field replaced (a parallel list keeps its length)."""
    code, fields = msgpack.unpackb(encode(msg)[HEADER_SIZE:])
    if name in PARALLEL_INTS and "payloads" in fields:
        fields["payloads"] = [b"p"] * len(value)
        fields.pop("keys", None)
        fields.pop("headers", None)
        for other in PARALLEL_INTS:
            if other in fields:
                fields[other] = [0] * len(value)
    fields[name] = value
    return bytes(msgpack.packb([code, fields]))


def request_id_of(msg: m.Message) -> int | None:
    return getattr(msg, "request_id", None)


def test_the_semantic_maxima() -> None:
    assert {
        (m.Hello, "max_frame_size"): 0xFFFF_FFFF,
        (m.GoAway, "deadline_ms"): m.MAX_DURATION_MS,
        (m.TokenIssued, "expires_in_ms"): m.MAX_DURATION_MS,
        (m.Nack, "delay_ms"): m.MAX_DURATION_MS,
        (m.CachePut, "ttl_ms"): m.MAX_DURATION_MS,
    } == INT_MAXIMA
    assert m.MAX_DURATION_MS == 10**12
    assert set(INT_MAXIMA) <= {(cls, name) for cls, name, _ in INT_FIELDS}


def test_cache_put_ttl_of_2_64_minus_1_is_invalid_argument_naming_the_field() -> None:
    """The regression: this TTL was accepted and every CacheGet of the key went unanswered."""
    put = msgpack.packb(
        [
            m.CachePut.TYPE,
            {
                "request_id": 11,
                "tenant": "t",
                "namespace": "n",
                "cache": "c",
                "key": "k",
                "value": b"v",
                "ttl_ms": U64_MAX,
            },
        ]
    )
    with pytest.raises(InvalidField) as info:
        decode(put)
    err = info.value
    assert err.error_code == ErrorCode.INVALID_ARGUMENT and not err.fatal
    assert err.request_id == 11 and err.details == {"field": "ttl_ms"}
    assert err.message == f"CachePut.ttl_ms: {U64_MAX} is above the maximum 1000000000000"


@pytest.mark.parametrize(("cls", "name", "shape"), INT_FIELDS, ids=IDS)
@FEW
@given(data=st.data())
def test_above_the_maximum_is_typed_and_names_the_field(
    cls: type[m.Message], name: str, shape: str, data: st.DataObject
) -> None:
    top = upper(cls, name)
    if top == U64_MAX:  # msgpack cannot carry more: only the negative side applies
        return
    msg = data.draw(message_strategy(cls))
    value = data.draw(st.integers(min_value=top + 1, max_value=U64_MAX))
    with pytest.raises(RemoteProtocolError) as info:
        decode(with_field(msg, name, shaped(shape, value)))
    err = info.value
    expected = BadFrame if (cls, name) in U16_FIELDS else InvalidField
    assert type(err) is expected and not err.fatal
    assert err.details == {"field": name} and err.message.startswith(f"{cls.__name__}.{name}")
    assert err.request_id == request_id_of(msg)


@pytest.mark.parametrize(("cls", "name", "shape"), INT_FIELDS, ids=IDS)
@FEW
@given(data=st.data())
def test_negative_is_a_bad_frame_naming_the_field(
    cls: type[m.Message], name: str, shape: str, data: st.DataObject
) -> None:
    msg = data.draw(message_strategy(cls))
    value = data.draw(st.integers(min_value=-(1 << 63), max_value=-1))
    with pytest.raises(BadFrame) as info:
        decode(with_field(msg, name, shaped(shape, value)))
    err = info.value
    assert err.error_code == ErrorCode.BAD_FRAME and not err.fatal
    assert err.details == {"field": name} and err.message.startswith(f"{cls.__name__}.{name}")
    if name != "request_id":
        assert err.request_id == request_id_of(msg)


@pytest.mark.parametrize(("cls", "name", "shape"), INT_FIELDS, ids=IDS)
@FEW
@given(data=st.data())
def test_every_value_in_range_round_trips(
    cls: type[m.Message], name: str, shape: str, data: st.DataObject
) -> None:
    msg = data.draw(message_strategy(cls))
    value = data.draw(st.sampled_from([0, upper(cls, name)]) | st.integers(0, upper(cls, name)))
    payload = with_field(msg, name, shaped(shape, value))
    decoded = decode(payload)
    validate(decoded)
    assert decode(encode(decoded)[HEADER_SIZE:]) == decoded
    assert getattr(decoded, name) == shaped(shape, value)


def drawn(cls: type[m.Message], name: str, data: st.DataObject) -> m.Message:
    """A valid message of ``cls``; a batch gets two payloads so a list can be swapped in."""
    msg = data.draw(message_strategy(cls))
    if cls is m.EventBatch and name == "timestamps_ms":
        return m.EventBatch(base_offset=1, payloads=[b"p", b"q"])
    if cls is m.DeliveryBatch:
        two = [0, 0]
        return m.DeliveryBatch(
            delivery_ids=two, attempts=two, offsets=two, payloads=[b"p", b"q"], timestamps_ms=two
        )
    return msg


@pytest.mark.parametrize(("cls", "name", "shape"), INT_FIELDS, ids=IDS)
@FEW
@given(data=st.data())
def test_validate_refuses_out_of_range_naming_the_field(
    cls: type[m.Message], name: str, shape: str, data: st.DataObject
) -> None:
    msg = drawn(cls, name, data)
    for bad in (-1, upper(cls, name) + 1):
        with pytest.raises(LocalProtocolError, match=f"^{cls.__name__}.{name}"):
            validate(dataclasses.replace(msg, **{name: shaped(shape, bad)}))  # type: ignore[type-var]


@pytest.mark.parametrize(("cls", "name", "shape"), INT_FIELDS, ids=IDS)
@FEW
@given(data=st.data())
def test_encoding_a_value_msgpack_cannot_carry_names_the_field(
    cls: type[m.Message], name: str, shape: str, data: st.DataObject
) -> None:
    """Defence in depth: a reply the broker cannot encode fails loudly and precisely."""
    msg = drawn(cls, name, data)
    bad = dataclasses.replace(msg, **{name: shaped(shape, 1 << 64)})  # type: ignore[type-var]
    with pytest.raises(LocalProtocolError) as info:
        encode(bad)
    assert str(info.value).startswith(f"cannot encode {cls.__name__}: {cls.__name__}.{name}: ")


def test_cache_value_ttl_remaining_overflow_names_the_field() -> None:
    too_big = m.CacheValue(request_id=1, found=True, value=b"v", ttl_remaining_ms=1 << 64)
    with pytest.raises(LocalProtocolError) as info:
        encode(too_big)
    assert str(info.value) == (
        "cannot encode CacheValue: CacheValue.ttl_remaining_ms: "
        "18446744073709551616 out of range 0..2**64-1"
    )
