"""The record-size limit (issue 8, item 4): a record counts whole (payload, key and headers at
their encoded size), and what the broker adds later (a dead letter's headers, the Delivery
envelope) still fits a 16 MiB frame."""

from __future__ import annotations

import msgpack
import pytest
from engine_calls import Calls
from queue_driver import QueueDriver

from felix_core.broker import Broker
from felix_core.errors import InvalidArgument, TooLarge
from felix_core.events import MessagesDelivered
from felix_core.limits import (
    DEAD_LETTER_HEADERS_MAX_BYTES,
    ENVELOPE_MAX_BYTES,
    MAX_RECORD_BYTES,
    RECORD_HEADROOM,
    BrokerConfig,
    encoded_record_size,
)
from felix_core.queues import QueueConfig
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_proto.frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE

T, N = "default", "default"
MiB = 1 << 20
U64 = (1 << 64) - 1


def packed(obj: object) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("n", [0, 1, 31, 32, 255, 256, 65535, 65536])
@pytest.mark.parametrize("count", [0, 1, 15, 16])
def test_encoded_record_size_is_msgpack_size(n: int, count: int) -> None:
    payload = b"p" * n
    key = b"k" * (n % 300)
    headers = {("é" * (n % 40)) + str(i): b"v" * n for i in range(count)} or None
    expected = packed(payload) + packed(key) + (packed(headers) if headers else 0)
    assert encoded_record_size(payload, key, headers) == expected
    assert encoded_record_size(payload) == packed(payload)


def delivery_frame(**fields: object) -> int:
    """The payload size of a Delivery frame (what max_frame_size bounds)."""
    return len(encode(m.Delivery(**fields))) - HEADER_SIZE  # type: ignore[arg-type]


def test_envelope_and_dead_letter_headers_fit_the_headroom() -> None:
    envelope = delivery_frame(
        delivery_id=U64, attempt=U64, offset=U64, payload=b"", timestamp_ms=U64, key=b""
    ) - encoded_record_size(b"", b"")
    assert envelope <= ENVELOPE_MAX_BYTES
    # The worst dead-letter headers: the longest queue name, the longest group name (names
    # are ASCII, at most 128 characters), the longest integers. The header names are the
    # engine's own.
    e = QueueDriver()
    src = ("t", "n", "q" * 128)
    e.create_queue(src, QueueConfig(max_attempts=1, dead_letter_queue="dlq"))
    e.create_queue(("t", "n", "dlq"))
    group = "g" * 128
    cid = e.consume(src, 1, 0.0, group=group)
    e.enqueue(src, b"", 0.0)
    [delivered] = e.drain_outputs()
    assert isinstance(delivered, MessagesDelivered)
    e.nack(cid, [delivered.deliveries[0].delivery_id], 0.0)
    e.consume(("t", "n", "dlq"), 1, 0.0)
    dead = [ev for ev in e.drain_outputs() if isinstance(ev, MessagesDelivered)]
    headers = dict(dead[0].deliveries[0].headers or {})
    assert len(headers) == 6 and headers["x-felix-group"] == group.encode()
    headers["x-felix-original-offset"] = headers["x-felix-attempts"] = b"9" * 20
    headers["x-felix-dead-letter-reason"] = b"max_attempts"
    headers["x-felix-last-failure"] = b"consumer_lost"
    added = encoded_record_size(b"", None, headers) - encoded_record_size(b"") + 4  # map prefix
    assert added <= DEAD_LETTER_HEADERS_MAX_BYTES
    assert ENVELOPE_MAX_BYTES + DEAD_LETTER_HEADERS_MAX_BYTES <= RECORD_HEADROOM
    assert MAX_RECORD_BYTES + RECORD_HEADROOM == DEFAULT_MAX_FRAME_SIZE


def record_of(size: int) -> tuple[bytes, dict[str, bytes]]:
    """An 8 MiB payload and one header making the record exactly ``size`` bytes encoded."""
    payload = b"p" * (8 * MiB)
    # an empty value has a 2-byte bin prefix, a value this long a 5-byte one
    value = b"h" * (size - encoded_record_size(payload, None, {"h": b""}) - 3)
    headers = {"h": value}
    assert encoded_record_size(payload, None, headers) == size
    return payload, headers


def test_record_limit_counts_headers_and_the_biggest_record_dead_letters_within_a_frame() -> None:
    b = Calls(Broker(now=0.0))
    b.attach(1, 0.0)
    b.create("queue", T, N, "dlq", now=0.0)
    b.create("queue", T, N, "src", {"max_attempts": 1, "dead_letter_queue": "dlq"}, now=0.0)
    # The black-box case: 8 MiB payload + ~8 MiB headers, an Enqueue frame under 16 MiB,
    # used to be accepted; its dead letter's Delivery frame was 16,777,375 bytes.
    payload, headers = record_of(DEFAULT_MAX_FRAME_SIZE - 400)
    with pytest.raises(TooLarge) as info:
        b.enqueue(1, T, N, "src", [payload], headers=[headers], now=0.0)
    assert info.value.details["max_record_bytes"] == MAX_RECORD_BYTES
    payload, headers = record_of(MAX_RECORD_BYTES + 1)
    with pytest.raises(TooLarge):
        b.enqueue(1, T, N, "src", [payload], headers=[headers], now=0.0)
    payload, headers = record_of(MAX_RECORD_BYTES)
    assert b.enqueue(1, T, N, "src", [payload], headers=[headers], now=0.0) == (0, 0)

    cid = b.consume(1, T, N, "src", now=0.0)
    [first] = [ev for ev in b.drain_events() if isinstance(ev, MessagesDelivered)]
    b.nack(1, cid, [first.deliveries[0].delivery_id], now=1.0)
    dlq = b.consume(1, T, N, "dlq", now=1.0)
    [dead] = [ev for ev in b.drain_events() if isinstance(ev, MessagesDelivered)]
    assert dead.consumer_id == dlq
    d = dead.deliveries[0]
    assert d.payload == payload and d.headers is not None and len(d.headers) == 7
    size = delivery_frame(
        delivery_id=d.delivery_id,
        attempt=d.attempt,
        offset=d.offset,
        payload=d.payload,
        timestamp_ms=d.timestamp_ms,
        headers=d.headers,
    )
    assert size <= DEFAULT_MAX_FRAME_SIZE


def test_record_limit_applies_to_publish_and_keys_too() -> None:
    b = Calls(Broker(BrokerConfig(max_record_bytes=100, max_payload_bytes=1000), now=0.0))
    b.create("stream", T, N, "s", now=0.0)
    assert b.publish(1, T, N, "s", [b"x" * 98], now=0.0) == (0, 0)  # 98 + 2 bytes of prefix
    with pytest.raises(TooLarge) as info:
        b.publish(1, T, N, "s", [b"x", b"x" * 99], now=0.0)
    assert info.value.details == {"max_record_bytes": 100, "record_bytes": 101, "index": 1}
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b"x" * 50], keys=[b"k" * 47], now=0.0)
    with pytest.raises(TooLarge):
        b.publish(1, T, N, "s", [b""], headers=[{"a" * 44: b"v" * 50}], now=0.0)


def test_record_limit_may_not_exceed_the_frame_less_headroom() -> None:
    assert BrokerConfig().max_record_bytes == MAX_RECORD_BYTES == 16 * MiB - 64 * 1024
    with pytest.raises(InvalidArgument):
        BrokerConfig(max_record_bytes=MAX_RECORD_BYTES + 1)
    with pytest.raises(InvalidArgument):
        BrokerConfig(max_record_bytes=0)
