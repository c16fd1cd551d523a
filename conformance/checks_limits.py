"""Checks of §5.4 Limits and maximum frame size: the smallest ``max_frame_size`` a client
may announce, and what a broker does with a reply, a batch or a delivery that does not fit
the client's announced size (a typed error or an end frame, never silence)."""

from __future__ import annotations

import struct
from typing import Any

from conformance.context import Context
from conformance.feeds import consume, deliveries, publish, records, subscribe
from conformance.registry import check
from conformance.wire import CheckFailed, StreamLog, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_proto.frames import HEADER_SIZE

S54 = "§5.4 Limits and maximum frame size"
MIN = 4096
"""The smallest ``max_frame_size`` a client may announce."""
BIG = 6000
"""A payload that fits no frame of ``MIN`` bytes."""


def frame_sizes(log: StreamLog) -> list[int]:
    """The payload length of every complete frame the broker wrote on a stream."""
    sizes, raw, pos = [], bytes(log.raw), 0
    while pos + HEADER_SIZE <= len(raw):
        (length,) = struct.unpack_from(">I", raw, pos + 8)
        sizes.append(length)
        pos += HEADER_SIZE + length
    return sizes


def _fits(log: StreamLog) -> None:
    over = [size for size in frame_sizes(log) if size > MIN]
    expect(
        not over,
        f"stream {log.stream_id} carried frames of {over} bytes over the "
        f"announced max_frame_size {MIN}",
    )


@check(
    "limits.min-frame-size",
    S54,
    "Hello.max_frame_size below 4096 (0, 4095) gets Error 202, then the close; 4096 is accepted",
)
async def min_frame_size(ctx: Context) -> None:
    for size in (0, MIN - 1):
        conn = await ctx.raw()
        reply = await conn.hello(max_frame_size=size, token=ctx.options.token)
        expect(
            isinstance(reply, m.Error) and reply.code == ErrorCode.INVALID_ARGUMENT,
            f"Hello with max_frame_size {size} answered {describe(reply)}, expected Error 202",
        )
        end = await conn.ended()
        expect(
            end.error_code == ErrorCode.INVALID_ARGUMENT,
            f"the connection closed with code {end.error_code}, expected 202",
        )
    await ctx.connect(max_frame_size=MIN)
    await ctx.healthy()


@check(
    "limits.reply-too-large",
    S54,
    "a reply over the client's max_frame_size is Error 204 with the request's id; the "
    "connection goes on",
)
async def reply_too_large(ctx: Context) -> None:
    cache = await ctx.create("cache", "small-frames")
    conn = await ctx.connect(max_frame_size=MIN)
    path: dict[str, Any] = {"tenant": ctx.tenant, "namespace": ctx.namespace, "cache": cache}
    await conn.expect(
        m.CachePut(request_id=conn.rid(), key="big", value=b"v" * BIG, **path), m.CachePutResult
    )
    await conn.expect(
        m.CachePut(request_id=conn.rid(), key="small", value=b"v", **path), m.CachePutResult
    )
    rid = conn.rid()
    err = await conn.expect_error(
        m.CacheGet(request_id=rid, key="big", **path), ErrorCode.TOO_LARGE
    )
    expect(err.request_id == rid, f"the Error carries request_id {err.request_id}, not {rid}")
    value = await conn.expect(m.CacheGet(request_id=conn.rid(), key="small", **path), m.CacheValue)
    expect(value.value == b"v", f"the small value came back as {value.value!r}")
    _fits(conn.log(conn.request_stream))


@check(
    "limits.batch-too-large",
    S54,
    "records over the client's max_frame_size: batches split into frames that fit, then "
    "SubscriptionEnded 'error' with next_offset at the record that fits no frame",
)
async def batch_too_large(ctx: Context) -> None:
    stream = await ctx.create("stream", "small-frames")
    writer = await ctx.connect()
    medium = [bytes([65 + i]) * 1500 for i in range(4)]  # together over 4096: split
    offsets = await publish(ctx, writer, stream, *medium, b"x" * BIG, b"after")
    conn = await ctx.connect(max_frame_size=MIN)
    reply, log = await subscribe(
        ctx, conn, stream, start=m.StartKind.EARLIEST, credit_messages=100, credit_bytes=1 << 20
    )
    await conn.until(lambda: log.ended, "the subscription stream to end", None)
    ends = log.of(m.SubscriptionEnded)
    expect(
        len(ends) == 1,
        f"the stream ended with {[describe(x) for x in log.messages[-1:]]}, "
        "expected SubscriptionEnded",
    )
    end = ends[0]
    expect(end.reason == m.EndReason.ERROR, f"SubscriptionEnded.reason is {end.reason!r}")
    expect(
        end.next_offset == offsets[4],
        f"SubscriptionEnded.next_offset is {end.next_offset}, expected {offsets[4]} (the "
        "record that fits no frame)",
    )
    got = records(log)
    expect(
        got == list(zip(offsets[:4], medium, strict=True)),
        f"got records at offsets {[o for o, _ in got]}, expected {offsets[:4]}",
    )
    expect(reply.subscription_id == end.subscription_id, "the end names another subscription")
    _fits(log)


@check(
    "limits.delivery-too-large",
    S54,
    "a delivery over the consumer's max_frame_size ends the consumer ('error') and goes "
    "to another consumer",
)
async def delivery_too_large(ctx: Context) -> None:
    queue = await ctx.create("queue", "small-frames")
    small = await ctx.connect(max_frame_size=MIN)
    _, log = await consume(ctx, small, queue, group="g", prefetch=1)
    writer = await ctx.connect()
    await writer.expect(
        m.Enqueue(
            request_id=writer.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            queue=queue,
            payloads=[b"q" * BIG],
        ),
        m.PublishAck,
    )
    await small.until(lambda: log.ended, "the consumer stream to end", None)
    ends = log.of(m.ConsumerEnded)
    if not ends:
        raise CheckFailed(f"the consumer stream ended with {describe(log.messages[-1])}")
    expect(ends[0].reason == m.EndReason.ERROR, f"ConsumerEnded.reason is {ends[0].reason!r}")
    expect(not deliveries(log), "the too-large delivery was sent anyway")
    _fits(log)
    big = await ctx.connect()
    _, other = await consume(ctx, big, queue, group="g", prefetch=1)
    await big.until(lambda: bool(deliveries(other)), "the delivery on another consumer", None)
    expect(deliveries(other)[0].payload == b"q" * BIG, "another consumer got a different payload")
