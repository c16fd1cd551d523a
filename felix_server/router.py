"""Where each request is served, and which connection each answer goes to.

Theory of operation
-------------------
A :class:`Router` sits between the sessions and the engines that serve them. A session
hands it every request with its identity (the session's connection id and its own number
for the request) and every feed command (credit, a stopped feed stream); the router passes
each to the :class:`Route` that serves the resource the request names. Routes answer through
events (:mod:`felix_core.events`): request completions and feed events, each naming its
connection. The router sorts them into one mailbox per connection, in order, before the
input that produced them returns, and a session takes its mailbox (:meth:`Router.take`)
after each request it submitted (so an answer that is ready at once is written before the
next request is read) and whenever it transmits.
:meth:`Router.ready` tells the server which connections have mail it has not taken, so the
server transmits exactly those: nobody is called back.

Routes. Today every resource is served by :class:`LocalRoute`, the engine of this broker
(:class:`~felix_core.broker.Broker`). A request for a resource owned by another broker (a
shard map decides) will take a peer route: a ``felix_proto`` ``ClientConnection`` over an
outbound QUIC connection to the owner, which sends the request on, maps the peer's reply
events back to completion events for the original connection and request, and relays the
feeds it opens. That is a new :class:`Route`, chosen in :meth:`Router.route_for`; the
sessions, the mailboxes and the replies do not change.

Authorization. Every request passes one check here, before any route sees it: the router
knows each connection's :class:`~felix_core.access.Principal` (:meth:`Router.identify`,
called when the handshake is accepted) and asks the pure core
(:func:`felix_core.access.authorize`) about what the request does (:func:`access_of`). A
refused request is answered from here (``NOT_FOUND`` for another tenant's resource, exactly
as for an absent one; ``FORBIDDEN`` naming a missing permission) and counted
(``ServerObserver.auth_denied``). Requests that name a feed by id (``Unsubscribe``,
``CancelConsume``, ``Ack``, ``Nack``) and ``Credit`` act on a subscription or consumer of
the same connection, which was opened through this check with the same principal; ids are
per connection, so another connection's feed is as absent as one that never existed. A
connection's rights end when its principal expires (the session closes it then).

Roles and bindings. The principal a request is checked against is the connection's
credential resolved by the engine's :class:`~felix_core.rbac.RoleBook` (its own permissions
plus those of its roles): resolved when the connection is identified, and again for every
connection of a tenant when the engine says that tenant's roles or bindings changed
(:class:`~felix_core.events.AccessChanged`), so a change applies from the next request of
every live connection, and checking a request costs what it did without roles. Data requests
(publish, enqueue, consume, cache) are decided once per connection, kind of request and
resource, until the connection's principal changes (:data:`MAX_DECISIONS` at most): a
stream of publishes pays one dict lookup for its check. Whenever a
connection's principal is resolved again (a role change, a refreshed token), its open
subscriptions and consumers are checked too: one that is no longer allowed ends with reason
``forbidden``.

Metrics. Dropped and ended subscriptions and dead letters are reported to the observer as
they pass through, whether or not their connection is still there.
"""

from __future__ import annotations

from typing import Protocol

from felix_core import events as ce
from felix_core.access import ANONYMOUS, Access, Action, Principal, authorize
from felix_core.broker import FeedBacklog
from felix_core.errors import EngineError
from felix_proto import messages as m
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver

__all__ = ["MAX_DECISIONS", "UNIDENTIFIED", "Decision", "Route", "Router", "access_of"]

UNIDENTIFIED = Principal(subject="unidentified", tenant="", issuer="none")
"""The principal of a connection whose handshake is not accepted yet: allowed nothing."""
Decision = tuple[EngineError | None, Access | None]
"""The one check's answer to a request: the refusal (None: allowed) and what it does."""
MAX_DECISIONS = 1024
"""Most data-request decisions a connection keeps (all are dropped when it is full, and
whenever its principal changes)."""


_COUNTED = frozenset({ce.RecordsSkipped, ce.SubscriptionClosed, ce.MessageDeadLettered})
"""Events the observer counts as they pass (whether or not their connection is still
there)."""


class Route(Protocol):
    """A server of requests: inputs are requests, feed commands and the timer; outputs are
    :mod:`felix_core.events` records, each naming its connection."""

    def submit(self, conn_id: int, request: int, message: m.Message, now: float) -> None:
        """Serve a request; it completes through :meth:`take_events`, at once or later."""
        ...

    def credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, now: float
    ) -> None:
        """More credit for a subscription (ignored if it ended meanwhile)."""
        ...

    def stop_subscription(self, conn_id: int, subscription_id: int, now: float) -> None:
        """The client stopped a subscription's stream: end it (ignored if it ended)."""
        ...

    def stop_consumer(self, conn_id: int, consumer_id: int, now: float) -> None:
        """The client stopped a consumer's stream: end it (ignored if it ended)."""
        ...

    def take_events(self, now: float) -> list[ce.EngineEvent]:
        """Every event for a connection (or for metrics) produced since the last call, in
        order per connection."""
        ...


class Router:
    """Routes requests and feed commands, and sorts the answers by connection. See the
    module docstring.

    Args:
        local: the route to this broker's engine.
        observer: told of dropped and ended subscriptions and of dead letters.
    """

    def __init__(self, local: LocalRoute, observer: ServerObserver) -> None:
        self.local = local
        self.engine = local.engine
        self._observer = observer
        self._mail: dict[int, list[ce.EngineEvent]] = {}
        self._ready: dict[int, None] = {}
        self._principals: dict[int, Principal] = {}  # resolved: what requests are checked by
        self._credentials: dict[int, Principal] = {}  # as authenticated
        self._decisions: dict[int, dict[tuple[object, ...], Decision]] = {}  # see _decide
        self._counted: dict[int, str] = {}  # conn -> tenant counted in the connection quota
        self.submitted = 0
        """Requests submitted since the server last transmitted (the server resets it):
        how much request work the current pass has done (``FelixServer.transmit_due``)."""

    # ------------------------------------------------------------------ connections

    def attach(self, conn_id: int, now: float, principal: Principal = ANONYMOUS) -> None:
        """A connection starts: give it a mailbox (and the engine its books).

        Args:
            conn_id: the connection.
            now: the current time.
            principal: who it speaks for until :meth:`identify` says otherwise (a session
                passes :data:`UNIDENTIFIED`; the default serves engine tests).
        """
        self.engine.attach(conn_id, now)
        self._mail[conn_id] = []
        self._credentials[conn_id] = principal
        self._principals[conn_id] = self.engine.admin.rbac.resolve(principal)
        self._decisions[conn_id] = {}
        self.collect(now)

    def admit(self, conn_id: int, principal: Principal) -> EngineError | None:
        """Count a connection about to be accepted for ``principal`` in its tenant's
        connection quota (once; an operator is not counted).

        Returns:
            None when admitted, else the refusal (LIMIT_EXCEEDED) to reject the handshake with.
        """
        if principal.operator or not principal.tenant or conn_id in self._counted:
            return None
        try:
            self.engine.quotas.connection_opened(principal.tenant)
        except EngineError as exc:
            return exc
        self._counted[conn_id] = principal.tenant
        return None

    def identify(self, conn_id: int, principal: Principal, now: float | None = None) -> None:
        """The connection's handshake was accepted, or its token refreshed: it speaks for
        ``principal`` (resolved with its roles) from its next request on.

        Args:
            conn_id: the connection.
            principal: who it speaks for, as authenticated.
            now: the current time, for a connection that may have feeds open (a refreshed
                token): those the new principal may not follow end (``forbidden``).
        """
        if conn_id not in self._mail:
            return
        self._credentials[conn_id] = principal
        self._principals[conn_id] = self.engine.admin.rbac.resolve(principal)
        self._decisions[conn_id] = {}
        if now is not None:
            self._end_denied_feeds(conn_id, now)
            self.collect(now)

    def _access_changed(self, tenants: set[str], now: float) -> None:
        """Roles or bindings of ``tenants`` changed: resolve their connections again and end
        the feeds they may no longer follow."""
        book = self.engine.admin.rbac
        for conn_id, credential in self._credentials.items():
            if credential.operator or credential.tenant not in tenants:
                continue
            resolved = book.resolve(credential)
            if resolved != self._principals.get(conn_id):
                self._principals[conn_id] = resolved
                self._decisions[conn_id] = {}
                self._end_denied_feeds(conn_id, now)

    def _end_denied_feeds(self, conn_id: int, now: float) -> None:
        """End the connection's feeds its principal may no longer follow (each denial is
        counted and audited like a refused request)."""
        principal = self._principals.get(conn_id, UNIDENTIFIED)

        def denied(kind: str, path: tuple[str, str, str]) -> str | None:
            access = Access(
                action=_FEED_ACTIONS[kind],
                kind=kind,
                tenant=path[0],
                namespace=path[1],
                name=path[2],
            )
            error = authorize(principal, access)
            if error is None:
                return None
            self._observer.auth_denied(str(access.action))
            self._observer.access_denied(
                conn_id, principal, str(access.action), _resource(access), int(error.code)
            )
            return error.message

        self.engine.end_denied_feeds(conn_id, denied, now)

    def detach(self, conn_id: int, now: float) -> None:
        """A connection is gone: release what it held everywhere and drop its mail."""
        self.engine.detach(conn_id, now)
        self._mail.pop(conn_id, None)
        self._ready.pop(conn_id, None)
        self._principals.pop(conn_id, None)
        self._credentials.pop(conn_id, None)
        self._decisions.pop(conn_id, None)
        tenant = self._counted.pop(conn_id, None)
        if tenant is not None:
            self.engine.quotas.connection_closed(tenant)
        self.collect(now)  # what it held may go to others (redeliveries)

    def pause(self, conn_id: int) -> None:
        """Stop the deliveries to a connection (back-pressure)."""
        self.engine.pause(conn_id)

    def resume(self, conn_id: int, now: float) -> None:
        """Resume the deliveries to a connection."""
        self.engine.resume(conn_id, now)
        self.collect(now)

    # --------------------------------------------------------------------- requests

    def route_for(self, message: m.Message) -> Route:
        """The route that serves a request: the local engine for every resource today (a
        shard map would send a request for a resource another broker owns to that broker's
        peer route)."""
        return self.local

    def submit(self, conn_id: int, request: int, message: m.Message, now: float) -> None:
        """Serve a request. Its completion arrives in the connection's mailbox.

        Args:
            conn_id: the requesting connection.
            request: the session's number for the request.
            message: the request.
            now: the current time.
        """
        self.submitted += 1
        denied, access = self._decide(conn_id, message)
        if denied is not None and access is not None:
            principal = self._principals.get(conn_id, UNIDENTIFIED)
            self._observer.auth_denied(str(access.action))
            self._observer.access_denied(
                conn_id, principal, str(access.action), _resource(access), int(denied.code)
            )
            box = self._mail.get(conn_id)
            if box is not None:
                box.append(ce.RequestRefused(connection_id=conn_id, request=request, error=denied))
                self._ready[conn_id] = None
            return
        self.route_for(message).submit(conn_id, request, message, now)
        self.collect(now)

    def _decide(self, conn_id: int, message: m.Message) -> Decision:
        """The one check of a request: (the refusal or None, what it does or None).

        Data requests (publish, enqueue, consume, cache) are decided once per connection,
        resource and kind of request until the connection's principal changes, so a stream
        of publishes pays a dict lookup instead of a walk over the principal's permissions.
        """
        cls = type(message)
        found = _DATA.get(cls)
        decisions = self._decisions.get(conn_id)
        if found is None or decisions is None:
            access = access_of(message)
            if access is None:
                return None, None
            return authorize(self._principals.get(conn_id, UNIDENTIFIED), access), access
        key = (
            cls,
            getattr(message, "tenant"),  # noqa: B009 - every _DATA type has it
            getattr(message, "namespace"),  # noqa: B009
            getattr(message, found[2]),
        )
        decided = decisions.get(key)
        if decided is None:
            access = access_of(message)
            assert access is not None  # every _DATA type has one
            decided = (authorize(self._principals.get(conn_id, UNIDENTIFIED), access), access)
            if len(decisions) >= MAX_DECISIONS:
                decisions.clear()
            decisions[key] = decided
        return decided

    def credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, now: float
    ) -> None:
        """More credit for a subscription, for the route that serves it."""
        self.local.credit(conn_id, subscription_id, messages, nbytes, now)
        self.collect(now)

    def stop_subscription(self, conn_id: int, subscription_id: int, now: float) -> None:
        """The client stopped a subscription's stream."""
        self.local.stop_subscription(conn_id, subscription_id, now)
        self.collect(now)

    def stop_consumer(self, conn_id: int, consumer_id: int, now: float) -> None:
        """The client stopped a consumer's stream."""
        self.local.stop_consumer(conn_id, consumer_id, now)
        self.collect(now)

    # --------------------------------------------------------------------- shutdown

    def stop_accepting(self) -> None:
        """Refuse new work (the server is shutting down); feeds go on."""
        self.engine.stop_accepting()

    def pending(self, conn_id: int) -> int:
        """Records and unacknowledged deliveries a connection's feeds have not caught up
        with (0: caught up)."""
        return self.engine.pending(conn_id)

    def backlog(self, conn_id: int) -> list[FeedBacklog]:
        """What each of a connection's feeds has not delivered or had acknowledged."""
        return self.engine.backlog(conn_id)

    def end_feeds(self, conn_id: int, now: float) -> None:
        """End a connection's subscriptions and consumers (reason ``shutdown``)."""
        self.engine.end_feeds(conn_id, now)
        self.collect(now)

    def shutdown(self, now: float) -> None:
        """End every feed of every connection (reason ``shutdown``)."""
        self.engine.shutdown(now)
        self.collect(now)

    # ---------------------------------------------------------------------- answers

    def take(self, conn_id: int, now: float) -> list[ce.EngineEvent]:
        """Everything for one connection since it last took its mail, in order (the events
        an input through the router produced are sorted before that input returns)."""
        mail = self._mail.get(conn_id)
        if not mail:
            return []
        self._mail[conn_id] = []
        self._ready.pop(conn_id, None)
        return mail

    def ready(self, now: float) -> list[int]:
        """The connections with mail they have not taken (each named once until then).
        Events the engine produced for inputs that did not pass through the router (the
        drain's) are sorted here first."""
        self.collect(now)
        if not self._ready:
            return []
        ready = list(self._ready)
        self._ready.clear()
        return ready

    def collect(self, now: float) -> None:
        """Sort the events the routes produced since the last call into the mailboxes: done
        after every input through the router, and by :meth:`ready`; a caller that gave an
        engine an input directly (the drain, a test) may call it before :meth:`take`."""
        events = self.local.take_events(now)
        if not events:
            return
        mail, ready = self._mail, self._ready
        changed: set[str] = set()
        for event in events:
            if type(event) in _COUNTED:
                self._count(event)
            if isinstance(event, ce.ConnectionEvent):
                box = mail.get(event.connection_id)
                if box is not None:
                    box.append(event)
                    ready[event.connection_id] = None
            elif type(event) is ce.AccessChanged:
                changed.add(event.tenant)
        if changed:
            self._access_changed(changed, now)
            self.collect(now)  # the feeds that ended

    def _count(self, event: ce.EngineEvent) -> None:
        observer = self._observer
        if isinstance(event, ce.RecordsSkipped):
            observer.subscription_dropped("gap", event.missed)
        elif isinstance(event, ce.SubscriptionClosed):
            observer.subscription_ended(event.reason)
        elif isinstance(event, ce.MessageDeadLettered):
            observer.dead_lettered(event.reason)

    # ------------------------------------------------------------------------ timer

    def get_timer(self) -> float | None:
        """The earliest deadline of any route."""
        return self.engine.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire what is due in every route."""
        deadline = self.engine.get_timer()
        if deadline is not None and deadline <= now:
            self.engine.handle_timer(now)
            self.collect(now)


# ---------------------------------------------------------------------- authorization

_DATA: dict[type[m.Message], tuple[Action, str, str]] = {
    m.Publish: (Action.PUBLISH, "stream", "stream"),
    m.PublishBatch: (Action.PUBLISH, "stream", "stream"),
    m.Enqueue: (Action.ENQUEUE, "queue", "queue"),
    m.Consume: (Action.CONSUME, "queue", "queue"),
    m.CachePut: (Action.CACHE_WRITE, "cache", "cache"),
    m.CacheDelete: (Action.CACHE_WRITE, "cache", "cache"),
    m.CacheGet: (Action.CACHE_READ, "cache", "cache"),
}
"""Data requests: the action, the kind of resource and the field that names it."""

_ADMIN = (m.AdminCreate, m.AdminDescribe, m.AdminUpdate, m.AdminDelete)

_FEED_ACTIONS = {"stream": Action.SUBSCRIBE, "cache": Action.CACHE_READ, "queue": Action.CONSUME}
"""What an open feed of each kind needs, checked again when its principal changes."""


def _resource(access: Access) -> str:
    """``KIND TENANT/NAMESPACE/NAME``, for the audit trail."""
    return f"{access.kind} {access.tenant}/{access.namespace}/{access.name}"


def access_of(message: m.Message) -> Access | None:
    """What a request does, for :func:`~felix_core.access.authorize`; None for requests
    that name a feed of the connection by id (see the module docstring).

    ``Subscribe`` needs ``subscribe`` on the stream, or ``cache.read`` on the cache when
    it follows a cache's change feed. Admin requests need ``admin`` on the resource
    (``NAMESPACE/`` for a namespace, ``/`` for a tenant); a listing needs it on every name
    it could show (``NAMESPACE/*``, or ``*/`` for the namespaces of a tenant).
    """
    kind = type(message)
    found = _DATA.get(kind)
    if found is not None:
        action, resource, field = found
        return Access(
            action=action,
            kind=resource,
            tenant=getattr(message, "tenant"),  # noqa: B009 - every _DATA type has it
            namespace=getattr(message, "namespace"),  # noqa: B009
            name=getattr(message, field),
        )
    if isinstance(message, m.Subscribe):
        cache = message.source == m.SourceKind.CACHE.value
        return Access(
            action=Action.CACHE_READ if cache else Action.SUBSCRIBE,
            kind="cache" if cache else "stream",
            tenant=message.tenant,
            namespace=message.namespace,
            name=message.stream,
        )
    if isinstance(message, _ADMIN):
        return Access(
            action=Action.ADMIN,
            kind=message.kind,
            tenant=message.tenant,
            namespace=message.namespace,
            name=message.name,
            parent=isinstance(message, m.AdminCreate),
        )
    if isinstance(message, m.AdminList):
        leaf = message.kind not in ("tenant", "namespace")
        return Access(
            action=Action.ADMIN,
            kind=message.kind,
            tenant=message.tenant if message.kind != "tenant" else "",
            namespace=message.namespace if leaf else "*",
            name="*" if leaf else "",
            parent=True,
        )
    return None
