"""The client side of a Felix connection, as a sans-IO state machine.

Theory of operation
-------------------

:class:`ClientConnection` speaks Felix over the QUIC streams of one connection. The glue
feeds it QUIC stream events and writes what it returns (see
:mod:`felix_proto.connection` for the inputs and outputs); the application calls the API
and reads :mod:`felix_proto.events`.

Handshake. :meth:`ClientConnection.connect` writes ``Hello`` on stream 0 and arms the
handshake deadline. ``Welcome`` moves the machine to ``READY`` (:class:`Welcomed`; the
broker's ``max_frame_size`` now bounds what we send); an ``Error`` instead ends the
connection (:class:`CloseRequested`, :class:`ConnectionTerminated` with the code). No
request can be made before ``READY`` (:class:`LocalProtocolError`).

Requests. Every request method allocates the next request id (1, 2, 3 ... shared with ping
nonces), writes the message and records an absolute deadline ``now + timeout`` (default
``default_timeout``). The reply is matched by id, must arrive on the stream the request
went out on, and must be of the kind the request expects; it becomes one event
(:class:`PublishAcked`, :class:`RequestSucceeded`, :class:`RequestFailed` ...). A request
whose deadline passes becomes :class:`RequestTimedOut`; its late reply is dropped (and a
late ``Subscribed``/``Consuming`` is undone with an internal unsubscribe/cancel). Publishes
with ``ack=NONE`` get no deadline: only an ``Error`` can come back for them.

Request streams. Unless the caller passes ``stream_id``, each kind of work has its own
lane, a bidirectional stream opened on first use: ``publish`` (publish, publish batch),
``queue`` (enqueue, consume, cancel, ack, nack), ``subscribe`` (subscribe, unsubscribe),
``cache`` and ``admin``; so a burst of publishes never queues a cache read behind it.
Pings, credit and ``Reauthenticate`` go on the control stream.
:meth:`ClientConnection.open_request_stream` opens a stream of one's own;
:meth:`ClientConnection.end_request_stream` ends it.

Subscriptions and consumers follow the tables in :mod:`felix_proto._state`. A ``Subscribe``
creates a ``PENDING`` subscription; the broker's unidirectional stream may arrive before
the ``Subscribed`` reply (QUIC does not order streams), so its frames are buffered
(at most ``max_early_frames``) and replayed right after :class:`SubscriptionStarted`. Credit
is accounted per batch (records must fit the message credit; the byte credit must be
positive before a batch and may be overdrawn by it); with ``auto_credit`` the machine tops
the window back up once ``auto_credit`` of it is used. Deliveries are tracked until
``ack``/``nack``; settling an unknown or settled delivery id is a
:class:`LocalProtocolError`.

``GoAway`` gives :class:`GoAwayReceived`; new requests are then refused locally, while
acks, nacks, credit, unsubscribe and cancel still go out. On :meth:`connection_lost` (or
any close) every pending request fails with ``CONNECTION_LOST``, every started
subscription and consumer ends with an event, then :class:`ConnectionTerminated`.

Peer violations are handled at the one receive entry point
(:meth:`~felix_proto.connection.Connection.stream_data_received`): a bad message is answered
with ``Error`` and skipped; a broken request stream fails its requests and is ended; a
broken feed ends its subscription or consumer (``reason="error"``) and unsubscribes; a
broken control stream closes the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import events as ev
from . import messages as m
from ._feeds import ClientFeed as _Feed
from ._pending import PendingRequests
from ._schema import _builder_class, make_record_factory
from ._state import (
    CLIENT_CONNECTION,
    ConnInput,
    ConnState,
    FeedInput,
    FeedState,
    FlowControlError,
    UnexpectedMessage,
)
from .codec import encode_fields, validate
from .connection import (
    CONTROL_STREAM_ID,
    DELIVERY_BATCH,
    REPLY_TYPES,
    TOKEN_EXCHANGE,
    TOKEN_REFRESH,
    Connection,
    StreamKind,
    StreamState,
    is_client_bidi,
    is_server_uni,
)
from .errors import RETRYABLE, ErrorCode, LocalProtocolError, RemoteProtocolError
from .frames import DEFAULT_MAX_FRAME_SIZE, SUPPORTED_VERSIONS

__all__ = [
    "DELIVERY_BATCH",
    "REPLY_TYPES",
    "TOKEN_EXCHANGE",
    "TOKEN_REFRESH",
    "ClientConnection",
    "batch_record_bytes",
    "unbatch",
]

_LANES: dict[type[m.Message], str] = {
    m.Publish: "publish",
    m.PublishBatch: "publish",
    m.Enqueue: "queue",
    m.Consume: "queue",
    m.CancelConsume: "queue",
    m.Ack: "queue",
    m.Nack: "queue",
    m.Subscribe: "subscribe",
    m.Unsubscribe: "subscribe",
    m.CachePut: "cache",
    m.CacheGet: "cache",
    m.CacheDelete: "cache",
    m.AdminCreate: "admin",
    m.AdminDescribe: "admin",
    m.AdminUpdate: "admin",
    m.AdminList: "admin",
    m.AdminDelete: "admin",
}
_FINISHING = frozenset(
    {m.Unsubscribe, m.CancelConsume, m.Ack, m.Nack, m.Reauthenticate, m.TokenExchange}
)
# The enum members the request and reply paths test, as module globals (an enum member
# looked up on its class costs ~0.1 us: see felix_proto.connection._CLOSED).
_FINISH = ConnInput.FINISH
_REQUEST = ConnInput.REQUEST
_HANDSHAKING = ConnState.HANDSHAKING
_SERVING = frozenset({ConnState.READY, ConnState.GOING_AWAY})
_FEED_STREAM = StreamKind.FEED
_CONTROL_STREAM = StreamKind.CONTROL
_ACK_NONE = m.AckMode.NONE.value


class ClientConnection(Connection):
    """The client side of one Felix connection (see the module docstring).

    Inputs: the API calls below, :meth:`stream_data_received`, :meth:`stream_reset`,
    :meth:`connection_lost`, :meth:`handle_timer`. Outputs: :meth:`next_event`,
    :meth:`data_to_send`, :meth:`get_timer`. What it waits for (request ids, deadlines, late
    replies) is a :class:`~felix_proto._pending.PendingRequests`.

    Args:
        client_name: free-form identification sent in ``Hello``.
        token: bearer token for authentication, or ``None``.
        capabilities: optional features offered.
        versions: protocol versions offered, preferred first.
        max_frame_size: largest frame payload accepted from the broker (announced).
        default_timeout: seconds a request may wait for its reply; ``None`` for no limit.
        auto_credit: top a subscription's credit back up once this fraction of the window
            is used (0 < x <= 1); ``None`` to leave credit to :meth:`credit`.
        max_early_frames: how many frames of a subscription or consumer stream are
            buffered while its reply has not arrived; more is a protocol error.
        batch_deliveries: emit a ``DeliveryBatch`` frame as one
            :class:`~felix_proto.events.DeliveriesReceived` instead of one
            :class:`~felix_proto.events.DeliveryReceived` per delivery.
    """

    _table = CLIENT_CONNECTION
    _initial_state = ConnState.IDLE

    def __init__(
        self,
        *,
        client_name: str = "",
        token: str | None = None,
        capabilities: Sequence[str] = (),
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        default_timeout: float | None = 30.0,
        auto_credit: float | None = 0.5,
        max_early_frames: int = 256,
        batch_deliveries: bool = False,
    ) -> None:
        super().__init__(max_frame_size=max_frame_size)
        if auto_credit is not None and not 0 < auto_credit <= 1:
            raise LocalProtocolError("auto_credit must be in (0, 1] or None")
        self._hello = m.Hello(
            versions=list(versions),
            client_name=client_name,
            capabilities=list(capabilities),
            token=token,
            max_frame_size=max_frame_size,
        )
        validate(self._hello)
        self._default_timeout = default_timeout
        self._auto_credit = auto_credit
        self._max_early = max_early_frames
        self._batch_deliveries = batch_deliveries
        self._handshake_deadline: float | None = None
        self._next_stream = 4
        self._pending = PendingRequests()
        self._subs: dict[int, _Feed] = {}
        self._consumers: dict[int, _Feed] = {}
        self._lanes: dict[str, int] = {}
        self._request_streams: set[int] = set()
        self.limits: dict[str, int] = {}
        """The limits the broker announced in ``Welcome`` (empty before)."""
        self.capabilities: list[str] = []
        """The capabilities both sides agreed to in ``Welcome`` (empty before)."""

    # ------------------------------------------------------------------- handshake

    def connect(self, *, now: float, timeout: float | None = None) -> None:
        """Send ``Hello`` on the control stream and start the handshake deadline.

        Args:
            now: the current time (seconds).
            timeout: seconds to wait for ``Welcome``; default ``default_timeout``.

        Raises:
            LocalProtocolError: ``connect`` was already called.
        """
        self._transition(ConnInput.CONNECT, local=True)
        self._send(CONTROL_STREAM_ID, self._hello)
        self._handshake_deadline = self._deadline(now, timeout)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection: every pending thing ends with an event, then
        :class:`CloseRequested` and :class:`ConnectionTerminated`. No-op once closed.

        Args:
            error_code: the QUIC application error code (0: no error).
            reason: the reason phrase.
        """
        self._terminate(error_code, reason, by_peer=False, request_close=True)

    # -------------------------------------------------------------------- requests

    def open_request_stream(self) -> int:
        """Open a new request stream (allocating its id; nothing is sent yet).

        Returns:
            The stream id, to pass as ``stream_id`` to request methods.

        Raises:
            LocalProtocolError: the connection is not ``READY``.
        """
        self._transition(ConnInput.REQUEST, local=True)
        sid = self._next_stream
        self._next_stream += 4
        self._request_streams.add(sid)
        return sid

    def end_request_stream(self, stream_id: int) -> None:
        """End (FIN) a request stream; pending replies on it still arrive.

        Args:
            stream_id: a stream from :meth:`open_request_stream` or a lane.

        Raises:
            LocalProtocolError: not an open request stream.
        """
        if stream_id not in self._request_streams:
            raise LocalProtocolError(f"stream {stream_id} is not an open request stream")
        self._retire_stream(stream_id)
        self._end_stream(stream_id)

    def publish(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        payload: bytes,
        *,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Append one record to a stream; answered by :class:`PublishAcked`.

        Args:
            tenant, namespace, stream: the target stream.
            payload: the record.
            key, headers: optional record key and headers.
            ack: when to acknowledge; with ``NONE`` only a failure is reported.
            now: the current time.
            timeout: seconds to wait for the reply; default ``default_timeout``.
            stream_id: the request stream to use; default: the ``publish`` lane.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: not ``READY`` (or going away), a bad argument, an unusable
                ``stream_id``, or a frame over the broker's ``max_frame_size``.
        """
        return self._request(
            m.Publish,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            stream=stream,
            payload=payload,
            key=key,
            headers=headers,
            ack=int(ack),
        )

    def publish_batch(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        payloads: list[bytes],
        *,
        keys: list[bytes | None] | None = None,
        headers: list[dict[str, bytes] | None] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Append records atomically; answered by :class:`PublishAcked`. Args and Raises
        as :meth:`publish` (``keys``/``headers``: ``None`` or one entry per payload).

        Returns:
            The request id.
        """
        return self._request(
            m.PublishBatch,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            stream=stream,
            payloads=payloads,
            keys=keys,
            headers=headers,
            ack=int(ack),
        )

    def enqueue(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        payloads: list[bytes],
        *,
        keys: list[bytes | None] | None = None,
        headers: list[dict[str, bytes] | None] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Append records to a queue; answered by :class:`PublishAcked`. Args and Raises as
        :meth:`publish_batch` (default lane: ``queue``).

        Returns:
            The request id.
        """
        return self._request(
            m.Enqueue,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            queue=queue,
            payloads=payloads,
            keys=keys,
            headers=headers,
            ack=int(ack),
        )

    def subscribe(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        *,
        start: m.StartKind = m.StartKind.LATEST,
        start_value: int | None = None,
        credit_messages: int = 1024,
        credit_bytes: int = 1 << 20,
        source: m.SourceKind = m.SourceKind.STREAM,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Follow a stream (or a cache's change feed); answered by
        :class:`SubscriptionStarted`, then :class:`EventsReceived` ... and finally
        :class:`SubscriptionEnded`; or by :class:`RequestFailed` / :class:`RequestTimedOut`.

        Args:
            tenant, namespace, stream: what to follow (``stream`` is the cache name when
                ``source`` is ``CACHE``).
            start, start_value: where to start.
            credit_messages, credit_bytes: the initial flow-control window (both > 0).
            source: stream or cache change feed.
            now, timeout, stream_id: as for :meth:`publish` (default lane ``subscribe``).

        Returns:
            The request id.

        Raises:
            LocalProtocolError: as for :meth:`publish`, or a window that is not positive.
        """
        if credit_messages <= 0 or credit_bytes <= 0:
            raise LocalProtocolError("credit_messages and credit_bytes must be positive")
        return self._request(
            m.Subscribe,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            stream=stream,
            start=int(start),
            start_value=start_value,
            credit_messages=credit_messages,
            credit_bytes=credit_bytes,
            source=str(source),
        )

    def unsubscribe(
        self,
        subscription_id: int,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """End an active subscription: :class:`RequestSucceeded`, then (after any frames
        still in flight) :class:`SubscriptionEnded`. Allowed while going away.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the subscription is unknown or not ``ACTIVE``.
        """
        feed = self._feed(self._subs, subscription_id, "subscription")
        feed.move(FeedInput.STOP, local=True)
        return self._request(
            m.Unsubscribe, now, timeout, stream_id, subscription_id=subscription_id
        )

    def credit(self, subscription_id: int, messages: int, nbytes: int) -> None:
        """Allow the broker ``messages`` more records and ``nbytes`` more payload bytes on
        an active subscription (a ``Credit`` on the control stream; it has no reply).

        Args:
            subscription_id: the subscription.
            messages: additional records (>= 0).
            nbytes: additional payload bytes (>= 0).

        Raises:
            LocalProtocolError: unknown or inactive subscription, or a negative amount.
        """
        if messages < 0 or nbytes < 0:
            raise LocalProtocolError("credit amounts must not be negative")
        feed = self._feed(self._subs, subscription_id, "subscription")
        self._transition(ConnInput.FINISH, local=True)
        feed.move(FeedInput.CREDIT, local=True)
        self._grant(feed, messages, nbytes)

    def subscription_credit(self, subscription_id: int) -> tuple[int, int]:
        """Return the remaining ``(messages, bytes)`` credit of a subscription.

        Raises:
            LocalProtocolError: unknown subscription.
        """
        feed = self._feed(self._subs, subscription_id, "subscription")
        return feed.remaining_messages, feed.remaining_bytes

    def consume(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        *,
        group: str = "default",
        prefetch: int = 64,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Join a queue's consumer group: :class:`ConsumerStarted`, then
        :class:`DeliveryReceived` ... and finally :class:`ConsumerEnded`. Args and Raises as
        :meth:`publish` (default lane ``queue``).

        Returns:
            The request id.
        """
        return self._request(
            m.Consume,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            queue=queue,
            group=group,
            prefetch=prefetch,
        )

    def cancel_consume(
        self,
        consumer_id: int,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Leave the group: :class:`RequestSucceeded`, then :class:`ConsumerEnded`.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the consumer is unknown or not ``ACTIVE``.
        """
        feed = self._feed(self._consumers, consumer_id, "consumer")
        feed.move(FeedInput.STOP, local=True)
        return self._request(m.CancelConsume, now, timeout, stream_id, consumer_id=consumer_id)

    def ack(
        self,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        now: float,
        timeout: float | None = None,
        confirm: bool = True,
        stream_id: int | None = None,
        mode: m.AckMode = m.AckMode.ACCEPTED,
    ) -> int | None:
        """Settle deliveries as done.

        Args:
            consumer_id: the consumer they were delivered to.
            delivery_ids: deliveries awaiting settlement (no duplicates).
            now, timeout, stream_id: as for :meth:`publish` (default lane ``queue``).
            confirm: ask for an ``Ok`` (:class:`RequestSucceeded`); else fire and forget.
            mode: when the broker answers: ``COMMITTED`` once the ack is on disk (a durable
                queue); ``ACCEPTED`` once applied.

        Returns:
            The request id, or ``None`` without ``confirm``.

        Raises:
            LocalProtocolError: unknown consumer, or a delivery id that is unknown, already
                settled or repeated.
        """
        return self._settle(
            m.Ack, consumer_id, delivery_ids, now, timeout, confirm, stream_id, mode=mode.value
        )

    def nack(
        self,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        delay_ms: int = 0,
        now: float,
        timeout: float | None = None,
        confirm: bool = True,
        stream_id: int | None = None,
    ) -> int | None:
        """Return deliveries for redelivery after ``delay_ms``. As :meth:`ack` otherwise.

        Returns:
            The request id, or ``None`` without ``confirm``.
        """
        return self._settle(
            m.Nack,
            consumer_id,
            delivery_ids,
            now,
            timeout,
            confirm,
            stream_id,
            delay_ms=delay_ms,
        )

    def pending_deliveries(self, consumer_id: int) -> frozenset[int]:
        """Return the delivery ids of a consumer that await ``ack``/``nack``.

        Raises:
            LocalProtocolError: unknown consumer.
        """
        return frozenset(self._feed(self._consumers, consumer_id, "consumer").awaiting)

    def cache_put(
        self,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        if_absent: bool = False,
        if_version: int | None = None,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Store a value: :class:`CachePutCompleted`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CachePut,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            cache=cache,
            key=key,
            value=value,
            ttl_ms=ttl_ms,
            if_absent=if_absent,
            if_version=if_version,
        )

    def cache_get(
        self,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Read a value: :class:`CacheValueReceived`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CacheGet,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            cache=cache,
            key=key,
        )

    def cache_delete(
        self,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        *,
        if_version: int | None = None,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Delete a value: :class:`CacheDeleteCompleted`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CacheDelete,
            now,
            timeout,
            stream_id,
            tenant=tenant,
            namespace=namespace,
            cache=cache,
            key=key,
            if_version=if_version,
        )

    def admin(
        self,
        kind: type[m.Message],
        /,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
        **fields: Any,
    ) -> int:
        """Send an admin request: ``kind`` is :class:`~felix_proto.messages.AdminCreate`,
        ``AdminDescribe``, ``AdminList``, ``AdminUpdate`` or ``AdminDelete``; ``fields``
        its fields without ``request_id``. Answered by :class:`AdminReplied` (delete:
        :class:`RequestSucceeded`).

        Returns:
            The request id.

        Raises:
            LocalProtocolError: not an admin message, bad fields, or as :meth:`publish`.
        """
        if _LANES.get(kind) != "admin":
            raise LocalProtocolError(f"{kind.__name__} is not an admin request")
        return self._request(kind, now, timeout, stream_id, **fields)

    def reauthenticate(
        self,
        token: str,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Give the broker a new bearer token for this connection (``Reauthenticate``):
        :class:`RequestSucceeded` once the connection's rights are the new token's, or
        :class:`RequestFailed` (``UNAUTHENTICATED``: refused, the old rights stand until
        their own expiry; ``FORBIDDEN``: another tenant or subject). Allowed while going
        away. Sent on the control stream unless ``stream_id`` says otherwise.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the broker did not agree to ``token-refresh`` in
                ``Welcome``, or the connection is not ``READY`` or going away.
        """
        if TOKEN_REFRESH not in self.capabilities:
            raise LocalProtocolError(f"the broker did not agree to {TOKEN_REFRESH!r}")
        sid = CONTROL_STREAM_ID if stream_id is None else stream_id
        return self._request(m.Reauthenticate, now, timeout, sid, token=token)

    def exchange_token(
        self,
        id_token: str,
        *,
        now: float,
        timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Exchange an external identity token for a Felix token (``TokenExchange``):
        :class:`TokenReceived` with the Felix token, which is from then on the
        connection's credential (on a connection that had none, this is its login), or
        :class:`RequestFailed` (``UNAUTHENTICATED`` with ``details.reason``; before a login
        the broker then closes the connection). Allowed while going away. Sent on the
        control stream unless ``stream_id`` says otherwise.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the broker did not agree to ``token-exchange`` in
                ``Welcome``, or the connection is not ``READY`` or going away.
        """
        if TOKEN_EXCHANGE not in self.capabilities:
            raise LocalProtocolError(f"the broker did not agree to {TOKEN_EXCHANGE!r}")
        sid = CONTROL_STREAM_ID if stream_id is None else stream_id
        return self._request(m.TokenExchange, now, timeout, sid, id_token=id_token)

    def ping(self, *, now: float, timeout: float | None = None) -> int:
        """Send a ``Ping`` on the control stream: :class:`PongReceived` or
        :class:`RequestTimedOut` (with the nonce as request id).

        Returns:
            The nonce.

        Raises:
            LocalProtocolError: the connection is not ``READY`` or going away.
        """
        self._transition(ConnInput.PING, local=True)
        nonce = self._pending.allocate()
        self._send(CONTROL_STREAM_ID, m.Ping(nonce=nonce))
        self._pending.track(nonce, m.Ping, CONTROL_STREAM_ID, self._deadline(now, timeout))
        return nonce

    # ------------------------------------------------------------- request helpers

    def _request(
        self,
        kind: type[m.Message],
        now: float,
        timeout: float | None,
        stream_id: int | None,
        /,
        **fields: Any,
    ) -> int:
        self._transition(_FINISH if kind in _FINISHING else _REQUEST, local=True)
        rid = self._pending.allocate()
        if "request_id" in fields:
            raise LocalProtocolError(f"{kind.__name__}: request_id is set by the connection")
        fields["request_id"] = rid
        # Checked as the broker's decoder will check it, encoded without a message object.
        frame = encode_fields(kind, fields)
        sid = self._request_stream(kind, stream_id)
        self._send_frame(sid, frame, kind)
        if fields.get("ack") == _ACK_NONE:
            self._pending.forget_late(rid, kind, report=True)
            return rid
        req = self._pending.track(rid, kind, sid, self._deadline(now, timeout))
        if kind is m.Subscribe:
            req.feed = _Feed(
                is_sub=True,
                request_id=rid,
                messages=fields["credit_messages"],
                nbytes=fields["credit_bytes"],
            )
        elif kind is m.Consume:
            req.feed = _Feed(is_sub=False, request_id=rid)
        return rid

    def _settle(
        self,
        kind: type[m.Ack] | type[m.Nack],
        consumer_id: int,
        delivery_ids: Sequence[int],
        now: float,
        timeout: float | None,
        confirm: bool,
        stream_id: int | None,
        **extra: Any,
    ) -> int | None:
        feed = self._feed(self._consumers, consumer_id, "consumer")
        self._transition(ConnInput.FINISH, local=True)
        ids = list(delivery_ids)
        if not ids or len(set(ids)) != len(ids) or not feed.awaiting.issuperset(ids):
            raise LocalProtocolError(
                f"consumer {consumer_id}: deliveries {ids} are not all awaiting settlement"
            )
        feed.move(FeedInput.CREDIT, local=True)
        if confirm:
            rid = self._request(
                kind, now, timeout, stream_id, consumer_id=consumer_id, delivery_ids=ids, **extra
            )
        else:
            frame = encode_fields(kind, {"consumer_id": consumer_id, "delivery_ids": ids, **extra})
            self._send_frame(self._request_stream(kind, stream_id), frame, kind)
            rid = None
        feed.awaiting.difference_update(ids)
        return rid

    def _feed(self, table: dict[int, _Feed], feed_id: int, what: str) -> _Feed:
        feed = table.get(feed_id)
        if feed is None or feed.state is FeedState.PENDING:
            raise LocalProtocolError(f"unknown {what} {feed_id}")
        return feed

    # --------------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """Return the earliest request or handshake deadline, or ``None``."""
        earliest = self._pending.earliest() or None  # 0.0 counts as none, as it always did
        handshake = self._handshake_deadline
        if handshake and (earliest is None or handshake < earliest):
            return handshake
        return earliest

    def handle_timer(self, now: float) -> None:
        """Time out what is due: the handshake (closes the connection with ``TIMEOUT``)
        and requests (:class:`RequestTimedOut`).

        Args:
            now: the current time.
        """
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            if self._state is ConnState.HANDSHAKING:
                self._terminate(
                    ErrorCode.TIMEOUT, "handshake timed out", by_peer=False, request_close=True
                )
        for rid, req in self._pending.expired(now):
            if req.feed is not None:
                self._drop_pending_feed(req.feed)
            if not req.internal:
                self._events.append(ev.RequestTimedOut(request_id=rid))

    # ------------------------------------------------------------- request helpers

    def _deadline(self, now: float, timeout: float | None) -> float | None:
        timeout = self._default_timeout if timeout is None else timeout
        return None if timeout is None else now + timeout

    def _request_stream(self, kind: type[m.Message], stream_id: int | None) -> int:
        if stream_id is None:
            lane = _LANES[kind]
            sid = self._lanes.get(lane)
            if sid is None:
                sid = self._lanes[lane] = self._next_stream
                self._next_stream += 4
                self._request_streams.add(sid)
            return sid
        if stream_id != CONTROL_STREAM_ID and stream_id not in self._request_streams:
            raise LocalProtocolError(f"stream {stream_id} is not an open request stream")
        return stream_id

    def _internal(self, kind: type[m.Message], **fields: Any) -> None:
        """Send a request whose outcome nobody waits for (undoing a late subscription)."""
        if self._state not in (ConnState.READY, ConnState.GOING_AWAY):
            return
        rid = self._pending.allocate()
        sid = self._request_stream(kind, None)
        factory: Any = kind
        self._send(sid, factory(request_id=rid, **fields))
        self._pending.track(rid, kind, sid, None).internal = True

    def _grant(self, feed: _Feed, messages: int, nbytes: int) -> None:
        feed.remaining_messages += messages
        feed.remaining_bytes += nbytes
        assert feed.feed_id is not None
        self._send(
            CONTROL_STREAM_ID,
            m.Credit(subscription_id=feed.feed_id, messages=messages, bytes=nbytes),
        )

    def _retire_stream(self, sid: int) -> None:
        self._request_streams.discard(sid)
        for lane, lane_sid in list(self._lanes.items()):
            if lane_sid == sid:
                del self._lanes[lane]

    # ------------------------------------------------------------------ receiving

    def _classify(self, stream_id: int) -> StreamKind:
        if stream_id == CONTROL_STREAM_ID:
            return StreamKind.CONTROL
        if is_client_bidi(stream_id) and stream_id < self._next_stream:
            return StreamKind.REQUEST
        if is_server_uni(stream_id):
            return StreamKind.FEED
        if stream_id % 4 == 1:
            return StreamKind.REFUSED  # broker-opened bidirectional: Felix does not use them
        raise LocalProtocolError(f"the broker cannot send on stream {stream_id}")

    def _receive(self, stream: StreamState, msg: m.Message) -> None:
        state = self._state
        kind = stream.kind
        if kind is _FEED_STREAM and state in _SERVING:
            self._on_feed_frame(stream, msg)
            return
        if isinstance(msg, m.Error) and msg.request_id is None:
            if state is _HANDSHAKING:
                self._terminate(
                    msg.code, msg.message, by_peer=True, request_close=True, details=msg.details
                )
            else:
                self._events.append(
                    ev.ErrorReceived(
                        stream_id=stream.stream_id,
                        code=msg.code,
                        message=msg.message,
                        details=msg.details,
                    )
                )
            return
        control = kind is _CONTROL_STREAM
        if state is _HANDSHAKING and control and isinstance(msg, m.Welcome):
            self._on_welcome(msg)
            return
        if state not in _SERVING:
            raise UnexpectedMessage(f"{type(msg).__name__} before Welcome")
        if control and isinstance(msg, m.Ping):
            self._send(CONTROL_STREAM_ID, m.Pong(nonce=msg.nonce))
        elif control and isinstance(msg, m.Pong):
            self._on_reply(stream, msg, msg.nonce)
        elif control and isinstance(msg, m.GoAway):
            self._transition(ConnInput.GOAWAY, local=False)
            self._events.append(
                ev.GoAwayReceived(reason=msg.reason, deadline_ms=msg.deadline_ms, code=msg.code)
            )
        elif type(msg) in _REPLY_KINDS and not isinstance(msg, m.Pong):
            self._on_reply(stream, msg, msg.request_id)  # type: ignore[attr-defined]
        else:
            raise UnexpectedMessage(
                f"{type(msg).__name__} is not expected from the broker on stream {stream.stream_id}"
            )

    def _on_welcome(self, msg: m.Welcome) -> None:
        if msg.version not in self._hello.versions:
            raise UnexpectedMessage(
                f"Welcome chose version {msg.version}, not one we offered", fatal=True
            )
        self._transition(ConnInput.WELCOME, local=False)
        self._handshake_deadline = None
        self.limits = dict(msg.limits)
        self._max_send_frame = msg.limits.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        offered = set(self._hello.capabilities)
        self.capabilities = [c for c in msg.capabilities if c in offered]
        self._events.append(
            ev.Welcomed(
                version=msg.version,
                server_id=msg.server_id,
                region=msg.region,
                capabilities=list(self.capabilities),
                limits=self.limits,
                tenant=msg.tenant,
            )
        )

    def _on_reply(self, stream: StreamState, msg: m.Message, rid: int) -> None:
        req = self._pending.take(rid)
        if req is None:
            late = self._pending.late(rid)
            if late is None:
                raise UnexpectedMessage(f"{type(msg).__name__} answers unknown request {rid}")
            if isinstance(msg, m.Error) and late[1]:
                self._events.append(_failed(rid, msg.code, msg.message, msg.details))
            elif isinstance(msg, (m.Subscribed, m.Consuming)):
                # Undo it; remember the id so that its stream, if still to come, is ignored.
                self._pending.forget_late(rid, late[0], report=False)
                if isinstance(msg, m.Subscribed):
                    self._internal(m.Unsubscribe, subscription_id=msg.subscription_id)
                else:
                    self._internal(m.CancelConsume, consumer_id=msg.consumer_id)
            return
        problem = None
        if req.stream_id != stream.stream_id:
            problem = f"reply to request {rid} arrived on stream {stream.stream_id}"
        elif not isinstance(msg, (m.Error, REPLY_TYPES[req.kind])):
            problem = f"{type(msg).__name__} does not answer {req.kind.__name__} {rid}"
        if problem is not None or isinstance(msg, m.Error):
            if req.feed is not None:
                self._drop_pending_feed(req.feed)
            if not req.internal:
                if isinstance(msg, m.Error) and problem is None:
                    failed = _failed(rid, msg.code, msg.message, msg.details, msg.retryable)
                else:
                    failed = _failed(rid, ErrorCode.UNEXPECTED_MESSAGE, problem or "")
                self._events.append(failed)
            if problem is not None:
                raise UnexpectedMessage(problem, request_id=rid)
            return
        if req.feed is not None:
            self._started(req.feed, msg)
        elif not req.internal:
            self._events.append(_success_event(msg))

    def _started(self, feed: _Feed, msg: m.Message) -> None:
        if isinstance(msg, m.Subscribed):
            fid, table = msg.subscription_id, self._subs
        else:
            assert isinstance(msg, m.Consuming)
            fid, table = msg.consumer_id, self._consumers
        if (feed.feed_id is None and fid in table) or feed.feed_id not in (None, fid):
            self._drop_pending_feed(feed)
            self._events.append(
                _failed(feed.request_id, ErrorCode.UNEXPECTED_MESSAGE, f"id {fid} clashes")
            )
            raise UnexpectedMessage(f"reply id {fid} clashes with the stream's start frame")
        feed.feed_id = fid
        table[fid] = feed
        feed.move(FeedInput.STARTED, local=False)
        if isinstance(msg, m.Subscribed):
            self._events.append(
                ev.SubscriptionStarted(
                    request_id=msg.request_id, subscription_id=fid, first_offset=msg.first_offset
                )
            )
        else:
            self._events.append(ev.ConsumerStarted(request_id=feed.request_id, consumer_id=fid))
        buffered, feed.buffered = feed.buffered, []
        for frame in buffered:
            self._deliver(feed, frame)
        self._top_up(feed)

    def _on_feed_frame(self, stream: StreamState, msg: m.Message) -> None:
        feed: _Feed | None = stream.owner
        if (
            type(msg) is m.EventBatch
            and feed is not None
            and feed.is_sub
            and feed.state is FeedState.ACTIVE
        ):
            # A subscription's records: the general path below, for the case that is every
            # record's (an ACTIVE feed takes DATA and stays ACTIVE), without its type tests.
            count = len(msg.payloads)
            if count > feed.remaining_messages or feed.remaining_bytes <= 0:
                raise FlowControlError(
                    f"subscription {feed.feed_id}: batch of {count} records exceeds the "
                    f"credit ({feed.remaining_messages} records, {feed.remaining_bytes} bytes)"
                )
            feed.remaining_messages -= count
            feed.remaining_bytes -= batch_record_bytes(msg)
            assert feed.feed_id is not None
            self._events.append(ev.EventsReceived(subscription_id=feed.feed_id, batch=msg))
            self._top_up(feed)
            return
        if isinstance(msg, (m.SubscriptionStreamStart, m.ConsumerStreamStart)):
            if feed is not None:
                raise UnexpectedMessage("a second start frame on a feed stream", fatal=True)
            self._bind(stream, msg)
            return
        if feed is None:
            raise UnexpectedMessage(f"{type(msg).__name__} before the start frame", fatal=True)
        if not isinstance(msg, _SUB_FRAMES if feed.is_sub else _CONSUMER_FRAMES):
            raise UnexpectedMessage(f"{type(msg).__name__} on a feed stream", fatal=True)
        if isinstance(msg, (m.SubscriptionEnded, m.ConsumerEnded)):
            end_id = msg.consumer_id if isinstance(msg, m.ConsumerEnded) else msg.subscription_id
            if end_id != feed.feed_id:
                raise UnexpectedMessage(f"end frame names {end_id}, not {feed.feed_id}")
            if feed.state is FeedState.PENDING:
                feed.move(FeedInput.ENDED, local=False)
        else:
            feed.move(FeedInput.DATA, local=False)
        if isinstance(msg, m.EventBatch):
            count, nbytes = len(msg.payloads), batch_record_bytes(msg)
            if count > feed.remaining_messages or feed.remaining_bytes <= 0:
                raise FlowControlError(
                    f"subscription {feed.feed_id}: batch of {count} records exceeds the "
                    f"credit ({feed.remaining_messages} records, {feed.remaining_bytes} bytes)"
                )
            feed.remaining_messages -= count
            feed.remaining_bytes -= nbytes
        elif isinstance(msg, m.Delivery):
            if msg.delivery_id in feed.awaiting:
                raise UnexpectedMessage(f"delivery {msg.delivery_id} is already awaiting ack")
            feed.awaiting.add(msg.delivery_id)
        elif isinstance(msg, m.DeliveryBatch):
            self._await_batch(feed, msg)
        if feed.state is FeedState.PENDING:
            if len(feed.buffered) >= self._max_early:
                raise FlowControlError(f"more than {self._max_early} frames before the reply")
            feed.buffered.append(msg)
            return
        self._deliver(feed, msg)
        self._top_up(feed)

    def _await_batch(self, feed: _Feed, batch: m.DeliveryBatch) -> None:
        """Check a ``DeliveryBatch`` (agreed, no id awaiting an ack already or twice in it)
        and note its ids as awaiting their ack."""
        if DELIVERY_BATCH not in self.capabilities:
            raise UnexpectedMessage(f"DeliveryBatch without the {DELIVERY_BATCH!r} capability")
        awaiting = feed.awaiting
        ids = batch.delivery_ids
        fresh = set(ids)
        if len(fresh) != len(ids) or not awaiting.isdisjoint(fresh):
            seen: set[int] = set()
            for did in ids:
                if did in awaiting or did in seen:
                    raise UnexpectedMessage(f"delivery {did} is already awaiting ack")
                seen.add(did)
        awaiting.update(fresh)

    def _bind(
        self, stream: StreamState, msg: m.SubscriptionStreamStart | m.ConsumerStreamStart
    ) -> None:
        is_sub = isinstance(msg, m.SubscriptionStreamStart)
        fid = msg.subscription_id if isinstance(msg, m.SubscriptionStreamStart) else msg.consumer_id
        feed = (self._subs if is_sub else self._consumers).get(fid)
        if feed is None:
            req = self._pending.get(msg.request_id)
            feed = req.feed if req is not None else None
            if feed is None and self._pending.is_late(msg.request_id):
                stream.broken = True  # its request timed out; the late reply undoes it
                return
        if (
            feed is None
            or feed.is_sub != is_sub
            or feed.request_id != msg.request_id
            or feed.stream_id is not None
        ):
            raise UnexpectedMessage(
                f"start frame for {fid} matches no pending request {msg.request_id}", fatal=True
            )
        feed.move(FeedInput.STREAM_OPENED, local=False)
        if feed.feed_id is None:
            feed.feed_id = fid
            (self._subs if is_sub else self._consumers)[fid] = feed
        feed.stream_id = stream.stream_id
        stream.owner = feed

    def _deliver(self, feed: _Feed, msg: m.Message) -> None:
        """Emit the event for a frame of an ACTIVE or CLOSING feed (already validated)."""
        fid = feed.feed_id
        assert fid is not None
        if feed.state is FeedState.CLOSED:
            return  # a replayed frame that followed the end frame
        if isinstance(msg, m.EventBatch):
            self._events.append(ev.EventsReceived(subscription_id=fid, batch=msg))
        elif isinstance(msg, m.SubscriptionGap):
            self._events.append(
                ev.GapReported(subscription_id=fid, missed=msg.missed, next_offset=msg.next_offset)
            )
        elif isinstance(msg, m.Delivery):
            self._events.append(ev.DeliveryReceived(consumer_id=fid, delivery=msg))
        elif isinstance(msg, m.DeliveryBatch):
            if self._batch_deliveries:
                self._events.append(ev.DeliveriesReceived(consumer_id=fid, batch=msg))
                return
            self._events.extend(
                ev.DeliveryReceived(consumer_id=fid, delivery=d) for d in unbatch(msg)
            )
        elif isinstance(msg, m.SubscriptionEnded):
            self._end_feed(feed, msg.reason, msg.message, msg.next_offset)
        elif isinstance(msg, m.ConsumerEnded):
            self._end_feed(feed, msg.reason, msg.message)

    def _end_feed(
        self, feed: _Feed, reason: str, message: str = "", next_offset: int | None = None
    ) -> None:
        """End an ACTIVE or CLOSING feed with its event (undoing it if it failed)."""
        undo = feed.failed and feed.state is FeedState.ACTIVE
        feed.move(FeedInput.ENDED, local=False)
        fid = feed.feed_id
        assert fid is not None
        feed.awaiting.clear()
        if feed.is_sub:
            self._subs.pop(fid, None)
            if undo:
                self._internal(m.Unsubscribe, subscription_id=fid)
            self._events.append(
                ev.SubscriptionEnded(
                    subscription_id=fid, reason=reason, message=message, next_offset=next_offset
                )
            )
        else:
            self._consumers.pop(fid, None)
            if undo:
                self._internal(m.CancelConsume, consumer_id=fid)
            self._events.append(ev.ConsumerEnded(consumer_id=fid, reason=reason, message=message))

    def _feed_broken(self, feed: _Feed | None, message: str) -> None:
        """The feed's stream failed: end it with ``reason="error"`` (now or on replay)."""
        if feed is None or feed.state is FeedState.CLOSED:
            return
        feed.failed = True
        if feed.state is FeedState.PENDING:
            assert feed.feed_id is not None
            end: m.Message = (
                m.SubscriptionEnded(subscription_id=feed.feed_id, reason="error", message=message)
                if feed.is_sub
                else m.ConsumerEnded(consumer_id=feed.feed_id, reason="error", message=message)
            )
            feed.buffered.append(end)
        else:
            self._end_feed(feed, m.EndReason.ERROR.value, message)

    def _drop_pending_feed(self, feed: _Feed) -> None:
        """Forget a feed whose request failed or timed out (no end event: never started)."""
        feed.move(FeedInput.REFUSED, local=False)
        if feed.feed_id is not None:
            (self._subs if feed.is_sub else self._consumers).pop(feed.feed_id, None)
        if feed.stream_id is not None:
            stream = self._streams.get(feed.stream_id)
            if stream is not None:
                stream.broken = True
        feed.buffered.clear()

    def _top_up(self, feed: _Feed) -> None:
        frac = self._auto_credit
        if frac is None or not feed.is_sub or feed.state is not FeedState.ACTIVE:
            return
        used_messages = feed.credit_messages - feed.remaining_messages
        used_bytes = feed.credit_bytes - feed.remaining_bytes
        if used_messages >= frac * feed.credit_messages or used_bytes >= frac * feed.credit_bytes:
            self._grant(feed, max(used_messages, 0), max(used_bytes, 0))

    def _requests_gone(self, stream_id: int, code: int, message: str) -> None:
        """Fail every request pending on a request stream that can no longer answer."""
        for rid, req in self._pending.on_stream(stream_id):
            if req.feed is not None:
                self._drop_pending_feed(req.feed)
            if not req.internal:
                self._events.append(_failed(rid, code, message))
        self._retire_stream(stream_id)
        self._end_stream(stream_id)

    def _stream_ended(self, stream: StreamState) -> None:
        if stream.kind is StreamKind.CONTROL:
            self._terminate(
                ErrorCode.CONNECTION_LOST,
                "the broker ended the control stream",
                by_peer=True,
                request_close=True,
            )
        elif stream.kind is StreamKind.REQUEST:
            self._requests_gone(
                stream.stream_id, ErrorCode.CONNECTION_LOST, "the broker ended the request stream"
            )
        elif stream.kind is StreamKind.FEED and not stream.broken:
            feed: _Feed | None = stream.owner
            if feed is not None and feed.state is not FeedState.CLOSED:
                text = f"stream {stream.stream_id} ended without an end frame"
                self._handle_violation(stream, UnexpectedMessage(text))
                self._feed_broken(feed, text)

    def _stream_reset(self, stream_id: int, error_code: int, stream: StreamState | None) -> None:
        text = f"the broker reset stream {stream_id} (code {error_code})"
        if stream_id == CONTROL_STREAM_ID:
            self._terminate(ErrorCode.CONNECTION_LOST, text, by_peer=True, request_close=True)
        elif is_client_bidi(stream_id):
            self._requests_gone(stream_id, ErrorCode.CONNECTION_LOST, text)
        elif stream is not None:
            self._feed_broken(stream.owner, text)

    def _stream_failed(self, stream: StreamState, exc: RemoteProtocolError) -> None:
        if stream.kind is StreamKind.REQUEST:
            self._requests_gone(stream.stream_id, exc.error_code, exc.message)
        elif stream.kind is StreamKind.FEED:
            self._feed_broken(stream.owner, exc.message)

    def _control_failed(self, exc: RemoteProtocolError) -> None:
        self._terminate(exc.error_code, exc.message, by_peer=False, request_close=True)

    def _fail_everything(self, code: int, reason: str) -> None:
        for rid, req in self._pending.clear():
            if not req.internal:
                self._events.append(_failed(rid, ErrorCode.CONNECTION_LOST, reason))
        self._handshake_deadline = None
        for feed in [*self._subs.values(), *self._consumers.values()]:
            started = feed.state in (FeedState.ACTIVE, FeedState.CLOSING)
            feed.move(FeedInput.LOST, local=False)
            if started and feed.feed_id is not None:
                if feed.is_sub:
                    end: ev.Event = ev.SubscriptionEnded(
                        subscription_id=feed.feed_id, reason="error", message=reason
                    )
                else:
                    end = ev.ConsumerEnded(consumer_id=feed.feed_id, reason="error", message=reason)
                self._events.append(end)
        self._subs.clear()
        self._consumers.clear()


_REPLY_KINDS = frozenset(REPLY_TYPES.values()) | {m.Error}
_SUB_FRAMES = (m.EventBatch, m.SubscriptionGap, m.SubscriptionEnded)
_CONSUMER_FRAMES = (m.Delivery, m.DeliveryBatch, m.ConsumerEnded)


def _failed(
    rid: int,
    code: int,
    message: str,
    details: dict[str, Any] | None = None,
    retryable: bool | None = None,
) -> ev.RequestFailed:
    if retryable is None:
        retryable = code in RETRYABLE
    return ev.RequestFailed(
        request_id=rid, code=code, message=message, retryable=retryable, details=details or {}
    )


_CACHE_VALUE_RECEIVED = make_record_factory(ev.CacheValueReceived)
_CACHE_PUT_COMPLETED = make_record_factory(ev.CachePutCompleted)
_PUBLISH_ACKED = make_record_factory(ev.PublishAcked)
_REQUEST_SUCCEEDED = make_record_factory(ev.RequestSucceeded)


def _success_event(msg: m.Message) -> ev.Event:
    """The event for a matched success reply (not Subscribed/Consuming). The hot replies'
    events are filled without the frozen ``__init__`` (see ``make_record_factory``)."""
    if type(msg) is m.CacheValue:
        return _CACHE_VALUE_RECEIVED(
            msg.request_id, msg.found, msg.value, msg.version, msg.ttl_remaining_ms
        )
    if type(msg) is m.PublishAck:
        return _PUBLISH_ACKED(msg.request_id, msg.first_offset, msg.last_offset)
    if type(msg) is m.CachePutResult:
        return _CACHE_PUT_COMPLETED(msg.request_id, msg.stored, msg.version)
    if type(msg) is m.Ok:
        return _REQUEST_SUCCEEDED(msg.request_id)
    if isinstance(msg, m.Pong):
        return ev.PongReceived(nonce=msg.nonce)
    if isinstance(msg, m.CacheDeleted):
        return ev.CacheDeleteCompleted(request_id=msg.request_id, deleted=msg.deleted)
    if isinstance(msg, m.AdminResource):
        return ev.AdminReplied(request_id=msg.request_id, resource=msg.resource)
    if isinstance(msg, m.AdminResources):
        return ev.AdminReplied(request_id=msg.request_id, resources=msg.resources)
    if isinstance(msg, m.TokenIssued):
        return ev.TokenReceived(
            request_id=msg.request_id, token=msg.token, expires_in_ms=msg.expires_in_ms
        )
    assert isinstance(msg, m.Ok)
    return ev.RequestSucceeded(request_id=msg.request_id)


def unbatch(batch: m.DeliveryBatch) -> list[m.Delivery]:
    """The deliveries of a ``DeliveryBatch``, in order, each as the ``Delivery`` frame that
    would have carried it alone (the batch was validated when decoded, so each is valid).

    Each is filled through the decoders' mutable twin of ``Delivery`` (see
    ``_schema._builder_class``): about 0.25 us a delivery against 1.3 us for the frozen
    ``__init__``, on the consumer's hot path.
    """
    n = len(batch.payloads)
    rows = zip(
        batch.delivery_ids,
        batch.attempts,
        batch.offsets,
        batch.payloads,
        batch.timestamps_ms or [0] * n,
        batch.keys or [None] * n,
        batch.headers or [None] * n,
        strict=True,
    )
    builder, cls, new = _DELIVERY_BUILDER, m.Delivery, object.__new__
    if builder is None:  # pragma: no cover - CPython 3.11+ has the twin
        return [
            cls(
                delivery_id=did,
                attempt=attempt,
                offset=offset,
                payload=payload,
                timestamp_ms=stamp,
                key=key,
                headers=hdrs,
            )
            for did, attempt, offset, payload, stamp, key, hdrs in rows
        ]
    out = []
    for did, attempt, offset, payload, stamp, key, hdrs in rows:
        d = new(builder)
        d.delivery_id = did
        d.attempt = attempt
        d.offset = offset
        d.payload = payload
        d.timestamp_ms = stamp
        d.key = key
        d.headers = hdrs
        d.__class__ = cls
        out.append(d)
    return out


_DELIVERY_BUILDER: Any = _builder_class(m.Delivery)


def batch_record_bytes(batch: m.EventBatch) -> int:
    """The bytes an event batch uses of a subscription's byte credit.

    A record's size is ``len(payload)`` plus ``len(key)`` plus, per header, the UTF-8 length
    of its name and the length of its value: the same measure the broker counts.
    """
    total = sum(map(len, batch.payloads))
    if batch.keys is not None:
        total += sum(len(k) for k in batch.keys if k is not None)
    if batch.headers is not None:
        for hdrs in batch.headers:
            if hdrs:
                total += sum(len(name.encode()) + len(value) for name, value in hdrs.items())
    return total
