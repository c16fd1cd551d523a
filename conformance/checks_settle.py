"""Checks of §7 Semantics for settling queue deliveries: delivery ids, settling without a
request id, and how a cancelled consumer's stream ends."""

from __future__ import annotations

from conformance.context import Context
from conformance.feeds import consume, deliveries, enqueue
from conformance.registry import check
from conformance.wire import CONTROL, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

S7 = "§7 Semantics: queues"


@check(
    "queue.redelivery-new-id",
    S7,
    "a redelivery carries a new delivery_id; settling the old id is NOT_FOUND",
)
async def redelivery_new_id(ctx: Context) -> None:
    queue = await ctx.create("queue", "ids")
    conn = await ctx.connect()
    await enqueue(ctx, conn, queue, [b"twice"])
    reply, log = await consume(ctx, conn, queue, prefetch=1)
    await conn.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    first = deliveries(log)[0]
    await conn.expect(
        m.Nack(
            consumer_id=reply.consumer_id, delivery_ids=[first.delivery_id], request_id=conn.rid()
        ),
        m.Ok,
    )
    await conn.until(lambda: len(deliveries(log)) >= 2, "the redelivery", None)
    again = deliveries(log)[1]
    expect(
        again.delivery_id != first.delivery_id,
        f"the redelivery reused delivery_id {first.delivery_id}",
    )
    error = await conn.expect_error(
        m.Ack(
            consumer_id=reply.consumer_id, delivery_ids=[first.delivery_id], request_id=conn.rid()
        ),
        ErrorCode.NOT_FOUND,
    )
    expect(
        first.delivery_id in error.details.get("delivery_ids", []),
        f"NOT_FOUND details {error.details} do not name delivery {first.delivery_id}",
    )
    await conn.expect(
        m.Ack(
            consumer_id=reply.consumer_id, delivery_ids=[again.delivery_id], request_id=conn.rid()
        ),
        m.Ok,
    )


@check(
    "queue.settle-without-request-id",
    S7,
    "Ack / Nack without request_id are answered by nothing, even when they fail",
)
async def settle_without_request_id(ctx: Context) -> None:
    queue = await ctx.create("queue", "quiet")
    conn = await ctx.connect()
    reply, _ = await consume(ctx, conn, queue)
    sid = conn.new_stream()
    conn.send(m.Ack(consumer_id=reply.consumer_id, delivery_ids=[987_654_321]), sid)
    conn.send(m.Nack(consumer_id=reply.consumer_id, delivery_ids=[987_654_322]), sid)
    conn.send(m.Ping(nonce=91), CONTROL)
    await conn.message(CONTROL, m.Pong, lambda p: p.nonce == 91, "Pong after the settles")
    rid = conn.rid()
    conn.send(m.CancelConsume(request_id=rid, consumer_id=reply.consumer_id), sid)
    answer = await conn.reply(sid, rid)
    expect(isinstance(answer, m.Ok), f"CancelConsume answered {describe(answer)}")
    errors = conn.log(sid).of(m.Error)
    expect(not errors, f"a settle without request_id was answered {errors[:1]}")


@check(
    "queue.cancel-reason",
    S7,
    "a cancelled consumer's stream ends with ConsumerEnded reason 'unsubscribed'",
)
async def cancel_reason(ctx: Context) -> None:
    queue = await ctx.create("queue", "bye")
    conn = await ctx.connect()
    reply, log = await consume(ctx, conn, queue)
    await conn.expect(m.CancelConsume(request_id=conn.rid(), consumer_id=reply.consumer_id), m.Ok)
    await conn.until(lambda: log.fin, "FIN on the consumer stream", None)
    last = log.messages[-1]
    expect(
        isinstance(last, m.ConsumerEnded) and last.reason == "unsubscribed",
        f"the consumer stream ended with {describe(last)}",
    )
