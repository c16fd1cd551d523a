"""Checks of §7 Semantics, queues: delivery, ack, prefetch, nack, visibility-timeout
redelivery, dead letters and the loss of a consumer."""

from __future__ import annotations

import asyncio

from conformance.context import Context
from conformance.feeds import consume, deliveries, enqueue
from conformance.registry import Skip, check
from conformance.wire import CheckFailed, expect
from felix_proto import messages as m
from felix_proto.connection import DELIVERY_BATCH
from felix_proto.errors import ErrorCode

S7 = "§7 Semantics: queues"
QUIET = 0.3


def _payloads(n: int, tag: str = "q") -> list[bytes]:
    return [f"{tag}-{i:03d}".encode() for i in range(n)]


@check(
    "queue.deliver-ack",
    S7,
    "every enqueued message is delivered once (attempt 1) and Ack is answered Ok",
)
async def deliver_ack(ctx: Context) -> None:
    queue = await ctx.create("queue", "q")
    conn = await ctx.connect()
    sent = dict(zip(await enqueue(ctx, conn, queue, _payloads(12)), _payloads(12), strict=True))
    reply, log = await consume(ctx, conn, queue, prefetch=64)
    await conn.until(
        lambda: len(deliveries(log)) >= len(sent),
        f"{len(sent)} deliveries (got {len(deliveries(log))})",
        None,
    )
    got = {d.offset: d.payload for d in deliveries(log)}
    expect(
        got == sent,
        f"delivered offsets {sorted(got)}, enqueued {sorted(sent)}"
        + ("" if sorted(got) != sorted(sent) else " (payloads differ)"),
    )
    expect(
        all(d.attempt == 1 for d in deliveries(log)),
        f"first attempts numbered {[d.attempt for d in deliveries(log)]}",
    )
    ids = [d.delivery_id for d in deliveries(log)]
    expect(len(set(ids)) == len(ids), f"delivery ids repeat: {ids}")
    await conn.expect(
        m.Ack(consumer_id=reply.consumer_id, delivery_ids=ids, request_id=conn.rid()), m.Ok
    )
    if await conn.quiet(lambda: len(deliveries(log)) > len(sent), QUIET):
        raise CheckFailed("an acked message was delivered again")


@check(
    "queue.delivery-batch",
    S7,
    "with delivery-batch (§5.3) a dispatch may come as DeliveryBatch: each entry is one "
    "delivery (attempt 1, once each, ackable); without it only Delivery frames",
)
async def delivery_batch(ctx: Context) -> None:
    queue = await ctx.create("queue", "batched")
    conn = await ctx.connect(capabilities=[DELIVERY_BATCH])
    assert conn.welcome is not None
    if DELIVERY_BATCH not in conn.welcome.capabilities:
        raise Skip(f"the broker does not offer {DELIVERY_BATCH}")
    sent = dict(zip(await enqueue(ctx, conn, queue, _payloads(12)), _payloads(12), strict=True))
    reply, log = await consume(ctx, conn, queue, prefetch=64)
    await conn.until(lambda: len(deliveries(log)) >= len(sent), "12 deliveries", None)
    got = deliveries(log)
    expect(
        {d.offset: d.payload for d in got} == sent and all(d.attempt == 1 for d in got),
        f"delivered {[(d.offset, d.attempt) for d in got]}, enqueued offsets {sorted(sent)}",
    )
    ids = [d.delivery_id for d in got]
    expect(len(set(ids)) == len(ids), f"delivery ids repeat: {ids}")
    await conn.expect(
        m.Ack(consumer_id=reply.consumer_id, delivery_ids=ids, request_id=conn.rid()), m.Ok
    )
    other = await ctx.create("queue", "unbatched")
    plain = await ctx.connect()
    more = await enqueue(ctx, plain, other, _payloads(4, "p"))
    _, old = await consume(ctx, plain, other, prefetch=64)
    await plain.until(lambda: len(deliveries(old)) >= len(more), "4 deliveries", None)
    expect(not old.of(m.DeliveryBatch), "a client that did not offer delivery-batch got a batch")


@check("queue.prefetch", S7, "at most prefetch unacked deliveries; an ack lets one more through")
async def prefetch(ctx: Context) -> None:
    queue = await ctx.create("queue", "pf")
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, _payloads(5))
    reply, log = await consume(ctx, conn, queue, prefetch=2)
    await conn.until(lambda: len(deliveries(log)) >= 2, "2 deliveries", None)
    if await conn.quiet(lambda: len(deliveries(log)) > 2, QUIET):
        raise CheckFailed(f"{len(deliveries(log))} deliveries in flight with prefetch 2")
    first = deliveries(log)[0]
    await conn.expect(
        m.Ack(
            consumer_id=reply.consumer_id, delivery_ids=[first.delivery_id], request_id=conn.rid()
        ),
        m.Ok,
    )
    await conn.until(lambda: len(deliveries(log)) >= 3, "a delivery after one ack", None)
    if await conn.quiet(lambda: len(deliveries(log)) > 3, QUIET):
        raise CheckFailed("two deliveries followed a single ack with prefetch 2")


@check("queue.nack", S7, "Nack redelivers the same message with attempt 2")
async def nack(ctx: Context) -> None:
    queue = await ctx.create("queue", "nack")
    conn = await ctx.connect()
    [off] = await enqueue(ctx, conn, queue, [b"again"])
    reply, log = await consume(ctx, conn, queue)
    await conn.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    d = deliveries(log)[0]
    await conn.expect(
        m.Nack(consumer_id=reply.consumer_id, delivery_ids=[d.delivery_id], request_id=conn.rid()),
        m.Ok,
    )
    await conn.until(lambda: len(deliveries(log)) >= 2, "the redelivery", None)
    r = deliveries(log)[1]
    expect(
        (r.offset, r.payload, r.attempt) == (off, b"again", 2),
        f"redelivered offset {r.offset} payload {r.payload!r} attempt {r.attempt}",
    )


@check("queue.nack-delay", S7, "Nack with delay_ms 600 does not redeliver before the delay")
async def nack_delay(ctx: Context) -> None:
    queue = await ctx.create("queue", "delay")
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"later"])
    reply, log = await consume(ctx, conn, queue)
    await conn.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    d = deliveries(log)[0]
    loop = asyncio.get_running_loop()
    start = loop.time()
    await conn.expect(
        m.Nack(
            consumer_id=reply.consumer_id,
            delivery_ids=[d.delivery_id],
            delay_ms=600,
            request_id=conn.rid(),
        ),
        m.Ok,
    )
    await conn.until(lambda: len(deliveries(log)) >= 2, "the delayed redelivery", 4.0)
    waited = loop.time() - start
    expect(waited >= 0.5, f"redelivered {waited * 1000:.0f} ms after a 600 ms Nack")


@check(
    "queue.visibility-timeout",
    S7,
    "an unacked delivery is redelivered (attempt 2) after the visibility timeout",
)
async def visibility(ctx: Context) -> None:
    queue = await ctx.create("queue", "vis", {"visibility_timeout_ms": 500})
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"slow"])
    _, log = await consume(ctx, conn, queue)
    await conn.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await conn.until(lambda: len(deliveries(log)) >= 2, "the redelivery after 500 ms", 4.0)
    waited = loop.time() - start
    r = deliveries(log)[1]
    expect(r.attempt == 2 and r.payload == b"slow", f"redelivery attempt {r.attempt}")
    expect(waited >= 0.4, f"redelivered after {waited * 1000:.0f} ms, timeout is 500 ms")


@check("queue.dead-letter", S7, "after max_attempts the message moves to the dead-letter queue")
async def dead_letter(ctx: Context) -> None:
    dlq = await ctx.create("queue", "dlq")
    queue = await ctx.create("queue", "src", {"max_attempts": 2, "dead_letter_queue": dlq})
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"poison"])
    reply, log = await consume(ctx, conn, queue)
    for attempt in (1, 2):
        await conn.until(
            lambda n=attempt: len(deliveries(log)) >= n,  # type: ignore[misc]
            f"delivery attempt {attempt}",
            None,
        )
        d = deliveries(log)[attempt - 1]
        expect(d.attempt == attempt, f"attempt numbered {d.attempt}, expected {attempt}")
        await conn.expect(
            m.Nack(
                consumer_id=reply.consumer_id, delivery_ids=[d.delivery_id], request_id=conn.rid()
            ),
            m.Ok,
        )
    if await conn.quiet(lambda: len(deliveries(log)) > 2, QUIET):
        raise CheckFailed("delivered a third time with max_attempts 2")
    _, dlog = await consume(ctx, conn, dlq)
    await conn.until(lambda: bool(deliveries(dlog)), "the message on the dead-letter queue", None)
    expect(deliveries(dlog)[0].payload == b"poison", "the dead letter's payload differs")


@check(
    "queue.consumer-loss",
    S7,
    "a consumer's vanished connection returns its deliveries to the group",
)
async def consumer_loss(ctx: Context) -> None:
    queue = await ctx.create("queue", "loss", {"visibility_timeout_ms": 60_000})
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"orphan"])
    lost = await ctx.connect()
    _, log = await consume(ctx, lost, queue)
    await lost.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    lost.close()  # CONNECTION_CLOSE: the broker learns at once
    _, log2 = await consume(ctx, conn, queue)
    await conn.until(lambda: bool(deliveries(log2)), "the redelivery to the other consumer", 5.0)
    r = deliveries(log2)[0]
    expect((r.payload, r.attempt) == (b"orphan", 2), f"got {r.payload!r} attempt {r.attempt}")


@check(
    "queue.cancel",
    S7,
    "CancelConsume: Ok, ConsumerEnded + FIN; in-flight ones go to another consumer",
)
async def cancel(ctx: Context) -> None:
    queue = await ctx.create("queue", "cancel", {"visibility_timeout_ms": 60_000})
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"handed-back"])
    reply, log = await consume(ctx, conn, queue)
    await conn.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    other = await ctx.connect()
    _, log2 = await consume(ctx, other, queue)
    await conn.expect(m.CancelConsume(request_id=conn.rid(), consumer_id=reply.consumer_id), m.Ok)
    await conn.until(lambda: log.fin, "FIN on the consumer stream", None)
    expect(
        isinstance(log.messages[-1], m.ConsumerEnded),
        "the stream's last frame is not ConsumerEnded",
    )
    await other.until(lambda: bool(deliveries(log2)), "the returned delivery", 3.0)
    expect(deliveries(log2)[0].payload == b"handed-back", "a different message was delivered")


@check("queue.unknown-delivery", S7, "Ack of a delivery id never handed out: Error 200")
async def unknown_delivery(ctx: Context) -> None:
    queue = await ctx.create("queue", "unk")
    conn = await ctx.connect()
    reply, _ = await consume(ctx, conn, queue)
    await conn.expect_error(
        m.Ack(consumer_id=reply.consumer_id, delivery_ids=[987_654_321], request_id=conn.rid()),
        ErrorCode.NOT_FOUND,
    )


@check("queue.not-found", S7, "Enqueue / Consume on a missing queue: Error 200")
async def queue_not_found(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("missing")
    await conn.expect_error(
        m.Enqueue(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            queue=name,
            payloads=[b"x"],
        ),
        ErrorCode.NOT_FOUND,
    )
    await conn.expect_error(
        m.Consume(request_id=conn.rid(), tenant=ctx.tenant, namespace=ctx.namespace, queue=name),
        ErrorCode.NOT_FOUND,
    )
