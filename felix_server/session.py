"""One QUIC connection of the broker: aioquic events -> ServerConnection -> Broker and back.

Theory of operation
-------------------
A :class:`Session` layers a :class:`felix_proto.server.ServerConnection` on an aioquic
:class:`~aioquic.quic.connection.QuicConnection` the way HTTP/3 layers on QUIC, and connects
it to the :class:`~felix_core.broker.Broker` as connection ``conn_id``. It is driven by
:class:`~felix_server.server.FelixServer`; nothing here does I/O or reads a clock.

QUIC -> Felix. ``StreamDataReceived`` becomes ``stream_data_received``; ``StreamReset`` and
``StopSendingReceived`` become ``stream_reset`` (for a stop on one of our feed streams we
also reset our side so its buffered bytes are released); ``HandshakeCompleted`` checks the
ALPN (``felix/2``, or none at all: the in-band version then decides);
``ConnectionTerminated`` becomes ``connection_lost`` and detaches the connection from the
broker.

Felix -> Broker. ``HandshakeRequested`` is accepted with the engine's limits.
``RequestReceived`` is served by :func:`felix_server.dispatch.dispatch`; an
:class:`~felix_core.errors.EngineError` becomes an ``Error`` frame with its code, message,
details and ``retryable`` 1:1, any other exception ``INTERNAL`` (and the observer hears of
the bug). ``CreditGranted``, ``SubscriptionCancelled`` and ``ConsumerCancelled`` go to the
broker's ``add_credit``, ``unsubscribe`` and ``cancel_consumer``. ``CloseRequested`` closes
QUIC once the pending stream data is out (or after :data:`CLOSE_LINGER` seconds).

Broker -> Felix. The server hands each session its share of ``Broker.drain_events()``:
event batches as frames already encoded once per slice, gaps, deliveries and ends. Outputs
for a feed this connection no longer has (it was cancelled meanwhile) are dropped.

Back-pressure. aioquic's stream writes never block and copy the data into the stream's own
send buffer, freed only as the peer acknowledges it, so the session measures what the
connection holds on every stream (feeds, request replies, control): the bytes in QUIC's
send buffers, written and not yet acknowledged (:func:`~felix_server.quic.send_buffered`),
plus what the Felix machine holds. Feeds are gated on that count *per connection*, not per
feed: a feed write (batch, gap, end, delivery) goes out only while the count is at most
``transport.connection_buffer_resume`` or stays within ``transport.connection_buffer_limit``
with the write added. Otherwise it waits in a :class:`~felix_server.outbox.FeedOutbox`
behind the feed's earlier writes, as a reference (an encoded batch shared by every
subscription at that position is one object, counted once), and the broker is told to
``pause`` deliveries to the connection at once. Waiting writes are released round robin on
each transmit, as acknowledgements make room; once none waits and the count is at or below
``connection_buffer_resume`` the broker is told to ``resume``. So what one connection holds
is at most the limit (or the resume level plus one frame) in QUIC and Felix, plus the
distinct batches produced before the pause, however many subscriptions it has.

Frames the client cannot take (docs/wire-protocol.md §5.4). A reply over the client's
``max_frame_size`` is answered ``Error(TOO_LARGE)`` by the Felix machine itself; a batch over
it is written in pieces that fit (:func:`~felix_server.split.split_slice`) and a record that
fits no frame ends the subscription (reason ``error``, ``next_offset`` at the record; the
engine forgets the subscription); a delivery that fits no frame ends the consumer (its
in-flight deliveries go back to the queue, as on ``CancelConsume``). Engine calls these
decisions need are made on the next transmit, when ``now`` is known.

Replies are bounded by reading less. Before each request is served the session checks the
queued bytes against ``transport.connection_buffer_cap``; over it, the session stops
reading requests: requests already parsed wait in :attr:`Session._held_requests`, data QUIC
delivers on request streams waits unparsed in :attr:`Session._held_data`, and QUIC stops
extending the connection's flow-control credit (:attr:`FelixQuicConnection.credit_held
<felix_server.quic.FelixQuicConnection.credit_held>`), so the peer is throttled by QUIC
itself once the credit it already has is spent. The control stream is still read (credit,
cancellations, pings, close). Reading resumes, held requests first and in order, once the
queued bytes are back at ``connection_buffer_limit``. So replies overshoot the cap by at most
one reply, and what waits unread is bounded by the credit granted before the hold.
"""

from __future__ import annotations

import contextlib
import hmac
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from aioquic.quic import events as qe
from aioquic.quic.connection import NetworkAddress, QuicConnection

from felix_core.errors import EngineError, NotFound
from felix_core.log import LogSlice
from felix_core.queue_types import QueueDelivery
from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.errors import ErrorCode, FelixProtoError
from felix_proto.server import ServerConnection
from felix_server.dispatch import FeedOpened, dispatch, request_kind
from felix_server.outbox import FeedKey, FeedOutbox
from felix_server.quic import FelixQuicConnection, send_buffered
from felix_server.split import split_slice

if TYPE_CHECKING:
    from felix_server.server import FelixServer

__all__ = ["CLOSE_LINGER", "Session"]

CLOSE_LINGER = 1.0
"""Seconds a requested close waits for pending stream data to be sent."""

_SMALL_FRAME = 256
"""What a gap or end frame, or a delivery's framing, is counted as before it is encoded."""


class _HeldData:
    """Request-stream data QUIC delivered while the session was not reading requests."""

    __slots__ = ("data", "end")

    def __init__(self) -> None:
        self.data = bytearray()
        self.end = False


class Session:
    """The glue for one QUIC connection. See the module docstring.

    Args:
        server: the owning server (broker, config, observer).
        quic: the connection's aioquic state machine.
        conn_id: the broker's id for this connection.
        now: the current time.
    """

    def __init__(self, server: FelixServer, quic: QuicConnection, conn_id: int, now: float):
        self.server = server
        self.broker = server.broker
        self.observer = server.observer
        self.quic = quic
        self.conn_id = conn_id
        cfg = server.config
        limits = cfg.broker
        self.felix = ServerConnection(
            server_id=cfg.server_id,
            region=cfg.region,
            limits={
                "max_payload_bytes": limits.max_payload_bytes,
                "max_key_bytes": limits.max_key_bytes,
                "max_batch_records": limits.max_batch_records,
                "max_batch_bytes": limits.max_batch_bytes,
                "max_record_bytes": limits.max_record_bytes,
                "max_subscriptions": limits.max_subscriptions_per_connection,
                "max_consumers": limits.max_consumers_per_connection,
            },
            max_frame_size=cfg.transport.max_frame_size,
        )
        self._high = cfg.transport.connection_buffer_limit
        self._low = cfg.transport.connection_buffer_resume
        self._cap = cfg.transport.connection_buffer_cap
        self.paused = False
        self.reading = True  # False: over the cap, requests wait (see the module docstring)
        self._held_requests: deque[fe.RequestReceived] = deque()
        self._held_data: dict[int, _HeldData] = {}  # request stream id -> unread data
        self._unsent = 0  # QUIC's send-buffered bytes (all streams) as of the last transmit
        self._outbox = FeedOutbox()  # feed writes held back while over the limit
        self._deferred: list[Callable[..., object]] = []  # engine calls that need `now`
        self.finished = False
        self._subs: set[int] = set()
        self._consumers: set[int] = set()
        self._issued: list[bytes] = []
        self._retired: list[bytes] = []
        self._close: tuple[int, str] | None = None
        self._close_deadline: float | None = None
        self._quic_closed = False
        self._welcomed = False
        self._hello_deadline: float | None = now + cfg.transport.handshake_timeout_s
        self.broker.attach(conn_id, now)

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
            timeout = self.server.config.transport.handshake_timeout_s
            self.felix.close(int(ErrorCode.TIMEOUT), f"no Hello within {timeout:g} s")
        self._process(now)

    def get_timer(self) -> float | None:
        """The earliest of QUIC's, Felix's, the handshake and the close linger deadline."""
        deadlines = (
            self.quic.get_timer(), self.felix.get_timer(), self._close_deadline,
            self._hello_deadline,
        )  # fmt: skip
        return min((d for d in deadlines if d is not None), default=None)

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
        """Drain QUIC events into Felix, then Felix events into the broker."""
        quic, felix = self.quic, self.felix
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                sid = event.stream_id
                if sid in self._held_data or (not self.reading and sid % 4 == 0 and sid):
                    held = self._held_data.get(sid)
                    if held is None:
                        held = self._held_data[sid] = _HeldData()
                    held.data += event.data
                    held.end = held.end or event.end_stream
                else:
                    self._feed(sid, event.data, event.end_stream)
            elif isinstance(event, qe.StreamReset | qe.StopSendingReceived):
                self._held_data.pop(event.stream_id, None)  # the peer abandoned it
                felix.stream_reset(event.stream_id, event.error_code)
                if isinstance(event, qe.StopSendingReceived):
                    self._reset_stream(event.stream_id)
            elif isinstance(event, qe.HandshakeCompleted):
                if event.alpn_protocol not in (ALPN, None):
                    self.observer.handshake_failed(int(ErrorCode.UNSUPPORTED_VERSION))
                    quic.close(error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                               reason_phrase=f"ALPN {ALPN} required")  # fmt: skip
            elif isinstance(event, qe.ConnectionIdIssued):
                self._issued.append(event.connection_id)
            elif isinstance(event, qe.ConnectionIdRetired):
                self._retired.append(event.connection_id)
            elif isinstance(event, qe.ConnectionTerminated):
                self._terminated(event.error_code, now)
        self._felix_events(now)

    def _feed(self, stream_id: int, data: bytes, end: bool) -> None:
        try:
            self.felix.stream_data_received(stream_id, data, end)
        except FelixProtoError as exc:  # data on a stream id Felix never uses
            self._internal("stream_data_received", exc)

    def _terminated(self, error_code: int, now: float) -> None:
        if self.finished:
            return
        self.finished = True
        self._held_requests.clear()
        self._held_data.clear()
        self._outbox.clear()
        self._deferred.clear()
        self.felix.connection_lost()
        self._felix_events(now)
        self.broker.detach(self.conn_id, now)
        self.observer.connection_closed(error_code)

    def _reset_stream(self, stream_id: int) -> None:
        if stream_id % 4 == 3:  # one of our feed streams
            with contextlib.suppress(ValueError, AssertionError):  # finished or reset already
                self.quic.reset_stream(stream_id, 0)
        # aioquic resets a stopped request stream's sending side itself: nothing more goes out

    # ------------------------------------------------------------- Felix -> Broker

    def _felix_events(self, now: float) -> None:
        felix = self.felix
        while (event := felix.next_event()) is not None:
            if isinstance(event, fe.RequestReceived):
                if self._held_requests or not self._may_read():
                    self._held_requests.append(event)
                else:
                    self._request(event.message, now)
            elif isinstance(event, fe.CreditGranted):
                self._engine_call(
                    partial(self.broker.add_credit, self.conn_id, event.subscription_id,
                            event.messages, event.bytes, now=now)
                )  # fmt: skip
            elif isinstance(event, fe.HandshakeRequested):
                self._hello_deadline = None
                if not self._authenticated(event.hello.token):
                    felix.reject(ErrorCode.UNAUTHENTICATED, "missing or invalid token")
                    continue
                try:
                    felix.accept()
                except Exception as exc:  # a bug: close with INTERNAL rather than go silent
                    self._internal("accept", exc)
                    felix.close(int(ErrorCode.INTERNAL), "internal error")
                    continue
                self._welcomed = True
                self.observer.handshake_completed(event.version)
            elif isinstance(event, fe.SubscriptionCancelled):
                self._outbox.drop((True, event.subscription_id))
                if event.subscription_id in self._subs:
                    self._subs.discard(event.subscription_id)
                    self._engine_call(
                        partial(self.broker.unsubscribe, self.conn_id, event.subscription_id,
                                now=now)
                    )  # fmt: skip
            elif isinstance(event, fe.ConsumerCancelled):
                self._outbox.drop((False, event.consumer_id))
                if event.consumer_id in self._consumers:
                    self._consumers.discard(event.consumer_id)
                    self._engine_call(
                        partial(self.broker.cancel_consumer, self.conn_id, event.consumer_id,
                                now=now)
                    )  # fmt: skip
            elif isinstance(event, fe.ProtocolViolation):
                self.observer.protocol_violation(event.error_code, event.fatal)
            elif isinstance(event, fe.CloseRequested) and self._close is None:
                self._outbox.clear()  # nothing more can be written on a closing connection
                self._hello_deadline = None
                self._close = (event.error_code, event.reason)
                self._close_deadline = now + CLOSE_LINGER
                if not self._welcomed:
                    self.observer.handshake_failed(event.error_code)
        self.server.mark_dirty(self)

    def _may_read(self) -> bool:
        """Whether the next request may be served: stop reading once over the cap."""
        if self.reading and self._unsent + self.felix.buffered_bytes() > self._cap:
            self.reading = False
            if isinstance(self.quic, FelixQuicConnection):
                self.quic.credit_held = True
            self.observer.log(
                "debug", "connection over its buffer cap: requests wait", conn_id=self.conn_id
            )
        return self.reading

    def _resume_reading(self, now: float) -> None:
        """Back at the limit: serve the held requests, then the held data, in order."""
        self.reading = True
        if isinstance(self.quic, FelixQuicConnection):
            self.quic.credit_held = False
        held = self._held_requests
        while held and self._may_read():
            self._request(held.popleft().message, now)
        while self._held_data and not held and self.reading:
            sid = next(iter(self._held_data))
            data = self._held_data.pop(sid)
            self._feed(sid, bytes(data.data), data.end)
            self._felix_events(now)
        self.server.mark_dirty(self)

    def _engine_call(self, call: Callable[[], object]) -> None:
        """Run a broker call whose only possible refusal is a benign race (NotFound)."""
        try:
            call()
        except (NotFound, ValueError):
            pass  # the feed or connection already went away
        except EngineError as exc:
            self.observer.log("debug", "engine refused a follow-up call", code=int(exc.code))

    def _authenticated(self, token: str | None) -> bool:
        """Whether ``token`` opens a session: always when authentication is off."""
        accepted = self.server.accepted_tokens
        if accepted is None:
            return True
        if not token:
            return False
        offered = token.encode()
        # Each comparison takes constant time, and every token is compared (a list, not a
        # short-circuiting generator), so timing tells nothing about the accepted tokens.
        matches = [hmac.compare_digest(offered, t.encode()) for t in accepted]
        return any(matches)

    def _request(self, msg: m.Message, now: float) -> None:
        kind = request_kind(msg)
        token = self.observer.request_started(kind)
        rid = getattr(msg, "request_id", None)
        code = 0
        try:
            reply = dispatch(self.broker, self.conn_id, msg, now)
            if isinstance(reply, FeedOpened):
                if reply.subscription:
                    self.felix.open_subscription(reply.reply.request_id, reply.feed_id)
                    self._subs.add(reply.feed_id)
                else:
                    self.felix.open_consumer(reply.reply.request_id, reply.feed_id)
                    self._consumers.add(reply.feed_id)
                reply = reply.reply
            if reply is not None and not self.felix.send_reply(reply):
                code = int(ErrorCode.TOO_LARGE)  # answered Error(TOO_LARGE) instead
            self._count(msg)
        except EngineError as exc:
            code = int(exc.code)
            if rid is not None:
                self.felix.send_error(
                    rid, code, exc.message, details=exc.details, retryable=exc.retryable
                )
        except Exception as exc:  # a bug: answer INTERNAL, keep serving
            code = int(ErrorCode.INTERNAL)
            self._internal(kind, exc)
            if rid is not None:
                with contextlib.suppress(FelixProtoError):
                    self.felix.send_error(rid, code, f"internal error: {type(exc).__name__}")
        self.observer.request_finished(token, kind, code)

    def _count(self, msg: m.Message) -> None:
        if isinstance(msg, m.Publish):
            self.observer.published(1, len(msg.payload))
        elif isinstance(msg, m.PublishBatch):
            self.observer.published(len(msg.payloads), sum(map(len, msg.payloads)))
        elif isinstance(msg, m.Enqueue):
            self.observer.enqueued(len(msg.payloads), sum(map(len, msg.payloads)))

    def _internal(self, where: str, exc: BaseException) -> None:
        self.observer.internal_error(where, exc)

    # ------------------------------------------------------------ Broker -> Felix

    def send_event_batch(self, subscription_id: int, frame: bytes, sl: LogSlice,
                         payload_bytes: int) -> None:  # fmt: skip
        """Write an event batch frame (encoded once by the server) to a subscription, or
        hold it back while the connection is over its limit (see :meth:`_feed_write`)."""
        if subscription_id in self._subs:
            write = partial(self._write_batch, subscription_id, frame, sl, payload_bytes)
            self._feed_write((True, subscription_id), len(frame), write, frame)

    def send_gap(self, subscription_id: int, missed: int, next_offset: int) -> None:
        """Tell a subscription it skipped ``missed`` records."""
        if subscription_id in self._subs:
            write = partial(self.felix.send_gap, subscription_id, missed, next_offset)
            self._feed_write(
                (True, subscription_id), _SMALL_FRAME, partial(self._felix_call, write)
            )

    def end_subscription(
        self, subscription_id: int, reason: str, message: str, next_offset: int | None
    ) -> None:
        """End a subscription's stream with ``SubscriptionEnded``."""
        if subscription_id in self._subs:
            self._subs.discard(subscription_id)
            write = partial(
                self.felix.end_subscription, subscription_id, reason, message, next_offset
            )
            self._feed_write(
                (True, subscription_id), _SMALL_FRAME, partial(self._felix_call, write)
            )

    def send_deliveries(self, consumer_id: int, deliveries: Sequence[QueueDelivery]) -> None:
        """Write queue deliveries to a consumer's stream (or hold them back, as batches)."""
        if consumer_id not in self._consumers:
            return
        for d in deliveries:
            size = _SMALL_FRAME + len(d.payload) + len(d.key or b"")
            if d.headers:
                size += sum(len(k) + len(v) + 8 for k, v in d.headers.items())
            self._feed_write(
                (False, consumer_id), size, partial(self._write_delivery, consumer_id, d)
            )

    def end_consumer(self, consumer_id: int, reason: str) -> None:
        """End a consumer's stream with ``ConsumerEnded``."""
        if consumer_id in self._consumers:
            self._consumers.discard(consumer_id)
            write = partial(self.felix.end_consumer, consumer_id, reason)
            self._feed_write((False, consumer_id), _SMALL_FRAME, partial(self._felix_call, write))

    def _feed_write(
        self, key: FeedKey, size: int, write: Callable[[], object], frame: bytes | None = None
    ) -> None:
        """Write to a feed now if the connection has room for ``size`` more bytes (and the
        feed has nothing waiting), else hold the write back and pause the connection's
        deliveries. Room: the queued bytes at most ``connection_buffer_resume``, or within
        ``connection_buffer_limit`` with ``size`` added; so what is queued stays within the
        limit (or the resume level plus one frame) however many feeds the connection has,
        and a frame larger than the limit still goes out once the connection drains."""
        if self._outbox.holds(key) or not self._room(size):
            self._outbox.hold(key, size, write, frame)
            self._pause()
        else:
            write()

    def _room(self, size: int) -> bool:
        queued = self._unsent + self.felix.buffered_bytes()
        return queued <= self._low or queued + size <= self._high

    def _release(self) -> None:
        """Write held feed writes, round robin, while the connection has room."""
        outbox = self._outbox
        while outbox and self._room(outbox.next_size()):
            write = outbox.pop()
            assert write is not None
            write()

    def _write_batch(self, sid: int, frame: bytes, sl: LogSlice, payload_bytes: int) -> None:
        """Write a batch; one over the client's ``max_frame_size`` goes in pieces that fit,
        and a record that fits no frame ends the subscription (docs/wire-protocol.md §5.4)."""
        felix = self.felix
        if felix.fits(frame):
            self._write_frame(sid, frame, len(sl.payloads), payload_bytes)
            return
        pieces, too_large = split_slice(sl, felix.peer_max_frame_size)
        for piece, count, nbytes in pieces:
            self._write_frame(sid, piece, count, nbytes)
        if too_large is not None:
            offset, size = too_large
            self._subs.discard(sid)
            self._outbox.drop((True, sid))
            text = (
                f"the record at offset {offset} ({size} bytes) does not fit the client's "
                f"max_frame_size {felix.peer_max_frame_size}"
            )
            self._felix_call(partial(felix.end_subscription, sid, m.EndReason.ERROR, text, offset))
            self._deferred.append(partial(self.broker.unsubscribe, self.conn_id, sid))

    def _write_frame(self, sid: int, frame: bytes, count: int, payload_bytes: int) -> None:
        try:
            self.felix.send_event_frame(sid, frame, count=count, payload_bytes=payload_bytes)
        except FelixProtoError as exc:
            self._internal("send_event_frame", exc)
            return
        self.observer.delivered("stream", count, payload_bytes)

    def _write_delivery(self, consumer_id: int, d: QueueDelivery) -> None:
        """Write one delivery; one over the client's ``max_frame_size`` ends the consumer
        (its in-flight deliveries go back to the queue, as on ``CancelConsume``)."""
        wire = m.Delivery(
            delivery_id=d.delivery_id, attempt=d.attempt, offset=d.offset,
            payload=d.payload, timestamp_ms=d.timestamp_ms, key=d.key, headers=d.headers,
        )  # fmt: skip
        felix = self.felix
        try:
            written = felix.send_delivery(consumer_id, wire)
        except FelixProtoError as exc:
            self._internal("send_delivery", exc)
            return
        if written:
            self.observer.delivered("queue", 1, len(d.payload))
            return
        self._consumers.discard(consumer_id)
        self._outbox.drop((False, consumer_id))
        text = (
            f"delivery {d.delivery_id} (offset {d.offset}, {len(d.payload)} payload bytes) "
            f"does not fit the client's max_frame_size {felix.peer_max_frame_size}"
        )
        self._felix_call(partial(felix.end_consumer, consumer_id, m.EndReason.ERROR, text))
        self._deferred.append(partial(self.broker.cancel_consumer, self.conn_id, consumer_id))

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
        try:
            self.felix.goaway("the broker is shutting down", deadline_ms, now=now)
        except FelixProtoError:
            self.felix.close(int(ErrorCode.SHUTTING_DOWN), "the broker is shutting down")
        self._felix_events(now)

    def close_for_shutdown(self, now: float) -> None:
        """The grace period is over: close the connection."""
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
        return self.felix.buffered_bytes() + self._quic_buffered() + self._outbox.held_bytes

    @property
    def held_feed_bytes(self) -> int:
        """Bytes of feed writes held back (each shared frame counted once)."""
        return self._outbox.held_bytes

    @property
    def held_bytes(self) -> int:
        """Request bytes received but not read while over the cap (unparsed data only)."""
        return sum(len(held.data) for held in self._held_data.values())

    def _quic_buffered(self) -> int:
        return send_buffered(self.quic)

    def transmit(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """Move Felix writes into QUIC, apply back-pressure, return QUIC's datagrams."""
        quic = self.quic
        if not self._quic_closed:
            if self._outbox:
                self._unsent = self._quic_buffered()
                self._release()
            if self._deferred:  # their outputs (redeliveries) go out on the server's next round
                deferred, self._deferred = self._deferred, []
                for call in deferred:
                    self._engine_call(partial(call, now=now))
                self.server.mark_dirty(self)
            for sid, data, end in self.felix.data_to_send():
                try:
                    quic.send_stream_data(sid, data, end)
                except (ValueError, AssertionError):
                    continue  # the stream was reset meanwhile; drop what it would carry
        datagrams = quic.datagrams_to_send(now)
        if self._close is not None and not self._quic_closed:
            assert self._close_deadline is not None
            if self.buffered_bytes == 0 or now >= self._close_deadline:
                code, reason = self._close
                quic.close(error_code=code, reason_phrase=reason)
                self._quic_closed = True
                self._close_deadline = None
                datagrams += quic.datagrams_to_send(now)
        self._unsent = self._quic_buffered()
        if not self.finished:
            self._backpressure(now)
        return datagrams

    def _pause(self) -> None:
        """Stop the engine's deliveries to this connection (until :meth:`_backpressure`
        resumes them)."""
        if not self.paused and not self.finished:
            self.paused = True
            self.broker.pause(self.conn_id)
            self.observer.backpressure(True)

    def _backpressure(self, now: float) -> None:
        buffered = self._unsent + self.felix.buffered_bytes()
        if not self.paused:
            if buffered > self._high or self._outbox:
                self._pause()
        elif buffered <= self._low and not self._outbox:
            self.paused = False
            self.broker.resume(self.conn_id, now)
            self.observer.backpressure(False)
            self.server.mark_dirty(self)
        if not self.reading and buffered <= self._high:
            self._resume_reading(now)
