"""§5.6 Authorization inside one tenant, with a restricted token given by the operator
(``--restricted-token``): a token of the working tenant whose only permission is
``subscribe`` on the streams named ``ro-*`` of the working namespace
(``subscribe:NAMESPACE/ro-*``). Skipped without it.

What a broker must do for such a token: serve what the grant covers; answer everything
else ``FORBIDDEN`` with ``details.action`` and ``details.permission`` naming the missing
permission, decided before anything is looked up (an existing and an absent resource get
the same answer, names aside); and treat the feeds of other connections (``Ack``,
``Nack``, ``CancelConsume``, ``Unsubscribe``, ``Credit`` by id) as absent. With the token's
subject (``--restricted-subject``), a role bound to it and unbound again must change what
the live connection may do at its next request, open feeds included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance import strangers
from conformance.context import Context
from conformance.feeds import feed_stream, publish, records, subscribe, wait_count
from conformance.registry import Skip, check
from conformance.strangers import shape
from conformance.wire import CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

S56 = "§5.6 Authorization"

ALLOWED = "ro"
"""The prefix of the stream names the restricted token may subscribe to."""
OUTSIDE = "rw"
"""A prefix its grant does not cover."""

Request = Callable[[int, str, str, str], m.Message]
"""``(request_id, tenant, namespace, name) -> request``."""

_DENIED: list[tuple[str, str, str, str, Request]] = [
    # (label, the kind it names, the prefix of the name, the action it needs, request)
    (
        "Publish",
        "stream",
        ALLOWED,
        "publish",
        lambda r, t, n, s: m.Publish(request_id=r, tenant=t, namespace=n, stream=s, payload=b"x"),
    ),
    (
        "PublishBatch",
        "stream",
        ALLOWED,
        "publish",
        lambda r, t, n, s: m.PublishBatch(
            request_id=r, tenant=t, namespace=n, stream=s, payloads=[b"x", b"y"]
        ),
    ),
    (
        "Subscribe",
        "stream",
        OUTSIDE,
        "subscribe",
        lambda r, t, n, s: m.Subscribe(
            request_id=r, tenant=t, namespace=n, stream=s, start=m.StartKind.EARLIEST
        ),
    ),
    (
        "Subscribe(offset)",
        "stream",
        OUTSIDE,
        "subscribe",
        lambda r, t, n, s: m.Subscribe(
            request_id=r, tenant=t, namespace=n, stream=s, start=m.StartKind.OFFSET, start_value=0
        ),
    ),
    (
        "Subscribe(cache)",
        "cache",
        ALLOWED,
        "cache.read",
        lambda r, t, n, c: m.Subscribe(
            request_id=r, tenant=t, namespace=n, stream=c, source=m.SourceKind.CACHE.value
        ),
    ),
    (
        "Enqueue",
        "queue",
        ALLOWED,
        "enqueue",
        lambda r, t, n, q: m.Enqueue(request_id=r, tenant=t, namespace=n, queue=q, payloads=[b"x"]),
    ),
    (
        "Consume",
        "queue",
        ALLOWED,
        "consume",
        lambda r, t, n, q: m.Consume(request_id=r, tenant=t, namespace=n, queue=q, group="g"),
    ),
    (
        "CacheGet",
        "cache",
        ALLOWED,
        "cache.read",
        lambda r, t, n, c: m.CacheGet(request_id=r, tenant=t, namespace=n, cache=c, key="k"),
    ),
    (
        "CachePut",
        "cache",
        ALLOWED,
        "cache.write",
        lambda r, t, n, c: m.CachePut(
            request_id=r, tenant=t, namespace=n, cache=c, key="k", value=b"v"
        ),
    ),
    (
        "CachePut(if_version)",
        "cache",
        ALLOWED,
        "cache.write",
        lambda r, t, n, c: m.CachePut(
            request_id=r, tenant=t, namespace=n, cache=c, key="k", value=b"v", if_version=1
        ),
    ),
    (
        "CacheDelete",
        "cache",
        ALLOWED,
        "cache.write",
        lambda r, t, n, c: m.CacheDelete(request_id=r, tenant=t, namespace=n, cache=c, key="k"),
    ),
]


def _admin(
    make: type[m.AdminDescribe | m.AdminUpdate | m.AdminDelete | m.AdminCreate], kind: str
) -> Request:
    """``make`` (an admin request) naming a resource of ``kind``."""
    return lambda r, t, n, s: make(request_id=r, kind=kind, tenant=t, namespace=n, name=s)


_DENIED += [
    (f"{make.__name__} {kind}", kind, ALLOWED, "admin", _admin(make, kind))
    for kind in ("stream", "queue", "cache")
    for make in (m.AdminDescribe, m.AdminUpdate, m.AdminDelete, m.AdminCreate)
]


def _token(ctx: Context) -> str:
    token = ctx.options.restricted_token
    if token is None:
        raise Skip("no --restricted-token given")
    return token


async def _restricted(ctx: Context) -> Conn:
    """A connection speaking for the restricted token."""
    return await ctx.connect(token=_token(ctx), client_name="conformance-restricted")


def forbidden(reply: m.Message, label: str, permission: str) -> m.Error:
    """Check that ``reply`` is the FORBIDDEN §5.6 requires for ``permission``.

    Raises:
        CheckFailed: it is not.
    """
    if not isinstance(reply, m.Error) or reply.code != ErrorCode.FORBIDDEN:
        raise CheckFailed(f"{label} answered {describe(reply)}, expected Error FORBIDDEN")
    action = permission.partition(":")[0]
    got = {k: reply.details.get(k) for k in ("action", "permission")}
    expect(
        got == {"action": action, "permission": permission},
        f"{label}: FORBIDDEN details {reply.details}, expected action {action!r} and "
        f"permission {permission!r}",
    )
    expect(
        permission in reply.message,
        f"{label}: FORBIDDEN message {reply.message!r} does not name {permission}",
    )
    expect(not reply.retryable, f"{label}: FORBIDDEN marked retryable")
    return reply


@check(
    "rbac.granted",
    S56,
    "the restricted token subscribes to a stream its grant covers and gets its records; "
    "Welcome.tenant, when sent, names its tenant",
)
async def granted(ctx: Context) -> None:
    _token(ctx)
    stream = await ctx.create("stream", ALLOWED)
    owner = await ctx.connect()
    await publish(ctx, owner, stream, b"visible")
    conn = await _restricted(ctx)
    assert conn.welcome is not None
    expect(
        conn.welcome.tenant in (None, ctx.tenant),
        f"Welcome.tenant is {conn.welcome.tenant!r}, not the token's tenant {ctx.tenant!r}",
    )
    _, log = await subscribe(ctx, conn, stream, start=m.StartKind.EARLIEST)
    await wait_count(conn, log, 1)
    expect(records(log)[0][1] == b"visible", f"the record arrived as {records(log)[0]}")


@check(
    "rbac.forbidden",
    S56,
    "every data and admin request outside the grant is FORBIDDEN naming the missing "
    "permission, the same for an existing and an absent resource",
    timeout=20.0,
)
async def forbidden_everywhere(ctx: Context) -> None:
    _token(ctx)
    existing = {
        (kind, prefix): await ctx.create(kind, prefix)
        for kind, prefix in {(k, p) for _, k, p, _, _ in _DENIED}
    }
    conn = await _restricted(ctx)
    ns = ctx.namespace
    for label, kind, prefix, action, make in _DENIED:
        name, absent = existing[kind, prefix], ctx.unique(prefix)
        theirs = await conn.request(make(conn.rid(), ctx.tenant, ns, name))
        nobodys = await conn.request(make(conn.rid(), ctx.tenant, ns, absent))
        one = forbidden(theirs, f"{label} on an existing {kind}", f"{action}:{ns}/{name}")
        other = forbidden(nobodys, f"{label} on an absent {kind}", f"{action}:{ns}/{absent}")
        expect(
            shape(one, name) == shape(other, absent),
            f"{label}: an existing {kind} answered {describe(one)} {one.details}, an "
            f"absent one {describe(other)} {other.details}: they must be the same",
        )


@check(
    "rbac.admin-reads",
    S56,
    "listing and describing the namespace, the tenant and their resources are FORBIDDEN "
    "naming the permission (admin on NAMESPACE/*, */, NAMESPACE/, /); listing tenants is "
    "FORBIDDEN (operators only)",
)
async def admin_reads(ctx: Context) -> None:
    _token(ctx)
    conn = await _restricted(ctx)
    t, ns = ctx.tenant, ctx.namespace
    absent_ns = ctx.unique("ns")
    cases: list[tuple[str, m.Message, str]] = [
        (
            f"AdminList {kind}",
            m.AdminList(request_id=conn.rid(), kind=kind, tenant=t, namespace=n),
            f"admin:{n}/*",
        )
        for kind in ("stream", "queue", "cache")
        for n in (ns, absent_ns)
    ]
    cases += [
        (
            "AdminList namespace",
            m.AdminList(request_id=conn.rid(), kind="namespace", tenant=t),
            "admin:*/",
        ),
        (
            "AdminDescribe namespace",
            m.AdminDescribe(request_id=conn.rid(), kind="namespace", tenant=t, namespace=ns),
            f"admin:{ns}/",
        ),
        (
            "AdminDescribe namespace (absent)",
            m.AdminDescribe(request_id=conn.rid(), kind="namespace", tenant=t, namespace=absent_ns),
            f"admin:{absent_ns}/",
        ),
        (
            "AdminDescribe tenant",
            m.AdminDescribe(request_id=conn.rid(), kind="tenant", tenant=t),
            "admin:/",
        ),
    ]
    for label, request, permission in cases:
        forbidden(await conn.request(request), label, permission)
    tenants = await conn.request(m.AdminList(request_id=conn.rid(), kind="tenant"))
    expect(
        isinstance(tenants, m.Error)
        and tenants.code == ErrorCode.FORBIDDEN
        and tenants.details.get("action") == "admin",
        f"AdminList tenant answered {describe(tenants)}, expected Error FORBIDDEN with "
        "details.action 'admin'",
    )


@check(
    "rbac.foreign-consumer",
    S56,
    "Ack, Nack and CancelConsume naming another connection's consumer answer NOT_FOUND as "
    "for a consumer that never existed, and change nothing",
)
async def foreign_consumer(ctx: Context) -> None:
    _token(ctx)
    await strangers.settle_foreign_consumer(ctx, lambda: _restricted(ctx))


@check(
    "rbac.foreign-subscription",
    S56,
    "Credit for another connection's subscription is ignored and Unsubscribe of it answers "
    "NOT_FOUND as for one that never existed; the owner's feed goes on",
)
async def foreign_subscription(ctx: Context) -> None:
    _token(ctx)
    await strangers.credit_foreign_subscription(ctx, lambda: _restricted(ctx))


async def _tenant_resource(ctx: Context, kind: str, name: str, settings: dict[str, Any]) -> None:
    """Create a role or binding of the working tenant with the working token; a broker that
    does not know the kind skips the check."""
    admin = ctx.suite.admin
    assert admin is not None
    reply = await admin.request(
        m.AdminCreate(
            request_id=admin.rid(), kind=kind, tenant=ctx.tenant, name=name, settings=settings
        )
    )
    if isinstance(reply, m.Error) and reply.code == ErrorCode.INVALID_ARGUMENT:
        raise Skip(f"the broker refuses AdminCreate {kind}: {reply.message}")
    if not isinstance(reply, m.AdminResource):
        raise CheckFailed(f"AdminCreate {kind} answered {describe(reply)}")


@check(
    "rbac.live-change",
    S56,
    "a role bound to the restricted token's subject applies to its live connection from the "
    "next request; unbinding it refuses the next request and ends the feed it covered "
    "(SubscriptionEnded reason 'forbidden' naming the permission)",
    timeout=20.0,
)
async def live_change(ctx: Context) -> None:
    _token(ctx)
    subject = ctx.options.restricted_subject
    if subject is None:
        raise Skip("no --restricted-subject given")
    stream, cache = await ctx.create("stream", ALLOWED), await ctx.create("cache", ALLOWED)
    role, binding = ctx.unique("conf-role"), ctx.unique("conf-binding")
    try:
        await _live_change(ctx, subject, stream, cache, role, binding)
    finally:
        await ctx.suite.delete("binding", "", binding)
        await ctx.suite.delete("role", "", role)


async def _live_change(
    ctx: Context, subject: str, stream: str, cache: str, role: str, binding: str
) -> None:
    conn = await _restricted(ctx)
    ns = ctx.namespace

    def publish_to(target: str) -> m.Publish:
        return m.Publish(
            request_id=conn.rid(), tenant=ctx.tenant, namespace=ns, stream=target, payload=b"x"
        )

    forbidden(await conn.request(publish_to(stream)), "Publish", f"publish:{ns}/{stream}")
    grants = [f"publish:{ns}/{ALLOWED}-*", f"cache.read:{ns}/{ALLOWED}-*"]
    await _tenant_resource(ctx, "role", role, {"permissions": grants})
    await _tenant_resource(ctx, "binding", binding, {"role": role, "subjects": [subject]})
    reply = await conn.request(publish_to(stream))
    expect(
        isinstance(reply, m.PublishAck),
        f"Publish after the binding answered {describe(reply)}, expected PublishAck",
    )
    rid = conn.rid()
    await conn.expect(
        m.Subscribe(
            request_id=rid,
            tenant=ctx.tenant,
            namespace=ns,
            stream=cache,
            source=m.SourceKind.CACHE.value,
        ),
        m.Subscribed,
    )
    log = await feed_stream(conn, m.SubscriptionStreamStart, rid)
    admin = ctx.suite.admin
    assert admin is not None
    await admin.expect(
        m.AdminDelete(request_id=admin.rid(), kind="binding", tenant=ctx.tenant, name=binding),
        m.Ok,
    )
    forbidden(
        await conn.request(publish_to(stream)),
        "Publish after the unbinding",
        f"publish:{ns}/{stream}",
    )
    await conn.until(lambda: log.ended, "the end of the cache feed after the unbinding", None)
    ended = log.of(m.SubscriptionEnded)
    permission = f"cache.read:{ns}/{cache}"
    expect(
        bool(ended) and ended[-1].reason == "forbidden" and permission in ended[-1].message,
        f"the cache feed ended with {ended[-1:] or 'no SubscriptionEnded'}, expected reason "
        f"'forbidden' naming {permission}",
    )
