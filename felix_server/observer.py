"""The observer hook: what the shared glue reports for metrics and logs.

The glue calls these methods as things happen; :class:`ServerObserver` does nothing, so the
glue runs (and is tested) without any metrics library. A runtime subclasses it to count in
Prometheus and to log (``felix_runtime.prometheus.PrometheusObserver``), in the manner
of h2's ``DummyLogger``.

The glue has no clock, so request latency is measured by the observer itself:
:meth:`ServerObserver.request_started` returns an opaque token (a start time, in a
runtime) that is handed back to :meth:`ServerObserver.request_finished`.

Arguments are counts, codes and fixed vocabulary words (request kinds, end reasons); never
message data, names of tenants or streams, or client-supplied strings, so they are safe as
metric labels. The exceptions are the *audit hooks* (``handshake_accepted``,
``handshake_refused``, ``token_refreshed``, ``access_denied``, ``admin_operation``): they
name who did what to which resource, for the audit trail (``felix_runtime.audit``), and
must never become metric labels. The glue calls them only off the data path (handshakes,
token refreshes, denials, admin requests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from felix_core.access import Principal

__all__ = ["ServerObserver"]


class ServerObserver:
    """Receives what the server glue observes. Every method is a no-op here."""

    traces = False
    """Whether the trace hooks (:meth:`appended`, :meth:`dispatched`, :meth:`settled`) want
    to be called (an observer that traces sets it)."""

    def connection_opened(self) -> None:
        """A QUIC connection was accepted (before the Felix handshake)."""

    def connection_closed(self, error_code: int) -> None:
        """A connection is over (``error_code`` 0: clean)."""

    def connection_refused(self, reason: str) -> None:
        """A new connection was refused (``max_connections`` or ``shutting_down``); one call
        per refused Initial packet, answered or dropped."""

    def handshake_completed(self, version: int) -> None:
        """A client's ``Hello`` was accepted with protocol ``version``."""

    def handshake_failed(self, error_code: int) -> None:
        """A client's handshake was refused (TLS/ALPN or Felix ``Hello``)."""

    def request_started(self, kind: str) -> object:
        """A request of ``kind`` (``publish``, ``cache_get`` ...) is about to be handled.

        Returns:
            A token handed back to :meth:`request_finished` (a start time, in a runtime).
        """
        return None

    def request_finished(self, token: object, kind: str, error_code: int) -> None:
        """The request finished: ``error_code`` 0 for success, else the wire code."""

    def published(self, records: int, nbytes: int) -> None:
        """A publish appended ``records`` records of ``nbytes`` payload bytes."""

    def enqueued(self, records: int, nbytes: int) -> None:
        """An enqueue appended ``records`` messages of ``nbytes`` payload bytes."""

    def appended(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
    ) -> None:
        """A publish (``source`` ``stream``) or enqueue (``queue``) to ``name`` was accepted;
        ``headers`` holds each record's headers. Called only when :attr:`traces` is set: it
        is for traces (W3C trace context in the headers), and unlike the other arguments
        here it names resources and carries client data, so it is never a metric label."""

    def dispatched(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
        first_offset: int,
    ) -> None:
        """A batch of records from ``name`` (``source`` ``stream``: an event batch to a
        subscription; ``queue``: deliveries to a consumer, in one frame) was written;
        ``headers`` holds each record's headers, the first at ``first_offset``. A trace
        hook, called only when :attr:`traces` is set (never a metric label)."""

    def settled(
        self, operation: str, tenant: str, namespace: str, queue: str, deliveries: int
    ) -> None:
        """An ``ack`` or ``nack`` (``operation``) of ``deliveries`` deliveries of ``queue``
        was accepted. A trace hook, called only when :attr:`traces` is set."""

    def delivered(self, source: str, records: int, nbytes: int) -> None:
        """Records were written to a feed; ``source`` is ``stream`` or ``queue``."""

    def event_batch_encoded(self, subscribers: int, nbytes: int) -> None:
        """One event batch was encoded once and written to ``subscribers`` streams."""

    def subscription_dropped(self, reason: str, records: int) -> None:
        """A subscriber lost ``records`` records (``reason``: ``gap`` or ``lagged``)."""

    def subscription_ended(self, reason: str) -> None:
        """A subscription ended for ``reason`` (an ``EndReason`` value)."""

    def shutdown_undelivered(self, source: str, records: int, unacked: int) -> None:
        """The shutdown grace ended before a feed caught up: ``records`` never delivered and
        ``unacked`` deliveries not settled (``source``: ``stream``, ``cache`` or ``queue``)."""

    def dead_lettered(self, reason: str) -> None:
        """A queue message was dead-lettered (``max_attempts`` or ``rejected``)."""

    def auth_denied(self, action: str) -> None:
        """Authorization refused a request needing ``action`` (``publish``, ``admin`` ...):
        a missing permission, or another tenant's resource."""

    def handshake_accepted(self, conn_id: int, principal: Principal) -> None:
        """Audit: connection ``conn_id`` was accepted as ``principal``."""

    def handshake_refused(self, conn_id: int, error_code: int, reason: str) -> None:
        """Audit: connection ``conn_id``'s handshake was refused with ``error_code`` for
        ``reason`` (a refusal reason such as ``expired``, or the error message)."""

    def token_refreshed(
        self, conn_id: int, principal: Principal | None, error_code: int, reason: str
    ) -> None:
        """Audit: a ``Reauthenticate`` on ``conn_id`` was answered ``error_code`` (0:
        accepted; ``principal`` is then the new one, else the one that stays)."""

    def token_exchanged(
        self,
        conn_id: int,
        issuer: str | None,
        subject: str | None,
        principal: Principal | None,
        error_code: int,
        reason: str,
    ) -> None:
        """Audit: a ``TokenExchange`` on ``conn_id`` presenting an identity token of
        ``issuer`` for ``subject`` (as the token claims them; None when it does not say) was
        answered ``error_code`` (0: accepted; ``principal`` is then the new one, else the
        one that stays, None before a login)."""

    def access_denied(
        self, conn_id: int, principal: Principal | None, action: str, resource: str, code: int
    ) -> None:
        """Audit: a request needing ``action`` on ``resource`` (``TENANT/NS/NAME``) was
        refused with ``code`` (``FORBIDDEN``, or ``NOT_FOUND`` for another tenant's)."""

    def admin_operation(
        self,
        conn_id: int,
        principal: Principal | None,
        operation: str,
        resource: str,
        code: int,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Audit: an admin request (``operation``: ``create``, ``update``, ``delete`` ...)
        on ``resource`` (``KIND TENANT/NS/NAME``) finished with ``code`` (0: done);
        ``settings``: what a create or update of a role or binding asked for (what it
        grants, and to whom)."""

    def protocol_violation(self, error_code: int, fatal: bool) -> None:
        """A client broke the protocol; the glue answered with ``error_code``."""

    def backpressure(self, paused: bool) -> None:
        """Deliveries to a connection were paused (True) or resumed (False)."""

    def held_overflow(self, held_bytes: int) -> None:
        """A connection's requests held over its buffer cap (``held_bytes``) went over
        ``transport.max_data``; it was closed with ``OVERLOADED``."""

    def internal_error(self, where: str, exc: BaseException) -> None:
        """A bug: an unexpected exception was turned into ``INTERNAL`` at ``where``."""

    def log(self, level: str, message: str, **fields: object) -> None:
        """A log line from the glue (``level``: ``debug``, ``info``, ``warning``, ``error``)."""
