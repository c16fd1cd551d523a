"""Graceful shutdown: deliver what was accepted, then close, within the grace period.

Theory of operation
-------------------
:meth:`FelixServer.begin_shutdown <felix_server.server.FelixServer.begin_shutdown>` stops
the intake (new connections are refused, the engine refuses new work with
``SHUTTING_DOWN``, every client gets ``GoAway`` with the grace period as its deadline) and
starts a :class:`Drain`. Existing subscriptions and consumers go on: the engine keeps
delivering, clients keep granting credit, acking and nacking. Every connection then moves
through two phases, checked every :data:`DRAIN_POLL_S` seconds (and never later than the
grace deadline):

``draining``
    until its feeds have caught up (:meth:`Broker.pending
    <felix_core.broker.Broker.pending>` is 0: every subscription's cursor is at its
    log's end, every consumer's group has nothing waiting and the consumer holds no
    unsettled delivery) *and* the client has acknowledged, at the QUIC level, every byte
    written to it. Then its feeds are ended (``SubscriptionEnded`` / ``ConsumerEnded`` with
    reason ``shutdown``; a subscription's ``next_offset`` is its log's end);
``ending``
    until the client has acknowledged those end frames too; then the connection is closed
    with ``SHUTTING_DOWN``.

So a broker whose clients keep up exits as soon as they have everything, and a connection
with no feeds is closed at once. When the grace period is over, whatever has not caught up
is reported (:meth:`Drain.expire`: one warning line per feed with what it did not get, up
to :data:`MAX_REPORT_LINES`, one summary line, and the observer's
``shutdown_undelivered``), its feeds are ended and every remaining connection is closed.
``shutdown_drain_s`` still bounds the whole shutdown: connections whose close has not
completed by then are abandoned by the server.

The drain is handed the router (the engines behind it), the observer and the sessions; it
acts on sessions and returns the ones it acted on, which the server then transmits. Nothing
here reads a clock or does I/O: time is ``now``, as everywhere in the glue.
"""

from __future__ import annotations

from collections.abc import Iterable

from felix_server.observer import ServerObserver
from felix_server.router import Router
from felix_server.session import Session

__all__ = ["DRAIN_POLL_S", "MAX_REPORT_LINES", "Drain", "unacknowledged_bytes"]

DRAIN_POLL_S = 0.025
"""Seconds between two checks of which connections have caught up while draining."""
MAX_REPORT_LINES = 100
"""Most per-feed lines the end-of-grace report logs (the summary line counts them all)."""


def unacknowledged_bytes(session: Session) -> int:
    """Bytes written to a client that it has not acknowledged at the QUIC level yet: what
    the Felix machine holds, QUIC's send buffers (kept until acknowledged) and the feed
    writes the session holds back (:attr:`Session.buffered_bytes
    <felix_server.session.Session.buffered_bytes>`)."""
    return session.buffered_bytes


class Drain:
    """The graceful shutdown of one server, from ``GoAway`` to the last close. See the
    module docstring.

    Args:
        router: the router to the engines (they already refuse new work).
        observer: told what was not delivered, and logs.
        sessions: every connection at the start of the shutdown.
        close_at: the end of the grace period (absolute time).
        now: the current time.
    """

    def __init__(
        self,
        router: Router,
        observer: ServerObserver,
        sessions: Iterable[Session],
        close_at: float,
        now: float,
    ) -> None:
        self.router = router
        self.observer = observer
        self.started = now
        self.close_at: float | None = close_at
        self.poll_at: float | None = now
        self.draining: dict[int, Session] = {s.conn_id: s for s in sessions}
        self.ending: dict[int, Session] = {}

    def get_timer(self) -> float | None:
        """The next check, or the end of the grace period, whichever comes first."""
        deadlines = [d for d in (self.poll_at, self.close_at) if d is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float, sessions: Iterable[Session]) -> list[Session]:
        """Check the connections (when due), or expire the grace period (when over).

        Args:
            now: the current time.
            sessions: every live connection (the grace's end closes them all).

        Returns:
            The sessions acted on (they have something to send).
        """
        if self.close_at is not None and now >= self.close_at:
            return self.expire(now, sessions)
        if self.poll_at is not None and now >= self.poll_at:
            return self.poll(now)
        return []

    def poll(self, now: float) -> list[Session]:
        """Close the connections that have finished; end the feeds of those caught up."""
        acted: list[Session] = []
        for conn_id, session in list(self.ending.items()):
            if session.finished or unacknowledged_bytes(session) == 0:
                del self.ending[conn_id]
                session.close_for_shutdown(now)
                acted.append(session)
        router = self.router
        for conn_id, session in list(self.draining.items()):
            if session.finished:
                del self.draining[conn_id]
            elif router.pending(conn_id) == 0 and unacknowledged_bytes(session) == 0:
                del self.draining[conn_id]
                router.end_feeds(conn_id, now)
                self.ending[conn_id] = session
                acted.append(session)
        if self.draining or self.ending:
            self.poll_at = now + DRAIN_POLL_S
            return acted
        self.poll_at = self.close_at = None
        self.observer.log(
            "info", "shutdown: every connection drained", seconds=round(now - self.started, 3)
        )
        return acted

    def expire(self, now: float, sessions: Iterable[Session]) -> list[Session]:
        """The grace period is over: report what was not delivered, end every feed that is
        left and close every connection."""
        self.poll_at = self.close_at = None
        self._report(now)
        self.draining.clear()
        self.ending.clear()
        self.router.shutdown(now)
        acted = list(sessions)
        for session in acted:  # each writes its end frames, then closes
            session.close_for_shutdown(now)
        return acted

    def _report(self, now: float) -> None:
        """Log (and tell the observer) what every feed still draining did not get."""
        observer = self.observer
        feeds = records = unacked = lines = 0
        for conn_id in self.draining:
            for feed in self.router.backlog(conn_id):
                if not (feed.undelivered or feed.unacked):
                    continue
                feeds += 1
                records += feed.undelivered
                unacked += feed.unacked
                observer.shutdown_undelivered(feed.kind, feed.undelivered, feed.unacked)
                if lines < MAX_REPORT_LINES:
                    lines += 1
                    tenant, namespace, name = feed.resource
                    observer.log(
                        "warning",
                        "shutdown: undelivered records",
                        conn_id=conn_id,
                        kind=feed.kind,
                        feed_id=feed.feed_id,
                        tenant=tenant,
                        namespace=namespace,
                        name=name,
                        undelivered=feed.undelivered,
                        unacked=feed.unacked,
                    )
        observer.log(
            "warning" if feeds else "info",
            "shutdown: grace period over",
            connections=len(self.draining) + len(self.ending),
            feeds_behind=feeds,
            undelivered=records,
            unacked=unacked,
            lines_omitted=feeds - lines,
            seconds=round(now - self.started, 3),
        )
