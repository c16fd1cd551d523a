"""What the client and server connection machines share: streams in, events and writes out.

Theory of operation
-------------------

A Felix connection sits on top of a QUIC connection the way HTTP/3 does: the runtime glue
feeds it QUIC stream events and writes out what it returns. It never touches a socket, a
clock or aioquic itself.

Inputs
    * :meth:`stream_data_received` ``(stream_id, data, end_stream)``: bytes arrived on a
      stream (any split: 1-byte pieces work);
    * :meth:`stream_reset` ``(stream_id, error_code)``: the peer reset its sending side of a
      stream, or asked us to stop sending on one (aioquic ``StreamReset`` and
      ``StopSendingReceived`` both map here);
    * :meth:`connection_lost`: QUIC closed (idle timeout, peer close, network);
    * :meth:`handle_timer` ``(now)``: the time given by :meth:`get_timer` has come;
    * the API calls of the subclasses.

Outputs
    * :meth:`next_event`: :mod:`felix_proto.events` records, oldest first;
    * :meth:`data_to_send`: ``[(stream_id, bytes, end_stream)]``, at most one entry per
      stream (writes coalesce);
    * :meth:`get_timer`: the earliest absolute deadline, or ``None``.

Receiving is transactional per message: each stream has its own bounded
:class:`~felix_proto.codec.MessageDecoder`. A peer's violation is raised inside as a
:class:`~felix_proto.errors.RemoteProtocolError` subclass and caught in exactly one place,
:meth:`stream_data_received`, which answers it (:meth:`_handle_violation`): a non-fatal one
with an ``Error`` frame (with the request id when known) while the stream goes on; a fatal
one (framing lost) by ending that stream, or, on the control stream (id 0), by closing the
connection (:class:`~felix_proto.events.CloseRequested` then
:class:`~felix_proto.events.ConnectionTerminated`). Any other exception escaping the
receive path is a bug in this package.

Streams this side opens get ids by QUIC numbering: client bidirectional 0, 4, 8 ... (0 is
the control stream), server unidirectional 3, 7, 11 ...

Frame size. Each side announces the largest frame payload it accepts (the client in
``Hello.max_frame_size``, the broker in ``Welcome.limits``); neither may announce less than
:data:`MIN_MAX_FRAME_SIZE`, which every fixed-size frame and every ``Error`` (its text
clipped to :data:`MAX_TEXT_BYTES`) fits in. :attr:`Connection.peer_max_frame_size` is what
this side may send.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Any

from . import messages as m
from ._state import ConnInput, ConnState, transition
from .codec import MessageDecoder, encode
from .errors import BadFrame, ErrorCode, LocalProtocolError, RemoteProtocolError
from .events import CloseRequested, ConnectionTerminated, Event, ProtocolViolation
from .frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, MIN_MAX_FRAME_SIZE
from .messages import Error, Message

__all__ = [
    "CONTROL_STREAM_ID",
    "DELIVERY_BATCH",
    "MAX_TEXT_BYTES",
    "MIN_MAX_FRAME_SIZE",
    "REPLY_TYPES",
    "TOKEN_EXCHANGE",
    "TOKEN_REFRESH",
    "Connection",
    "StreamKind",
    "clip_text",
]

CONTROL_STREAM_ID = 0
"""The control stream: the first client-initiated bidirectional stream."""

MAX_TEXT_BYTES = 1024
"""What a human-readable text (``Error.message``, an end frame's ``message``, a ``GoAway``
reason) is clipped to, in UTF-8 bytes, when its frame would exceed the peer's limit."""


def clip_text(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), with an
    ellipsis when it was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "\u2026"


REPLY_TYPES: dict[type[Message], type[Message]] = {
    m.Publish: m.PublishAck,
    m.PublishBatch: m.PublishAck,
    m.Enqueue: m.PublishAck,
    m.Subscribe: m.Subscribed,
    m.Unsubscribe: m.Ok,
    m.Consume: m.Consuming,
    m.CancelConsume: m.Ok,
    m.Ack: m.Ok,
    m.Nack: m.Ok,
    m.CachePut: m.CachePutResult,
    m.CacheGet: m.CacheValue,
    m.CacheDelete: m.CacheDeleted,
    m.AdminCreate: m.AdminResource,
    m.AdminDescribe: m.AdminResource,
    m.AdminUpdate: m.AdminResource,
    m.AdminList: m.AdminResources,
    m.AdminDelete: m.Ok,
    m.Ping: m.Pong,
    m.Reauthenticate: m.Ok,
    m.TokenExchange: m.TokenIssued,
}
"""The one success reply each request kind expects (``Error`` is always possible)."""

TOKEN_REFRESH = "token-refresh"
"""The capability that lets a client send ``Reauthenticate`` (docs/wire-protocol.md §5.3)."""
TOKEN_EXCHANGE = "token-exchange"
"""The capability that lets a client send ``TokenExchange`` (docs/wire-protocol.md §5.3)."""
DELIVERY_BATCH = "delivery-batch"
"""The capability that lets the broker send ``DeliveryBatch`` on consumer streams
(docs/wire-protocol.md §5.3)."""


def is_client_bidi(stream_id: int) -> bool:
    """Whether a QUIC stream id is client-initiated and bidirectional (0, 4, 8 ...)."""
    return stream_id % 4 == 0


def is_server_uni(stream_id: int) -> bool:
    """Whether a QUIC stream id is server-initiated and unidirectional (3, 7, 11 ...)."""
    return stream_id % 4 == 3


class StreamKind(Enum):
    """What a stream carries, as far as the receiving side is concerned."""

    CONTROL = "control"
    """Stream 0: handshake, ping, goaway, connection-level errors (and any request)."""
    REQUEST = "request"
    """A client-initiated bidirectional stream carrying requests and their replies."""
    FEED = "feed"
    """A broker-opened unidirectional stream: one subscription or one consumer."""
    REFUSED = "refused"
    """A stream kind Felix does not use; its data is discarded."""


class StreamState:
    """Receive-side bookkeeping for one stream.

    Attributes:
        stream_id: the QUIC stream id.
        kind: what it carries.
        decoder: the stream's bounded message decoder.
        peer_ended: the peer sent FIN (or reset its side).
        broken: a fatal error happened; further data is discarded.
        owner: for feeds, the client-side subscription or consumer bound to it.
    """

    __slots__ = ("broken", "decoder", "kind", "owner", "peer_ended", "stream_id")

    def __init__(self, stream_id: int, kind: StreamKind, max_frame_size: int) -> None:
        self.stream_id = stream_id
        self.kind = kind
        self.decoder = MessageDecoder(max_frame_size)
        self.peer_ended = False
        self.broken = kind is StreamKind.REFUSED
        self.owner: Any = None


_CLOSED = ConnState.CLOSED
"""``ConnState.CLOSED`` as a module global: an enum member looked up on its class costs an
attribute lookup through the enum's metaclass (~0.1 us on CPython 3.11), and the receive
path tests it for every message (the machines' hot paths alias the members they test)."""


class Connection:
    """Base of :class:`~felix_proto.client.ClientConnection` and
    :class:`~felix_proto.server.ServerConnection`: the inputs and outputs listed in the
    module docstring. Not used on its own.

    Args:
        max_frame_size: the largest frame payload this side accepts (announced to the peer).
    """

    _table: dict[tuple[ConnState, ConnInput], ConnState]
    _initial_state: ConnState

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < MIN_MAX_FRAME_SIZE:
            raise LocalProtocolError(f"max_frame_size must be at least {MIN_MAX_FRAME_SIZE} bytes")
        self._state = self._initial_state
        self._max_recv_frame = max_frame_size
        self._max_send_frame = DEFAULT_MAX_FRAME_SIZE
        self._events: deque[Event] = deque()
        self._out: dict[int, list[bytes]] = {}  # stream id -> frames written, not yet taken
        self._out_bytes = 0
        self._out_fin: set[int] = set()
        self._local_ended: set[int] = set()
        self._streams: dict[int, StreamState] = {}

    # ------------------------------------------------------------------------ outputs

    @property
    def state(self) -> ConnState:
        """The connection machine's current state."""
        return self._state

    @property
    def peer_max_frame_size(self) -> int:
        """The largest frame payload the peer accepts (what this side may send)."""
        return self._max_send_frame

    def fits(self, frame: bytes) -> bool:
        """Whether a complete frame (header included) is within the peer's limit."""
        return len(frame) - HEADER_SIZE <= self._max_send_frame

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (the terminal event was emitted)."""
        return self._state is _CLOSED

    def next_event(self) -> Event | None:
        """Return the oldest event not yet taken, or ``None``.

        Returns:
            An event from :mod:`felix_proto.events`, or ``None`` when there is none.
        """
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[tuple[int, bytes, bool]]:
        """Take everything waiting to be written.

        Returns:
            ``(stream_id, data, end_stream)`` tuples, one per stream, in the order the
            streams were first written to. ``data`` may be empty when only the FIN is due.
            A stream's one frame is returned as the very object written (an event batch
            frame shared by many subscriptions is not copied here).
        """
        fin = self._out_fin
        out = [
            (sid, chunks[0] if len(chunks) == 1 else b"".join(chunks), sid in fin)
            for sid, chunks in self._out.items()
        ]
        self._out.clear()
        self._out_bytes = 0
        fin.clear()
        return out

    def buffered_bytes(self, stream_id: int | None = None) -> int:
        """Bytes written by this machine and not yet taken by :meth:`data_to_send`.

        The runtime adds what QUIC itself still buffers to decide on back-pressure.

        Args:
            stream_id: one stream, or ``None`` for the total over all streams.

        Returns:
            The byte count.
        """
        if stream_id is None:
            return self._out_bytes
        return sum(map(len, self._out.get(stream_id, ())))

    def get_timer(self) -> float | None:
        """Return the earliest absolute deadline (same clock as ``now``), or ``None``."""
        return None

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now``. Calling it early or twice is harmless.

        Args:
            now: the current time, on the clock the API calls were given.
        """
        del now

    # ------------------------------------------------------------------------- inputs

    def stream_data_received(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Feed bytes that arrived on a QUIC stream. The one receive entry point.

        Every protocol violation in ``data`` is handled here (an ``Error`` frame, a stream
        end or a connection close, and events saying so); it is never raised. Data after
        the connection closed is ignored.

        Args:
            stream_id: the QUIC stream id.
            data: the bytes, in stream order (any length, possibly empty).
            end_stream: whether the peer ended the stream after these bytes.

        Raises:
            LocalProtocolError: ``stream_id`` is one the peer cannot send on (a glue bug).
            Exception: anything else escaping is a bug in felix_proto.
        """
        if self._state is _CLOSED:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = StreamState(
                stream_id, self._classify(stream_id), self._max_recv_frame
            )
        try:
            if not stream.broken:
                stream.decoder.feed(data)
                self._drain(stream)
                if end_stream and stream.decoder.buffered:
                    raise BadFrame(
                        f"stream {stream_id} ended inside a frame "
                        f"({stream.decoder.buffered} bytes left over)"
                    )
        except RemoteProtocolError as exc:
            self._handle_violation(stream, exc)
        if end_stream and not stream.peer_ended and not self.closed:
            stream.peer_ended = True
            self._stream_ended(stream)

    def _drain(self, stream: StreamState) -> None:
        """Decode and handle every complete message buffered on ``stream``."""
        while not stream.broken and self._state is not _CLOSED:  # not self.closed, inlined
            try:
                msg = stream.decoder.next_message()
                if msg is None:
                    return
                self._receive(stream, msg)
            except RemoteProtocolError as exc:
                if exc.fatal:
                    raise
                self._handle_violation(stream, exc)

    def stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset a stream, or asked us to stop sending on one.

        Args:
            stream_id: the QUIC stream id.
            error_code: the peer's application error code.
        """
        if self._state is ConnState.CLOSED:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.peer_ended = True
            stream.broken = True
        self._out_bytes -= sum(map(len, self._out.pop(stream_id, ())))
        self._out_fin.discard(stream_id)
        self._local_ended.add(stream_id)
        self._stream_reset(stream_id, error_code, stream)

    def connection_lost(self) -> None:
        """QUIC closed the connection. Every pending thing ends with an event, then
        :class:`~felix_proto.events.ConnectionTerminated`. Idempotent."""
        self._terminate(
            ErrorCode.CONNECTION_LOST, "connection lost", by_peer=True, request_close=False
        )

    # ------------------------------------------------------------------ subclass hooks

    def _classify(self, stream_id: int) -> StreamKind:
        """Return the kind of a stream the peer just opened (or raise for a glue bug)."""
        raise NotImplementedError

    def _receive(self, stream: StreamState, msg: Message) -> None:
        """Handle one decoded message; raise a RemoteProtocolError for a violation."""
        raise NotImplementedError

    def _stream_ended(self, stream: StreamState) -> None:
        """The peer sent FIN on ``stream`` (after all its data was handled). Never raises."""
        raise NotImplementedError

    def _stream_reset(self, stream_id: int, error_code: int, stream: StreamState | None) -> None:
        """The peer reset ``stream_id`` (or stopped our sending side)."""
        raise NotImplementedError

    def _stream_failed(self, stream: StreamState, exc: RemoteProtocolError) -> None:
        """A fatal violation happened on a stream other than the control stream."""
        raise NotImplementedError

    def _control_failed(self, exc: RemoteProtocolError) -> None:
        """A fatal violation happened on the control stream: close the connection."""
        raise NotImplementedError

    def _fail_everything(self, code: int, reason: str) -> None:
        """Emit the end event of every pending request, subscription and consumer."""
        raise NotImplementedError

    # --------------------------------------------------------------------- machinery

    def _handle_violation(self, stream: StreamState, exc: RemoteProtocolError) -> None:
        """Answer a peer's violation: an ``Error`` frame, a stream end or a close."""
        if self._state is ConnState.CLOSED:
            return
        self._events.append(
            ProtocolViolation(
                stream_id=stream.stream_id,
                error_code=int(exc.error_code),
                message=exc.message,
                fatal=exc.fatal,
            )
        )
        if exc.fatal:
            stream.broken = True
            if stream.kind is StreamKind.CONTROL:
                self._control_failed(exc)
                return
        self._write_error(stream.stream_id, exc)
        if exc.fatal:
            self._stream_failed(stream, exc)

    def _write_error(self, stream_id: int, exc: RemoteProtocolError) -> None:
        """Write an ``Error`` for ``exc`` on ``stream_id`` if we can, else on stream 0."""
        error = self._error_frame(exc.error_code, exc.message, exc.request_id, False, exc.details)
        for sid in (stream_id, CONTROL_STREAM_ID):
            if is_client_bidi(sid) and sid not in self._local_ended:
                self._write(sid, error)
                return

    def _error_frame(
        self,
        code: int,
        message: str,
        request_id: int | None,
        retryable: bool,
        details: dict[str, Any],
    ) -> bytes:
        """An encoded ``Error`` within the peer's limit: its details are dropped and its
        message clipped to :data:`MAX_TEXT_BYTES` if it would not fit (or if msgpack cannot
        encode the details), so an ``Error`` can always be sent."""
        try:
            frame = encode(
                Error(
                    code=int(code),
                    message=message,
                    request_id=request_id,
                    retryable=retryable,
                    details=details,
                )
            )
            if self.fits(frame):
                return frame
        except LocalProtocolError:
            pass
        return encode(
            Error(
                code=int(code),
                message=clip_text(message),
                request_id=request_id,
                retryable=retryable,
            )
        )

    def _transition(self, event: ConnInput, *, local: bool) -> None:
        """Move the connection machine (raises as :func:`~felix_proto._state.transition`)."""
        self._state = transition(self._table, self._state, event, what="connection", local=local)

    def _send(self, stream_id: int, msg: Message, *, end: bool = False) -> None:
        """Encode ``msg`` and queue it on ``stream_id``.

        Raises:
            LocalProtocolError: the frame is larger than the peer accepts, or the stream
                was already ended by this side.
        """
        self._send_frame(stream_id, encode(msg), type(msg), end=end)

    def _send_frame(
        self, stream_id: int, frame: bytes, kind: type[Message], *, end: bool = False
    ) -> None:
        """Queue an encoded ``kind`` message on ``stream_id``. Raises as :meth:`_send`."""
        if len(frame) - HEADER_SIZE > self._max_send_frame:
            raise LocalProtocolError(
                f"{kind.__name__} of {len(frame) - HEADER_SIZE} bytes exceeds the "
                f"peer's max_frame_size {self._max_send_frame}"
            )
        self._write(stream_id, frame, end=end)

    def _write(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Queue raw bytes (and optionally FIN) on ``stream_id``.

        Raises:
            LocalProtocolError: the stream was already ended by this side.
        """
        if stream_id in self._local_ended:
            raise LocalProtocolError(f"stream {stream_id} was already ended")
        chunks = self._out.get(stream_id)
        if chunks is None:
            chunks = self._out[stream_id] = []
        if data:
            chunks.append(data)
            self._out_bytes += len(data)
        if end:
            self._local_ended.add(stream_id)
            self._out_fin.add(stream_id)

    def _end_stream(self, stream_id: int) -> None:
        """Queue a FIN on ``stream_id`` unless it was already ended."""
        if stream_id not in self._local_ended:
            self._write(stream_id, b"", end=True)

    def _terminate(
        self,
        code: int,
        reason: str,
        *,
        by_peer: bool,
        request_close: bool,
        details: dict[str, Any] | None = None,
    ) -> None:
        """End the connection: close request, every end event, then the terminal event."""
        if self._state is ConnState.CLOSED:
            return
        self._transition(ConnInput.CLOSE, local=True)
        if request_close:
            self._events.append(CloseRequested(error_code=int(code), reason=reason))
        else:
            self._out.clear()
            self._out_bytes = 0
            self._out_fin.clear()
        self._fail_everything(int(code), reason)
        self._events.append(
            ConnectionTerminated(
                error_code=int(code), reason=reason, by_peer=by_peer, details=details or {}
            )
        )
