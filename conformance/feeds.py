"""Helpers the pub/sub and queue checks share: publishing, and reading broker-opened feeds.

A feed is a broker-opened unidirectional stream bound by its first frame
(``SubscriptionStreamStart`` or ``ConsumerStreamStart``) to the request that made it (§4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.context import Context
from conformance.wire import CheckFailed, Conn, StreamLog, describe, expect
from felix_proto import messages as m
from felix_proto.client import unbatch

__all__ = [
    "consume",
    "deliveries",
    "enqueue",
    "feed_stream",
    "publish",
    "records",
    "subscribe",
    "wait_count",
]


async def publish(ctx: Context, conn: Conn, stream: str, *payloads: bytes) -> list[int]:
    """Publish one record per payload (one ``Publish`` each); return their offsets."""
    offsets = []
    for payload in payloads:
        ack = await conn.expect(
            m.Publish(
                request_id=conn.rid(),
                tenant=ctx.tenant,
                namespace=ctx.namespace,
                stream=stream,
                payload=payload,
            ),
            m.PublishAck,
        )
        expect(
            ack.first_offset == ack.last_offset,
            f"a single Publish was acked with offsets {ack.first_offset}..{ack.last_offset}",
        )
        offsets.append(ack.first_offset)
    return offsets


async def enqueue(ctx: Context, conn: Conn, queue: str, payloads: Sequence[bytes]) -> list[int]:
    """Enqueue ``payloads`` in one ``Enqueue``; return their offsets."""
    ack = await conn.expect(
        m.Enqueue(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            queue=queue,
            payloads=list(payloads),
        ),
        m.PublishAck,
    )
    expect(
        ack.last_offset - ack.first_offset + 1 == len(payloads),
        f"Enqueue of {len(payloads)} acked with offsets {ack.first_offset}..{ack.last_offset}",
    )
    return list(range(ack.first_offset, ack.last_offset + 1))


async def feed_stream(conn: Conn, start: type[m.Message], request_id: int) -> StreamLog:
    """Wait for the broker-opened stream whose start frame names ``request_id``."""
    found: list[StreamLog] = []

    def check() -> bool:
        for log in conn.server_streams():
            first = log.messages[0] if log.messages else None
            if isinstance(first, start) and getattr(first, "request_id", None) == request_id:
                found.append(log)
                return True
            if first is not None and not isinstance(
                first, m.SubscriptionStreamStart | m.ConsumerStreamStart
            ):
                raise CheckFailed(
                    f"stream {log.stream_id} opens with {describe(first)}, not a start frame"
                )
        return False

    await conn.until(check, f"{start.__name__} for request {request_id}", None)
    return found[0]


async def subscribe(
    ctx: Context, conn: Conn, stream: str, **fields: Any
) -> tuple[m.Subscribed, StreamLog]:
    """Subscribe (fields as in ``Subscribe``); return the reply and the feed's stream."""
    rid = conn.rid()
    reply = await conn.expect(
        m.Subscribe(
            request_id=rid, tenant=ctx.tenant, namespace=ctx.namespace, stream=stream, **fields
        ),
        m.Subscribed,
    )
    log = await feed_stream(conn, m.SubscriptionStreamStart, rid)
    start = log.messages[0]
    assert isinstance(start, m.SubscriptionStreamStart)
    expect(
        start.subscription_id == reply.subscription_id,
        f"the stream start names subscription {start.subscription_id}, the reply "
        f"{reply.subscription_id}",
    )
    return reply, log


def records(log: StreamLog) -> list[tuple[int, bytes]]:
    """The ``(offset, payload)`` records delivered on a subscription stream, in order.

    Raises:
        CheckFailed: a batch's offsets do not follow the previous batch (a gap must be
            announced by ``SubscriptionGap``), or parallel arrays differ in length.
    """
    out: list[tuple[int, bytes]] = []
    expected: int | None = None
    for msg in log.messages[1:]:
        if isinstance(msg, m.SubscriptionGap):
            expected = msg.next_offset
        elif isinstance(msg, m.EventBatch):
            if expected is not None and msg.base_offset != expected:
                raise CheckFailed(
                    f"EventBatch base_offset {msg.base_offset} after offset "
                    f"{expected - 1}: records skipped or repeated"
                )
            out.extend((msg.base_offset + i, p) for i, p in enumerate(msg.payloads))
            expected = msg.base_offset + len(msg.payloads)
    return out


async def wait_count(conn: Conn, log: StreamLog, count: int, wait: float | None = None) -> None:
    """Wait until at least ``count`` records arrived on a subscription stream."""
    await conn.until(
        lambda: len(records(log)) >= count,
        f"{count} records on stream {log.stream_id} (got {len(records(log))})",
        wait,
    )


async def consume(
    ctx: Context, conn: Conn, queue: str, **fields: Any
) -> tuple[m.Consuming, StreamLog]:
    """Join a queue's group (fields as in ``Consume``); return the reply and the stream."""
    rid = conn.rid()
    reply = await conn.expect(
        m.Consume(
            request_id=rid, tenant=ctx.tenant, namespace=ctx.namespace, queue=queue, **fields
        ),
        m.Consuming,
    )
    log = await feed_stream(conn, m.ConsumerStreamStart, rid)
    return reply, log


def deliveries(log: StreamLog) -> list[m.Delivery]:
    """The deliveries on a consumer stream, in order (each entry of a ``DeliveryBatch`` as
    the ``Delivery`` it stands for)."""
    out: list[m.Delivery] = []
    for msg in log.messages:
        if isinstance(msg, m.Delivery):
            out.append(msg)
        elif isinstance(msg, m.DeliveryBatch):
            out.extend(unbatch(msg))
    return out
