"""Checks of §7 Semantics, publishing and subscribing: offsets, order, start positions,
resume, cursor-too-old and credit (with the stream rules of §4)."""

from __future__ import annotations

import asyncio

from conformance.context import Context
from conformance.feeds import publish, records, subscribe, wait_count
from conformance.registry import Skip, check
from conformance.wire import CONTROL, CheckFailed, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

S7 = "§7 Semantics: pub/sub"
QUIET = 0.3
"""Seconds of silence taken as "nothing more will come"."""


def _payloads(n: int, tag: str = "r") -> list[bytes]:
    return [f"{tag}-{i:04d}".encode() for i in range(n)]


@check("pubsub.offsets", S7, "acks carry consecutive offsets; a batch gets an inclusive range")
async def offsets(ctx: Context) -> None:
    stream = await ctx.create("stream", "offsets")
    conn = await ctx.connect()
    singles = await publish(ctx, conn, stream, b"a", b"b", b"c")
    expect(
        singles == list(range(singles[0], singles[0] + 3)), f"three publishes got offsets {singles}"
    )
    ack = await conn.expect(
        m.PublishBatch(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payloads=[b"d", b"e", b"f", b"g"],
        ),
        m.PublishAck,
    )
    expect(
        (ack.first_offset, ack.last_offset) == (singles[-1] + 1, singles[-1] + 4),
        f"a batch of 4 after offset {singles[-1]} got {ack.first_offset}..{ack.last_offset}",
    )


@check("pubsub.order", S7, "EARLIEST delivers every record once, in offset order, intact")
async def order(ctx: Context) -> None:
    stream = await ctx.create("stream", "order")
    conn = await ctx.connect()
    sent: dict[int, bytes] = {}
    for off, p in zip(
        await publish(ctx, conn, stream, *_payloads(5, "s")), _payloads(5, "s"), strict=True
    ):
        sent[off] = p
    batch = _payloads(40, "b")
    ack = await conn.expect(
        m.PublishBatch(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payloads=batch,
        ),
        m.PublishAck,
    )
    sent.update(zip(range(ack.first_offset, ack.last_offset + 1), batch, strict=True))
    reader = await ctx.connect()
    reply, log = await subscribe(ctx, reader, stream, start=m.StartKind.EARLIEST)
    first = min(sent)
    expect(
        reply.first_offset == first,
        f"Subscribed.first_offset {reply.first_offset}, expected {first}",
    )
    await wait_count(reader, log, len(sent))
    got = records(log)
    expect(
        got == sorted(sent.items()),
        f"delivered {[o for o, _ in got][:12]}..., expected offsets {first}.."
        f"{max(sent)} with the published payloads",
    )


@check("pubsub.live", S7, "a LATEST subscriber gets records published after it, in order")
async def live(ctx: Context) -> None:
    stream = await ctx.create("stream", "live")
    conn = await ctx.connect()
    await publish(ctx, conn, stream, b"before")
    reader = await ctx.connect()
    reply, log = await subscribe(ctx, reader, stream, start=m.StartKind.LATEST)
    sent = dict(zip(await publish(ctx, conn, stream, *_payloads(12)), _payloads(12), strict=True))
    expect(
        reply.first_offset == min(sent),
        f"Subscribed.first_offset {reply.first_offset}; the next record got {min(sent)}",
    )
    await wait_count(reader, log, len(sent))
    got = records(log)
    expect(got == sorted(sent.items()), f"delivered {got}, expected {sorted(sent.items())}")


@check("pubsub.start-offset", S7, "start OFFSET k delivers from k")
async def start_offset(ctx: Context) -> None:
    stream = await ctx.create("stream", "startoff")
    conn = await ctx.connect()
    offs = await publish(ctx, conn, stream, *_payloads(6))
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.OFFSET, start_value=offs[2])
    expect(reply.first_offset == offs[2], f"Subscribed.first_offset {reply.first_offset}")
    await wait_count(conn, log, 4)
    got = records(log)
    expect(got == list(zip(offs[2:], _payloads(6)[2:], strict=True)), f"delivered {got}")


@check(
    "pubsub.start-timestamp",
    S7,
    "start TIMESTAMP t delivers from the first record with timestamp >= t",
)
async def start_timestamp(ctx: Context) -> None:
    stream = await ctx.create("stream", "startts")
    conn = await ctx.connect()
    for p in _payloads(4):
        await publish(ctx, conn, stream, p)
        await asyncio.sleep(0.02)  # distinct millisecond timestamps
    _, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST)
    await wait_count(conn, log, 4)
    stamps: list[int] = []
    for batch in log.of(m.EventBatch):
        if batch.timestamps_ms is None:
            raise Skip("the broker sends no timestamps_ms, so TIMESTAMP starts cannot be checked")
        stamps.extend(batch.timestamps_ms)
    expect(stamps == sorted(stamps), f"timestamps go backwards: {stamps}")
    first = records(log)[0][0]
    target = next((i for i in range(1, 4) if stamps[i] > stamps[i - 1]), None)
    if target is None:
        raise Skip(f"records published 20 ms apart share a timestamp: {stamps}")
    reply, tlog = await subscribe(
        ctx, conn, stream, start=m.StartKind.TIMESTAMP, start_value=stamps[target]
    )
    expect(
        reply.first_offset == first + target,
        f"TIMESTAMP {stamps[target]} started at offset {reply.first_offset}, expected "
        f"{first + target} (timestamps {stamps})",
    )
    await wait_count(conn, tlog, 4 - target)
    expect(records(tlog)[0][0] == first + target, f"delivered {records(tlog)}")


@check(
    "pubsub.unsubscribe",
    S7,
    "Unsubscribe: Ok, SubscriptionEnded(unsubscribed) then FIN; nothing after",
)
async def unsubscribe(ctx: Context) -> None:
    stream = await ctx.create("stream", "unsub")
    conn = await ctx.connect()
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST)
    await publish(ctx, conn, stream, b"one")
    await wait_count(conn, log, 1)
    await conn.expect(
        m.Unsubscribe(request_id=conn.rid(), subscription_id=reply.subscription_id), m.Ok
    )
    await conn.until(lambda: log.fin, f"FIN on subscription stream {log.stream_id}", None)
    ends = log.of(m.SubscriptionEnded)
    expect(
        len(ends) == 1 and log.messages[-1] is ends[0],
        "SubscriptionEnded must be the last frame, exactly once",
    )
    expect(ends[0].reason == m.EndReason.UNSUBSCRIBED, f"reason is {ends[0].reason!r}")
    expect(
        ends[0].next_offset in (None, 1 + records(log)[-1][0]),
        f"SubscriptionEnded.next_offset {ends[0].next_offset}",
    )


@check("pubsub.resume", S7, "a new connection resuming at next_offset gets exactly the rest")
async def resume(ctx: Context) -> None:
    stream = await ctx.create("stream", "resume")
    conn = await ctx.connect()
    first = await publish(ctx, conn, stream, *_payloads(5, "a"))
    reader = await ctx.connect()
    _, log = await subscribe(ctx, reader, stream, start=m.StartKind.EARLIEST)
    await wait_count(reader, log, 5)
    next_offset = records(log)[-1][0] + 1
    reader.close()
    rest = await publish(ctx, conn, stream, *_payloads(5, "b"))
    again = await ctx.connect()
    reply, log2 = await subscribe(
        ctx, again, stream, start=m.StartKind.OFFSET, start_value=next_offset
    )
    expect(reply.first_offset == next_offset, f"resumed at {reply.first_offset}")
    await wait_count(again, log2, 5)
    await again.quiet(lambda: len(records(log2)) > 5, QUIET)
    got = records(log2)
    expect(
        got == list(zip(rest, _payloads(5, "b"), strict=True)),
        f"resume at {next_offset} (after {first}) delivered {got}",
    )


@check(
    "pubsub.cursor-too-old",
    S7,
    "a start below the retained range: Error 205 with details.first_offset",
)
async def cursor_too_old(ctx: Context) -> None:
    stream = await ctx.create("stream", "trim", {"retention_max_records": 3})
    conn = await ctx.connect()
    offs = await publish(ctx, conn, stream, *_payloads(10))
    err = await conn.expect_error(
        m.Subscribe(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            start=m.StartKind.OFFSET,
            start_value=offs[0],
        ),
        ErrorCode.CURSOR_TOO_OLD,
    )
    kept = err.details.get("first_offset")
    expect(
        isinstance(kept, int) and offs[0] < kept <= offs[-1],
        f"details.first_offset is {kept!r}; records {offs[0]}..{offs[-1]}, 3 retained",
    )
    assert isinstance(kept, int)
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST)
    expect(reply.first_offset == kept, f"EARLIEST starts at {reply.first_offset}, not {kept}")
    await wait_count(conn, log, offs[-1] - kept + 1)


@check("pubsub.credit-messages", S7, "no more records than credit_messages until Credit adds more")
async def credit_messages(ctx: Context) -> None:
    stream = await ctx.create("stream", "credit")
    conn = await ctx.connect()
    await publish(ctx, conn, stream, *_payloads(10))
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST, credit_messages=2)
    await wait_count(conn, log, 2)
    if await conn.quiet(lambda: len(records(log)) > 2, QUIET):
        raise CheckFailed(f"{len(records(log))} records sent on a credit of 2 messages")
    conn.send(m.Credit(subscription_id=reply.subscription_id, messages=3, bytes=1 << 20), CONTROL)
    await wait_count(conn, log, 5)
    if await conn.quiet(lambda: len(records(log)) > 5, QUIET):
        raise CheckFailed(f"{len(records(log))} records sent on a total credit of 5")
    conn.send(m.Credit(subscription_id=reply.subscription_id, messages=100, bytes=0), CONTROL)
    await wait_count(conn, log, 10)


@check(
    "pubsub.credit-bytes",
    S7,
    "with credit_bytes 1 one batch goes out, then nothing until Credit adds bytes",
)
async def credit_bytes(ctx: Context) -> None:
    stream = await ctx.create("stream", "bytes")
    conn = await ctx.connect()
    await publish(ctx, conn, stream, *_payloads(10))
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST, credit_bytes=1)
    await conn.until(lambda: bool(log.of(m.EventBatch)), "a first EventBatch", None)
    if await conn.quiet(lambda: len(log.of(m.EventBatch)) > 1, QUIET):
        raise CheckFailed("a second EventBatch was sent after the byte credit was used up")
    conn.send(m.Credit(subscription_id=reply.subscription_id, messages=0, bytes=1 << 20), CONTROL)
    await wait_count(conn, log, 10)


@check(
    "pubsub.stop-sending",
    "§4 Streams",
    "STOP_SENDING on a subscription stream unsubscribes: no more records on it",
)
async def stop_sending(ctx: Context) -> None:
    stream = await ctx.create("stream", "stop")
    conn = await ctx.connect()
    _, log = await subscribe(ctx, conn, stream, start=m.StartKind.LATEST)
    conn.stop(log.stream_id)
    await asyncio.sleep(0.1)
    before = len(records(log))
    await publish(ctx, conn, stream, *_payloads(3))
    if await conn.quiet(lambda: len(records(log)) > before, QUIET):
        raise CheckFailed("records kept arriving on a stream the client stopped")
    await ctx.healthy()


@check("pubsub.not-found", S7, "Publish / Subscribe to a missing stream: Error 200")
async def not_found(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("missing")
    await conn.expect_error(
        m.Publish(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=name,
            payload=b"x",
        ),
        ErrorCode.NOT_FOUND,
    )
    await conn.expect_error(
        m.Subscribe(request_id=conn.rid(), tenant=ctx.tenant, namespace=ctx.namespace, stream=name),
        ErrorCode.NOT_FOUND,
    )


@check("pubsub.ack-none", S7, "ack NONE: no PublishAck, yet the record is appended")
async def ack_none(ctx: Context) -> None:
    stream = await ctx.create("stream", "acknone")
    conn = await ctx.connect()
    [before] = await publish(ctx, conn, stream, b"acked")
    rid = conn.rid()
    sid = conn.send(
        m.Publish(
            request_id=rid,
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payload=b"silent",
            ack=m.AckMode.NONE,
        )
    )
    [after] = await publish(ctx, conn, stream, b"acked-again")
    expect(after == before + 2, f"offsets {before} and {after}: the ack-NONE record is missing")
    replied = [x for x in conn.log(sid).messages if getattr(x, "request_id", None) == rid]
    expect(not replied, f"ack NONE was answered {replied[0]!r}" if replied else "")


@check("pubsub.keys-headers", S7, "a record's key and headers are delivered with it")
async def keys_headers(ctx: Context) -> None:
    stream = await ctx.create("stream", "keys")
    conn = await ctx.connect()
    await conn.expect(
        m.PublishBatch(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payloads=[b"p0", b"p1"],
            keys=[b"k0", None],
            headers=[None, {"h": b"v"}],
        ),
        m.PublishAck,
    )
    _, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST)
    await wait_count(conn, log, 2)
    keys: list[bytes | None] = []
    headers: list[dict[str, bytes] | None] = []
    for b in log.of(m.EventBatch):
        keys.extend(b.keys if b.keys is not None else [None] * len(b.payloads))
        headers.extend(b.headers if b.headers is not None else [None] * len(b.payloads))
    expect(keys == [b"k0", None], f"keys delivered as {keys}")
    expect(headers == [None, {"h": b"v"}], f"headers delivered as {headers}")
