"""§5.6 Authorization inside one tenant, with a restricted token given by the operator
(``--restricted-token``): a token of the working tenant whose only permission is
``subscribe`` on the streams named ``ro-*`` of the working namespace
(``subscribe:NAMESPACE/ro-*``). Skipped without it.

What a broker must do for such a token: serve what the grant covers; answer everything
else ``FORBIDDEN`` with ``details.action`` and ``details.permission`` naming the missing
permission, decided before anything is looked up (an existing and an absent resource get
the same answer, names aside); and treat the feeds of other connections (``Ack``,
``Nack``, ``CancelConsume``, ``Unsubscribe``, ``Credit`` by id) as absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from conformance.context import Context
from conformance.feeds import consume, deliveries, enqueue, publish, records, subscribe, wait_count
from conformance.registry import Skip, check
from conformance.wire import CONTROL, CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

S56 = "§5.6 Authorization"

ALLOWED = "ro"
"""The prefix of the stream names the restricted token may subscribe to."""
OUTSIDE = "rw"
"""A prefix its grant does not cover."""
QUIET = 0.5
"""Seconds to watch for something that must not happen."""

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


def _shape(reply: m.Message, *names: str) -> tuple[object, ...]:
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


@check(
    "rbac.granted",
    S56,
    "the restricted token subscribes to a stream its grant covers and gets its records",
)
async def granted(ctx: Context) -> None:
    _token(ctx)
    stream = await ctx.create("stream", ALLOWED)
    owner = await ctx.connect()
    await publish(ctx, owner, stream, b"visible")
    conn = await _restricted(ctx)
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
            _shape(one, name) == _shape(other, absent),
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
    queue = await ctx.create("queue", OUTSIDE)
    owner = await ctx.connect()
    await enqueue(ctx, owner, queue, [b"mine"])
    reply, log = await consume(ctx, owner, queue, prefetch=1)
    await owner.until(lambda: len(deliveries(log)) >= 1, "a delivery", None)
    delivery = deliveries(log)[0].delivery_id
    cid = reply.consumer_id
    ghost = cid + 1_000_003
    conn = await _restricted(ctx)
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
            _shape(theirs, str(cid)) == _shape(nobodys, str(ghost)),
            f"{label}: another connection's consumer answered {describe(theirs)}, one that "
            f"never existed {describe(nobodys)}: they must be the same",
        )
    if await owner.quiet(lambda: len(deliveries(log)) > 1 or log.ended, QUIET):
        raise CheckFailed("the owner's consumer was redelivered to or ended by another connection")
    await owner.expect(
        m.Ack(request_id=owner.rid(), consumer_id=cid, delivery_ids=[delivery]), m.Ok
    )


@check(
    "rbac.foreign-subscription",
    S56,
    "Credit for another connection's subscription is ignored and Unsubscribe of it answers "
    "NOT_FOUND as for one that never existed; the owner's feed goes on",
)
async def foreign_subscription(ctx: Context) -> None:
    _token(ctx)
    stream = await ctx.create("stream", OUTSIDE)
    owner = await ctx.connect()
    await publish(ctx, owner, stream, b"a", b"b", b"c")
    reply, log = await subscribe(ctx, owner, stream, start=m.StartKind.EARLIEST, credit_messages=1)
    await wait_count(owner, log, 1)
    sid = reply.subscription_id
    ghost = sid + 1_000_003
    conn = await _restricted(ctx)
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
        _shape(theirs, str(sid)) == _shape(nobodys, str(ghost)),
        f"Unsubscribe: another connection's subscription answered {describe(theirs)}, one "
        f"that never existed {describe(nobodys)}: they must be the same",
    )
    owner.send(m.Credit(subscription_id=sid, messages=2, bytes=1 << 20), CONTROL)
    await wait_count(owner, log, 3)
    expect(not log.ended, "the owner's subscription ended")
