"""felix_server.router: requests go to their route, answers come back per connection."""

from __future__ import annotations

from typing import Any

from felix_core import Broker
from felix_core import events as ce
from felix_proto import messages as m
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver
from felix_server.router import Router

T = N = "default"


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def subscription_ended(self, reason: str) -> None:
        self.seen.append(("ended", reason))

    def subscription_dropped(self, reason: str, records: int) -> None:
        self.seen.append((reason, records))

    def dead_lettered(self, reason: str) -> None:
        self.seen.append(("dead", reason))


def _router() -> tuple[Router, _Observer]:
    observer = _Observer()
    router = Router(LocalRoute(Broker(now=0.0)), observer)
    router.attach(1, 0.0)
    router.attach(2, 0.0)
    create = m.AdminCreate(
        request_id=1,
        kind="stream",
        tenant=T,
        namespace=N,
        name="s",
        settings={"batch_max_delay_us": 0},
    )
    router.submit(1, 100, create, 0.0)
    assert [type(e) for e in router.take(1, 0.0)] == [ce.ResourceDescribed]
    return router, observer


def test_each_connection_gets_its_own_answers_in_order() -> None:
    router, _ = _router()
    subscribe = m.Subscribe(request_id=7, tenant=T, namespace=N, stream="s")
    router.submit(2, 1, subscribe, 0.0)
    router.submit(
        1, 2, m.Publish(request_id=8, tenant=T, namespace=N, stream="s", payload=b"x"), 0.0
    )
    assert router.ready(0.0) == [2, 1]  # both have mail; each is named once
    assert router.ready(0.0) == []
    two = router.take(2, 0.0)
    assert [type(e) for e in two] == [ce.SubscriptionOpened, ce.RecordsDelivered]
    assert two[0].request == 1  # the session's number, not the wire's request id
    (acked,) = router.take(1, 0.0)
    assert isinstance(acked, ce.Appended) and (acked.request, acked.first_offset) == (2, 0)
    assert router.take(1, 0.0) == [] and router.take(2, 0.0) == []


def test_events_of_a_gone_connection_are_dropped_but_counted() -> None:
    router, observer = _router()
    router.submit(2, 1, m.Subscribe(request_id=7, tenant=T, namespace=N, stream="s"), 0.0)
    router.take(2, 0.0)
    delete = m.AdminDelete(request_id=9, kind="stream", tenant=T, namespace=N, name="s")
    router.submit(1, 3, delete, 0.0)
    assert router.ready(0.0) == [1, 2]  # the store applied the delete: both have mail
    router.detach(2, 0.0)  # gone before it took the end of its subscription
    assert [type(e) for e in router.take(1, 0.0)] == [ce.RequestCompleted]
    assert router.take(2, 0.0) == [] and router.ready(0.0) == []
    assert observer.seen == [("ended", "deleted")]


def test_feed_commands_for_ended_feeds_are_ignored() -> None:
    router, _ = _router()
    router.credit(1, 404, 10, 10, 0.0)
    router.stop_subscription(1, 404, 0.0)
    router.stop_consumer(1, 404, 0.0)
    assert router.take(1, 0.0) == []


def test_a_committed_publish_completes_when_its_log_commits_at_once_in_memory() -> None:
    router, _ = _router()
    publish = m.Publish(
        request_id=8, tenant=T, namespace=N, stream="s", payload=b"x", ack=m.AckMode.COMMITTED
    )
    router.submit(1, 5, publish, 0.0)
    (acked,) = router.take(1, 0.0)
    assert isinstance(acked, ce.Appended) and acked.request == 5
