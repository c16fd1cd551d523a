"""What a stranger may do with a connection's feeds: nothing (§5.6).

``Ack``, ``Nack``, ``CancelConsume``, ``Unsubscribe`` and ``Credit`` name a consumer or a
subscription by id, and ids belong to the connection that opened the feed: to any other
connection, of the same tenant with other rights (``rbac.*``) or of another tenant
(``auth.*``), the feed is as absent as one that never existed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from conformance.context import Context
from conformance.feeds import consume, deliveries, enqueue, publish, records, subscribe, wait_count
from conformance.wire import CONTROL, CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

__all__ = ["credit_foreign_subscription", "settle_foreign_consumer", "shape"]

Connect = Callable[[], Awaitable[Conn]]
"""Opens the stranger's connection."""
QUIET = 0.5
"""Seconds to watch for something that must not happen."""


def shape(reply: m.Message, *names: str) -> tuple[object, ...]:
    """An Error with the names it mentions replaced, for comparing two answers."""
    if not isinstance(reply, m.Error):
        return ("not an Error", describe(reply))

    def blank(value: object) -> object:
        if isinstance(value, list):
            return [blank(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in names:
            return "NAME"
        if isinstance(value, str):
            for name in names:
                value = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "NAME", value)
        return value

    details = {k: blank(v) for k, v in reply.details.items()}
    return (reply.code, blank(reply.message), reply.retryable, details)


async def settle_foreign_consumer(ctx: Context, connect: Connect) -> None:
    """A consumer of the working token's connection; a stranger's ``Ack``, ``Nack`` and
    ``CancelConsume`` naming it must answer ``NOT_FOUND`` exactly as for a consumer id never
    handed out, and change nothing (the owner still holds and acks the delivery).

    Raises:
        CheckFailed: they do not.
    """
    queue = await ctx.create("queue", "held")
    owner = await ctx.connect()
    await enqueue(ctx, owner, queue, [b"mine"])
    reply, log = await consume(ctx, owner, queue, prefetch=1)
    await owner.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    delivery = deliveries(log)[0].delivery_id
    cid = reply.consumer_id
    ghost = cid + 1_000_003
    conn = await connect()
    for label, make in (
        ("Ack", lambda c: m.Ack(request_id=conn.rid(), consumer_id=c, delivery_ids=[delivery])),
        ("Nack", lambda c: m.Nack(request_id=conn.rid(), consumer_id=c, delivery_ids=[delivery])),
        ("CancelConsume", lambda c: m.CancelConsume(request_id=conn.rid(), consumer_id=c)),
    ):
        theirs = await conn.request(make(cid))
        nobodys = await conn.request(make(ghost))
        expect(
            isinstance(theirs, m.Error) and theirs.code == ErrorCode.NOT_FOUND,
            f"{label} of another connection's consumer answered {describe(theirs)}, expected "
            "Error NOT_FOUND",
        )
        expect(
            shape(theirs, str(cid)) == shape(nobodys, str(ghost)),
            f"{label}: another connection's consumer answered {describe(theirs)}, one that "
            f"never existed {describe(nobodys)}: they must be the same",
        )
    if await owner.quiet(lambda: len(deliveries(log)) > 1 or log.ended, QUIET):
        raise CheckFailed("the owner's consumer was redelivered to or ended by another connection")
    await owner.expect(
        m.Ack(request_id=owner.rid(), consumer_id=cid, delivery_ids=[delivery]), m.Ok
    )


async def credit_foreign_subscription(ctx: Context, connect: Connect) -> None:
    """A subscription of the working token's connection on a credit of one record; a
    stranger's ``Credit`` for it must be ignored, its ``Unsubscribe`` answered ``NOT_FOUND``
    exactly as for an id never handed out, and the owner's feed must go on.

    Raises:
        CheckFailed: they do not.
    """
    stream = await ctx.create("stream", "held")
    owner = await ctx.connect()
    await publish(ctx, owner, stream, b"a", b"b", b"c")
    reply, log = await subscribe(ctx, owner, stream, start=m.StartKind.EARLIEST, credit_messages=1)
    await wait_count(owner, log, 1)
    sid = reply.subscription_id
    ghost = sid + 1_000_003
    conn = await connect()
    conn.send(m.Credit(subscription_id=sid, messages=100, bytes=1 << 20), CONTROL)
    if await owner.quiet(lambda: len(records(log)) > 1, QUIET):
        raise CheckFailed("another connection's Credit let more records through")
    theirs = await conn.request(m.Unsubscribe(request_id=conn.rid(), subscription_id=sid))
    nobodys = await conn.request(m.Unsubscribe(request_id=conn.rid(), subscription_id=ghost))
    expect(
        isinstance(theirs, m.Error) and theirs.code == ErrorCode.NOT_FOUND,
        f"Unsubscribe of another connection's subscription answered {describe(theirs)}, "
        "expected Error NOT_FOUND",
    )
    expect(
        shape(theirs, str(sid)) == shape(nobodys, str(ghost)),
        f"Unsubscribe: another connection's subscription answered {describe(theirs)}, one "
        f"that never existed {describe(nobodys)}: they must be the same",
    )
    owner.send(m.Credit(subscription_id=sid, messages=2, bytes=1 << 20), CONTROL)
    await wait_count(owner, log, 3)
    expect(not log.ended, "the owner's subscription ended")
