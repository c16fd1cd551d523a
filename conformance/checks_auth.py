"""§5.6 Authorization and the ``token-refresh`` capability (§5.3), with two tokens of two
tenants given by the operator (``--token`` for the working tenant, ``--other-token`` and
``--other-tenant`` for the other one). Skipped without them."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable

from conformance import strangers
from conformance.context import Context
from conformance.registry import Skip, check
from conformance.wire import CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.connection import TOKEN_REFRESH
from felix_proto.errors import ErrorCode

S56 = "§5.6 Authorization"
S53 = "§5.3 Capabilities"

Request = Callable[[int, str, str, str], m.Message]
"""``(request_id, tenant, namespace, name) -> request`` naming a stream, queue or cache."""

_ON_STREAM: list[tuple[str, Request]] = [
    (
        "Publish",
        lambda r, t, n, s: m.Publish(request_id=r, tenant=t, namespace=n, stream=s, payload=b"x"),
    ),
    ("Subscribe", lambda r, t, n, s: m.Subscribe(request_id=r, tenant=t, namespace=n, stream=s)),
    (
        "AdminDescribe",
        lambda r, t, n, s: m.AdminDescribe(
            request_id=r, kind="stream", tenant=t, namespace=n, name=s
        ),
    ),
    (
        "AdminUpdate",
        lambda r, t, n, s: m.AdminUpdate(
            request_id=r, kind="stream", tenant=t, namespace=n, name=s, settings={}
        ),
    ),
    (
        "AdminDelete",
        lambda r, t, n, s: m.AdminDelete(
            request_id=r, kind="stream", tenant=t, namespace=n, name=s
        ),
    ),
]
_ON_QUEUE: list[tuple[str, Request]] = [
    (
        "Enqueue",
        lambda r, t, n, q: m.Enqueue(request_id=r, tenant=t, namespace=n, queue=q, payloads=[b"x"]),
    ),
    (
        "Consume",
        lambda r, t, n, q: m.Consume(request_id=r, tenant=t, namespace=n, queue=q, group="g"),
    ),
]
_ON_CACHE: list[tuple[str, Request]] = [
    (
        "CacheGet",
        lambda r, t, n, c: m.CacheGet(request_id=r, tenant=t, namespace=n, cache=c, key="k"),
    ),
    (
        "CachePut",
        lambda r, t, n, c: m.CachePut(
            request_id=r, tenant=t, namespace=n, cache=c, key="k", value=b"v"
        ),
    ),
    (
        "Subscribe(cache)",
        lambda r, t, n, c: m.Subscribe(
            request_id=r, tenant=t, namespace=n, stream=c, source="cache"
        ),
    ),
]


def _other(ctx: Context) -> tuple[str, str]:
    token, tenant = ctx.options.other_token, ctx.options.other_tenant
    if token is None or tenant is None:
        raise Skip("no --other-token / --other-tenant given")
    return token, tenant


@contextlib.asynccontextmanager
async def _other_resources(ctx: Context, token: str, tenant: str) -> AsyncIterator[dict[str, str]]:
    """A stream, a queue and a cache of the other tenant, made with its own token."""
    conn = await ctx.connect(token=token, client_name="conformance-other")
    for kind, ns in (("tenant", ""), ("namespace", ctx.namespace)):
        reply = await conn.request(
            m.AdminCreate(request_id=conn.rid(), kind=kind, tenant=tenant, namespace=ns)
        )
        if not isinstance(reply, m.AdminResource) and not (
            isinstance(reply, m.Error) and reply.code == ErrorCode.ALREADY_EXISTS
        ):
            raise CheckFailed(f"the other token cannot make its {kind}: {describe(reply)}")
    names: dict[str, str] = {}
    try:
        for kind in ("stream", "queue", "cache"):
            name = ctx.unique(f"theirs-{kind}")
            reply = await conn.request(
                m.AdminCreate(
                    request_id=conn.rid(),
                    kind=kind,
                    tenant=tenant,
                    namespace=ctx.namespace,
                    name=name,
                )
            )
            if not isinstance(reply, m.AdminResource):
                raise CheckFailed(f"the other token cannot create a {kind}: {describe(reply)}")
            names[kind] = name
        yield names
    finally:
        for kind, name in names.items():
            with contextlib.suppress(CheckFailed):
                await conn.request(
                    m.AdminDelete(
                        request_id=conn.rid(),
                        kind=kind,
                        tenant=tenant,
                        namespace=ctx.namespace,
                        name=name,
                    ),
                    wait=2.0,
                )


def _shape(reply: m.Message, *names: str) -> tuple[object, ...]:
    """An Error with the names it mentions replaced, for comparing two answers."""
    if not isinstance(reply, m.Error):
        return ("not an Error", describe(reply))
    text = reply.message
    for name in names:
        text = re.sub(rf"\b{re.escape(name)}\b", "NAME", text)
    return (reply.code, text, reply.details)


async def _ask(conn: Conn, make: Request, tenant: str, namespace: str, name: str) -> m.Message:
    return await conn.request(make(conn.rid(), tenant, namespace, name))


@check(
    "auth.other-tenant-is-absent",
    S56,
    "another tenant's stream, queue and cache answer NOT_FOUND exactly as absent ones do",
)
async def other_tenant_is_absent(ctx: Context) -> None:
    token, tenant = _other(ctx)
    conn = await ctx.connect()
    async with _other_resources(ctx, token, tenant) as theirs:
        for kind, requests in (("stream", _ON_STREAM), ("queue", _ON_QUEUE), ("cache", _ON_CACHE)):
            name = theirs[kind]
            missing = ctx.unique("absent")
            for label, make in requests:
                existing = await _ask(conn, make, tenant, ctx.namespace, name)
                absent = await _ask(conn, make, tenant, ctx.namespace, missing)
                expect(
                    isinstance(existing, m.Error) and existing.code == ErrorCode.NOT_FOUND,
                    f"{label} on another tenant's {kind} answered {describe(existing)}, "
                    "expected Error NOT_FOUND",
                )
                expect(
                    _shape(existing, name) == _shape(absent, missing),
                    f"{label}: another tenant's {kind} answered {describe(existing)}, an "
                    f"absent one {describe(absent)}: they must be the same",
                )


@check(
    "auth.other-tenant-listing",
    S56,
    "listing another tenant's namespace answers as listing a tenant that does not exist",
)
async def other_tenant_listing(ctx: Context) -> None:
    token, tenant = _other(ctx)
    conn = await ctx.connect()
    ghost = ctx.unique("ghost-tenant")
    async with _other_resources(ctx, token, tenant):
        for kind, ns in (("stream", ctx.namespace), ("namespace", "")):
            theirs = await conn.request(
                m.AdminList(request_id=conn.rid(), kind=kind, tenant=tenant, namespace=ns)
            )
            nobodys = await conn.request(
                m.AdminList(request_id=conn.rid(), kind=kind, tenant=ghost, namespace=ns)
            )
            expect(
                not isinstance(theirs, m.AdminResources) or not theirs.resources,
                f"AdminList {kind} of another tenant showed {describe(theirs)}",
            )
            expect(
                _shape(theirs, tenant) == _shape(nobodys, ghost),
                f"AdminList {kind}: another tenant answered {describe(theirs)}, a tenant that "
                f"does not exist {describe(nobodys)}: they must be the same",
            )


@check(
    "auth.other-tenant-feeds",
    S56,
    "another tenant's Ack, Nack, CancelConsume and Unsubscribe naming our feeds answer "
    "NOT_FOUND as for ids never handed out, its Credit is ignored, and our feeds go on",
)
async def other_tenant_feeds(ctx: Context) -> None:
    token, _ = _other(ctx)

    async def stranger() -> Conn:
        return await ctx.connect(token=token, client_name="conformance-other")

    await strangers.settle_foreign_consumer(ctx, stranger)
    await strangers.credit_foreign_subscription(ctx, stranger)


@check(
    "auth.refresh-keeps-the-tenant",
    S53,
    "Reauthenticate with another tenant's token is FORBIDDEN and the old rights stand",
)
async def refresh_keeps_the_tenant(ctx: Context) -> None:
    token, _ = _other(ctx)
    conn = await ctx.connect(capabilities=[TOKEN_REFRESH])
    assert conn.welcome is not None
    if TOKEN_REFRESH not in conn.welcome.capabilities:
        raise Skip(f"the broker does not offer {TOKEN_REFRESH}")
    reply = await conn.request(m.Reauthenticate(request_id=conn.rid(), token=token), 0)
    expect(
        isinstance(reply, m.Error) and reply.code == ErrorCode.FORBIDDEN,
        f"Reauthenticate with another tenant's token answered {describe(reply)}, expected "
        "Error FORBIDDEN",
    )
    assert ctx.options.token is not None
    again = await conn.request(m.Reauthenticate(request_id=conn.rid(), token=ctx.options.token), 0)
    expect(
        isinstance(again, m.Ok), f"Reauthenticate with the same token answered {describe(again)}"
    )
    await conn.expect(
        m.AdminList(
            request_id=conn.rid(), kind="stream", tenant=ctx.tenant, namespace=ctx.namespace
        ),
        m.AdminResources,
    )
