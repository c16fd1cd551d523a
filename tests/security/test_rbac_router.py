"""Roles and bindings applied by the router to live connections, pure (a router over a real
engine, no network): a change applies from the next request, and open feeds the principal
may no longer follow end with reason ``forbidden``."""

from __future__ import annotations

from typing import Any

from felix_core import events as ce
from felix_core.access import Permission, Principal
from felix_core.broker import Broker
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver
from felix_server.router import MAX_DECISIONS, UNIDENTIFIED, Router

OPERATOR, ALICE, BOB = 1, 2, 3  # connection ids
_numbers = iter(range(1000, 10**6))


class Denials(ServerObserver):
    def __init__(self) -> None:
        self.denied: list[tuple[int, str, str, int]] = []

    def access_denied(
        self, conn_id: int, principal: Principal | None, action: str, resource: str, code: int
    ) -> None:
        self.denied.append((conn_id, action, resource, code))


def person(subject: str, *grants: str, groups: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject=subject,
        tenant="acme",
        groups=groups,
        permissions=frozenset(Permission.parse(g) for g in grants),
        issuer="felix",
    )


def ask(router: Router, conn: int, message: m.Message) -> tuple[Any, list[ce.EngineEvent]]:
    """The error a request got ((code, message) or None) and the other events taken."""
    router.submit(conn, next(_numbers), message, 0.0)
    events = router.take(conn, 0.0)
    answers = [e for e in events if isinstance(e, ce.RequestRefused | ce.RequestCompleted)]
    assert len(answers) == 1, answers
    others = [e for e in events if e is not answers[0]]
    if isinstance(answers[0], ce.RequestRefused):
        return (answers[0].error.code, answers[0].error.message), others
    return None, others


def admin(router: Router, op: type[m.Message], kind: str, name: str, **settings: Any) -> None:
    fields: dict[str, Any] = {"kind": kind, "tenant": "acme", "name": name}
    if op in (m.AdminCreate, m.AdminUpdate):
        fields["settings"] = settings
    error, _ = ask(router, OPERATOR, op(request_id=next(_numbers), **fields))
    assert error is None, error


def publish(router: Router, conn: int) -> Any:
    msg = m.Publish(request_id=0, tenant="acme", namespace="default", stream="orders", payload=b"x")
    return ask(router, conn, msg)[0]


def make_router() -> tuple[Router, Denials]:
    observer = Denials()
    router = Router(LocalRoute(Broker(now=0.0)), observer)
    router.attach(OPERATOR, 0.0)
    for conn, who in ((ALICE, person("alice", groups=("team",))), (BOB, person("bob"))):
        router.attach(conn, 0.0, UNIDENTIFIED)
        router.identify(conn, who)
    for kind, ns, name in [
        ("tenant", "", ""),
        ("namespace", "default", ""),
        ("stream", "default", "orders"),
        ("queue", "default", "jobs"),
    ]:
        create = m.AdminCreate(request_id=0, kind=kind, tenant="acme", namespace=ns, name=name)
        assert ask(router, OPERATOR, create)[0] is None
    return router, observer


FORBIDDEN = (ErrorCode.FORBIDDEN, "missing permission publish:default/orders")


def test_a_binding_applies_from_the_next_request_of_a_live_connection() -> None:
    router, _ = make_router()
    assert publish(router, ALICE) == FORBIDDEN
    admin(router, m.AdminCreate, "role", "writer", permissions=["publish:default/*"])
    assert publish(router, ALICE) == FORBIDDEN  # a role alone binds nobody
    admin(router, m.AdminCreate, "binding", "team-writes", role="writer", groups=["team"])
    assert publish(router, ALICE) is None  # alice is in the group
    assert publish(router, BOB) == FORBIDDEN  # bob is not
    admin(router, m.AdminUpdate, "binding", "team-writes", subjects=["bob"], groups=[])
    assert publish(router, ALICE) == FORBIDDEN
    assert publish(router, BOB) is None
    admin(router, m.AdminUpdate, "role", "writer", permissions=["publish:default/audit"])
    assert publish(router, BOB) == FORBIDDEN
    admin(router, m.AdminUpdate, "role", "writer", permissions=["publish:default/*"])
    admin(router, m.AdminDelete, "role", "writer")
    assert publish(router, BOB) == FORBIDDEN


def test_roles_of_another_tenant_change_nothing() -> None:
    router, _ = make_router()
    for kind in ("tenant", "namespace"):
        create = m.AdminCreate(
            request_id=0, kind=kind, tenant="other", namespace="default" if kind != "tenant" else ""
        )
        assert ask(router, OPERATOR, create)[0] is None
    for kind, settings in (("role", {"permissions": ["*"]}), ("binding", {"role": "r"})):
        if kind == "binding":
            settings["subjects"] = ["alice"]
        create = m.AdminCreate(request_id=0, kind=kind, tenant="other", name="r", settings=settings)
        assert ask(router, OPERATOR, create)[0] is None
    assert publish(router, ALICE) == FORBIDDEN


def open_feeds(router: Router) -> None:
    """Alice subscribes to ``orders`` and consumes ``jobs`` through the role ``reader``."""
    admin(router, m.AdminCreate, "role", "reader", permissions="subscribe:default/* consume")
    admin(router, m.AdminCreate, "binding", "alice-reads", role="reader", subjects=["alice"])
    sub = m.Subscribe(request_id=0, tenant="acme", namespace="default", stream="orders")
    assert ask(router, ALICE, sub)[0] is None
    consume = m.Consume(request_id=0, tenant="acme", namespace="default", queue="jobs")
    assert ask(router, ALICE, consume)[0] is None


def ended(events: list[ce.EngineEvent]) -> list[tuple[str, str, str]]:
    out = []
    for event in events:
        if isinstance(event, ce.SubscriptionClosed):
            out.append(("subscription", event.reason, event.message))
        elif isinstance(event, ce.ConsumerClosed):
            out.append(("consumer", event.reason, event.message))
    return out


def test_feeds_no_longer_allowed_end_with_reason_forbidden() -> None:
    router, observer = make_router()
    open_feeds(router)
    # narrowed to the stream: the consumer ends, the subscription goes on
    admin(router, m.AdminUpdate, "role", "reader", permissions=["subscribe:default/orders"])
    assert ended(router.take(ALICE, 0.0)) == [
        ("consumer", "forbidden", "missing permission consume:default/jobs")
    ]
    assert observer.denied == [(ALICE, "consume", "queue acme/default/jobs", ErrorCode.FORBIDDEN)]
    # the binding goes: the subscription ends too
    admin(router, m.AdminDelete, "binding", "alice-reads")
    assert ended(router.take(ALICE, 0.0)) == [
        ("subscription", "forbidden", "missing permission subscribe:default/orders")
    ]
    assert router.engine.backlog(ALICE) == []
    assert router.take(BOB, 0.0) == []


def test_a_change_that_leaves_the_feeds_allowed_ends_none() -> None:
    router, _ = make_router()
    open_feeds(router)
    admin(router, m.AdminCreate, "role", "extra", permissions=["publish"])
    admin(router, m.AdminCreate, "binding", "alice-extra", role="extra", subjects=["alice"])
    admin(router, m.AdminUpdate, "role", "reader", description="unchanged grants")
    assert ended(router.take(ALICE, 0.0)) == []
    assert len(router.engine.backlog(ALICE)) == 2


def test_a_refreshed_token_with_fewer_permissions_ends_the_feeds_it_no_longer_covers() -> None:
    router, _ = make_router()
    router.identify(ALICE, person("alice", "subscribe:default/*", "consume:default/*"))
    sub = m.Subscribe(request_id=0, tenant="acme", namespace="default", stream="orders")
    assert ask(router, ALICE, sub)[0] is None
    consume = m.Consume(request_id=0, tenant="acme", namespace="default", queue="jobs")
    assert ask(router, ALICE, consume)[0] is None
    router.identify(ALICE, person("alice", "consume:default/*"), 1.0)
    assert ended(router.take(ALICE, 1.0)) == [
        ("subscription", "forbidden", "missing permission subscribe:default/orders")
    ]
    assert [f.kind for f in router.engine.backlog(ALICE)] == ["queue"]


def test_decisions_are_kept_per_resource_bounded_and_every_denial_still_counts() -> None:
    router, observer = make_router()
    for _ in range(3):
        assert publish(router, ALICE) == FORBIDDEN
    assert len(observer.denied) == 3  # a decision kept is still a denial, each time
    for i in range(MAX_DECISIONS + 10):
        msg = m.Publish(
            request_id=0, tenant="acme", namespace="default", stream=f"s{i}", payload=b""
        )
        assert ask(router, ALICE, msg)[0][0] == ErrorCode.FORBIDDEN
    assert len(router._decisions[ALICE]) <= MAX_DECISIONS
