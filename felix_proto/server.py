"""The broker side of a Felix connection, as a sans-IO state machine.

Theory of operation
-------------------

:class:`ServerConnection` speaks Felix over the QUIC streams of one accepted connection.
The glue feeds it QUIC stream events and writes what it returns (inputs and outputs: see
:mod:`felix_proto.connection`); the broker reads :mod:`felix_proto.events` and answers
through the API. It never calls back into the broker: every decision is an event, every
answer an API call.

Handshake (table :data:`~felix_proto._state.SERVER_CONNECTION`). The first ``Hello`` on
the control stream (stream 0) is checked for a common version; none gives
``Error(UNSUPPORTED_VERSION)`` listing ours, then a close. Otherwise
:class:`HandshakeRequested` carries the ``Hello``, the chosen version and the common
capabilities; the broker authenticates and calls :meth:`ServerConnection.accept` (writes
``Welcome`` with ``server_id``, ``region``, capabilities and limits, ``max_frame_size``
always among them) or :meth:`ServerConnection.reject` (writes ``Error``, then closes). A
control stream that opens with anything but ``Hello`` (or carries anything else before
``accept``) is closed with ``Error(UNEXPECTED_MESSAGE)``; a request arriving on a request
stream before ``accept`` is answered ``Error(UNEXPECTED_MESSAGE)`` with its id and the
connection goes on. A version-1 header on the control stream is answered with a
version-1 JSON error frame (the reference clients can read it), then the connection closes.

Requests. Every request becomes :class:`RequestReceived` and is remembered by request id
with the stream it came on. :meth:`~ServerConnection.send_reply` routes the reply there and
checks that it is the reply kind the request expects; :meth:`~ServerConnection.send_error`
fails it. A reused in-flight request id is answered with an ``Error`` without id. When the
client has ended a request stream and every request on it is answered, the broker's side
is ended too. ``ack=NONE`` publishes are not awaited, but a ``send_error`` for them is still
routed (the last 4096 are remembered). After :meth:`~ServerConnection.goaway`, new requests
are answered ``SHUTTING_DOWN`` by the machine itself; acks, nacks, credit, unsubscribe and
cancel still reach the broker; when the deadline passes the connection closes.

Subscriptions and consumers (table :data:`~felix_proto._state.SERVER_FEED`).
:meth:`~ServerConnection.open_subscription` opens a unidirectional stream (ids 3, 7, 11
...) and writes ``SubscriptionStreamStart``; the ``Subscribed`` reply then goes out with
``send_reply`` on the request stream. :meth:`~ServerConnection.send_event_frame` writes an
*already encoded* ``EventBatch`` frame (from :func:`~felix_proto.codec.encode_event_batch`,
shared by every subscriber at that position) and debits the subscription's credit, which
starts at the ``Subscribe``'s window and grows with each ``Credit`` (:class:`CreditGranted`).
:meth:`~ServerConnection.end_subscription` writes ``SubscriptionEnded`` and ends the stream.
A client that stops a feed stream (STOP_SENDING or reset, fed in as :meth:`stream_reset`)
cancels it: :class:`SubscriptionCancelled` / :class:`ConsumerCancelled`. Consumers work the
same way with ``open_consumer``, ``send_delivery`` and ``end_consumer``;
``send_delivery_batch`` writes several deliveries in one ``DeliveryBatch`` frame, only to a
client that agreed to the ``delivery-batch`` capability (``send_delivery_frame``: one
already encoded by :func:`~felix_proto.codec.encode_delivery_batch`).

Robustness. The broker never dies from a peer's bytes: every violation is raised inside as
a :class:`~felix_proto.errors.RemoteProtocolError` and answered at the one receive entry
point: a bad message with ``Error`` (request id when known) while the stream goes on; a
framing error on a request stream with ``Error`` and the end of that stream; a framing
error on the control stream with ``Error`` and a close. Replies for requests whose stream
is gone, and any reply after the connection ended, are dropped silently (the broker may
still be finishing work); every other API misuse raises
:class:`~felix_proto.errors.LocalProtocolError`. Back-pressure: :meth:`buffered_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from . import events as ev
from . import messages as m
from ._schema import make_record_factory
from ._state import (
    SERVER_CONNECTION,
    SERVER_FEED,
    ConnInput,
    ConnState,
    FeedInput,
    ServerFeedState,
    UnexpectedMessage,
    transition,
)
from .codec import encode, encode_v1_error
from .connection import (
    CONTROL_STREAM_ID,
    DELIVERY_BATCH,
    MIN_MAX_FRAME_SIZE,
    REPLY_TYPES,
    Connection,
    StreamKind,
    StreamState,
    clip_text,
    is_client_bidi,
)
from .errors import (
    RETRYABLE,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    UnsupportedVersion,
)
from .frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, SUPPORTED_VERSIONS, V1_VERSION

__all__ = ["ServerConnection"]

_FINISHING = frozenset(
    {m.Ack, m.Nack, m.Unsubscribe, m.CancelConsume, m.TokenExchange, m.Reauthenticate}
)
_REQUESTS = frozenset(REPLY_TYPES) - {m.Ping}
_FEED_REPLIES = (m.Subscribed, m.Consuming)
_SERVING = frozenset({ConnState.READY, ConnState.GOING_AWAY})
# The enum members and message types the request path tests, as module globals (an enum
# member looked up on its class costs ~0.1 us: see felix_proto.connection._CLOSED).
_GOING_AWAY = ConnState.GOING_AWAY
_FINISH = ConnInput.FINISH
_REQUEST = ConnInput.REQUEST
_REQUEST_STREAM = StreamKind.REQUEST
_ACK_NONE = m.AckMode.NONE.value
_ACKED = frozenset({m.Publish, m.PublishBatch, m.Enqueue})
"""The requests with an ``ack`` mode (``NONE``: no reply is awaited)."""
_REQUEST_RECEIVED = make_record_factory(ev.RequestReceived)
"""``RequestReceived(stream_id, message)`` without the frozen ``__init__`` (once a request)."""
_FORGET_AFTER = 4096


class _Request:
    __slots__ = ("feed", "message", "stream_id")

    def __init__(self, stream_id: int, message: m.Message) -> None:
        self.stream_id = stream_id
        self.message = message
        self.feed: _Feed | None = None


class _Feed:
    """A broker-side subscription (``is_sub``) or consumer stream."""

    __slots__ = ("feed_id", "is_sub", "messages", "nbytes", "request_id", "state", "stream_id")

    def __init__(self, is_sub: bool, feed_id: int, request_id: int, stream_id: int) -> None:
        self.is_sub = is_sub
        self.feed_id = feed_id
        self.request_id = request_id
        self.stream_id = stream_id
        self.state = ServerFeedState.OPEN
        self.messages = 0
        self.nbytes = 0

    def move(self, event: FeedInput, *, local: bool) -> None:
        state = SERVER_FEED.get((self.state, event))
        if state is None:  # not in the table: raise as transition() does, naming the feed
            what = f"{'subscription' if self.is_sub else 'consumer'} {self.feed_id}"
            state = transition(SERVER_FEED, self.state, event, what=what, local=local)
        self.state = state


class ServerConnection(Connection):
    """The broker side of one Felix connection (see the module docstring).

    Inputs: the API calls below, :meth:`stream_data_received`, :meth:`stream_reset`,
    :meth:`connection_lost`, :meth:`handle_timer`. Outputs: :meth:`next_event`,
    :meth:`data_to_send`, :meth:`get_timer`.

    Args:
        server_id: stable identifier of this broker process, sent in ``Welcome``.
        region: the broker's sovereign region.
        capabilities: optional features offered (the ``Welcome`` lists the common ones).
        limits: limits announced in ``Welcome`` (``max_frame_size`` is added).
        max_frame_size: the largest frame payload accepted from the client.
        versions: protocol versions spoken, preferred first.
    """

    _table = SERVER_CONNECTION
    _initial_state = ConnState.AWAITING_HELLO

    def __init__(
        self,
        *,
        server_id: str,
        region: str = "",
        capabilities: Sequence[str] = (),
        limits: Mapping[str, int] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
    ) -> None:
        super().__init__(max_frame_size=max_frame_size)
        self._server_id = server_id
        self._region = region
        self._capabilities = list(capabilities)
        self._limits = dict(limits or {})
        self._versions = tuple(versions)
        self._version = 0
        self._agreed: list[str] = []
        self.hello: m.Hello | None = None
        """The client's ``Hello`` once it arrived."""
        self._requests: dict[int, _Request] = {}
        self._unawaited: OrderedDict[int, int] = OrderedDict()
        self._open: dict[int, int] = {}
        self._subs: dict[int, _Feed] = {}
        self._consumers: dict[int, _Feed] = {}
        self._by_stream: dict[int, _Feed] = {}
        self._next_stream = 3
        self._pings: set[int] = set()
        self._next_nonce = 1
        self._goaway_deadline: float | None = None

    # ------------------------------------------------------------------- handshake

    def accept(self, *, limits: Mapping[str, int] | None = None, tenant: str | None = None) -> None:
        """Accept the handshake: write ``Welcome``.

        Args:
            limits: extra or overriding limits for this client (``max_frame_size`` is
                always this side's).
            tenant: the tenant assigned to the client's principal (``Welcome.tenant``;
                None: leave it out).

        Raises:
            LocalProtocolError: no handshake is awaiting an answer.
        """
        self._transition(ConnInput.ACCEPT, local=True)
        announced = {**self._limits, **(limits or {}), "max_frame_size": self._max_recv_frame}
        welcome = encode(
            m.Welcome(
                version=self._version,
                server_id=self._server_id,
                region=self._region,
                capabilities=self._agreed,
                limits=announced,
                tenant=tenant,
            )
        )
        if not self.fits(welcome):  # a huge server_id or region: say so rather than go silent
            self._close_with_error(
                ErrorCode.TOO_LARGE,
                f"the Welcome ({len(welcome) - HEADER_SIZE} bytes) exceeds the client's "
                f"max_frame_size {self._max_send_frame}",
                {"max_frame_size": self._max_send_frame},
            )
            return
        self._write(CONTROL_STREAM_ID, welcome)

    def reject(self, code: int, message: str, *, details: dict[str, Any] | None = None) -> None:
        """Refuse the handshake: write ``Error`` on the control stream, then close.

        Args:
            code: an :class:`~felix_proto.errors.ErrorCode`, e.g. ``UNAUTHENTICATED``.
            message: the explanation for the client.
            details: machine-readable extras.

        Raises:
            LocalProtocolError: no handshake is awaiting an answer.
        """
        if self._state is not ConnState.HANDSHAKING:
            raise LocalProtocolError(f"no handshake to reject in state {self._state.value}")
        self._close_with_error(code, message, details or {})

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection (:class:`CloseRequested`, cancellation events,
        :class:`ConnectionTerminated`). No-op once closed.

        Args:
            error_code: the QUIC application error code (0: no error).
            reason: the reason phrase.
        """
        self._terminate(error_code, reason, by_peer=False, request_close=True)

    def close_with_error(
        self, code: int, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        """Close the connection with a connection-level ``Error`` on the control stream
        (e.g. ``UNAUTHENTICATED`` when the client's token expires), then as :meth:`close`.
        No-op once closed.

        Args:
            code: an :class:`~felix_proto.errors.ErrorCode`, also the QUIC close code.
            message: the explanation (also the reason phrase).
            details: machine-readable extras.
        """
        if self.closed:
            return
        self._close_with_error(code, message, details or {})

    def goaway(
        self, reason: str, deadline_ms: int, *, now: float, code: int = ErrorCode.SHUTTING_DOWN
    ) -> None:
        """Announce shutdown: write ``GoAway``; new requests are refused from now on and
        the connection closes ``deadline_ms`` after ``now`` (see :meth:`get_timer`).

        Args:
            reason: human-readable reason.
            deadline_ms: milliseconds the client has to finish.
            now: the current time.
            code: the error code announced, ``SHUTTING_DOWN`` by default.

        Raises:
            LocalProtocolError: the handshake is not done, or the connection is closed.
        """
        self._transition(ConnInput.GOAWAY, local=True)
        goaway = m.GoAway(reason=clip_text(reason), deadline_ms=deadline_ms, code=int(code))
        self._send(CONTROL_STREAM_ID, goaway)
        deadline = now + deadline_ms / 1000
        if self._goaway_deadline is None or deadline < self._goaway_deadline:
            self._goaway_deadline = deadline

    def ping(self) -> int:
        """Write a ``Ping``; the answer is :class:`PongReceived`.

        Returns:
            The nonce.

        Raises:
            LocalProtocolError: the handshake is not done, or the connection is closed.
        """
        self._transition(ConnInput.PING, local=True)
        nonce = self._next_nonce
        self._next_nonce += 1
        self._pings.add(nonce)
        self._send(CONTROL_STREAM_ID, m.Ping(nonce=nonce))
        return nonce

    def get_timer(self) -> float | None:
        """Return the goaway deadline, or ``None``."""
        return self._goaway_deadline

    def handle_timer(self, now: float) -> None:
        """Close the connection (``SHUTTING_DOWN``) once the goaway deadline has passed.

        Args:
            now: the current time.
        """
        if self._goaway_deadline is not None and now >= self._goaway_deadline:
            self._goaway_deadline = None
            self._terminate(
                ErrorCode.SHUTTING_DOWN,
                "goaway deadline passed",
                by_peer=False,
                request_close=True,
            )

    # --------------------------------------------------------------------- replies

    def send_reply(self, message: m.Message) -> bool:
        """Answer a request with its success reply, on the stream it came on.

        ``Subscribed`` / ``Consuming`` need :meth:`open_subscription` / :meth:`open_consumer`
        first, with the same ids. Dropped silently if the request's stream is gone or the
        connection ended. A reply whose frame exceeds the client's ``max_frame_size`` is
        replaced by ``Error(TOO_LARGE)`` (details ``frame_bytes`` and ``max_frame_size``):
        a request is never left unanswered.

        The request stays pending until the reply is written: if encoding raises, the
        caller can still answer it with :meth:`send_error`.

        Args:
            message: the reply; its ``request_id`` names the request.

        Returns:
            False when the reply was replaced by ``Error(TOO_LARGE)``, else True.

        Raises:
            LocalProtocolError: no such pending request, the wrong reply kind for it, or a
                reply msgpack cannot encode (the request is still pending then).
        """
        if self.closed:
            return True
        rid = getattr(message, "request_id", None)
        req = self._requests.get(rid) if type(rid) is int else None
        if req is None or rid is None:
            raise LocalProtocolError(f"{type(message).__name__}: no pending request {rid}")
        if type(message) is not REPLY_TYPES[type(req.message)]:
            raise LocalProtocolError(
                f"{type(message).__name__} does not answer {type(req.message).__name__}"
            )
        if type(message) in _FEED_REPLIES:
            fid = message.subscription_id if isinstance(message, m.Subscribed) else None
            fid = message.consumer_id if isinstance(message, m.Consuming) else fid
            if req.feed is None or req.feed.feed_id != fid:
                raise LocalProtocolError(f"request {rid}: open its stream for {fid} first")
        frame = encode(message)
        if len(frame) - HEADER_SIZE > self._max_send_frame:
            size = len(frame) - HEADER_SIZE
            limit = self._max_send_frame
            self.send_error(
                rid,
                ErrorCode.TOO_LARGE,
                f"the {type(message).__name__} reply ({size} bytes) exceeds the client's "
                f"max_frame_size {limit}",
                details={"frame_bytes": size, "max_frame_size": limit},
            )
            return False
        del self._requests[rid]
        self._reply(req.stream_id, frame)
        return True

    def send_error(
        self,
        request_id: int,
        code: int,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        """Fail a request with ``Error`` on the stream it came on (dropped silently if the
        stream is gone or the connection ended). An ``Error`` that would exceed the client's
        ``max_frame_size`` loses its ``details`` and has its message clipped, so it always
        fits (see :data:`~felix_proto.connection.MIN_MAX_FRAME_SIZE`).

        Args:
            request_id: the request.
            code: an :class:`~felix_proto.errors.ErrorCode`.
            message: the explanation.
            details: machine-readable extras (e.g. ``first_offset``).
            retryable: default: whether ``code`` is in :data:`~felix_proto.errors.RETRYABLE`.

        Raises:
            LocalProtocolError: no such pending (or remembered ``ack=NONE``) request.
        """
        if self.closed:
            return
        req = self._requests.pop(request_id, None)
        sid = req.stream_id if req is not None else self._unawaited.pop(request_id, None)
        if sid is None:
            raise LocalProtocolError(f"Error: no pending request {request_id}")
        if retryable is None:
            retryable = code in RETRYABLE
        error = self._error_frame(code, message, request_id, retryable, details or {})
        self._reply(sid, error, counted=req is not None)

    def _reply(self, stream_id: int, frame: bytes, *, counted: bool = True) -> None:
        if counted:
            self._open[stream_id] -= 1
        stream = self._streams.get(stream_id)
        if stream is None or stream_id in self._local_ended:  # gone, or retired
            self._retire(stream_id)
            return
        self._write(stream_id, frame)
        if self._open.get(stream_id) == 0 and stream.peer_ended:
            self._end_stream(stream_id)
        self._retire(stream_id)

    def _retire(self, stream_id: int) -> None:
        """Forget a request stream both sides have ended with no request pending on it, so
        a connection's state does not grow with the number of streams it ever opened."""
        stream = self._streams.get(stream_id)
        if (
            stream is not None
            and stream.kind is _REQUEST_STREAM
            and stream.peer_ended
            and stream_id in self._local_ended
            and not self._open.get(stream_id)
        ):
            del self._streams[stream_id]
            self._open.pop(stream_id, None)
            self._local_ended.discard(stream_id)

    # --------------------------------------------------------- subscriptions, consumers

    def open_subscription(self, request_id: int, subscription_id: int) -> int:
        """Open the unidirectional stream of a subscription (writes
        ``SubscriptionStreamStart``); its credit is the ``Subscribe``'s window.

        Args:
            request_id: the pending ``Subscribe``.
            subscription_id: the broker's id for it (unique on this connection).

        Returns:
            The new stream id.

        Raises:
            LocalProtocolError: no pending ``Subscribe`` with that id, its stream is open
                already, or the subscription id is in use.
        """
        feed = self._open_feed(m.Subscribe, self._subs, request_id, subscription_id)
        sub = self._requests[request_id].message
        assert isinstance(sub, m.Subscribe)
        feed.messages, feed.nbytes = sub.credit_messages, sub.credit_bytes
        start = m.SubscriptionStreamStart(subscription_id=subscription_id, request_id=request_id)
        self._send(feed.stream_id, start)
        return feed.stream_id

    def send_event_frame(
        self, subscription_id: int, frame: bytes, *, count: int, payload_bytes: int
    ) -> None:
        """Write an already-encoded ``EventBatch`` frame and debit the credit.

        Args:
            subscription_id: an open subscription.
            frame: a complete frame from :func:`~felix_proto.codec.encode_event_batch`.
            count: the number of records in it.
            payload_bytes: the sum of their payload lengths.

        Raises:
            LocalProtocolError: unknown or ended subscription, a batch the credit does not
                allow (records must fit; byte credit must be positive), or a frame over
                the client's ``max_frame_size``.
        """
        feed = self._feed(self._subs, subscription_id)
        if feed is None:
            return
        if count > feed.messages or (count and feed.nbytes <= 0):
            raise LocalProtocolError(
                f"subscription {subscription_id}: {count} records exceed the credit "
                f"({feed.messages} records, {feed.nbytes} bytes)"
            )
        if len(frame) - HEADER_SIZE > self._max_send_frame:
            raise LocalProtocolError("frame exceeds the client's max_frame_size")
        feed.move(FeedInput.DATA, local=True)
        feed.messages -= count
        feed.nbytes -= payload_bytes
        self._write(feed.stream_id, frame)

    def send_gap(self, subscription_id: int, missed: int, next_offset: int) -> None:
        """Tell the client ``missed`` records were skipped and ``next_offset`` comes next.

        Raises:
            LocalProtocolError: unknown or ended subscription.
        """
        feed = self._feed(self._subs, subscription_id)
        if feed is not None:
            feed.move(FeedInput.DATA, local=True)
            self._send(feed.stream_id, m.SubscriptionGap(missed=missed, next_offset=next_offset))

    def subscription_open(self, subscription_id: int) -> bool:
        """Whether the subscription's stream is open (opened, not ended or stopped)."""
        return subscription_id in self._subs

    def consumer_open(self, consumer_id: int) -> bool:
        """Whether the consumer's stream is open (opened, not ended or stopped)."""
        return consumer_id in self._consumers

    def end_subscription(
        self,
        subscription_id: int,
        reason: str,
        message: str = "",
        next_offset: int | None = None,
    ) -> None:
        """Write ``SubscriptionEnded`` and end the subscription's stream.

        Args:
            subscription_id: an open subscription.
            reason: an :class:`~felix_proto.messages.EndReason` value.
            message: human-readable detail.
            next_offset: where a resumed subscription would continue.

        Raises:
            LocalProtocolError: unknown or ended subscription.
        """
        feed = self._feed(self._subs, subscription_id)
        if feed is not None:
            end = m.SubscriptionEnded(
                subscription_id=subscription_id,
                reason=str(reason),
                message=clip_text(message),
                next_offset=next_offset,
            )
            self._end_feed(feed, end)

    def open_consumer(self, request_id: int, consumer_id: int) -> int:
        """Open the unidirectional stream of a consumer (writes ``ConsumerStreamStart``).

        Returns:
            The new stream id.

        Raises:
            LocalProtocolError: as for :meth:`open_subscription`, for ``Consume``.
        """
        feed = self._open_feed(m.Consume, self._consumers, request_id, consumer_id)
        start = m.ConsumerStreamStart(consumer_id=consumer_id, request_id=request_id)
        self._send(feed.stream_id, start)
        return feed.stream_id

    def send_delivery(self, consumer_id: int, delivery: m.Delivery) -> bool:
        """Write a ``Delivery`` on a consumer's stream.

        Returns:
            False, writing nothing, when the frame would exceed the client's
            ``max_frame_size`` (the broker then ends the consumer, see
            docs/wire-protocol.md §5.4); True otherwise.

        Raises:
            LocalProtocolError: unknown or ended consumer, or a delivery msgpack cannot
                encode.
        """
        feed = self._feed(self._consumers, consumer_id)
        if feed is None:
            return True
        frame = encode(delivery)
        if not self.fits(frame):
            return False
        feed.move(FeedInput.DATA, local=True)
        self._write(feed.stream_id, frame)
        return True

    def send_delivery_batch(self, consumer_id: int, batch: m.DeliveryBatch) -> bool:
        """Write a ``DeliveryBatch`` on a consumer's stream (capability ``delivery-batch``).

        Returns:
            False, writing nothing, when the frame would exceed the client's
            ``max_frame_size`` (the caller then writes the deliveries in smaller batches);
            True otherwise.

        Raises:
            LocalProtocolError: the client did not agree to ``delivery-batch``, unknown or
                ended consumer, or a batch msgpack cannot encode.
        """
        return self.send_delivery_frame(consumer_id, encode(batch))

    def send_delivery_frame(self, consumer_id: int, frame: bytes) -> bool:
        """:meth:`send_delivery_batch` with the frame already encoded
        (:func:`~felix_proto.codec.encode_delivery_batch`); same returns and errors."""
        if DELIVERY_BATCH not in self._agreed:
            raise LocalProtocolError(f"the client did not agree to {DELIVERY_BATCH!r}")
        feed = self._feed(self._consumers, consumer_id)
        if feed is None:
            return True
        if not self.fits(frame):
            return False
        feed.move(FeedInput.DATA, local=True)
        self._write(feed.stream_id, frame)
        return True

    def end_consumer(self, consumer_id: int, reason: str, message: str = "") -> None:
        """Write ``ConsumerEnded`` and end the consumer's stream.

        Raises:
            LocalProtocolError: unknown or ended consumer.
        """
        feed = self._feed(self._consumers, consumer_id)
        if feed is not None:
            end = m.ConsumerEnded(
                consumer_id=consumer_id, reason=str(reason), message=clip_text(message)
            )
            self._end_feed(feed, end)

    def _open_feed(
        self, kind: type[m.Message], table: dict[int, _Feed], request_id: int, feed_id: int
    ) -> _Feed:
        self._transition(ConnInput.FINISH, local=True)
        req = self._requests.get(request_id)
        if req is None or type(req.message) is not kind or req.feed is not None:
            raise LocalProtocolError(f"no pending {kind.__name__} {request_id} to open")
        if feed_id in table:
            raise LocalProtocolError(f"id {feed_id} is already in use on this connection")
        sid = self._next_stream
        self._next_stream += 4
        feed = req.feed = table[feed_id] = self._by_stream[sid] = _Feed(
            kind is m.Subscribe, feed_id, request_id, sid
        )
        return feed

    def _feed(self, table: dict[int, _Feed], feed_id: int) -> _Feed | None:
        """The open feed, ``None`` once the connection ended; raise if unknown or ended."""
        if self.closed:
            return None
        feed = table.get(feed_id)
        if feed is None:
            raise LocalProtocolError(f"unknown or ended feed {feed_id}")
        return feed

    def _end_feed(self, feed: _Feed, end: m.Message) -> None:
        feed.move(FeedInput.ENDED, local=True)
        self._forget(feed)
        self._send(feed.stream_id, end, end=True)

    def _forget(self, feed: _Feed) -> None:
        (self._subs if feed.is_sub else self._consumers).pop(feed.feed_id, None)
        self._by_stream.pop(feed.stream_id, None)

    # ------------------------------------------------------------------ receiving

    def _classify(self, stream_id: int) -> StreamKind:
        if stream_id == CONTROL_STREAM_ID:
            return StreamKind.CONTROL
        if is_client_bidi(stream_id):
            return StreamKind.REQUEST
        if stream_id % 4 == 2:
            return StreamKind.REFUSED  # client-opened unidirectional: Felix does not use them
        raise LocalProtocolError(f"the client cannot send on stream {stream_id}")

    def _receive(self, stream: StreamState, msg: m.Message) -> None:
        if type(msg) in _REQUESTS and self._state in _SERVING:  # the hot case first
            self._on_request(stream, msg, msg.request_id)  # type: ignore[attr-defined]
            return
        control = stream.kind is StreamKind.CONTROL
        if isinstance(msg, m.Hello) and control and self._state is ConnState.AWAITING_HELLO:
            self._on_hello(msg)
            return
        if isinstance(msg, m.Error):
            self._events.append(
                ev.ErrorReceived(
                    stream_id=stream.stream_id,
                    code=msg.code,
                    message=msg.message,
                    details=msg.details,
                )
            )
            return
        rid = getattr(msg, "request_id", None)
        if self._state not in (ConnState.READY, ConnState.GOING_AWAY):
            # The control stream must open with Hello: anything else there is fatal to the
            # connection. On a request stream the one request is refused and the stream goes on.
            raise UnexpectedMessage(
                f"{type(msg).__name__} before the handshake", request_id=rid, fatal=control
            )
        if isinstance(msg, m.Ping) and control:
            self._send(CONTROL_STREAM_ID, m.Pong(nonce=msg.nonce))
        elif isinstance(msg, m.Pong) and control and msg.nonce in self._pings:
            self._pings.discard(msg.nonce)
            self._events.append(ev.PongReceived(nonce=msg.nonce))
        elif isinstance(msg, m.Credit):
            feed = self._subs.get(msg.subscription_id)
            if feed is not None:  # else it raced with the end: ignored
                feed.move(FeedInput.CREDIT, local=False)
                feed.messages += msg.messages
                feed.nbytes += msg.bytes
                self._events.append(
                    ev.CreditGranted(
                        subscription_id=msg.subscription_id,
                        messages=msg.messages,
                        bytes=msg.bytes,
                    )
                )
        elif type(msg) in _REQUESTS:
            self._on_request(stream, msg, rid)
        else:
            raise UnexpectedMessage(
                f"{type(msg).__name__} is not expected from a client on stream {stream.stream_id}",
                request_id=rid,
            )

    def _on_hello(self, hello: m.Hello) -> None:
        common = [v for v in hello.versions if v in self._versions]
        self.hello = hello
        if not common:
            self._close_with_error(
                ErrorCode.UNSUPPORTED_VERSION,
                f"no common protocol version; this broker speaks {list(self._versions)}",
                {"supported_versions": list(self._versions)},
            )
            return
        if hello.max_frame_size is not None and hello.max_frame_size < MIN_MAX_FRAME_SIZE:
            self._close_with_error(
                ErrorCode.INVALID_ARGUMENT,
                f"Hello.max_frame_size {hello.max_frame_size} is below the minimum "
                f"{MIN_MAX_FRAME_SIZE}",
                {"field": "max_frame_size", "min_max_frame_size": MIN_MAX_FRAME_SIZE},
            )
            return
        self._transition(ConnInput.HELLO, local=False)
        self._version = common[0]
        if hello.max_frame_size is not None:
            self._max_send_frame = hello.max_frame_size
        self._agreed = [c for c in hello.capabilities if c in self._capabilities]
        self._events.append(
            ev.HandshakeRequested(hello=hello, version=self._version, capabilities=self._agreed)
        )

    def _on_request(self, stream: StreamState, msg: m.Message, rid: int | None) -> None:
        sid = stream.stream_id
        finishing = type(msg) in _FINISHING
        if self._state is _GOING_AWAY and not finishing:
            if rid is not None:
                error = self._error_frame(
                    ErrorCode.SHUTTING_DOWN, "the broker is going away", rid, True, {}
                )
                self._write(sid, error)
            return
        self._transition(_FINISH if finishing else _REQUEST, local=False)
        if rid is not None:
            if rid in self._requests:
                raise UnexpectedMessage(
                    f"request id {rid} is already in flight", details={"request_id": rid}
                )
            if type(msg) in _ACKED and msg.ack == _ACK_NONE:  # type: ignore[attr-defined]
                self._unawaited[rid] = sid
                if len(self._unawaited) > _FORGET_AFTER:
                    self._unawaited.popitem(last=False)
            else:
                self._requests[rid] = _Request(sid, msg)
                self._open[sid] = self._open.get(sid, 0) + 1
        self._events.append(_REQUEST_RECEIVED(sid, msg))

    def _stream_ended(self, stream: StreamState) -> None:
        sid = stream.stream_id
        if stream.kind is StreamKind.CONTROL:
            self._terminate(
                0, "the client ended the control stream", by_peer=True, request_close=True
            )
        elif stream.kind is StreamKind.REQUEST and not self._open.get(sid):
            self._end_stream(sid)
            self._retire(sid)

    def _stream_reset(self, stream_id: int, error_code: int, stream: StreamState | None) -> None:
        if stream_id == CONTROL_STREAM_ID:
            text = f"the client reset the control stream (code {error_code})"
            self._terminate(ErrorCode.CONNECTION_LOST, text, by_peer=True, request_close=True)
            return
        feed = self._by_stream.get(stream_id)
        if feed is not None:
            feed.move(FeedInput.STOP, local=False)
            self._forget(feed)
            self._events.append(_cancelled(feed))

    def _stream_failed(self, stream: StreamState, exc: RemoteProtocolError) -> None:
        self._end_stream(stream.stream_id)

    def _control_failed(self, exc: RemoteProtocolError) -> None:
        if isinstance(exc, UnsupportedVersion) and exc.version == V1_VERSION:
            self._write(CONTROL_STREAM_ID, encode_v1_error(), end=True)
            self._terminate(exc.error_code, exc.message, by_peer=False, request_close=True)
        else:
            self._close_with_error(exc.error_code, exc.message, exc.details)

    def _close_with_error(self, code: int, message: str, details: dict[str, Any]) -> None:
        if CONTROL_STREAM_ID not in self._local_ended:
            error = self._error_frame(code, message, None, False, details)
            self._write(CONTROL_STREAM_ID, error, end=True)
        self._terminate(code, message, by_peer=False, request_close=True, details=details)

    def _fail_everything(self, code: int, reason: str) -> None:
        for feed in [*self._subs.values(), *self._consumers.values()]:
            feed.move(FeedInput.LOST, local=False)
            self._events.append(_cancelled(feed))
        self._subs.clear()
        self._consumers.clear()
        self._by_stream.clear()
        self._requests.clear()
        self._unawaited.clear()
        self._pings.clear()
        self._goaway_deadline = None


def _cancelled(feed: _Feed) -> ev.Event:
    if feed.is_sub:
        return ev.SubscriptionCancelled(subscription_id=feed.feed_id)
    return ev.ConsumerCancelled(consumer_id=feed.feed_id)
