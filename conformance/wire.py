"""Raw Felix over raw QUIC: the suite's only transport.

Theory of operation
-------------------
:class:`Conn` is one QUIC connection opened with aioquic's asyncio client API (its sans-IO
connection aioquic's or qh3's: :attr:`Endpoint.quic_engine`, :mod:`conformance.engines`).
It does *not* use felix_client or the felix_proto connection machines: a check writes bytes (usually
``felix_proto.codec.encode(message)``, sometimes hand-built garbage) on a stream of its
choice, and every stream the broker writes on is recorded as a :class:`StreamLog` that
decodes the broker's frames with :class:`felix_proto.codec.MessageDecoder`. A check then
waits, always with a timeout, for a predicate over those logs.

Anything the broker writes that does not decode is recorded in ``StreamLog.garbage``; the
checks treat it as a failure of the broker, except where they expect a version-1 answer and
read ``StreamLog.raw`` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection

from conformance.engines import client_connection
from felix_proto import ALPN
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import RemoteProtocolError

__all__ = ["CheckFailed", "Conn", "Endpoint", "StreamLog", "expect", "open_conn"]

CONTROL = 0
"""The control stream's id (§4)."""

M = TypeVar("M", bound=m.Message)


class CheckFailed(AssertionError):
    """A check's expectation did not hold; the message says what and why."""


def expect(cond: bool, reason: str) -> None:
    """Raise :class:`CheckFailed` with ``reason`` unless ``cond`` holds."""
    if not cond:
        raise CheckFailed(reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where and how to connect."""

    host: str
    """Broker host name or address."""
    port: int
    """Broker UDP port."""
    cafile: str | None = None
    """CA bundle that signs the broker's certificate (None: the system store)."""
    insecure: bool = False
    """Skip certificate verification."""
    server_name: str | None = None
    """TLS server name (SNI and verification); defaults to ``host``."""
    wait: float = 3.0
    """Default seconds any single wait may take."""
    quic_engine: str = "aioquic"
    """The client's QUIC engine, ``aioquic`` or ``qh3`` (:mod:`conformance.engines`)."""


@dataclass(slots=True)
class StreamLog:
    """Everything the broker wrote on one stream, decoded as it arrives."""

    stream_id: int
    """The QUIC stream id."""
    raw: bytearray = field(default_factory=bytearray)
    """Every byte received, in order."""
    messages: list[m.Message] = field(default_factory=list)
    """The decoded messages, in order."""
    garbage: list[str] = field(default_factory=list)
    """Descriptions of frames from the broker that did not decode."""
    fin: bool = False
    """The broker ended the stream."""
    reset: int | None = None
    """The broker's RESET_STREAM error code, if it reset the stream."""
    decoder: MessageDecoder = field(default_factory=MessageDecoder)

    def feed(self, data: bytes, end: bool) -> None:
        """Record and decode received bytes."""
        self.raw += data
        self.fin = self.fin or end
        if self.garbage and not self.messages and not data:
            return
        try:
            self.decoder.feed(data)
            while True:
                try:
                    msg = self.decoder.next_message()
                except RemoteProtocolError as exc:
                    self.garbage.append(f"{type(exc).__name__}: {exc}")
                    if exc.fatal:
                        return
                    continue
                if msg is None:
                    return
                self.messages.append(msg)
        except RemoteProtocolError as exc:
            if not self.garbage:
                self.garbage.append(f"{type(exc).__name__}: {exc}")

    @property
    def ended(self) -> bool:
        """The broker finished or reset the stream."""
        return self.fin or self.reset is not None

    def of(self, kind: type[M]) -> list[M]:
        """The messages of one type, in order."""
        return [x for x in self.messages if isinstance(x, kind)]


class _Protocol(QuicConnectionProtocol):
    """Records stream data and connection events; wakes waiters on every change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[int, StreamLog] = {}
        self.stop_sending: set[int] = set()
        self.terminated: qe.ConnectionTerminated | None = None
        self.alpn: str | None = None
        self.changed = asyncio.Event()

    async def wait_connected(self) -> None:
        # As aioquic's, but a waiter failed after a timed-out wait is not reported as
        # "Future exception was never retrieved".
        if self._connected or self._connected_waiter is not None:
            return await super().wait_connected()
        waiter = self._connected_waiter = self._loop.create_future()
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(waiter)
        return None

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        # Not calling super(): its stream readers/writers would send FIN when collected.
        if isinstance(event, qe.StreamDataReceived):
            self.log(event.stream_id).feed(event.data, event.end_stream)
        elif isinstance(event, qe.StreamReset):
            self.log(event.stream_id).reset = event.error_code
        elif isinstance(event, qe.StopSendingReceived):
            self.stop_sending.add(event.stream_id)
        elif isinstance(event, qe.HandshakeCompleted):
            self.alpn = event.alpn_protocol
        elif isinstance(event, qe.ConnectionTerminated):
            self.terminated = event
        self.changed.set()

    def log(self, stream_id: int) -> StreamLog:
        log = self.streams.get(stream_id)
        if log is None:
            log = self.streams[stream_id] = StreamLog(stream_id)
        return log


class Conn:
    """One raw Felix-over-QUIC connection. Every wait is bounded.

    Args:
        protocol: the connected aioquic protocol.
        endpoint: the endpoint (for the default wait).
    """

    def __init__(self, protocol: _Protocol, endpoint: Endpoint) -> None:
        self._p = protocol
        self.endpoint = endpoint
        self.welcome: m.Welcome | None = None
        self._rid = 0
        self._next_bidi = 4  # 0 is the control stream
        self._request_stream: int | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def alpn(self) -> str | None:
        """The ALPN the TLS handshake negotiated."""
        return self._p.alpn

    @property
    def terminated(self) -> qe.ConnectionTerminated | None:
        """The connection's end, once it ended."""
        return self._p.terminated

    def log(self, stream_id: int) -> StreamLog:
        """The record of one stream (created empty if nothing arrived yet)."""
        return self._p.log(stream_id)

    def server_streams(self) -> list[StreamLog]:
        """Broker-opened unidirectional streams, in id order."""
        return [s for sid, s in sorted(self._p.streams.items()) if sid % 4 == 3]

    def rid(self) -> int:
        """A fresh request id."""
        self._rid += 1
        return self._rid

    # -- sending -------------------------------------------------------------------------
    def new_stream(self) -> int:
        """Allocate a new request stream id (client bidirectional: 4, 8, 12 ...)."""
        # aioquic treats a lower, never-created local stream as discarded once a higher
        # one exists: create the control stream first (no bytes are sent on it).
        self._p._quic.send_stream_data(CONTROL, b"")
        sid = self._next_bidi
        self._next_bidi += 4
        return sid

    @property
    def request_stream(self) -> int:
        """The connection's default request stream (allocated on first use)."""
        if self._request_stream is None:
            self._request_stream = self.new_stream()
        return self._request_stream

    def send_raw(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Write bytes on a stream and transmit."""
        self._p._quic.send_stream_data(stream_id, data, end)
        self._p.transmit()

    def send(self, msg: m.Message, stream_id: int | None = None, end: bool = False) -> int:
        """Encode and write a message (default: on the request stream); returns the stream."""
        sid = self.request_stream if stream_id is None else stream_id
        self.send_raw(sid, encode(msg), end)
        return sid

    def stop(self, stream_id: int, code: int = 0) -> None:
        """Send STOP_SENDING for a broker-opened stream."""
        self._p._quic.stop_stream(stream_id, code)
        self._p.transmit()

    def close(self) -> None:
        """Close the QUIC connection (no wait)."""
        self._p.close()

    # -- waiting -------------------------------------------------------------------------
    async def until(self, predicate: Callable[[], bool], what: str, wait: float | None) -> None:
        """Wait for ``predicate`` to hold.

        Raises:
            CheckFailed: it did not hold within ``wait`` seconds (default: the endpoint's).
        """
        limit = self.endpoint.wait if wait is None else wait
        try:
            async with asyncio.timeout(limit):
                while not predicate():
                    self._p.changed.clear()
                    await self._p.changed.wait()
        except TimeoutError:
            raise CheckFailed(f"no {what} within {limit:g}s") from None

    async def quiet(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Wait ``seconds``; return True as soon as ``predicate`` holds, else False."""
        with contextlib.suppress(CheckFailed):
            await self.until(predicate, "event", seconds)
            return True
        return False

    async def message(
        self,
        stream_id: int,
        kind: type[M],
        match: Callable[[M], bool] = lambda _: True,
        what: str | None = None,
        wait: float | None = None,
    ) -> M:
        """Wait for a message of ``kind`` on ``stream_id`` matching ``match``; return it."""
        found: list[M] = []
        log = self.log(stream_id)

        def check() -> bool:
            self._garbage(log)
            found.extend(x for x in log.of(kind) if match(x))
            return bool(found)

        await self.until(check, what or f"{kind.__name__} on stream {stream_id}", wait)
        return found[0]

    async def reply(self, stream_id: int, request_id: int, wait: float | None = None) -> m.Message:
        """Wait for the reply (or Error) carrying ``request_id`` on ``stream_id``."""
        return await self.message(
            stream_id,
            m.Message,
            lambda x: getattr(x, "request_id", None) == request_id,
            f"reply to request {request_id} on stream {stream_id}",
            wait,
        )

    async def request(
        self, msg: m.Message, stream_id: int | None = None, wait: float | None = None
    ) -> m.Message:
        """Send a request and return its reply or Error."""
        sid = self.send(msg, stream_id)
        return await self.reply(sid, getattr(msg, "request_id"), wait)  # noqa: B009

    async def expect(
        self, msg: m.Message, kind: type[M], stream_id: int | None = None, wait: float | None = None
    ) -> M:
        """Send a request whose reply must be ``kind``; an Error reply fails the check."""
        reply = await self.request(msg, stream_id, wait)
        if not isinstance(reply, kind):
            raise CheckFailed(
                f"{type(msg).__name__} answered {describe(reply)}, expected {kind.__name__}"
            )
        return reply

    async def expect_error(
        self,
        msg: m.Message,
        code: int | set[int],
        stream_id: int | None = None,
        wait: float | None = None,
    ) -> m.Error:
        """Send a request that must be refused with ``code``; return the Error."""
        reply = await self.request(msg, stream_id, wait)
        codes = {code} if isinstance(code, int) else code
        if not isinstance(reply, m.Error) or reply.code not in codes:
            raise CheckFailed(
                f"{type(msg).__name__} answered {describe(reply)}, expected Error "
                f"{' or '.join(map(str, sorted(codes)))}"
            )
        return reply

    async def ended(self, wait: float | None = None) -> qe.ConnectionTerminated:
        """Wait for the connection to end; return how it ended."""
        await self.until(lambda: self.terminated is not None, "connection close", wait)
        assert self.terminated is not None
        return self.terminated

    def _garbage(self, log: StreamLog) -> None:
        if log.garbage:
            raise CheckFailed(
                f"broker sent an undecodable frame on stream {log.stream_id}: {log.garbage[0]}"
            )

    async def hello(self, **fields: Any) -> m.Welcome | m.Error:
        """Send ``Hello`` (versions [2] unless given) and return ``Welcome`` or ``Error``."""
        fields.setdefault("versions", [2])
        self.send(m.Hello(**fields), CONTROL)
        reply = await self.message(
            CONTROL, m.Message, lambda x: isinstance(x, m.Welcome | m.Error), "handshake reply"
        )
        assert isinstance(reply, m.Welcome | m.Error)
        if isinstance(reply, m.Welcome):
            self.welcome = reply
        return reply


def describe(msg: m.Message) -> str:
    """A short description of a message for failure reasons."""
    if isinstance(msg, m.Error):
        return f"Error {msg.code} ({msg.message!r})"
    return type(msg).__name__


def connection(endpoint: Endpoint, alpn: list[str] | None) -> QuicConnection:
    """A client QUIC connection of the endpoint's engine for ``endpoint`` offering ``alpn``
    (None: no ALPN)."""
    return client_connection(
        endpoint.quic_engine,
        alpn=alpn,
        server_name=endpoint.server_name or endpoint.host,
        cafile=endpoint.cafile,
        insecure=endpoint.insecure,
    )


@contextlib.asynccontextmanager
async def open_conn(endpoint: Endpoint, alpn: list[str] | None = None) -> AsyncIterator[Conn]:
    """Open a QUIC connection (ALPN ``felix/2`` unless ``alpn`` says otherwise).

    Like ``aioquic.asyncio.client.connect`` (IPv4 only), except that leaving sends
    CONNECTION_CLOSE and releases the socket at once instead of waiting out the closing
    period: the suite opens hundreds of connections.

    Raises:
        ConnectionError: the QUIC/TLS handshake failed.
        TimeoutError: it did not complete within the endpoint's wait.
    """
    quic = connection(endpoint, [ALPN] if alpn is None else (alpn or None))
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_DGRAM, family=socket.AF_INET
    )
    addr = infos[0][4]
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Protocol(quic), local_addr=("0.0.0.0", 0)
    )
    assert isinstance(protocol, _Protocol)
    try:
        protocol.connect(addr)
        try:
            async with asyncio.timeout(endpoint.wait):
                await protocol.wait_connected()
        except ConnectionError:
            end = protocol.terminated
            if end is None:
                raise
            raise ConnectionError(
                f"handshake failed: code {end.error_code:#x} {end.reason_phrase!r}"
            ) from None
        yield Conn(protocol, endpoint)
    finally:
        protocol.close()  # queues and transmits CONNECTION_CLOSE (if not closed already)
        transport.close()
