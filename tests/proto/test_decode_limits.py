"""What one frame may expand into: the value budget (MAX_VALUES) and the nesting of `any`.

Hostile frames within the frame size are refused with the typed TOO_LARGE error before
msgpack builds anything; the largest legitimate frames at the configured limits decode.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from engine_calls import Calls
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_core.broker import Broker
from felix_core.limits import BrokerConfig
from felix_core.settings import MAX_BATCH_EVENTS, MAX_PREFETCH
from felix_proto import messages as m
from felix_proto._expansion import check_values
from felix_proto.codec import MAX_ANY_DEPTH, MAX_VALUES, MessageDecoder, decode, encode
from felix_proto.errors import BadFrame, ErrorCode, TooManyValues
from felix_proto.frames import HEADER_SIZE, encode_header
from felix_proto.testing import any_values

PUBLISH = {"request_id": 7, "tenant": "t", "namespace": "n", "stream": "s", "payload": b"x"}


def publish_with(extra: bytes, name: str = "x") -> bytes:
    """A Publish payload whose fields end with ``name`` -> the already packed ``extra``."""
    head = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in PUBLISH.items())
    count = struct.pack(">H", len(PUBLISH) + 1)
    return (
        b"\x92" + msgpack.packb(m.Publish.TYPE) + b"\xde" + count + head + msgpack.packb(name)
    ) + extra


def array(n: int, body: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", n) + body


def values_in(value: Any) -> int:
    """The reference count: every value, every array element, every map key and value."""
    if isinstance(value, list):
        return 1 + sum(values_in(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(1 + values_in(v) for v in value.values())
    return 1


def refused(payload: bytes) -> tuple[TooManyValues, int]:
    """Decode ``payload``, expecting TooManyValues; also the peak bytes traced meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(TooManyValues) as info:
            decode(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


# ------------------------------------------------------------------ hostile frames


def test_ignored_field_of_millions_of_empty_maps_is_refused_without_allocating() -> None:
    n = 4 << 20  # 4 MiB of 0x80: formerly +290 MiB and 0.3-0.5 s before any field check
    err, peak = refused(publish_with(array(n, b"\x80" * n)))
    assert err.error_code == ErrorCode.TOO_LARGE and not err.fatal
    assert err.request_id == 7 and err.details == {"max_values": MAX_VALUES}
    assert peak < 64 * 1024  # nothing the size of the frame, let alone of its expansion


def test_many_small_arrays_of_empty_maps_are_refused_too() -> None:
    """A per-container length limit lets this through; the total budget does not."""
    per = 10_000
    with pytest.raises(TooManyValues) as info:  # (walked for ~0.5 M values: no tracemalloc)
        decode(publish_with(array(64, array(per, b"\x80" * per) * 64)))
    assert info.value.error_code == ErrorCode.TOO_LARGE and info.value.request_id == 7


def test_a_million_key_map_is_refused_without_allocating() -> None:
    n = 1_000_000
    body = b"".join(msgpack.packb(f"k{i}") + b"\xc0" for i in range(n))
    err, peak = refused(publish_with(b"\xdf" + struct.pack(">I", n) + body, name="headers"))
    assert err.error_code == ErrorCode.TOO_LARGE and err.request_id == 7
    assert peak < 64 * 1024


def test_the_budget_is_exact_at_the_boundary() -> None:
    envelope = values_in([m.Publish.TYPE, {**PUBLISH, "x": []}])
    fits = MAX_VALUES - envelope
    msg = decode(publish_with(array(fits, b"\xc0" * fits)))
    assert isinstance(msg, m.Publish) and msg.payload == b"x"
    with pytest.raises(TooManyValues):
        decode(publish_with(array(fits + 1, b"\xc0" * (fits + 1))))


def test_refusal_is_not_fatal_the_stream_goes_on() -> None:
    n = MAX_VALUES + 1
    bad = publish_with(array(n, b"\x80" * n))
    good = encode(m.Ok(request_id=3))
    decoder = MessageDecoder()
    decoder.feed(encode_header(len(bad)) + bad + good)
    with pytest.raises(TooManyValues) as info:
        decoder.next_message()
    assert not info.value.fatal
    assert decoder.next_message() == m.Ok(request_id=3)


def test_request_id_after_the_excess_is_not_known() -> None:
    """The walk stops at the excess: a request_id written after it cannot be reported."""
    n = MAX_VALUES + 1
    fields = b"\x82" + msgpack.packb("x") + array(n, b"\xc0" * n)
    payload = b"\x92\x10" + fields + msgpack.packb("request_id") + b"\x07"
    with pytest.raises(TooManyValues) as info:
        decode(payload)
    assert info.value.request_id is None


@given(any_values(max_leaves=40), st.integers(min_value=1, max_value=60))
def test_check_values_agrees_with_a_reference_count(value: Any, limit: int) -> None:
    payload = msgpack.packb(value)
    if values_in(value) > limit:
        with pytest.raises(TooManyValues):
            check_values(payload, limit)
    else:
        check_values(payload, limit)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_check_values_on_garbage_raises_only_the_typed_error(data: bytes, limit: int) -> None:
    with contextlib.suppress(TooManyValues):  # anything else fails the test
        check_values(data, limit)


@settings(max_examples=50)
@given(any_values(max_leaves=30))
def test_what_check_values_passes_msgpack_builds_within_the_budget(value: Any) -> None:
    payload = msgpack.packb([m.Ok.TYPE, {"request_id": 1, "x": value}])
    count = values_in([m.Ok.TYPE, {"request_id": 1, "x": value}])
    check_values(payload, count)  # exactly at the budget: passes
    with pytest.raises(TooManyValues):
        check_values(payload, count - 1)


# ------------------------------------------------------------------ nesting of `any`


def nested(depth: int) -> dict[str, Any]:
    """A map nesting ``depth`` levels of arrays and maps (itself the first)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


def test_any_values_nest_at_most_max_any_depth_levels() -> None:
    ok = m.Error(code=500, message="x", details=nested(MAX_ANY_DEPTH))
    assert decode(encode(ok)[HEADER_SIZE:]) == ok
    too_deep = m.Error(code=500, message="x", details=nested(MAX_ANY_DEPTH + 1))
    with pytest.raises(BadFrame) as info:
        decode(encode(too_deep)[HEADER_SIZE:])
    assert info.value.details == {"field": "details"} and not info.value.fatal
    assert "nest more than 32 levels" in info.value.message


def test_any_depth_in_lists_of_maps_counts_each_map_as_the_first_level() -> None:
    ok = m.AdminResources(request_id=4, resources=[nested(MAX_ANY_DEPTH)])
    assert decode(encode(ok)[HEADER_SIZE:]) == ok
    too_deep = m.AdminResources(request_id=4, resources=[{}, nested(MAX_ANY_DEPTH + 1)])
    with pytest.raises(BadFrame) as info:
        decode(encode(too_deep)[HEADER_SIZE:])
    assert info.value.details == {"field": "resources"} and info.value.request_id == 4


def test_a_payload_nests_at_most_1024_levels() -> None:
    """The envelope array and the fields map are levels 1 and 2; an unknown field fills up."""
    ok = publish_with(b"\x91" * 1021 + b"\x90")  # 1,022 nested arrays: 1,024 levels
    assert isinstance(decode(ok), m.Publish)
    with pytest.raises(BadFrame) as info:
        decode(publish_with(b"\x91" * 1022 + b"\x90"))
    assert not info.value.fatal and info.value.error_code == ErrorCode.BAD_FRAME


# ------------------------------------------------------------------ legitimate frames

HEADERS_PER_RECORD = 30
"""The most headers on every record of a max_batch_records batch that fits MAX_VALUES."""


def round_trips(msg: m.Message) -> None:
    frame = encode(msg)
    assert len(frame) - HEADER_SIZE <= 16 << 20
    assert decode(frame[HEADER_SIZE:]) == msg


def test_a_full_publish_batch_with_keys_and_headers_decodes() -> None:
    n = BrokerConfig().max_batch_records
    headers = {f"header-{i}": b"v" for i in range(HEADERS_PER_RECORD)}
    batch = m.PublishBatch(
        request_id=1,
        tenant="t",
        namespace="n",
        stream="s",
        payloads=[b"p%d" % i for i in range(n)],
        keys=[b"k%d" % i for i in range(n)],
        headers=[headers] * n,
    )
    count = values_in(msgpack.unpackb(encode(batch)[HEADER_SIZE:]))
    assert count <= MAX_VALUES < count + 2 * n  # one more header per record would not fit
    round_trips(batch)
    enqueue = m.Enqueue(
        request_id=1,
        tenant="t",
        namespace="n",
        queue="q",
        payloads=batch.payloads,
        keys=batch.keys,
        headers=batch.headers,
    )
    round_trips(enqueue)


def test_an_event_batch_of_max_batch_events_with_everything_decodes() -> None:
    n = MAX_BATCH_EVENTS
    batch = m.EventBatch(
        base_offset=1 << 40,
        payloads=[b"p"] * n,
        timestamps_ms=[1_700_000_000_000] * n,
        keys=[b"k"] * n,
        headers=[{f"h{i}": b"v" for i in range(13)}] * n,
    )
    count = values_in(msgpack.unpackb(encode(batch)[HEADER_SIZE:]))
    assert count <= MAX_VALUES < count + 2 * n
    round_trips(batch)


def test_a_full_frame_payload_decodes() -> None:
    overhead = len(
        encode(m.Publish(request_id=1, tenant="t", namespace="n", stream="s", payload=b""))
    )
    size = (16 << 20) - overhead - 4  # the bin32 header grows by 4 bytes
    round_trips(m.Publish(request_id=1, tenant="t", namespace="n", stream="s", payload=bytes(size)))


def test_listing_a_full_namespace_of_queues_with_consumer_groups_decodes() -> None:
    broker = Calls(Broker(BrokerConfig()))
    broker.create("queue", "default", "default", "q", {}, now=0.0)
    broker.attach(1, now=0.0)
    for group in ("g1", "g2"):  # each group adds 26 values to the queue's description
        broker.consume(1, "default", "default", "q", group=group, prefetch=1, now=0.0)
    queue = broker.describe("queue", "default", "default", "q", now=0.0)
    count = BrokerConfig().max_resources_per_namespace
    listing = m.AdminResources(request_id=2, resources=[queue] * count)
    round_trips(listing)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: m.Ack(consumer_id=1, delivery_ids=list(range(n)), request_id=3),
        lambda n: m.Nack(consumer_id=1, delivery_ids=list(range(n)), request_id=3),
    ],
    ids=["Ack", "Nack"],
)
def test_acking_a_whole_window_at_the_max_prefetch_cap_decodes(
    make: Callable[[int], m.Message],
) -> None:
    round_trips(make(MAX_PREFETCH))
