"""Checks of §7 Semantics for the cache and admin requests, and of §9 Limits."""

from __future__ import annotations

import asyncio
from typing import Any

from conformance.context import Context
from conformance.registry import Skip, check
from conformance.wire import Conn, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

SC = "§7 Semantics: cache"
SA = "§7 Semantics: admin"
S9 = "§9 Limits"


def _path(ctx: Context, cache: str, key: str) -> dict[str, Any]:
    return {"tenant": ctx.tenant, "namespace": ctx.namespace, "cache": cache, "key": key}


async def _put(
    ctx: Context, conn: Conn, cache: str, key: str, value: bytes, **extra: Any
) -> m.CachePutResult:
    return await conn.expect(
        m.CachePut(request_id=conn.rid(), value=value, **_path(ctx, cache, key), **extra),
        m.CachePutResult,
    )


async def _get(ctx: Context, conn: Conn, cache: str, key: str) -> m.CacheValue:
    return await conn.expect(
        m.CacheGet(request_id=conn.rid(), **_path(ctx, cache, key)), m.CacheValue
    )


async def _delete(ctx: Context, conn: Conn, cache: str, key: str, **extra: Any) -> m.CacheDeleted:
    return await conn.expect(
        m.CacheDelete(request_id=conn.rid(), **_path(ctx, cache, key), **extra), m.CacheDeleted
    )


@check("cache.put-get", SC, "CachePut stores (stored, version); CacheGet returns value+version")
async def put_get(ctx: Context) -> None:
    cache = await ctx.create("cache", "c")
    conn = await ctx.connect()
    put = await _put(ctx, conn, cache, "k", b"v1", ttl_ms=0)
    expect(put.stored and put.version is not None, f"CachePut answered {put}")
    got = await _get(ctx, conn, cache, "k")
    expect(
        got.found and got.value == b"v1" and got.version == put.version,
        f"CacheGet answered {got}, expected v1 at version {put.version}",
    )
    expect(
        got.ttl_remaining_ms is None,
        f"ttl_ms 0 never expires, yet ttl_remaining_ms is {got.ttl_remaining_ms}",
    )
    again = await _put(ctx, conn, cache, "k", b"v2", ttl_ms=0)
    expect(
        again.stored and again.version != put.version, f"an overwrite kept version {again.version}"
    )


@check("cache.miss", SC, "CacheGet of an absent key: found false, no value or version")
async def miss(ctx: Context) -> None:
    cache = await ctx.create("cache", "miss")
    conn = await ctx.connect()
    got = await _get(ctx, conn, cache, "absent")
    expect(not got.found and got.value is None and got.version is None, f"got {got}")


@check("cache.ttl", SC, "ttl_ms: ttl_remaining_ms counts down; after it the key is a miss")
async def ttl(ctx: Context) -> None:
    cache = await ctx.create("cache", "ttl")
    conn = await ctx.connect()
    await _put(ctx, conn, cache, "k", b"short", ttl_ms=400)
    got = await _get(ctx, conn, cache, "k")
    expect(
        got.found and got.ttl_remaining_ms is not None and 0 < got.ttl_remaining_ms <= 400,
        f"right after a 400 ms put: {got}",
    )
    await asyncio.sleep(0.7)
    got = await _get(ctx, conn, cache, "k")
    expect(not got.found, f"700 ms after a 400 ms put the key is still there: {got}")


@check("cache.if-absent", SC, "if_absent on a live key: stored false with the current version")
async def if_absent(ctx: Context) -> None:
    cache = await ctx.create("cache", "ifabs")
    conn = await ctx.connect()
    first = await _put(ctx, conn, cache, "k", b"one", if_absent=True)
    expect(first.stored, f"if_absent on an absent key was refused: {first}")
    second = await _put(ctx, conn, cache, "k", b"two", if_absent=True)
    expect(not second.stored, "if_absent overwrote a live key")
    expect(
        second.version in (None, first.version),
        f"conflict reports version {second.version}, current is {first.version}",
    )
    got = await _get(ctx, conn, cache, "k")
    expect(got.value == b"one", f"the value became {got.value!r}")


@check("cache.cas", SC, "if_version: stored only when it equals the current version")
async def cas(ctx: Context) -> None:
    cache = await ctx.create("cache", "cas")
    conn = await ctx.connect()
    v1 = await _put(ctx, conn, cache, "k", b"one")
    assert v1.version is not None
    stale = await _put(ctx, conn, cache, "k", b"bad", if_version=v1.version + 1000)
    expect(not stale.stored, "a put with a wrong if_version was stored")
    expect(stale.version in (None, v1.version), f"conflict reports version {stale.version}")
    ok = await _put(ctx, conn, cache, "k", b"two", if_version=v1.version)
    expect(ok.stored and ok.version != v1.version, f"a put with the right if_version: {ok}")
    got = await _get(ctx, conn, cache, "k")
    expect((got.value, got.version) == (b"two", ok.version), f"CacheGet answered {got}")


@check("cache.delete", SC, "CacheDelete: deleted true then a miss; again: deleted false")
async def delete(ctx: Context) -> None:
    cache = await ctx.create("cache", "del")
    conn = await ctx.connect()
    put = await _put(ctx, conn, cache, "k", b"x")
    assert put.version is not None
    wrong = await _delete(ctx, conn, cache, "k", if_version=put.version + 1000)
    expect(not wrong.deleted, "a delete with a wrong if_version deleted the entry")
    gone = await _delete(ctx, conn, cache, "k", if_version=put.version)
    expect(gone.deleted, "a delete with the right if_version did not delete")
    got = await _get(ctx, conn, cache, "k")
    expect(not got.found, f"a deleted key is still found: {got}")
    again = await _delete(ctx, conn, cache, "k")
    expect(not again.deleted, "deleting an absent key reported deleted true")


@check("cache.not-found", SC, "cache requests on a missing cache: Error 200")
async def cache_not_found(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("missing")
    await conn.expect_error(
        m.CacheGet(request_id=conn.rid(), **_path(ctx, name, "k")), ErrorCode.NOT_FOUND
    )


# -- admin --------------------------------------------------------------------------------


def _admin(kind: type[m.Message], conn: Conn, ctx: Context, name: str, **extra: Any) -> Any:
    return kind(
        request_id=conn.rid(),
        kind="stream",
        tenant=ctx.tenant,
        namespace=ctx.namespace,
        name=name,
        **extra,
    )  # type: ignore[call-arg]


@check(
    "admin.lifecycle",
    SA,
    "create/describe/update -> AdminResource, list -> AdminResources, delete -> Ok",
)
async def lifecycle(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("adm")
    await conn.expect(_admin(m.AdminCreate, conn, ctx, name), m.AdminResource)
    try:
        await conn.expect(_admin(m.AdminDescribe, conn, ctx, name), m.AdminResource)
        await conn.expect(_admin(m.AdminUpdate, conn, ctx, name), m.AdminResource)
        listed = await conn.expect(
            m.AdminList(
                request_id=conn.rid(), kind="stream", tenant=ctx.tenant, namespace=ctx.namespace
            ),
            m.AdminResources,
        )
        names = [r.get("name") for r in listed.resources]
        expect(name in names, f"AdminList does not list {name}: {names}")
    finally:
        await conn.expect(_admin(m.AdminDelete, conn, ctx, name), m.Ok)
    await conn.expect_error(_admin(m.AdminDescribe, conn, ctx, name), ErrorCode.NOT_FOUND)


@check("admin.already-exists", SA, "creating an existing resource: Error 201")
async def already_exists(ctx: Context) -> None:
    name = await ctx.create("stream", "dup")
    conn = await ctx.connect()
    await conn.expect_error(_admin(m.AdminCreate, conn, ctx, name), ErrorCode.ALREADY_EXISTS)


@check("admin.not-found", SA, "describe / delete of a missing resource: Error 200")
async def admin_not_found(ctx: Context) -> None:
    conn = await ctx.connect()
    name = ctx.unique("nothing")
    await conn.expect_error(_admin(m.AdminDescribe, conn, ctx, name), ErrorCode.NOT_FOUND)
    await conn.expect_error(_admin(m.AdminDelete, conn, ctx, name), ErrorCode.NOT_FOUND)


@check("admin.invalid-argument", SA, "a name with '/', spaces and NUL: Error 202")
async def invalid_argument(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.expect_error(
        _admin(m.AdminCreate, conn, ctx, "bad/ name\x00"), ErrorCode.INVALID_ARGUMENT
    )


# -- limits -------------------------------------------------------------------------------


def _limit(conn: Conn, name: str, cap: int) -> int:
    assert conn.welcome is not None
    value = conn.welcome.limits.get(name)
    if value is None:
        raise Skip(f"Welcome.limits does not announce {name}")
    if value > cap:
        raise Skip(f"limits.{name} is {value}, too large to exceed cheaply")
    return int(value)


@check("limits.max-frame-size", S9, "limits.max_frame_size is a uint no larger than 2^32-1")
async def max_frame_size(ctx: Context) -> None:
    conn = await ctx.connect()
    assert conn.welcome is not None
    value = conn.welcome.limits.get("max_frame_size")
    expect(
        isinstance(value, int) and 0 < value <= 0xFFFF_FFFF, f"limits.max_frame_size is {value!r}"
    )


@check("limits.payload", S9, "a payload above limits.max_payload_bytes: Error 204")
async def payload_limit(ctx: Context) -> None:
    conn = await ctx.connect()
    limit = _limit(conn, "max_payload_bytes", 8 * 1024 * 1024)
    assert conn.welcome is not None
    if limit + 1024 > conn.welcome.limits.get("max_frame_size", 16 << 20):
        raise Skip("max_payload_bytes is not below max_frame_size")
    stream = await ctx.create("stream", "big")
    await conn.expect_error(
        m.Publish(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payload=b"\0" * (limit + 1),
        ),
        ErrorCode.TOO_LARGE,
        wait=8.0,
    )


@check("limits.batch-records", S9, "a batch above limits.max_batch_records: Error 203 or 204")
async def batch_records(ctx: Context) -> None:
    conn = await ctx.connect()
    limit = _limit(conn, "max_batch_records", 100_000)
    stream = await ctx.create("stream", "batch")
    await conn.expect_error(
        m.PublishBatch(
            request_id=conn.rid(),
            tenant=ctx.tenant,
            namespace=ctx.namespace,
            stream=stream,
            payloads=[b""] * (limit + 1),
        ),
        {ErrorCode.LIMIT_EXCEEDED, ErrorCode.TOO_LARGE},
        wait=8.0,
    )


@check("limits.subscriptions", S9, "one subscription above limits.max_subscriptions: Error 203")
async def subscriptions(ctx: Context) -> None:
    conn = await ctx.connect()
    limit = _limit(conn, "max_subscriptions", 64)
    stream = await ctx.create("stream", "subs")
    for _ in range(limit):
        await conn.expect(
            m.Subscribe(
                request_id=conn.rid(), tenant=ctx.tenant, namespace=ctx.namespace, stream=stream
            ),
            m.Subscribed,
        )
    await conn.expect_error(
        m.Subscribe(
            request_id=conn.rid(), tenant=ctx.tenant, namespace=ctx.namespace, stream=stream
        ),
        ErrorCode.LIMIT_EXCEEDED,
    )
