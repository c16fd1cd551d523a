"""One QUIC connection of the broker: aioquic events -> ServerConnection -> Router and back.

Theory of operation
-------------------
A :class:`Session` layers a :class:`felix_proto.server.ServerConnection` on a sans-IO
``QuicConnection`` (aioquic's or qh3's: it asks :mod:`felix_server.quic_engine`, never the
engine) the way HTTP/3 layers on QUIC, and serves
it through a :class:`~felix_server.router.Router` as connection ``conn_id``. It is handed
what it needs (the router, the observer, its :class:`SessionLimits`, an authenticate
function and the server's :class:`~felix_server.batches.EncodedBatches`) and calls nothing
above it: :class:`~felix_server.server.FelixServer` drives it with inputs and polls it for
outputs. Nothing here does I/O or reads a clock.

Inputs: :meth:`Session.datagram_received`, :meth:`Session.handle_timer`, and the server's
shutdown calls (:meth:`Session.go_away`, :meth:`Session.close_for_shutdown`,
:meth:`Session.abandon`). Outputs: :meth:`Session.transmit` (QUIC's datagrams),
:meth:`Session.get_timer`, the connection IDs to route (:meth:`Session.take_issued_cids`,
:meth:`Session.take_retired_cids`) and :attr:`Session.finished`.

QUIC -> Felix. ``StreamDataReceived`` becomes ``stream_data_received``; ``StreamReset`` and
``StopSendingReceived`` become ``stream_reset`` (for a stop on one of our feed streams we
also reset our side so its buffered bytes are released); ``HandshakeCompleted`` checks the
ALPN (``felix/2``, or none at all: the in-band version then decides);
``ConnectionTerminated`` becomes ``connection_lost`` and detaches the connection.

Felix -> router. ``HandshakeRequested`` goes to the authenticate function with ``now``: a
:class:`~felix_core.access.Principal` accepts it (``Welcome`` with the engine's limits; the
router learns who the connection speaks for, and authorizes each request against it), a
:class:`~felix_server.access.Refusal` rejects it (``Error`` with its code, message and
details, then close). A principal that expires (``expires_at``) ends the connection's rights
at that instant: the session's timer fires then and the connection is closed with
``Error(UNAUTHENTICATED)``, ``details.reason`` ``expired``. Each ``RequestReceived`` gets the next
request number and is submitted to the router; it completes through the connection's
mailbox with a :class:`~felix_core.events.RequestCompleted` (the reply,
:func:`~felix_server.requests.reply_to`) or a :class:`~felix_core.events.RequestRefused`
(an ``Error`` frame with its code, message, details and ``retryable`` 1:1), at once or
later; a route that raises anything else is a bug, answered ``INTERNAL`` (and the observer
hears of it). After each request the session takes its mail, so an answer ready at once is
written before the next request is read. ``CreditGranted``, ``SubscriptionCancelled`` and
``ConsumerCancelled`` go to the router as feed commands. ``CloseRequested`` closes QUIC once
the pending stream data is out (or after :data:`CLOSE_LINGER` seconds).

Engine -> Felix. The session takes its mailbox whenever it transmits (the server transmits
the sessions the router names as having mail): batches as frames encoded once for every
subscription, gaps, deliveries and ends. Events for a feed whose stream is no longer open
(stopped by the client, or ended here) are dropped.

ACKs. aioquic holds each ACK for its ack delay (1 ms) and sends it alone once that passed;
a transmit that writes Felix frames lets the pending ACK ride in their packet instead, no
more often than once per millisecond (:class:`~felix_server.quic_engine.AckWithData`), so a
request answered at once (a ``PublishAck``) costs the client one datagram, not two.

Back-pressure: a :class:`~felix_server.gate.Gate` (see there for the table). aioquic's
stream writes never block and copy the data into the stream's own send buffer, freed only as
the peer acknowledges it, so the session weighs what the connection holds on every stream:
QUIC's send buffers (:func:`~felix_server.quic_engine.send_buffered`) plus what the Felix machine
holds. A feed write (batch, gap, end, delivery) goes out only while the gate has room;
otherwise it waits in a :class:`~felix_server.outbox.FeedOutbox` behind the feed's earlier
writes, as a reference (an encoded batch shared by every subscription at that position is
one object, counted once), and the engine's deliveries to the connection are paused. Waiting
writes are released round robin on each transmit; once none waits and the count is at or
below ``connection_buffer_resume`` the deliveries resume. Over
``transport.connection_buffer_cap`` the session stops reading requests: parsed ones wait in
the gate in order, data QUIC delivers on request streams waits there unparsed, and QUIC stops
extending the connection's flow-control credit
(:attr:`FelixQuicConnection.credit_held <felix_server.quic.FelixQuicConnection.credit_held>`),
so the peer is throttled by QUIC itself; the control stream is still read (credit,
cancellations, pings, close). Reading resumes, held requests first and in order, once the
queued bytes are back at ``connection_buffer_limit``. What waits is bounded on every engine
by ``transport.max_data``: aioquic never lets a peer send more than that window past the
credit held, but qh3's credit cannot be held (it grants credit as data arrives, see
:func:`~felix_server.quic_engine.hold_credit`), so a client that keeps sending while not
reading its replies would make the broker hold ever more. When the held bytes (the unparsed
data, plus each parsed request as encoded, :attr:`Gate.held_bytes
<felix_server.gate.Gate.held_bytes>`) go over ``transport.max_data`` the session drops them
and closes the connection at once with the QUIC application error ``OVERLOADED`` (500) and
the reason :data:`OVERFLOW_REASON`, counted by :meth:`ServerObserver.held_overflow
<felix_server.observer.ServerObserver.held_overflow>`; the client sees its connection lost
with that code and reason (retryable: reconnect and read the replies). A transmit that
resumes deliveries or reading sends what that produced in the same call.

Frames the client cannot take (docs/wire-protocol.md §5.4). A reply over the client's
``max_frame_size`` is answered ``Error(TOO_LARGE)`` by the Felix machine itself; a batch over
it is written in pieces that fit (:func:`~felix_server.split.split_slice`) and a record that
fits no frame ends the subscription (reason ``error``, ``next_offset`` at the record; the
engine forgets the subscription); the deliveries of one dispatch go to a client that agreed
to ``delivery-batch`` as one ``DeliveryBatch`` frame, halved until the pieces fit; a delivery
that fits no frame ends the consumer (its in-flight deliveries go back to the queue, as on
``CancelConsume``). The router calls these
decisions need are made on the next transmit, when ``now`` is known.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

from aioquic.quic.connection import NetworkAddress

from felix_core import events as ce
from felix_core.access import Principal
from felix_core.log import LogSlice
from felix_core.queue_types import QueueDelivery
from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.connection import DELIVERY_BATCH, TOKEN_EXCHANGE, TOKEN_REFRESH
from felix_proto.errors import ErrorCode, FelixProtoError
from felix_proto.server import ServerConnection
from felix_server.access import Authenticate, Exchange, ExchangeRefusal, Refusal
from felix_server.batches import (
    SMALL_FRAME,
    DeliveryColumns,
    EncodedBatches,
    delivery_columns,
    delivery_size,
)
from felix_server.config import ServerConfig
from felix_server.fair import FairShare, request_cost, turn_key
from felix_server.feed_traces import FeedTraces
from felix_server.gate import Gate, Move, throttle_deadline
from felix_server.observer import ServerObserver
from felix_server.outbox import FeedKey, FeedOutbox
from felix_server.quic_engine import (
    EVENTS,
    AckWithData,
    QuicConnectionLike,
    hold_credit,
    quiet_test,
    send_buffered,
)
from felix_server.requests import reply_to, request_kind
from felix_server.router import UNIDENTIFIED, Router
from felix_server.split import split_slice

__all__ = ["CLOSE_LINGER", "OVERFLOW_REASON", "Session", "SessionLimits"]

CLOSE_LINGER = 1.0
"""Seconds a requested close waits for pending stream data to be sent."""

OVERFLOW_REASON = "unread replies: requests held over the buffer cap exceed transport.max_data"
"""The reason phrase of the ``OVERLOADED`` close of a connection whose held requests
overflow (see the back-pressure paragraph of the module docstring)."""

_ADMIN_AUDITED = (m.AdminCreate, m.AdminUpdate, m.AdminDelete)
"""Admin requests that change something: their outcome goes to the audit hook."""
_ACCESS_KINDS = ("role", "binding")
"""Admin kinds whose create and update settings go to the audit hook too (what they grant)."""
_TRANSMIT_ROUNDS = 3
"""Most rounds of one transmit: a round that resumes deliveries or reading sends what that
produced in the next one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """What a session needs to know of the configuration."""

    server_id: str
    """Sent in ``Welcome``."""
    region: str
    """Sent in ``Welcome``."""
    welcome: Mapping[str, int]
    """The limits announced in ``Welcome`` (``max_frame_size`` is added by the machine)."""
    max_frame_size: int
    """The largest frame payload accepted from a client."""
    handshake_timeout_s: float
    """Seconds a connection may take to say ``Hello``."""
    buffer_limit: int
    """``transport.connection_buffer_limit``."""
    buffer_resume: int
    """``transport.connection_buffer_resume``."""
    buffer_cap: int
    """``transport.connection_buffer_cap``."""
    held_max: int
    """The most request bytes that may wait over the cap (``transport.max_data``)."""
    capabilities: tuple[str, ...] = ()
    """Optional features offered in ``Welcome`` (``token-refresh`` when clients
    authenticate) besides ``delivery-batch``, which every session offers."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> SessionLimits:
        """The limits of a broker's configuration."""
        engine, transport = config.broker, config.transport
        return cls(
            server_id=config.server_id,
            region=config.region,
            welcome={
                "max_payload_bytes": engine.max_payload_bytes,
                "max_key_bytes": engine.max_key_bytes,
                "max_batch_records": engine.max_batch_records,
                "max_batch_bytes": engine.max_batch_bytes,
                "max_record_bytes": engine.max_record_bytes,
                "max_subscriptions": engine.max_subscriptions_per_connection,
                "max_consumers": engine.max_consumers_per_connection,
            },
            max_frame_size=transport.max_frame_size,
            handshake_timeout_s=transport.handshake_timeout_s,
            buffer_limit=transport.connection_buffer_limit,
            buffer_resume=transport.connection_buffer_resume,
            buffer_cap=transport.connection_buffer_cap,
            held_max=transport.max_data,
        )


class Session:
    """The glue for one QUIC connection. See the module docstring.

    Args:
        quic: the connection's aioquic state machine.
        conn_id: the id the router knows this connection by.
        now: the current time.
        router: where requests and feed commands go, and answers come from.
        observer: metrics and log hooks.
        limits: the configuration it needs.
        authenticate: decides the client's ``Hello``.
        batches: the server's encode-once cache of event batches.
        exchange: answers ``TokenExchange`` (capability ``token-exchange``); None: the
            broker does not exchange identity tokens.
        share: the server's per-pass turns of the tenants (:mod:`felix_server.fair`);
            None: requests are served as they come, without turns.
    """

    def __init__(
        self,
        quic: QuicConnectionLike,
        conn_id: int,
        now: float,
        *,
        router: Router,
        observer: ServerObserver,
        limits: SessionLimits,
        authenticate: Authenticate,
        batches: EncodedBatches,
        exchange: Exchange | None = None,
        share: FairShare | None = None,
    ) -> None:
        self.quic = quic
        self._quiet = quiet_test(quic)  # skips a transmit's packet building when it builds nothing
        self._share = share
        self.conn_id = conn_id
        self.router = router
        self.observer = observer
        self.limits = limits
        self._authenticate = authenticate
        self._exchange = exchange
        self._batches = batches
        self.felix = ServerConnection(
            server_id=limits.server_id,
            region=limits.region,
            limits=limits.welcome,
            max_frame_size=limits.max_frame_size,
            capabilities=(DELIVERY_BATCH, *limits.capabilities),
        )
        self.gate = Gate(
            limit=limits.buffer_limit,
            resume=limits.buffer_resume,
            cap=limits.buffer_cap,
            bound=limits.held_max,
        )
        self.principal: Principal | None = None
        """Who the connection speaks for, once its ``Hello`` was accepted."""
        self.finished = False
        """The connection is over (the server forgets the session)."""
        self._unsent = 0  # QUIC's send-buffered bytes (all streams) as of the last transmit
        self._outbox = FeedOutbox()  # feed writes held back while over the limit
        self._acks = AckWithData()  # a delayed ACK rides with the replies
        self._deferred: list[Callable[..., object]] = []  # router calls that need `now`
        self._pending: dict[int, tuple[m.Message, str, object]] = {}  # number -> request
        self._retry: tuple[m.Message, str, object] | None = None  # refused while throttled
        self._next_request = 1
        self._issued: list[bytes] = []
        self._retired: list[bytes] = []
        self._close: tuple[int, str] | None = None
        self._close_deadline: float | None = None
        self._quic_closed = False
        self._hello_deadline: float | None = now + limits.handshake_timeout_s
        self._expires_at: float | None = None  # the principal's rights end then
        self._login_deadline: float | None = None  # accepted to log in by exchange, until
        self._agreed: list[str] = []  # the capabilities agreed in the handshake
        self._batch_deliveries = False  # the client agreed to ``delivery-batch``
        self._traces = FeedTraces(observer, self._feed_open) if observer.traces else None
        router.attach(conn_id, now, UNIDENTIFIED)

    @property
    def paused(self) -> bool:
        """Whether the engine's deliveries to this connection are paused."""
        return self.gate.paused

    @property
    def reading(self) -> bool:
        """Whether requests are read (not held over the cap)."""
        return self.gate.reading

    # ------------------------------------------------------------------------ inputs

    def datagram_received(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """Feed a datagram to QUIC and handle everything it caused."""
        self.quic.receive_datagram(data, addr, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        """Fire the QUIC and Felix timers that are due."""
        deadline = self.quic.get_timer()
        if deadline is not None and deadline <= now:
            self.quic.handle_timer(now)
        deadline = self.felix.get_timer()
        if deadline is not None and deadline <= now:
            self.felix.handle_timer(now)
        if self._hello_deadline is not None and now >= self._hello_deadline:
            self._hello_deadline = None
            timeout = self.limits.handshake_timeout_s
            self.felix.close(int(ErrorCode.TIMEOUT), f"no Hello within {timeout:g} s")
        if self._expires_at is not None and now >= self._expires_at:
            self._expired(now)
        if self.gate.throttled_until is not None:  # the tenant's bucket holds enough again
            self._apply(self.gate.unthrottle(now), now)
        if self._login_deadline is not None and now >= self._login_deadline:
            self._login_deadline = None
            timeout = self.limits.handshake_timeout_s
            self.felix.close_with_error(
                int(ErrorCode.UNAUTHENTICATED),
                f"no TokenExchange within {timeout:g} s",
                details={"reason": "missing"},
            )
        self._process(now)

    def get_timer(self) -> float | None:
        """The earliest of QUIC's, Felix's, the handshake, the close linger deadline, the
        principal's expiry and the end of a throttle."""
        earliest = self.quic.get_timer()
        for d in (
            self.felix.get_timer(),
            self._close_deadline,
            self._hello_deadline,
            self._expires_at,
            self._login_deadline,
            self.gate.throttled_until,
        ):
            if d is not None and (earliest is None or d < earliest):
                earliest = d
        return earliest

    def take_issued_cids(self) -> list[bytes]:
        """Connection IDs QUIC issued since the last call (for the server's demux table)."""
        out, self._issued = self._issued, []
        return out

    def take_retired_cids(self) -> list[bytes]:
        """Connection IDs QUIC retired since the last call."""
        out, self._retired = self._retired, []
        return out

    # --------------------------------------------------------------- QUIC -> Felix

    def _process(self, now: float) -> None:
        """Drain QUIC events into Felix, then Felix events into the router."""
        quic, felix, gate, events = self.quic, self.felix, self.gate, EVENTS
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.stream_data):
                sid = event.stream_id
                if sid in gate.held_data or (not gate.reading and sid % 4 == 0 and sid):
                    gate.hold_data(sid, event.data, event.end_stream)
                else:
                    self._feed(sid, event.data, event.end_stream)
            elif isinstance(event, events.reset_or_stop):
                gate.take_data(event.stream_id)  # the peer abandoned it
                felix.stream_reset(event.stream_id, event.error_code)
                if isinstance(event, events.stop_sending):
                    self._reset_stream(event.stream_id)
            elif isinstance(event, events.handshake_completed):
                if event.alpn_protocol not in (ALPN, None):
                    self.observer.handshake_failed(int(ErrorCode.UNSUPPORTED_VERSION))
                    quic.close(
                        error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                        reason_phrase=f"ALPN {ALPN} required",
                    )
            elif isinstance(event, events.cid_issued):
                self._issued.append(event.connection_id)
            elif isinstance(event, events.cid_retired):
                self._retired.append(event.connection_id)
            elif isinstance(event, events.terminated):
                self._terminated(event.error_code, now)
        self._felix_events(now)
        if gate.overflowing():
            self._overflowed()

    def _overflowed(self) -> None:
        """Requests waiting over the cap exceed the broker's own receive window (an engine
        that grants credit as data arrives, qh3): close with ``OVERLOADED``."""
        held = self.gate.held_bytes
        self.gate.drop_held()
        self.observer.held_overflow(held)
        self.observer.log(
            "warning",
            "requests held over the buffer cap exceed transport.max_data: connection closed",
            conn_id=self.conn_id,
            held_bytes=held,
        )
        if not self._quic_closed:
            self.quic.close(error_code=int(ErrorCode.OVERLOADED), reason_phrase=OVERFLOW_REASON)
            self._quic_closed = True

    def _feed(self, stream_id: int, data: bytes, end: bool) -> None:
        try:
            self.felix.stream_data_received(stream_id, data, end)
        except FelixProtoError as exc:  # data on a stream id Felix never uses
            self._internal("stream_data_received", exc)

    def _terminated(self, error_code: int, now: float) -> None:
        if self.finished:
            return
        self.finished = True
        self.gate.drop_held()
        self._outbox.clear()
        self._deferred.clear()
        self._retry = None
        self.felix.connection_lost()
        self._felix_events(now)
        self._pending.clear()
        self.router.detach(self.conn_id, now)
        self.observer.connection_closed(error_code)

    def _reset_stream(self, stream_id: int) -> None:
        if stream_id % 4 == 3:  # one of our feed streams
            with contextlib.suppress(ValueError, AssertionError):  # finished or reset already
                self.quic.reset_stream(stream_id, 0)
        # aioquic resets a stopped request stream's sending side itself: nothing more goes out

    # ------------------------------------------------------------- Felix -> router

    def _felix_events(self, now: float) -> None:
        felix, router, conn_id = self.felix, self.router, self.conn_id
        while (event := felix.next_event()) is not None:
            if isinstance(event, fe.RequestReceived):
                if self.gate.held or not self._may_read(event.message, now):
                    self.gate.hold_request(event)
                else:
                    self._request(event.message, now=now)
            elif isinstance(event, fe.CreditGranted):
                router.credit(conn_id, event.subscription_id, event.messages, event.bytes, now)
            elif isinstance(event, fe.HandshakeRequested):
                self._hello_deadline = None
                self._agreed = list(event.capabilities)
                self._batch_deliveries = DELIVERY_BATCH in self._agreed
                self._handshake(event, now)
            elif isinstance(event, fe.SubscriptionCancelled):
                self._outbox.drop((True, event.subscription_id))
                router.stop_subscription(conn_id, event.subscription_id, now)
            elif isinstance(event, fe.ConsumerCancelled):
                self._outbox.drop((False, event.consumer_id))
                router.stop_consumer(conn_id, event.consumer_id, now)
            elif isinstance(event, fe.ProtocolViolation):
                self.observer.protocol_violation(event.error_code, event.fatal)
            elif isinstance(event, fe.CloseRequested) and self._close is None:
                self._take_mail(now)  # the answers of the requests before it go first
                self._outbox.clear()  # nothing more can be written on a closing connection
                self._hello_deadline = None
                self._close = (event.error_code, event.reason)
                self._close_deadline = now + CLOSE_LINGER
                if self.principal is None:
                    self.observer.handshake_failed(event.error_code)

    def _handshake(self, event: fe.HandshakeRequested, now: float) -> None:
        """Accept or reject the client's ``Hello`` as the authenticate function says."""
        felix = self.felix
        try:
            decision = self._authenticate(event.hello, now)
            if self._may_log_in_later(event, decision):
                felix.accept()  # READY without a credential: TokenExchange is the login
                self._login_deadline = now + self.limits.handshake_timeout_s
                self.observer.handshake_completed(event.version)
                return
            if isinstance(decision, Principal):
                decision = self._admit(decision)
            if not isinstance(decision, Principal):
                felix.reject(decision.code, decision.message, details=decision.details)
                reason = str(decision.details.get("reason", decision.message))
                self.observer.handshake_refused(self.conn_id, int(decision.code), reason)
                return
            felix.accept(tenant=None if decision.operator else decision.tenant)
        except Exception as exc:  # a bug: close with INTERNAL rather than go silent
            self._internal("accept", exc)
            felix.close(int(ErrorCode.INTERNAL), "internal error")
            return
        self.principal = decision
        self.router.identify(self.conn_id, decision)
        self._expires_at = decision.expires_at
        self.observer.handshake_completed(event.version)
        self.observer.handshake_accepted(self.conn_id, decision)

    def _admit(self, principal: Principal) -> Principal | Refusal:
        """The principal, or the refusal of its tenant's connection quota."""
        refused = self.router.admit(self.conn_id, principal)
        if refused is None:
            return principal
        return Refusal(code=refused.code, message=refused.message, details=refused.details)

    def _may_log_in_later(self, event: fe.HandshakeRequested, decision: object) -> bool:
        """A ``Hello`` without a token, listing ``token-exchange`` to a broker that offers
        it, is accepted without a credential (docs/wire-protocol.md §5.3)."""
        return (
            isinstance(decision, Refusal)
            and not event.hello.token
            and self._exchange is not None
            and TOKEN_EXCHANGE in event.capabilities
        )

    def _token_exchange(self, msg: m.TokenExchange, now: float) -> None:
        """Exchange an identity token for a Felix token (capability ``token-exchange``):
        ``TokenIssued`` and the connection's rights are the new token's, or ``Error`` (and
        a connection without a credential is then closed)."""
        kind = request_kind(msg)
        token = self.observer.request_started(kind)
        felix, rid, current = self.felix, msg.request_id, self.principal
        issuer = subject = None
        decision = None
        if TOKEN_EXCHANGE not in self._agreed or self._exchange is None:
            refusal = Refusal(
                code=ErrorCode.UNEXPECTED_MESSAGE, message=f"{TOKEN_EXCHANGE} was not agreed"
            )
        else:
            try:
                decision = self._exchange(msg.id_token, now)
            except Exception as exc:  # a bug: answer INTERNAL, keep the connection
                self._internal("token_exchange", exc)
                decision = ExchangeRefusal(code=ErrorCode.INTERNAL, message="internal error")
            issuer, subject = decision.issuer, decision.subject
            if isinstance(decision, Refusal):
                refusal = decision
            elif current is not None and (
                decision.principal.tenant,
                decision.principal.subject,
                decision.principal.operator,
            ) != (current.tenant, current.subject, current.operator):
                refusal = Refusal(
                    code=ErrorCode.FORBIDDEN,
                    message="an exchanged token must name the connection's tenant and subject",
                )
            elif current is None and isinstance(
                admitted := self._admit(decision.principal), Refusal
            ):  # a login is counted in the connection quota as a handshake is
                refusal = admitted
            else:
                principal = decision.principal
                self.principal = principal
                self._login_deadline = None
                self.router.identify(self.conn_id, principal)
                self._expires_at = principal.expires_at
                left = 0.0 if principal.expires_at is None else principal.expires_at - now
                felix.send_reply(
                    m.TokenIssued(
                        request_id=rid,
                        token=decision.token,
                        expires_in_ms=min(m.MAX_DURATION_MS, max(0, int(left * 1000))),
                    )
                )
                self.observer.request_finished(token, kind, 0)
                self.observer.token_exchanged(self.conn_id, issuer, subject, principal, 0, "")
                if current is None:
                    self.observer.handshake_accepted(self.conn_id, principal)
                return
        with contextlib.suppress(FelixProtoError):
            felix.send_error(rid, int(refusal.code), refusal.message, details=refusal.details)
        reason = str(refusal.details.get("reason", refusal.message))
        self.observer.request_finished(token, kind, int(refusal.code))
        self.observer.token_exchanged(
            self.conn_id, issuer, subject, current, int(refusal.code), reason
        )
        if current is None:  # the login failed
            self._login_deadline = None
            felix.close(int(ErrorCode.UNAUTHENTICATED), f"missing or invalid token ({reason})")

    def _not_logged_in(self, msg: m.Message) -> None:
        """A request before the login by exchange: ``Error(UNAUTHENTICATED)``, reason
        ``missing``."""
        kind = request_kind(msg)
        token = self.observer.request_started(kind)
        rid = getattr(msg, "request_id", None)
        if rid is not None:
            with contextlib.suppress(FelixProtoError):
                self.felix.send_error(
                    rid,
                    int(ErrorCode.UNAUTHENTICATED),
                    "log in first: this connection has no credential (TokenExchange)",
                    details={"reason": "missing"},
                )
        self.observer.request_finished(token, kind, int(ErrorCode.UNAUTHENTICATED))

    def _reauthenticate(self, msg: m.Reauthenticate, now: float) -> None:
        """Replace the connection's principal with the one of a new token (capability
        ``token-refresh``): ``Ok``, or ``Error`` and the current rights stand."""
        kind = request_kind(msg)
        token = self.observer.request_started(kind)
        code, reason = self._renew(msg, now)
        self.observer.request_finished(token, kind, code)
        self.observer.token_refreshed(self.conn_id, self.principal, code, reason)

    def _renew(self, msg: m.Reauthenticate, now: float) -> tuple[int, str]:
        """Decide a ``Reauthenticate``; returns the error code answered (0: ``Ok``) and
        the reason (a refusal reason, or the error message)."""
        felix, current = self.felix, self.principal
        rid = msg.request_id
        error: tuple[int, str, dict[str, object]] | None = None
        if TOKEN_REFRESH not in self._agreed:
            error = (ErrorCode.UNEXPECTED_MESSAGE, f"{TOKEN_REFRESH} was not agreed", {})
        elif current is None or felix.hello is None:  # not logged in (by exchange) yet
            error = (ErrorCode.UNAUTHENTICATED, "no principal to renew", {"reason": "missing"})
        else:
            try:
                decision = self._authenticate(replace(felix.hello, token=msg.token), now)
            except Exception as exc:  # a bug: answer INTERNAL, keep the connection
                self._internal("reauthenticate", exc)
                decision = Refusal(code=ErrorCode.INTERNAL, message="internal error")
            if isinstance(decision, Refusal):
                error = (decision.code, decision.message, dict(decision.details))
            elif (decision.tenant, decision.subject, decision.operator) != (
                current.tenant,
                current.subject,
                current.operator,
            ):
                error = (
                    ErrorCode.FORBIDDEN,
                    "a refreshed token must name the connection's tenant and subject",
                    {},
                )
            else:
                self.principal = decision
                felix.send_reply(m.Ok(request_id=rid))  # before the feeds it may end
                self.router.identify(self.conn_id, decision, now)
                self._expires_at = decision.expires_at
                return 0, ""
        code, text, details = error
        with contextlib.suppress(FelixProtoError):
            felix.send_error(rid, int(code), text, details=details)
        return int(code), str(details.get("reason", text))

    def _expired(self, now: float) -> None:
        """The principal's rights ended: no request is served from now on, and the
        connection closes with ``Error(UNAUTHENTICATED)`` (reason ``expired``)."""
        self._expires_at = None
        self.router.identify(self.conn_id, UNIDENTIFIED)
        self.observer.log("info", "token expired: closing the connection", conn_id=self.conn_id)
        self.felix.close_with_error(
            int(ErrorCode.UNAUTHENTICATED),
            "missing or invalid token (expired)",
            details={"reason": "expired"},
        )

    def _may_read(self, msg: m.Message, now: float) -> bool:
        """Whether the next request, ``msg``, may be served: not once over the cap, nor
        past its tenant's turn in this pass (the connection then yields until the next
        pass, :mod:`felix_server.fair`). The answers of the requests before it are written
        first, so the gate weighs them."""
        self._take_mail(now)
        gate = self.gate
        moves = gate.before_request(self._queued())
        if moves:
            self._apply(moves, now)
            self.observer.log(
                "debug", "connection over its buffer cap: requests wait", conn_id=self.conn_id
            )
        share = self._share
        if (
            share is not None
            and gate.reading
            and not share.admit(turn_key(self.principal, msg), request_cost(msg), now)
        ):
            self._apply(gate.throttle(now), now)  # due at once: the next pass goes on
        return gate.reading

    def _read_held(self, now: float) -> None:
        """Reading again: serve the held requests, then the held data, in order."""
        gate = self.gate
        held = gate.held
        if self._retry is not None and self._may_read(self._retry[0], now):  # it first
            retry, self._retry = self._retry, None
            self._request(*retry, now=now)
        while held and self._may_read(held[0].message, now):
            self._request(gate.next_request().message, now=now)
        while gate.held_data and not held and gate.reading:
            sid = next(iter(gate.held_data))
            data = gate.take_data(sid)
            assert data is not None
            self._feed(sid, bytes(data.data), data.end)
            self._felix_events(now)

    def _apply(self, moves: tuple[Move, ...], now: float) -> bool:
        """Make the gate's moves; True when one may produce more to send."""
        more = False
        for move in moves:
            if move is Move.PAUSE_FEEDS:
                self._pause_feeds()
            elif move is Move.RESUME_FEEDS:
                self.router.resume(self.conn_id, now)
                self.observer.backpressure(False)
                more = True
            elif move is Move.HOLD_REQUESTS:
                hold_credit(self.quic, True)
            else:  # READ_REQUESTS
                hold_credit(self.quic, False)
                self._read_held(now)
                more = True
        return more

    def _pause_feeds(self) -> None:
        self.router.pause(self.conn_id)
        self.observer.backpressure(True)

    # --------------------------------------------------------------------- requests

    def _request(
        self, msg: m.Message, kind: str | None = None, token: object = None, *, now: float
    ) -> None:
        """Submit a request to the router. What it made ready (its answer, if it completed,
        and any feed events) is written before the next request is read (:meth:`_may_read`
        takes the mail first) or when the connection transmits, after the connections that
        only receive: a publish's deliveries leave before its answer is encoded. ``kind``
        and ``token`` are given when a throttled request is served again (its metrics go
        on)."""
        if type(msg) is m.Reauthenticate:  # the session's own business, not a route's
            self._reauthenticate(msg, now)
            return
        if type(msg) is m.TokenExchange:
            self._token_exchange(msg, now)
            return
        if self.principal is None:  # accepted to log in by exchange, not logged in yet
            self._not_logged_in(msg)
            return
        if kind is None:
            kind = request_kind(msg)
            token = self.observer.request_started(kind)
        number = self._next_request
        self._next_request += 1
        self._pending[number] = (msg, kind, token)
        try:
            self.router.submit(self.conn_id, number, msg, now)
        except Exception as exc:  # a bug in a route: answer INTERNAL, keep serving
            self._failed(number, kind, exc)

    def _take_mail(self, now: float) -> None:
        """Write everything the router holds for this connection, in order."""
        for event in self.router.take(self.conn_id, now):
            if type(event) is ce.RecordsDelivered:  # the common cases first
                self.send_event_batch(event.subscription_id, event.slice)
            elif isinstance(event, ce.RequestCompleted):
                self._completed(event)
            elif isinstance(event, ce.MessagesDelivered):
                self.send_deliveries(event.consumer_id, event.deliveries)
            elif isinstance(event, ce.RequestRefused):
                self._refused(event, now)
            elif isinstance(event, ce.RecordsSkipped):
                self.send_gap(event.subscription_id, event.missed, event.next_offset)
            elif isinstance(event, ce.SubscriptionClosed):
                self.end_subscription(
                    event.subscription_id, event.reason, event.message, event.next_offset
                )
            elif isinstance(event, ce.ConsumerClosed):
                self.end_consumer(event.consumer_id, event.reason, event.message)

    def _completed(self, done: ce.RequestCompleted) -> None:
        """Answer a request that completed (opening the stream of a new feed first)."""
        pending = self._pending.pop(done.request, None)
        if pending is None:
            return
        msg, kind, token = pending
        code = 0
        try:
            reply = reply_to(msg, done)
            if type(done) is not ce.Appended:  # the common case: nothing opens
                if isinstance(reply, m.Subscribed):
                    self.felix.open_subscription(reply.request_id, reply.subscription_id)
                elif isinstance(reply, m.Consuming):
                    self.felix.open_consumer(reply.request_id, reply.consumer_id)
            if reply is not None and not self.felix.send_reply(reply):
                code = int(ErrorCode.TOO_LARGE)  # answered Error(TOO_LARGE) instead
            self._count(msg)
            if self._traces is not None:
                self._traces.request_done(msg, reply)
        except Exception as exc:  # a bug: answer INTERNAL, keep serving
            code = int(ErrorCode.INTERNAL)
            self._internal_reply(msg, kind, exc)
        self.observer.request_finished(token, kind, code)
        if isinstance(msg, _ADMIN_AUDITED):
            self._audit_admin(msg, code)

    def _refused(self, refused: ce.RequestRefused, now: float) -> None:
        """Answer a request the engine refused with ``Error``: code, message, details and
        retryability 1:1; or, refused by its tenant's publish rate, keep it and throttle the
        connection until the bucket holds enough (:func:`~felix_server.gate.throttle_deadline`)."""
        pending = self._pending.pop(refused.request, None)
        if pending is None:
            return
        msg, kind, token = pending
        exc = refused.error
        until = throttle_deadline(exc, now)
        if until is not None and self._retry is None and not self.finished:
            self._retry = pending  # served again, first, when the throttle ends
            self._apply(self.gate.throttle(until), now)
            self.observer.log(
                "debug", "connection throttled: tenant over its publish rate", conn_id=self.conn_id
            )
            return
        rid = getattr(msg, "request_id", None)
        if rid is not None:
            with contextlib.suppress(FelixProtoError):
                self.felix.send_error(
                    rid, int(exc.code), exc.message, details=exc.details, retryable=exc.retryable
                )
        self.observer.request_finished(token, kind, int(exc.code))
        if isinstance(msg, _ADMIN_AUDITED):
            self._audit_admin(msg, int(exc.code))

    def _audit_admin(self, msg: m.AdminCreate | m.AdminUpdate | m.AdminDelete, code: int) -> None:
        """Tell the observer's audit hook how an admin request that changes something
        ended."""
        grants = msg.kind in _ACCESS_KINDS and not isinstance(msg, m.AdminDelete)
        self.observer.admin_operation(
            self.conn_id,
            self.principal,
            type(msg).__name__.removeprefix("Admin").lower(),
            f"{msg.kind} {msg.tenant}/{msg.namespace}/{msg.name}",
            code,
            getattr(msg, "settings", None) if grants else None,
        )

    def _failed(self, number: int, kind: str, exc: Exception) -> None:
        """A route raised something other than an engine refusal: a bug. Answer INTERNAL."""
        pending = self._pending.pop(number, None)
        if pending is None:
            return
        msg, _, token = pending
        self._internal_reply(msg, kind, exc)
        self.observer.request_finished(token, kind, int(ErrorCode.INTERNAL))

    def _internal_reply(self, msg: m.Message, kind: str, exc: Exception) -> None:
        self._internal(kind, exc)
        rid = getattr(msg, "request_id", None)
        if rid is not None:
            with contextlib.suppress(FelixProtoError):
                self.felix.send_error(
                    rid, int(ErrorCode.INTERNAL), f"internal error: {type(exc).__name__}"
                )

    def _count(self, msg: m.Message) -> None:
        if isinstance(msg, m.Publish):
            self.observer.published(1, len(msg.payload))
        elif isinstance(msg, m.PublishBatch):
            self.observer.published(len(msg.payloads), sum(map(len, msg.payloads)))
        elif isinstance(msg, m.Enqueue):
            self.observer.enqueued(len(msg.payloads), sum(map(len, msg.payloads)))

    def _feed_open(self, key: FeedKey) -> bool:
        is_sub, feed_id = key
        felix = self.felix
        return felix.subscription_open(feed_id) if is_sub else felix.consumer_open(feed_id)

    def _internal(self, where: str, exc: BaseException) -> None:
        self.observer.internal_error(where, exc)

    # ------------------------------------------------------------ engine -> Felix

    def send_event_batch(self, subscription_id: int, sl: LogSlice) -> None:
        """Write an event batch (encoded once for every subscription) to a subscription, or
        hold it back while the connection is over its limit (see :meth:`_feed_write`)."""
        if self.felix.subscription_open(subscription_id):
            frame, payload_bytes = self._batches.frame(sl)
            write = partial(self._write_batch, subscription_id, frame, sl, payload_bytes)
            self._feed_write((True, subscription_id), len(frame), write, frame)

    def send_gap(self, subscription_id: int, missed: int, next_offset: int) -> None:
        """Tell a subscription it skipped ``missed`` records."""
        if self.felix.subscription_open(subscription_id):
            write = partial(self.felix.send_gap, subscription_id, missed, next_offset)
            self._feed_write((True, subscription_id), SMALL_FRAME, partial(self._felix_call, write))

    def end_subscription(
        self, subscription_id: int, reason: str, message: str, next_offset: int | None
    ) -> None:
        """End a subscription's stream with ``SubscriptionEnded``."""
        if self.felix.subscription_open(subscription_id):
            write = partial(
                self.felix.end_subscription, subscription_id, reason, message, next_offset
            )
            self._feed_write((True, subscription_id), SMALL_FRAME, partial(self._felix_call, write))

    def send_deliveries(self, consumer_id: int, deliveries: Sequence[QueueDelivery]) -> None:
        """Write queue deliveries to a consumer's stream (or hold them back): in one
        ``DeliveryBatch`` frame when the client agreed to ``delivery-batch`` (its lists built
        in one walk, see :func:`~felix_server.batches.delivery_columns`), else one
        ``Delivery`` frame each."""
        if not self.felix.consumer_open(consumer_id):
            return
        key = (False, consumer_id)
        if self._batch_deliveries and len(deliveries) > 1:
            for columns, size in delivery_columns(deliveries):
                self._feed_write(key, size, partial(self._write_deliveries, consumer_id, columns))
            return
        for d in deliveries:
            self._feed_write(key, delivery_size(d), partial(self._write_delivery, consumer_id, d))

    def end_consumer(self, consumer_id: int, reason: str, message: str = "") -> None:
        """End a consumer's stream with ``ConsumerEnded``."""
        if self.felix.consumer_open(consumer_id):
            write = partial(self.felix.end_consumer, consumer_id, reason, message)
            self._feed_write((False, consumer_id), SMALL_FRAME, partial(self._felix_call, write))

    def _feed_write(
        self, key: FeedKey, size: int, write: Callable[[], object], frame: bytes | None = None
    ) -> None:
        """Write to a feed now if the connection has room for ``size`` more bytes (and the
        feed has nothing waiting), else hold the write back and pause the connection's
        deliveries. Room: the queued bytes at most ``connection_buffer_resume``, or within
        ``connection_buffer_limit`` with ``size`` added; so what is queued stays within the
        limit (or the resume level plus one frame) however many feeds the connection has,
        and a frame larger than the limit still goes out once the connection drains."""
        if self._outbox.holds(key) or not self.gate.room(self._queued(), size):
            self._outbox.hold(key, size, write, frame)
            if self.gate.feed_blocked():  # the one move it makes: pause the deliveries
                self._pause_feeds()
        else:
            write()

    def _queued(self) -> int:
        """Bytes queued for the client (QUIC's send buffers as of the last transmit, plus
        what the Felix machine holds): what the gate weighs."""
        return self._unsent + self.felix.buffered_bytes()

    def _release(self) -> None:
        """Write held feed writes, round robin, while the connection has room."""
        outbox = self._outbox
        while outbox and self.gate.room(self._queued(), outbox.next_size()):
            write = outbox.pop()
            assert write is not None
            write()

    def _write_batch(self, sid: int, frame: bytes, sl: LogSlice, payload_bytes: int) -> None:
        """Write a batch; one over the client's ``max_frame_size`` goes in pieces that fit,
        and a record that fits no frame ends the subscription (docs/wire-protocol.md §5.4)."""
        felix = self.felix
        if self._traces is not None:
            self._traces.stream_batch(sid, sl)
        if felix.fits(frame):
            self._write_frame(sid, frame, len(sl.payloads), payload_bytes)
            return
        pieces, too_large = split_slice(sl, felix.peer_max_frame_size)
        for piece, count, nbytes in pieces:
            self._write_frame(sid, piece, count, nbytes)
        if too_large is not None:
            offset, size = too_large
            self._outbox.drop((True, sid))
            text = (
                f"the record at offset {offset} ({size} bytes) does not fit the client's "
                f"max_frame_size {felix.peer_max_frame_size}"
            )
            self._felix_call(partial(felix.end_subscription, sid, m.EndReason.ERROR, text, offset))
            self._deferred.append(partial(self.router.stop_subscription, self.conn_id, sid))

    def _write_frame(self, sid: int, frame: bytes, count: int, payload_bytes: int) -> None:
        try:
            self.felix.send_event_frame(sid, frame, count=count, payload_bytes=payload_bytes)
        except FelixProtoError as exc:
            self._internal("send_event_frame", exc)
            return
        self.observer.delivered("stream", count, payload_bytes)

    def _write_deliveries(self, consumer_id: int, columns: DeliveryColumns) -> bool:
        """Write deliveries as one ``DeliveryBatch``, or, over the client's
        ``max_frame_size``, as two halves (each split again as needed); a single delivery goes
        as a ``Delivery`` (:meth:`_write_delivery`). False once a delivery fitted no frame
        (the consumer is ended and nothing after it is written)."""
        if len(columns) == 1:
            return self._write_delivery(consumer_id, columns.deliveries[0])
        try:
            written = self.felix.send_delivery_frame(consumer_id, columns.frame())
        except FelixProtoError as exc:
            self._internal("send_delivery_frame", exc)
            return False
        if written:
            self.observer.delivered("queue", len(columns), columns.payload_bytes)
            if self._traces is not None:
                self._traces.queue_batch(consumer_id, columns.deliveries)
            return True
        first, second = columns.halves()
        return self._write_deliveries(consumer_id, first) and self._write_deliveries(
            consumer_id, second
        )

    def _write_delivery(self, consumer_id: int, d: QueueDelivery) -> bool:
        """Write one delivery; one over the client's ``max_frame_size`` ends the consumer
        (its in-flight deliveries go back to the queue, as on ``CancelConsume``) and
        returns False."""
        wire = m.Delivery(
            delivery_id=d.delivery_id,
            attempt=d.attempt,
            offset=d.offset,
            payload=d.payload,
            timestamp_ms=d.timestamp_ms,
            key=d.key,
            headers=d.headers,
        )
        felix = self.felix
        try:
            written = felix.send_delivery(consumer_id, wire)
        except FelixProtoError as exc:
            self._internal("send_delivery", exc)
            return False
        if written:
            self.observer.delivered("queue", 1, len(d.payload))
            if self._traces is not None:
                self._traces.queue_batch(consumer_id, (d,))
            return True
        self._outbox.drop((False, consumer_id))
        text = (
            f"delivery {d.delivery_id} (offset {d.offset}, {len(d.payload)} payload bytes) "
            f"does not fit the client's max_frame_size {felix.peer_max_frame_size}"
        )
        self._felix_call(partial(felix.end_consumer, consumer_id, m.EndReason.ERROR, text))
        self._deferred.append(partial(self.router.stop_consumer, self.conn_id, consumer_id))
        return False

    def _felix_call(self, call: Callable[[], object]) -> bool:
        try:
            call()
        except FelixProtoError as exc:
            self._internal("feed write", exc)
            return False
        return True

    # -------------------------------------------------------------------- shutdown

    def go_away(self, deadline_ms: int, now: float) -> None:
        """Send ``GoAway`` (or close at once if the handshake is not done)."""
        self._take_mail(now)  # the answers of requests already served go first
        try:
            self.felix.goaway("the broker is shutting down", deadline_ms, now=now)
        except FelixProtoError:
            self.felix.close(int(ErrorCode.SHUTTING_DOWN), "the broker is shutting down")
        self._felix_events(now)

    def close_for_shutdown(self, now: float) -> None:
        """The grace period is over: write what the engine still has for this connection
        (its feeds' end frames), then close."""
        self._take_mail(now)
        self.felix.close(int(ErrorCode.SHUTTING_DOWN), "the broker is shutting down")
        self._felix_events(now)

    def abandon(self, now: float) -> None:
        """The drain bound passed: close QUIC without waiting and forget the connection."""
        if not self._quic_closed:
            self.quic.close(error_code=int(ErrorCode.SHUTTING_DOWN), reason_phrase="shutdown")
            self._quic_closed = True
        self._terminated(int(ErrorCode.SHUTTING_DOWN), now)

    # ---------------------------------------------------------------------- output

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued for this client and not yet acknowledged, on every stream: Felix's
        writes, QUIC's send buffers, and the feed writes held back (each shared frame
        counted once)."""
        return self.felix.buffered_bytes() + send_buffered(self.quic) + self._outbox.held_bytes

    @property
    def held_feed_bytes(self) -> int:
        """Bytes of feed writes held back (each shared frame counted once)."""
        return self._outbox.held_bytes

    def transmit(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """Take the mail, move Felix writes into QUIC, apply back-pressure, and return
        QUIC's datagrams. A round that resumes deliveries or reading is followed by another
        (at most :data:`_TRANSMIT_ROUNDS`), so what it produced goes out now."""
        datagrams: list[tuple[bytes, NetworkAddress]] = []
        for _ in range(_TRANSMIT_ROUNDS):
            datagrams += self._transmit_round(now)
            if self.finished:
                break
            if not self._apply(self.gate.settle(self._queued(), bool(self._outbox)), now):
                break
        return datagrams

    def _transmit_round(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        quic = self.quic
        wrote = False
        if not self._quic_closed:
            if self._outbox:
                self._unsent = send_buffered(quic)
                self._release()
            if self._deferred:
                deferred, self._deferred = self._deferred, []
                for call in deferred:
                    call(now=now)
            self._take_mail(now)
            for sid, data, end in self.felix.data_to_send():
                try:
                    quic.send_stream_data(sid, data, end)
                except (ValueError, AssertionError):
                    continue  # the stream was reset meanwhile; drop what it would carry
                wrote = True
            if wrote:  # the replies carry the client's ACK: no ACK-only packet 1 ms later
                self._acks.data_written(quic, now)
        # Most passes of a connection that only reads build nothing: the quiet test says so
        # without building a packet. After a write there is something to build.
        quiet = self._quiet
        if quiet is not None and not wrote and quiet(quic, now):
            datagrams = []
        else:
            datagrams = quic.datagrams_to_send(now)
        if self._close is not None and not self._quic_closed:
            assert self._close_deadline is not None
            if self.buffered_bytes == 0 or now >= self._close_deadline:
                code, reason = self._close
                quic.close(error_code=code, reason_phrase=reason)
                self._quic_closed = True
                self._close_deadline = None
                datagrams += quic.datagrams_to_send(now)
        self._unsent = send_buffered(quic)
        return datagrams
