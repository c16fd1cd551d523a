"""Internals of :class:`~felix_proto.client.ClientConnection`: state, timers, receiving.

The public API and the theory of operation are in :mod:`felix_proto.client`; this module
holds the bookkeeping behind them (pending requests, deadlines, subscriptions and
consumers) and everything that happens when the broker's bytes arrive. Every method that
handles received messages may raise a :class:`~felix_proto.errors.RemoteProtocolError`
subclass; the one receive entry point in :mod:`felix_proto.connection` answers it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from . import events as ev
from . import messages as m
from ._state import (
    CLIENT_CONNECTION,
    CLIENT_CONSUMER,
    CLIENT_SUBSCRIPTION,
    ConnInput,
    ConnState,
    FeedInput,
    FeedState,
    FlowControlError,
    UnexpectedMessage,
    transition,
)
from .codec import validate
from .connection import (
    CONTROL_STREAM_ID,
    REPLY_TYPES,
    Connection,
    StreamKind,
    StreamState,
    is_client_bidi,
    is_server_uni,
)
from .deadlines import Deadlines
from .errors import RETRYABLE, ErrorCode, LocalProtocolError, RemoteProtocolError
from .frames import DEFAULT_MAX_FRAME_SIZE, SUPPORTED_VERSIONS

__all__ = ["ClientBase"]

_LANES: dict[type[m.Message], str] = {
    m.Publish: "publish", m.PublishBatch: "publish",
    m.Enqueue: "queue", m.Consume: "queue", m.CancelConsume: "queue", m.Ack: "queue",
    m.Nack: "queue",
    m.Subscribe: "subscribe", m.Unsubscribe: "subscribe",
    m.CachePut: "cache", m.CacheGet: "cache", m.CacheDelete: "cache",
    m.AdminCreate: "admin", m.AdminDescribe: "admin", m.AdminUpdate: "admin",
    m.AdminList: "admin", m.AdminDelete: "admin",
}  # fmt: skip
_FINISHING = (m.Unsubscribe, m.CancelConsume, m.Ack, m.Nack)
_LATE_MEMORY = 4096


class _Feed:
    """A client-side subscription (``is_sub``) or queue consumer."""

    __slots__ = (
        "awaiting", "buffered", "credit_bytes", "credit_messages", "failed", "feed_id",
        "is_sub", "remaining_bytes", "remaining_messages", "request_id", "state", "stream_id",
    )  # fmt: skip

    def __init__(self, *, is_sub: bool, request_id: int, messages: int = 0, nbytes: int = 0):
        self.is_sub = is_sub
        self.request_id = request_id
        self.state = FeedState.PENDING
        self.feed_id: int | None = None
        self.stream_id: int | None = None
        self.buffered: list[m.Message] = []
        self.failed = False
        self.credit_messages = self.remaining_messages = messages
        self.credit_bytes = self.remaining_bytes = nbytes
        self.awaiting: set[int] = set()

    def move(self, event: FeedInput, *, local: bool) -> None:
        table = CLIENT_SUBSCRIPTION if self.is_sub else CLIENT_CONSUMER
        what = f"{'subscription' if self.is_sub else 'consumer'} {self.feed_id}"
        self.state = transition(table, self.state, event, what=what, local=local)


class _Request:
    __slots__ = ("feed", "internal", "kind", "stream_id")

    def __init__(self, kind: type[m.Message], stream_id: int) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.feed: _Feed | None = None
        self.internal = False


class ClientBase(Connection):
    """State and receive path of :class:`~felix_proto.client.ClientConnection`.

    Inputs: API calls, :meth:`stream_data_received`, :meth:`stream_reset`,
    :meth:`connection_lost`, :meth:`handle_timer`. Outputs: :meth:`next_event`,
    :meth:`data_to_send`, :meth:`get_timer`.

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
        self._handshake_deadline: float | None = None
        self._next_id = 1
        self._next_stream = 4
        self._requests: dict[int, _Request] = {}
        self._deadlines: Deadlines[int] = Deadlines()  # request id -> its deadline
        self._late: OrderedDict[int, tuple[type[m.Message], bool]] = OrderedDict()
        self._subs: dict[int, _Feed] = {}
        self._consumers: dict[int, _Feed] = {}
        self._lanes: dict[str, int] = {}
        self._request_streams: set[int] = set()
        self.limits: dict[str, int] = {}
        """The limits the broker announced in ``Welcome`` (empty before)."""

    # --------------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """Return the earliest request or handshake deadline, or ``None``."""
        times = [t for t in (self._handshake_deadline, self._deadlines.earliest()) if t]
        return min(times) if times else None

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
        for rid in self._deadlines.pop_due(now):
            if self._state is ConnState.CLOSED:
                break
            req = self._requests.pop(rid)
            self._remember_late(rid, req.kind, report=False)
            if req.feed is not None:
                self._drop_pending_feed(req.feed)
            if not req.internal:
                self._events.append(ev.RequestTimedOut(request_id=rid))

    # ------------------------------------------------------------- request helpers

    def _deadline(self, now: float, timeout: float | None) -> float | None:
        timeout = self._default_timeout if timeout is None else timeout
        return None if timeout is None else now + timeout

    def _allocate_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def _track(self, rid: int, kind: type[m.Message], sid: int, deadline: float | None) -> _Request:
        req = self._requests[rid] = _Request(kind, sid)
        if deadline is not None:
            self._deadlines.set(rid, deadline)
        return req

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
        rid = self._allocate_id()
        sid = self._request_stream(kind, None)
        factory: Any = kind
        self._send(sid, factory(request_id=rid, **fields))
        self._track(rid, kind, sid, None).internal = True

    def _remember_late(self, rid: int, kind: type[m.Message], *, report: bool) -> None:
        self._late[rid] = (kind, report)
        if len(self._late) > _LATE_MEMORY:
            self._late.popitem(last=False)

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
        if stream.kind is StreamKind.FEED and state in (ConnState.READY, ConnState.GOING_AWAY):
            self._on_feed_frame(stream, msg)
            return
        if isinstance(msg, m.Error) and msg.request_id is None:
            if state is ConnState.HANDSHAKING:
                self._terminate(
                    msg.code, msg.message, by_peer=True, request_close=True, details=msg.details
                )
            else:
                self._events.append(
                    ev.ErrorReceived(
                        stream_id=stream.stream_id, code=msg.code, message=msg.message,
                        details=msg.details,
                    )
                )  # fmt: skip
            return
        control = stream.kind is StreamKind.CONTROL
        if state is ConnState.HANDSHAKING and control and isinstance(msg, m.Welcome):
            self._on_welcome(msg)
            return
        if state not in (ConnState.READY, ConnState.GOING_AWAY):
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
        self._events.append(
            ev.Welcomed(
                version=msg.version, server_id=msg.server_id, region=msg.region,
                capabilities=[c for c in msg.capabilities if c in offered], limits=self.limits,
            )
        )  # fmt: skip

    def _on_reply(self, stream: StreamState, msg: m.Message, rid: int) -> None:
        req = self._requests.get(rid)
        if req is None:
            late = self._late.pop(rid, None)
            if late is None:
                raise UnexpectedMessage(f"{type(msg).__name__} answers unknown request {rid}")
            if isinstance(msg, m.Error) and late[1]:
                self._events.append(_failed(rid, msg.code, msg.message, msg.details))
            elif isinstance(msg, (m.Subscribed, m.Consuming)):
                # Undo it; remember the id so that its stream, if still to come, is ignored.
                self._remember_late(rid, late[0], report=False)
                if isinstance(msg, m.Subscribed):
                    self._internal(m.Unsubscribe, subscription_id=msg.subscription_id)
                else:
                    self._internal(m.CancelConsume, consumer_id=msg.consumer_id)
            return
        del self._requests[rid]
        self._deadlines.discard(rid)
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
        if feed.state is FeedState.PENDING:
            if len(feed.buffered) >= self._max_early:
                raise FlowControlError(f"more than {self._max_early} frames before the reply")
            feed.buffered.append(msg)
            return
        self._deliver(feed, msg)
        self._top_up(feed)

    def _bind(
        self, stream: StreamState, msg: m.SubscriptionStreamStart | m.ConsumerStreamStart
    ) -> None:
        is_sub = isinstance(msg, m.SubscriptionStreamStart)
        fid = msg.subscription_id if isinstance(msg, m.SubscriptionStreamStart) else msg.consumer_id
        feed = (self._subs if is_sub else self._consumers).get(fid)
        if feed is None:
            req = self._requests.get(msg.request_id)
            feed = req.feed if req is not None else None
            if feed is None and msg.request_id in self._late:
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
        for rid, req in list(self._requests.items()):
            if req.stream_id == stream_id:
                del self._requests[rid]
                self._deadlines.discard(rid)
                if req.feed is not None:
                    self._drop_pending_feed(req.feed)
                if not req.internal:
                    self._events.append(_failed(rid, code, message))
        self._retire_stream(stream_id)
        self._end_stream(stream_id)

    def _stream_ended(self, stream: StreamState) -> None:
        if stream.kind is StreamKind.CONTROL:
            self._terminate(
                ErrorCode.CONNECTION_LOST, "the broker ended the control stream",
                by_peer=True, request_close=True,
            )  # fmt: skip
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
        for rid, req in self._requests.items():
            if not req.internal:
                self._events.append(_failed(rid, ErrorCode.CONNECTION_LOST, reason))
        self._requests.clear()
        self._deadlines = Deadlines()
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
_CONSUMER_FRAMES = (m.Delivery, m.ConsumerEnded)


def _failed(
    rid: int, code: int, message: str, details: dict[str, Any] | None = None,
    retryable: bool | None = None,
) -> ev.RequestFailed:  # fmt: skip
    if retryable is None:
        retryable = code in RETRYABLE
    return ev.RequestFailed(
        request_id=rid, code=code, message=message, retryable=retryable, details=details or {}
    )


def _success_event(msg: m.Message) -> ev.Event:
    """The event for a matched success reply (not Subscribed/Consuming)."""
    if isinstance(msg, m.PublishAck):
        return ev.PublishAcked(
            request_id=msg.request_id, first_offset=msg.first_offset, last_offset=msg.last_offset
        )
    if isinstance(msg, m.Pong):
        return ev.PongReceived(nonce=msg.nonce)
    if isinstance(msg, m.CacheValue):
        return ev.CacheValueReceived(
            request_id=msg.request_id, found=msg.found, value=msg.value, version=msg.version,
            ttl_remaining_ms=msg.ttl_remaining_ms,
        )  # fmt: skip
    if isinstance(msg, m.CachePutResult):
        return ev.CachePutCompleted(
            request_id=msg.request_id, stored=msg.stored, version=msg.version
        )
    if isinstance(msg, m.CacheDeleted):
        return ev.CacheDeleteCompleted(request_id=msg.request_id, deleted=msg.deleted)
    if isinstance(msg, m.AdminResource):
        return ev.AdminReplied(request_id=msg.request_id, resource=msg.resource)
    if isinstance(msg, m.AdminResources):
        return ev.AdminReplied(request_id=msg.request_id, resources=msg.resources)
    assert isinstance(msg, m.Ok)
    return ev.RequestSucceeded(request_id=msg.request_id)


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
