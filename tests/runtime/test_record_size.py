"""The record-size limit on the wire (issue 8, item 4): a record too big to be delivered with
the broker's envelope and dead-letter headers is refused TOO_LARGE at enqueue, and the
biggest record accepted dead-letters and reaches the dead-letter queue's consumer."""

from __future__ import annotations

import pytest

from felix_core.limits import MAX_RECORD_BYTES, encoded_record_size
from felix_proto import events as fe
from felix_proto.errors import ErrorCode

from .conftest import Connect
from .harness import N, T, create

pytestmark = pytest.mark.anyio

BIG_WAIT = 60.0
"""16 MiB each way over loopback QUIC, on a loaded machine."""


def record_of(size: int) -> tuple[bytes, dict[str, bytes]]:
    """An 8 MiB payload and one header making the record exactly ``size`` bytes encoded."""
    payload = b"p" * (8 << 20)
    value = b"h" * (size - encoded_record_size(payload, None, {"h": b""}) - 3)
    assert encoded_record_size(payload, None, {"h": value}) == size
    return payload, {"h": value}


async def test_biggest_record_dead_letters_and_reaches_the_dlq_consumer(
    connect: Connect, name: str
) -> None:
    client = await connect()
    await create(client, "queue", f"{name}-dlq")
    await create(client, "queue", name, max_attempts=1, dead_letter_queue=f"{name}-dlq")

    # 8 MiB payload + ~8 MiB headers in an Enqueue frame under 16 MiB: accepted before; at
    # the frame limit its dead letter's Delivery frame was 16,777,377 bytes and never
    # reached the DLQ consumer.
    payload, headers = record_of((16 << 20) - 1024)
    rid = client.call(
        client.felix.enqueue, T, N, name, [payload], headers=[headers], timeout=BIG_WAIT
    )
    refused = await client.reply(rid, timeout=BIG_WAIT)
    assert isinstance(refused, fe.RequestFailed), refused
    assert refused.code == ErrorCode.TOO_LARGE
    assert refused.details["max_record_bytes"] == MAX_RECORD_BYTES

    payload, headers = record_of(MAX_RECORD_BYTES)
    rid = client.call(
        client.felix.enqueue, T, N, name, [payload], headers=[headers], timeout=BIG_WAIT
    )
    assert isinstance(await client.reply(rid, timeout=BIG_WAIT), fe.PublishAcked)
    rid = client.call(client.felix.consume, T, N, name, prefetch=1)
    started = await client.reply(rid)
    assert isinstance(started, fe.ConsumerStarted)
    got = await client.wait(
        fe.DeliveryReceived, lambda e: e.consumer_id == started.consumer_id, BIG_WAIT
    )
    rid = client.call(client.felix.nack, got.consumer_id, [got.delivery.delivery_id])
    assert isinstance(await client.reply(rid), fe.RequestSucceeded)

    rid = client.call(client.felix.consume, T, N, f"{name}-dlq", prefetch=1)
    dlq = await client.reply(rid)
    assert isinstance(dlq, fe.ConsumerStarted)
    dead = await client.wait(
        fe.DeliveryReceived, lambda e: e.consumer_id == dlq.consumer_id, BIG_WAIT
    )
    assert dead.delivery.payload == payload
    assert dead.delivery.headers is not None
    assert dead.delivery.headers["h"] == headers["h"]
    assert dead.delivery.headers["x-felix-dead-letter-reason"] == b"max_attempts"
    rid = client.call(client.felix.ack, dead.consumer_id, [dead.delivery.delivery_id])
    assert isinstance(await client.reply(rid), fe.RequestSucceeded)
