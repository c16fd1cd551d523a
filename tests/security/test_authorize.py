"""Authorization in the router (felix_core.access.authorize, the one check): another
tenant's resources answer exactly as absent ones do, and a missing permission is FORBIDDEN
naming it. Pure: a router over a real engine, no network."""

from __future__ import annotations

from typing import Any

import pytest

from felix_core import events as ce
from felix_core.access import ANONYMOUS, Access, Action, Permission, Principal, authorize
from felix_core.broker import Broker
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver
from felix_server.router import UNIDENTIFIED, Router, access_of


class Denials(ServerObserver):
    def __init__(self) -> None:
        self.denied: list[str] = []

    def auth_denied(self, action: str) -> None:
        self.denied.append(action)


def principal(tenant: str, *grants: str) -> Principal:
    return Principal(
        subject=f"{tenant}-app",
        tenant=tenant,
        permissions=frozenset(Permission.parse(g) for g in grants),
        issuer="felix",
    )


ALICE = principal("alice", "*")
OPERATOR, MALLORY, NOBODY = 1, 2, 3  # connection ids


def make_router() -> tuple[Router, Denials]:
    observer = Denials()
    router = Router(LocalRoute(Broker(now=0.0)), observer)
    router.attach(OPERATOR, 0.0)  # the default: ANONYMOUS
    router.attach(MALLORY, 0.0, UNIDENTIFIED)
    router.identify(MALLORY, ALICE)
    router.attach(NOBODY, 0.0, UNIDENTIFIED)
    for number, (kind, ns, name) in enumerate(
        [
            ("tenant", "", ""),
            ("namespace", "ns", ""),
            ("stream", "ns", "s"),
            ("queue", "ns", "q"),
            ("cache", "ns", "c"),
        ],
        start=1,
    ):
        for tenant in ("bob", "alice"):
            create = m.AdminCreate(
                request_id=number, kind=kind, tenant=tenant, namespace=ns, name=name
            )
            assert ask(router, OPERATOR, create) is None
    return router, observer


_numbers = iter(range(1000, 10**6))


def ask(router: Router, conn: int, message: m.Message) -> Any:
    """The error a request got (code, message, details), or None when it completed."""
    router.submit(conn, next(_numbers), message, 0.0)
    answers = [
        e for e in router.take(conn, 0.0) if isinstance(e, ce.RequestRefused | ce.RequestCompleted)
    ]
    assert len(answers) == 1, answers
    done = answers[0]
    if isinstance(done, ce.RequestCompleted):
        return None
    return (done.error.code, done.error.message, dict(done.error.details))


def requests(
    tenant: str, ns: str = "ns", s: str = "s", q: str = "q", c: str = "c"
) -> list[m.Message]:
    """Every tenant-naming request, on the resources of ``tenant``."""
    return [
        m.Publish(request_id=1, tenant=tenant, namespace=ns, stream=s, payload=b"x"),
        m.PublishBatch(request_id=1, tenant=tenant, namespace=ns, stream=s, payloads=[b"x"]),
        m.Subscribe(request_id=1, tenant=tenant, namespace=ns, stream=s),
        m.Subscribe(request_id=1, tenant=tenant, namespace=ns, stream=c, source="cache"),
        m.Enqueue(request_id=1, tenant=tenant, namespace=ns, queue=q, payloads=[b"x"]),
        m.Consume(request_id=1, tenant=tenant, namespace=ns, queue=q, group="g"),
        m.CachePut(request_id=1, tenant=tenant, namespace=ns, cache=c, key="k", value=b"v"),
        m.CacheGet(request_id=1, tenant=tenant, namespace=ns, cache=c, key="k"),
        m.CacheDelete(request_id=1, tenant=tenant, namespace=ns, cache=c, key="k"),
        m.AdminDescribe(request_id=1, kind="stream", tenant=tenant, namespace=ns, name=s),
        m.AdminDescribe(request_id=1, kind="queue", tenant=tenant, namespace=ns, name=q),
        m.AdminDescribe(request_id=1, kind="cache", tenant=tenant, namespace=ns, name=c),
        m.AdminDescribe(request_id=1, kind="namespace", tenant=tenant, namespace=ns),
        m.AdminDescribe(request_id=1, kind="tenant", tenant=tenant),
        m.AdminUpdate(
            request_id=1, kind="stream", tenant=tenant, namespace=ns, name=s, settings={}
        ),
        m.AdminList(request_id=1, kind="stream", tenant=tenant, namespace=ns),
        m.AdminList(request_id=1, kind="queue", tenant=tenant, namespace=ns),
        m.AdminList(request_id=1, kind="namespace", tenant=tenant),
        m.AdminCreate(request_id=1, kind="stream", tenant=tenant, namespace=ns, name="new"),
        m.AdminCreate(request_id=1, kind="namespace", tenant=tenant, namespace="new"),
        m.AdminDelete(request_id=1, kind="cache", tenant=tenant, namespace=ns, name=c),
        m.AdminDelete(request_id=1, kind="namespace", tenant=tenant, namespace=ns),
        m.AdminDelete(request_id=1, kind="tenant", tenant=tenant),
    ]


@pytest.mark.parametrize("index", range(len(requests("x"))))
def test_another_tenants_resource_answers_as_an_absent_tenant(index: int) -> None:
    router, observer = make_router()
    denied = ask(router, MALLORY, requests("bob")[index])  # bob's, which exists
    absent = ask(router, OPERATOR, requests("ghost")[index])  # the engine: no such tenant
    assert denied is not None and denied[0] == ErrorCode.NOT_FOUND
    assert denied == (absent[0], absent[1].replace("ghost", "bob"), absent[2])
    assert observer.denied == [str(access_of(requests("bob")[index]).action)]  # type: ignore[union-attr]
    # nothing of bob's changed: the operator still sees it all
    assert (
        ask(
            router,
            OPERATOR,
            m.AdminDescribe(request_id=1, kind="cache", tenant="bob", namespace="ns", name="c"),
        )
        is None
    )


@pytest.mark.parametrize("index", range(len(requests("x"))))
def test_the_own_tenant_is_served(index: int) -> None:
    router, observer = make_router()
    answer = ask(router, MALLORY, requests("alice")[index])
    assert answer is None or answer[0] not in (ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN), answer
    assert observer.denied == []


def test_listing_or_making_tenants_is_for_operators() -> None:
    router, observer = make_router()
    for message in (
        m.AdminList(request_id=1, kind="tenant"),
        m.AdminCreate(request_id=1, kind="tenant", tenant="bob"),  # exists
        m.AdminCreate(request_id=1, kind="tenant", tenant="carol"),  # does not
    ):
        code, text, details = ask(router, MALLORY, message)
        assert (code, text) == (ErrorCode.FORBIDDEN, "only an operator manages tenants")
        assert details == {"action": "admin"}
    assert observer.denied == ["admin"] * 3
    assert ask(router, OPERATOR, m.AdminList(request_id=1, kind="tenant")) is None


def test_a_missing_permission_is_forbidden_and_named() -> None:
    router, observer = make_router()
    router.identify(MALLORY, principal("alice", "publish:ns/s", "subscribe:ns/*"))
    publish = m.Publish(request_id=1, tenant="alice", namespace="ns", stream="s", payload=b"x")
    assert ask(router, MALLORY, publish) is None
    assert (
        ask(router, MALLORY, m.Subscribe(request_id=1, tenant="alice", namespace="ns", stream="s"))
        is None
    )
    cases = [
        (
            m.Enqueue(request_id=1, tenant="alice", namespace="ns", queue="q", payloads=[b"x"]),
            "enqueue:ns/q",
        ),
        (
            m.Consume(request_id=1, tenant="alice", namespace="ns", queue="q", group="g"),
            "consume:ns/q",
        ),
        (
            m.CacheGet(request_id=1, tenant="alice", namespace="ns", cache="c", key="k"),
            "cache.read:ns/c",
        ),
        (
            m.Subscribe(request_id=1, tenant="alice", namespace="ns", stream="c", source="cache"),
            "cache.read:ns/c",
        ),
        (
            m.CachePut(
                request_id=1, tenant="alice", namespace="ns", cache="c", key="k", value=b"v"
            ),
            "cache.write:ns/c",
        ),
        (
            m.AdminDelete(request_id=1, kind="stream", tenant="alice", namespace="ns", name="s"),
            "admin:ns/s",
        ),
        (m.AdminList(request_id=1, kind="stream", tenant="alice", namespace="ns"), "admin:ns/*"),
        (m.AdminList(request_id=1, kind="namespace", tenant="alice"), "admin:*/"),
        (
            m.Publish(request_id=1, tenant="alice", namespace="ns", stream="t", payload=b"x"),
            "publish:ns/t",
        ),
    ]
    for message, permission in cases:
        assert ask(router, MALLORY, message) == (
            ErrorCode.FORBIDDEN,
            f"missing permission {permission}",
            {"action": permission.partition(":")[0], "permission": permission},
        )
    assert observer.denied == [p.partition(":")[0] for _, p in cases]


def test_a_connection_not_yet_identified_may_do_nothing() -> None:
    router, _ = make_router()
    publish = m.Publish(request_id=1, tenant="alice", namespace="ns", stream="s", payload=b"x")
    assert ask(router, NOBODY, publish)[0] == ErrorCode.NOT_FOUND
    router.identify(NOBODY, ANONYMOUS)
    assert ask(router, NOBODY, publish) is None


def test_feed_requests_by_id_need_no_resource_check() -> None:
    for message in (
        m.Ack(request_id=1, consumer_id=1, delivery_ids=[1]),
        m.Nack(request_id=1, consumer_id=1, delivery_ids=[1]),
        m.CancelConsume(request_id=1, consumer_id=1),
        m.Unsubscribe(request_id=1, subscription_id=1),
    ):
        assert access_of(message) is None


def test_another_connections_feed_is_as_absent_as_a_missing_one() -> None:
    router, _ = make_router()
    router.identify(NOBODY, principal("bob", "*"))
    consume = m.Consume(request_id=1, tenant="bob", namespace="ns", queue="q", group="g")
    router.submit(NOBODY, 1, consume, 0.0)
    opened = [e for e in router.take(NOBODY, 0.0) if isinstance(e, ce.ConsumerOpened)]
    consumer = opened[0].consumer_id
    theirs = ask(router, MALLORY, m.CancelConsume(request_id=1, consumer_id=consumer))
    missing = ask(router, MALLORY, m.CancelConsume(request_id=1, consumer_id=consumer + 99))
    assert theirs[0] == missing[0] == ErrorCode.NOT_FOUND
    assert theirs[1].replace(str(consumer), "N") == missing[1].replace(str(consumer + 99), "N")


def test_an_invalid_tenant_name_goes_to_the_engine() -> None:
    access = Access(
        action=Action.PUBLISH, kind="stream", tenant="no/t valid", namespace="ns", name="s"
    )
    assert authorize(ALICE, access) is None  # the engine refuses the name itself
