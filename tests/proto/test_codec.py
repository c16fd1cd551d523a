"""The msgpack codec: round trips, strict field checks with named errors, fast paths."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto._schema import DECODERS, GENERIC_DECODERS, make_record_factory
from felix_proto.codec import (
    MessageDecoder,
    decode,
    encode,
    encode_event_batch,
    encode_fields,
    encode_v1_error,
    validate,
)
from felix_proto.errors import (
    BadFrame,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownMessageType,
    UnsupportedVersion,
)
from felix_proto.frames import HEADER_SIZE, parse_header
from felix_proto.testing import STRATEGIES, any_values, messages

PUBLISH = {"request_id": 7, "tenant": "t", "namespace": "n", "stream": "s", "payload": b"x"}


def payload(code: Any, fields: Any) -> bytes:
    return bytes(msgpack.packb([code, fields]))


def bad(code: Any, fields: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode(payload(code, fields))
    assert not info.value.fatal
    return info.value


@pytest.mark.parametrize("cls", list(m.MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_round_trip_every_type(cls: type[m.Message], data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[cls])
    frame = encode(msg)
    header = parse_header(frame)
    assert (header.version, header.flags, header.length) == (2, 0, len(frame) - HEADER_SIZE)
    assert decode(frame[HEADER_SIZE:]) == msg
    validate(msg)


@given(messages())
def test_fast_and_generic_decoders_agree(msg: m.Message) -> None:
    fields = msgpack.unpackb(encode(msg)[HEADER_SIZE:])[1]
    assert DECODERS[msg.TYPE](fields) == GENERIC_DECODERS[msg.TYPE](fields) == msg


def _outcome(decoder: Any, fields: dict[str, Any]) -> Any:
    try:
        return decoder(fields)
    except RemoteProtocolError as exc:
        return (type(exc).__name__, exc.message, exc.request_id, exc.details)


_ODD_ELEMENTS = st.one_of(
    any_values(max_leaves=3),
    st.sampled_from([0, 1, 2, True, False, -1, 2.5, 65535, 65536, (1 << 64) - 1, b"", ""]),
)


@given(messages(), st.data())
def test_fast_and_generic_decoders_agree_on_wrong_values(
    msg: m.Message, data: st.DataObject
) -> None:
    """Replace one field with any msgpack value (or a list of them, so the fast paths'
    list checks see mixed elements): both decoders give the same message or the same error."""
    fields = msgpack.unpackb(encode(msg)[HEADER_SIZE:])[1]
    name = data.draw(st.sampled_from(sorted(msg.__dataclass_fields__)))  # type: ignore[attr-defined]
    value = data.draw(st.one_of(any_values(), st.lists(_ODD_ELEMENTS, max_size=5)))
    fields[name] = value
    fields = msgpack.unpackb(msgpack.packb(fields))  # only what msgpack yields
    assert _outcome(DECODERS[msg.TYPE], fields) == _outcome(GENERIC_DECODERS[msg.TYPE], fields)


def test_none_fields_omitted_and_defaults_restored() -> None:
    msg = m.Publish(**PUBLISH)  # type: ignore[arg-type]
    fields = msgpack.unpackb(encode(msg)[HEADER_SIZE:])[1]
    assert "key" not in fields and "headers" not in fields
    assert list(fields) == ["request_id", "tenant", "namespace", "stream", "payload", "ack"]
    assert decode(payload(m.Publish.TYPE, PUBLISH)) == msg  # ack absent -> default


def test_unknown_fields_ignored_and_nil_means_absent() -> None:
    fields = {**PUBLISH, "future_field": [1, 2], "key": None}
    assert decode(payload(m.Publish.TYPE, fields)) == m.Publish(**PUBLISH)  # type: ignore[arg-type]


def test_wrong_field_type_names_the_field() -> None:
    err = bad(m.Publish.TYPE, {**PUBLISH, "stream": 5})
    assert isinstance(err, BadFrame)
    assert err.message == "Publish.stream: expected str, got int"
    assert err.request_id == 7
    assert err.details == {"field": "stream"}


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({k: v for k, v in PUBLISH.items() if k != "payload"}, "Publish.payload: missing"),
        ({**PUBLISH, "request_id": True}, "Publish.request_id: expected int, got bool"),
        ({**PUBLISH, "request_id": -1}, "Publish.request_id: -1 out of range"),
        ({**PUBLISH, "ack": 9}, "Publish.ack: 9 is not a AckMode"),
        ({**PUBLISH, "ack": True}, "Publish.ack: expected int, got bool"),
        ({**PUBLISH, "payload": "text"}, "Publish.payload: expected bytes, got str"),
        ({**PUBLISH, "headers": {"a": "b"}}, "Publish.headers: ['a']: expected bytes, got str"),
        ({**PUBLISH, "headers": {b"a": b"b"}}, "Publish.headers: key b'a': expected str"),
        ({**PUBLISH, "headers": [1]}, "Publish.headers: expected map, got list"),
    ],
)
def test_field_errors(fields: dict[str, Any], text: str) -> None:
    err = bad(m.Publish.TYPE, fields)
    assert err.message.startswith(text), err.message


@pytest.mark.parametrize(
    ("code", "fields", "text"),
    [
        (m.CacheValue.TYPE, {"request_id": 1, "found": 1}, "CacheValue.found: expected bool"),
        (m.Hello.TYPE, {"versions": [2, 70000]}, "Hello.versions: [1]: 70000 out of range"),
        (m.Hello.TYPE, {"versions": [2, "3"]}, "Hello.versions: [1]: expected int, got str"),
        (m.Hello.TYPE, {"versions": 2}, "Hello.versions: expected list, got int"),
        (m.Welcome.TYPE, {"version": 2, "server_id": "s", "limits": {"a": -1}}, "Welcome.limits"),
        (
            m.PublishBatch.TYPE,
            {**{k: v for k, v in PUBLISH.items() if k != "payload"}, "payloads": [b"a", None]},
            "PublishBatch.payloads: [1]: expected bytes, got nil",
        ),
        (
            m.EventBatch.TYPE,
            {"base_offset": 0, "payloads": [b"a"], "timestamps_ms": [1, 2]},
            "EventBatch.timestamps_ms: expected 1 entries",
        ),
        (
            m.EventBatch.TYPE,
            {"base_offset": 0, "payloads": [b"a"], "headers": [{"k": 1}]},
            "EventBatch.headers: [0]['k']: expected bytes, got int",
        ),
        (
            m.EventBatch.TYPE,
            {"base_offset": 0, "payloads": [b"a"], "timestamps_ms": [-5]},
            "EventBatch.timestamps_ms: [0]: -5 out of range",
        ),
        (m.Subscribe.TYPE, {**PUBLISH, "source": "x"}, "Subscribe.source: 'x' is not a Source"),
        (m.AdminList.TYPE, {"request_id": 1, "kind": "bucket"}, "AdminList.kind: 'bucket'"),
        (m.Error.TYPE, {"code": 100, "message": "m", "details": {1.5: 1}}, "malformed msgpack"),
        (
            m.Error.TYPE,
            {"code": 100, "message": "m", "details": {"a": {b"k": 1}}},
            "Error.details: map key b'k'",
        ),
        (
            m.AdminResources.TYPE,
            {"request_id": 1, "resources": [1]},
            "AdminResources.resources: [0]: expected map",
        ),
    ],
)
def test_more_field_errors(code: int, fields: dict[str, Any], text: str) -> None:
    err = bad(code, fields)
    assert err.message.startswith(text), err.message


def test_any_values_reject_timestamps_and_ext() -> None:
    for value in (msgpack.Timestamp(1), msgpack.ExtType(3, b"x")):
        err = bad(m.Error.TYPE, {"code": 100, "message": "m", "details": {"x": [value]}})
        assert isinstance(err, BadFrame)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xc1", b"\x91\x01", b"\x92\x01\x80\x00", b"\x92\xa1x\x80", b"\x92\x01\x90", b"\x80"],
)
def test_malformed_payloads(raw: bytes) -> None:
    with pytest.raises(BadFrame) as info:
        decode(raw)
    assert not info.value.fatal


def test_unknown_type_keeps_request_id() -> None:
    err = bad(0x7F, {"request_id": 5})
    assert isinstance(err, UnknownMessageType)
    assert err.request_id == 5 and err.error_code == 102
    assert bad(0x7F, {"request_id": -5}).request_id is None
    assert isinstance(bad(True, {}), BadFrame)  # a bool is not a type code


def test_message_decoder_continues_after_non_fatal_error() -> None:
    decoder = MessageDecoder()
    good = encode(m.Ping(nonce=1))
    broken = good[:HEADER_SIZE] + b"\x92\x03\x81\xa5nonce\xc3"  # nonce: true
    decoder.feed(good + broken + good)
    assert decoder.next_message() == m.Ping(nonce=1)
    with pytest.raises(BadFrame):
        decoder.next_message()
    assert decoder.next_message() == m.Ping(nonce=1)
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_message_decoder_fatal_and_limit() -> None:
    decoder = MessageDecoder(max_frame_size=8)
    assert decoder.max_frame_size == 8
    decoder.max_frame_size = 100
    decoder.feed(encode_v1_error("x"))
    with pytest.raises(UnsupportedVersion):
        decoder.next_message()
    with pytest.raises(UnsupportedVersion):
        decoder.feed(b"x")


@given(
    base=st.integers(0, 2**64 - 1),
    payloads=st.lists(st.binary(max_size=20), max_size=8),
    data=st.data(),
)
def test_encode_event_batch_matches_encode(base: int, payloads: list[bytes], data: Any) -> None:
    n = len(payloads)
    ts = data.draw(st.none() | st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
    keys = data.draw(st.none() | st.lists(st.none() | st.binary(), min_size=n, max_size=n))
    msg = m.EventBatch(base_offset=base, payloads=payloads, timestamps_ms=ts, keys=keys)
    frame = encode_event_batch(base, payloads, ts, keys)
    assert frame == encode(msg)
    assert decode(frame[HEADER_SIZE:]) == msg


def test_encode_event_batch_rejects_mismatched_lists() -> None:
    with pytest.raises(LocalProtocolError, match="timestamps_ms"):
        encode_event_batch(0, [b"a"], [1, 2])


def test_encode_errors_are_local() -> None:
    with pytest.raises(LocalProtocolError):
        encode(object())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode(m.Ping(nonce=1 << 64))
    with pytest.raises(LocalProtocolError):
        encode(m.Error(code=1, message="m", details={"x": {1, 2}}))
    assert decode(encode(m.Ping(nonce=1))[HEADER_SIZE:]) == m.Ping(nonce=1)  # packer recovered


def test_validate_reports_local_errors() -> None:
    validate(m.Ping(nonce=3))
    with pytest.raises(LocalProtocolError, match=r"Ping\.nonce"):
        validate(m.Ping(nonce=-1))
    with pytest.raises(LocalProtocolError, match=r"Publish\.ack"):
        validate(m.Publish(**PUBLISH, ack=7))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        validate("nope")  # type: ignore[arg-type]


def test_enum_members_encode_as_values() -> None:
    msg = m.Publish(**PUBLISH, ack=m.AckMode.NONE)  # type: ignore[arg-type]
    assert decode(encode(msg)[HEADER_SIZE:]) == m.Publish(**PUBLISH, ack=0)  # type: ignore[arg-type]


def test_v1_error_frame() -> None:
    frame = encode_v1_error()
    header = parse_header(frame)
    assert (header.version, header.flags, header.length) == (1, 0, len(frame) - HEADER_SIZE)
    assert b'"type":"error"' in frame and b"version 2" in frame


@settings(max_examples=50)
@given(any_values())
def test_any_values_round_trip_in_details(value: Any) -> None:
    msg = m.Error(code=100, message="m", details={"v": value})
    assert decode(encode(msg)[HEADER_SIZE:]) == msg


def test_an_ack_without_a_mode_is_an_accepted_ack_and_a_bad_mode_is_refused() -> None:
    """An older peer's ``Ack`` (no ``mode``) decodes as ``ACCEPTED``; ``mode`` takes only
    ``AckMode`` values."""
    old = {"consumer_id": 3, "delivery_ids": [77, 78], "request_id": 15}
    assert decode(payload(m.Ack.TYPE, old)) == m.Ack(
        consumer_id=3, delivery_ids=[77, 78], request_id=15, mode=m.AckMode.ACCEPTED.value
    )
    committed = decode(payload(m.Ack.TYPE, {**old, "mode": 2}))
    assert isinstance(committed, m.Ack) and committed.mode == m.AckMode.COMMITTED
    err = bad(m.Ack.TYPE, {**old, "mode": 9})
    assert isinstance(err, BadFrame) and err.details == {"field": "mode"}


class _Str(str):
    pass


class _Int(int):
    pass


_LOCAL_VALUES = st.one_of(
    _ODD_ELEMENTS,
    st.sampled_from(
        [None, (3, 4), (), _Str("a"), _Int(5), m.AckMode.NONE, float("nan"), 1 << 64, object()]
    ),
    st.lists(st.sampled_from([_Int(7), _Str("x"), (1,), None, b"b", 3]), max_size=3),
)
"""Values only a local caller can pass (subclasses, tuples, objects msgpack cannot pack)
next to everything msgpack yields."""


def _reference(cls: type[m.Message], fields: dict[str, Any]) -> Any:
    """What validating and encoding ``cls(**fields)`` gives: the frame or the error text."""
    try:
        msg = cls(**fields)
    except TypeError:
        return "TypeError"
    try:
        validate(msg)
        return encode(msg)
    except LocalProtocolError as exc:
        return str(exc)


def _checked(cls: type[m.Message], fields: dict[str, Any]) -> Any:
    try:
        return encode_fields(cls, fields)
    except LocalProtocolError as exc:
        return "TypeError" if str(exc).startswith(f"{cls.__name__}: ") else str(exc)


@given(messages(), st.data())
def test_encode_fields_is_validate_then_encode(msg: m.Message, data: st.DataObject) -> None:
    """The typed API's checked encoder gives the reference's frame, byte for byte, or the
    reference's error, for any value in one field (or a field left out, or an unknown one):
    no frame the peer would reject ever comes out of it."""
    cls = type(msg)
    names = sorted(f.name for f in dataclasses.fields(msg))  # type: ignore[arg-type]
    fields = {name: getattr(msg, name) for name in names}
    assert _checked(cls, fields) == _reference(cls, fields) == encode(msg)
    name = data.draw(st.sampled_from([*names, "no_such_field"]))
    if data.draw(st.booleans()):
        fields.pop(name, None)
    else:
        fields[name] = data.draw(st.one_of(any_values(), _LOCAL_VALUES))
    assert _checked(cls, fields) == _reference(cls, fields)


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (ev.CacheValueReceived, (7, True, b"v", 3, None)),
        (ev.CachePutCompleted, (7, False, None)),
        (ev.PublishAcked, (7, 10, 12)),
        (ev.RequestSucceeded, (7,)),
        (ev.RequestReceived, (4, m.Ok(request_id=7))),
    ],
)
def test_record_factory_builds_the_same_record(cls: type[Any], values: tuple[Any, ...]) -> None:
    """The machines' fast event constructors give records equal to the frozen ``__init__``'s,
    still frozen."""
    names = [f.name for f in dataclasses.fields(cls)]
    made = make_record_factory(cls)(*values)
    assert type(made) is cls
    assert made == cls(**dict(zip(names, values, strict=True)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, names[0], 1)
