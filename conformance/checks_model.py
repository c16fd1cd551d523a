"""Checks of §6.8 (resources, paths and names), §6.9 (cache change-feed records), the
credit rules of §7, the capability rule of §5.3 and ``Welcome.limits`` (§9)."""

from __future__ import annotations

from typing import Any

import msgpack

from conformance.context import Context
from conformance.feeds import publish, records, subscribe, wait_count
from conformance.registry import Skip, check
from conformance.wire import CONTROL, CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_proto.frames import encode_header

S53 = "§5.3 Capabilities"
S68 = "§6.8 Resources"
S69 = "§6.9 Cache feed"
S7 = "§7 Semantics: credit"
S9 = "§9 Limits"
QUIET = 0.3
"""Seconds of silence taken as "nothing more will come"."""

RESOURCE_KEYS = (
    "kind",
    "tenant",
    "namespace",
    "name",
    "settings",
    "uid",
    "generation",
    "created_ms",
    "updated_ms",
)
"""The keys §6.8 requires in ``AdminResource.resource``."""


def encode_frame(type_code: int, fields: dict[str, Any]) -> bytes:
    """A frame holding exactly ``fields`` (no defaults filled in, unlike the codec)."""
    payload = msgpack.packb([type_code, fields], use_bin_type=True)
    return encode_header(len(payload)) + payload


async def _admin(conn: Conn, msg: m.Message) -> dict[str, Any]:
    reply = await conn.expect(msg, m.AdminResource)
    return reply.resource


# ------------------------------------------------------------------- §6.8 resources


@check("model.defaults", S68, "tenant default and namespace default/default exist")
async def defaults(ctx: Context) -> None:
    if ctx.options.token is not None and ctx.tenant != "default":
        raise Skip("the token acts in another tenant: tenant default is not visible (§5.6)")
    conn = await ctx.connect()
    tenant = await _admin(
        conn, m.AdminDescribe(request_id=conn.rid(), kind="tenant", tenant="default")
    )
    expect(tenant.get("kind") == "tenant", f"tenant default described as {tenant}")
    ns = await _admin(
        conn,
        m.AdminDescribe(
            request_id=conn.rid(), kind="namespace", tenant="default", namespace="default"
        ),
    )
    expect(ns.get("namespace") == "default", f"namespace default described as {ns}")


@check(
    "model.resource-map",
    S68,
    "AdminResource.resource has the §6.8 keys; generation +1 per update; a re-created "
    "resource gets a new uid",
)
async def resource_map(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("model")
    path: dict[str, Any] = {"tenant": ctx.tenant, "namespace": ctx.namespace, "name": name}
    created = await _admin(conn, m.AdminCreate(request_id=conn.rid(), kind="stream", **path))
    try:
        missing = [k for k in RESOURCE_KEYS if k not in created]
        expect(not missing, f"AdminResource.resource lacks {missing}: {created}")
        expect(
            (created["kind"], created["tenant"], created["namespace"], created["name"])
            == ("stream", ctx.tenant, ctx.namespace, name),
            f"the path in the reply is wrong: {created}",
        )
        expect(
            isinstance(created["settings"], dict) and "durability" in created["settings"],
            f"settings are not the full set with defaults: {created['settings']}",
        )
        updated = await _admin(
            conn, m.AdminUpdate(request_id=conn.rid(), kind="stream", settings={}, **path)
        )
        expect(
            updated["generation"] == created["generation"] + 1,
            f"generation {created['generation']} became {updated['generation']} after an "
            "update, expected +1",
        )
        expect(updated["uid"] == created["uid"], "an update changed the uid")
        await conn.expect(m.AdminDelete(request_id=conn.rid(), kind="stream", **path), m.Ok)
        again = await _admin(conn, m.AdminCreate(request_id=conn.rid(), kind="stream", **path))
        expect(
            again["uid"] != created["uid"],
            f"a deleted and re-created stream kept uid {created['uid']}",
        )
    finally:
        await ctx.suite.delete("stream", ctx.namespace, name)


@check(
    "model.names",
    S68,
    "bad names and non-empty unused path parts are INVALID_ARGUMENT naming the field",
)
async def names(ctx: Context) -> None:
    conn = await ctx.connect()
    ns = ctx.namespace
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "stream", "tenant": ctx.tenant, "namespace": ns, "name": "-x"}, "stream"),
        ({"kind": "queue", "tenant": ctx.tenant, "namespace": ns, "name": "a/b"}, "queue"),
        ({"kind": "cache", "tenant": ctx.tenant, "namespace": ns, "name": "x" * 129}, "cache"),
        ({"kind": "namespace", "tenant": ctx.tenant, "namespace": ".hidden"}, "namespace"),
        ({"kind": "tenant", "tenant": ctx.tenant, "namespace": ns}, "namespace"),
        ({"kind": "namespace", "tenant": ctx.tenant, "namespace": ns, "name": "n"}, "name"),
    ]
    for fields, field in cases:
        error = await conn.expect_error(
            m.AdminCreate(request_id=conn.rid(), **fields), ErrorCode.INVALID_ARGUMENT
        )
        expect(
            error.details.get("field") == field,
            f"AdminCreate {fields} answered INVALID_ARGUMENT with details {error.details}, "
            f"expected field {field!r}",
        )
    error = await conn.expect_error(
        m.Consume(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ns,
            queue=await ctx.create("queue", "names"),
            group="g" * 129,
        ),
        ErrorCode.INVALID_ARGUMENT,
    )
    expect(
        error.details.get("field") == "group",
        f"an over-long group answered details {error.details}, expected field 'group'",
    )


@check("model.kinds-share-names", S68, "a stream, a queue and a cache may share one name")
async def kinds_share_names(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("shared")
    path: dict[str, Any] = {"tenant": ctx.tenant, "namespace": ctx.namespace, "name": name}
    made: list[str] = []
    try:
        for kind in ("stream", "queue", "cache"):
            await _admin(conn, m.AdminCreate(request_id=conn.rid(), kind=kind, **path))
            made.append(kind)
    finally:
        for kind in made:
            await ctx.suite.delete(kind, ctx.namespace, name)


@check("model.missing-parent", S68, "creating under a missing namespace is NOT_FOUND")
async def missing_parent(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.expect_error(
        m.AdminCreate(
            request_id=conn.rid(),
            kind="stream",
            tenant=ctx.tenant,
            namespace=ctx.unique("nons"),
            name="s",
        ),
        ErrorCode.NOT_FOUND,
    )


@check(
    "limits.batch-over-retention",
    S9,
    "a batch larger than the stream's retention_max_records is TOO_LARGE",
)
async def batch_over_retention(ctx: Context) -> None:
    stream = await ctx.create("stream", "small", {"retention_max_records": 5})
    conn = await ctx.connect()
    await conn.expect_error(
        m.PublishBatch(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payloads=[b"x"] * 6,
        ),
        ErrorCode.TOO_LARGE,
    )


# ------------------------------------------------------------------ §6.9 cache feed


def _feed_records(log: Any) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    for msg in log.messages[1:]:
        if isinstance(msg, m.EventBatch):
            keys = msg.keys or [None] * len(msg.payloads)
            headers = msg.headers or [None] * len(msg.payloads)
            out.extend((k, p, h or {}) for k, p, h in zip(keys, msg.payloads, headers, strict=True))
    return out


@check(
    "cache.feed-records",
    S69,
    "the change feed carries put/delete records with op, version, ttl_ms, expires_ms; "
    "failed conditional writes append nothing",
)
async def feed_records(ctx: Context) -> None:
    cache = await ctx.create("cache", "feed")
    conn = await ctx.connect()
    path: dict[str, Any] = {"tenant": ctx.tenant, "namespace": ctx.namespace, "cache": cache}
    _, log = await subscribe(ctx, conn, cache, source="cache", start=m.StartKind.EARLIEST)
    put = await conn.expect(
        m.CachePut(request_id=conn.rid(), key="k1", value=b"v1", ttl_ms=600_000, **path),
        m.CachePutResult,
    )
    forever = await conn.expect(
        m.CachePut(request_id=conn.rid(), key="k2", value=b"v2", ttl_ms=0, **path), m.CachePutResult
    )
    failed = await conn.expect(
        m.CachePut(request_id=conn.rid(), key="k1", value=b"no", if_absent=True, **path),
        m.CachePutResult,
    )
    expect(not failed.stored, f"if_absent on a live key answered {failed}")
    deleted = await conn.expect(
        m.CacheDelete(request_id=conn.rid(), key="k2", **path), m.CacheDeleted
    )
    expect(deleted.deleted, f"CacheDelete answered {deleted}")
    await conn.until(lambda: len(_feed_records(log)) >= 3, "three change-feed records", None)
    if await conn.quiet(lambda: len(_feed_records(log)) > 3, QUIET):
        raise CheckFailed(f"a failed if_absent put appended a record: {_feed_records(log)}")
    (k1, p1, h1), (k2, _, h2), (k3, p3, h3) = _feed_records(log)
    expect(
        k1 == b"k1" and p1 == b"v1" and h1.get("op") == b"put",
        f"first record {k1!r} {p1!r} {h1}, expected a put of k1=v1",
    )
    expect(
        h1.get("version") == str(put.version).encode(),
        f"put record version {h1.get('version')!r}, CachePutResult.version {put.version}",
    )
    expect(h1.get("ttl_ms") == b"600000", f"put record ttl_ms {h1.get('ttl_ms')!r}")
    expires = h1.get("expires_ms")
    expect(
        expires is not None and expires.isdigit() and int(expires) > 1_600_000_000_000,
        f"a put with a TTL has expires_ms {expires!r}, expected absolute ms",
    )
    expect(
        k2 == b"k2"
        and h2.get("op") == b"put"
        and h2.get("ttl_ms") == b"0"
        and "expires_ms" not in h2,
        f"a put that never expires: {k2!r} {h2}",
    )
    expect(h2.get("version") == str(forever.version).encode(), f"second record {h2}")
    expect(
        k3 == b"k2" and p3 == b"" and h3.get("op") == b"delete",
        f"third record {k3!r} {p3!r} {h3}, expected a delete of k2 with an empty payload",
    )
    version = h3.get("version", b"")
    expect(
        version.isdigit() and int(version) > int(forever.version or 0),
        f"the delete record's version {version!r} does not follow {forever.version}",
    )


# ---------------------------------------------------------------------- §7 credit


@check(
    "credit.first-record",
    S7,
    "the first record of a batch goes out whatever the byte credit; a negative balance "
    "must be paid back before more is sent",
)
async def credit_first_record(ctx: Context) -> None:
    stream = await ctx.create("stream", "debt")
    conn = await ctx.connect()
    await publish(ctx, conn, stream, *(f"record-{i:03d}".encode() for i in range(4)))
    reply, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST, credit_bytes=1)
    await wait_count(conn, log, 1)
    if await conn.quiet(lambda: len(records(log)) > 1, QUIET):
        raise CheckFailed(f"{len(records(log))} records sent on a byte credit of 1")
    sid = reply.subscription_id
    # The balance is now 1 - 10 = -9: 5 more bytes leave it negative, nothing may be sent.
    conn.send(m.Credit(subscription_id=sid, messages=0, bytes=5), CONTROL)
    if await conn.quiet(lambda: len(records(log)) > 1, QUIET):
        raise CheckFailed("a record was sent while the byte balance was still negative")
    conn.send(m.Credit(subscription_id=sid, messages=0, bytes=1 << 20), CONTROL)
    await wait_count(conn, log, 4)


@check(
    "credit.unknown-subscription",
    S7,
    "Credit for a subscription that does not exist is ignored: no Error, the connection goes on",
)
async def credit_unknown(ctx: Context) -> None:
    conn = await ctx.connect()
    conn.send(m.Credit(subscription_id=987_654_321, messages=10, bytes=10), CONTROL)
    conn.send(m.Ping(nonce=77), CONTROL)
    await conn.message(CONTROL, m.Pong, lambda p: p.nonce == 77, "Pong after the Credit")
    errors = conn.log(CONTROL).of(m.Error)
    expect(
        not errors,
        f"Credit for an unknown subscription answered {describe(errors[0])}" if errors else "",
    )


@check(
    "streams.subscription-outlives-fin",
    S7,
    "a subscription goes on after the client FINs the request stream it was made on",
)
async def outlives_fin(ctx: Context) -> None:
    stream = await ctx.create("stream", "fin")
    conn = await ctx.connect()
    sid = conn.new_stream()
    rid = conn.rid()
    conn.send(
        m.Subscribe(request_id=rid, tenant=ctx.tenant, namespace=ctx.namespace, stream=stream),
        sid,
        end=True,
    )
    reply = await conn.reply(sid, rid)
    expect(isinstance(reply, m.Subscribed), f"Subscribe answered {describe(reply)}")
    writer = await ctx.connect()
    await publish(ctx, writer, stream, b"after-fin")
    logs: list[Any] = []

    def delivered() -> bool:
        logs[:] = [log for log in conn.server_streams() if records(log)]
        return bool(logs)

    await conn.until(delivered, "a record on the subscription after the FIN", None)
    expect(records(logs[0])[0][1] == b"after-fin", f"got {records(logs[0])}")


# -------------------------------------------------------- §5.3 capabilities, §9 limits


@check(
    "session.no-capabilities",
    S53,
    "offered only capabilities §5.3 does not define: Welcome.capabilities is empty",
)
async def no_capabilities(ctx: Context) -> None:
    conn = await ctx.connect(capabilities=["batch", "cache-feed", "conformance.unknown"])
    assert conn.welcome is not None
    expect(
        conn.welcome.capabilities == [],
        f"Welcome.capabilities {conn.welcome.capabilities}; none of those is defined (§5.3)",
    )


@check(
    "session.welcome-limits",
    S9,
    "Welcome.limits values are unsigned integers; the §9 keys, when present, are sane",
)
async def welcome_limits(ctx: Context) -> None:
    conn = await ctx.connect()
    assert conn.welcome is not None
    limits = conn.welcome.limits
    for key, value in limits.items():
        expect(isinstance(value, int) and value >= 0, f"limits[{key!r}] = {value!r}")
    for key in ("max_payload_bytes", "max_record_bytes"):
        size = limits.get(key)
        expect(
            size is None or size <= limits["max_frame_size"],
            f"{key} {size} above max_frame_size {limits['max_frame_size']}",
        )
    batch = limits.get("max_batch_records")
    expect(batch is None or batch >= 1, f"max_batch_records {batch}")


# ---------------------------------------------------------------- §3 encoding forms


@check(
    "payload.defaults-omitted",
    "§3 Payload encoding",
    "a frame that leaves out fields with a default is served like the canonical one",
)
async def defaults_omitted(ctx: Context) -> None:
    stream = await ctx.create("stream", "short")
    conn = await ctx.connect()
    sid = conn.new_stream()
    # Publish without `ack` (default 1, ACCEPTED) and Subscribe without `start`,
    # `credit_messages`, `credit_bytes` and `source`: only the required fields.
    path = {"tenant": ctx.tenant, "namespace": ctx.namespace, "stream": stream}
    publish_id, subscribe_id = conn.rid(), conn.rid()
    conn.send_raw(sid, encode_frame(0x10, {"request_id": publish_id, **path, "payload": b"p"}))
    ack = await conn.reply(sid, publish_id)
    expect(isinstance(ack, m.PublishAck), f"a Publish without ack answered {describe(ack)}")
    conn.send_raw(sid, encode_frame(0x13, {"request_id": subscribe_id, **path}))
    sub = await conn.reply(sid, subscribe_id)
    expect(isinstance(sub, m.Subscribed), f"a minimal Subscribe answered {describe(sub)}")
