"""The client's QUIC transport: a sans-IO ``QuicConnection`` over an anyio UDP socket.

The connection is aioquic's or qh3's (``TransportOptions.quic_engine``); which one is
decided by :mod:`felix_runtime.quic_engines` alone: this module builds it from there and
tests its events against :data:`felix_server.quic_engine.EVENTS`.

Theory of operation. One task (:meth:`QuicTransport.run`) owns the socket's receive side.
Each pass of its loop waits for a datagram or the timer, whichever comes first, feeds what
came to QUIC with ``now``, lets the :class:`QuicHandler` (the Felix layer) take QUIC's events
and queue its own writes, then transmits. The wait ends at a deadline, the earliest of QUIC's
and the handler's deadlines and the keep-alive's; anything that may move that deadline (a
new request from another task, say) calls :meth:`QuicTransport.flush`, which transmits and
moves the deadline of the wait in progress. There is no second task and no sleeping. The
socket waits through anyio (a cancel scope for the deadline), except under asyncio, where
the loop watches the socket for good and a wait is a future and a timer handle
(:class:`_AsyncioUdpSocket`).

Keep-alive. A peer drops a QUIC connection on which it received nothing for its idle
timeout; a client that only waits (an idle subscriber, a consumer between jobs) sends
nothing. So once nothing was sent for the keep-alive interval (``keepalive``, at most a
third of ``idle_timeout``), the loop sends a QUIC PING; the broker's ACK of it keeps this
side's idle timer going too.

Datagrams and wake-ups. A request sent by :meth:`QuicTransport.flush` carries the ACK that
aioquic would otherwise send alone after its 1 ms ack delay
(:class:`felix_server.quic_engine.AckWithData`: at most one such ACK per millisecond, as
many as aioquic's timer would send), an ACK with nothing to ride on waits up to 10 ms or 4
datagrams (:mod:`felix_client._quic_acks`: a subscriber at a record per millisecond sends about
one ACK-only datagram per 4 records instead of one per two), and the send lock yields to
the event loop only when another task holds it: one record published at a time costs one
datagram each way and as few loop passes as the waits themselves.

Readers first. A pass that woke a task (a reply's waiter, a subscription's or consumer's
inbox: :meth:`QuicHandler.pump` says so) yields once before it transmits, so the woken
tasks run first: what the transmit would send is rarely urgent (the ACK of what just arrived
waits for aioquic's ack delay anyway), and transmitting first delayed every record and reply
by the transmit and by re-arming the wait, about 100 us per record on a subscriber. When a
woken task is flushing (a publisher's next publish, right after its ack), the pass does the
flush's work when it resumes (one transmit carries the new request, with the pending ACK)
and the flush, finding it done, returns: the request leaves before the loop re-arms its
wait. A request (:meth:`QuicTransport.flush_request`) does not even yield for that: it
returns at once to wait for its reply, and the loop transmits right after (one event-loop
iteration per request less: a cache get at concurrency 1 went from about 4.2 to 3.5 loop
iterations per request).

Quiet transmits. Every pass ends with a transmit, and a reader's usually has nothing to
send (its ACK is held, see above), yet aioquic's ``datagrams_to_send`` costs about 25 us
to find that out (it starts a packet and drops it). On aioquic's own ``QuicConnection``
the transmit first asks :func:`felix_server.quic.nothing_to_send` (chosen by
:func:`felix_server.quic_engine.quiet_test`; the broker's sessions ask it too), which makes
the same tests on the same state without building anything and, when nothing would go out, leaves
the connection as the call would have (its pacing time); the call is made whenever
anything (an ACK due, data, a PING, flow-control credit, a retransmission ...) would be
written. qh3's connection and any subclass are always called.

Apart from the asyncio socket (a fast path, with the anyio one as its fallback), nothing here
is asyncio- or trio-specific, so the client runs under both anyio backends. The
clock is the event loop's (what ``anyio.current_time()`` returns, looked up once per
connection: :func:`loop_clock`) throughout, so QUIC's timers and anyio's deadlines agree.
"""

from __future__ import annotations

import asyncio
import math
import socket
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from aioquic.quic.events import ConnectionTerminated, QuicEvent
from aioquic.quic.packet import QuicErrorCode

from felix_runtime.quic_engines import DEFAULT_ENGINE, load_engine
from felix_runtime.udp import READ_BATCH, udp_socket
from felix_server.quic_engine import EVENTS, AckWithData, quiet_test

from ._quic_acks import ReaderAcks

__all__ = [
    "QuicHandler",
    "QuicTransport",
    "TransportOptions",
    "describe_termination",
    "loop_checkpoint",
    "loop_clock",
]


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock: the function ``anyio.current_time()`` ends up calling,
    found once, so that hot paths skip anyio's per-call backend lookup.

    Returns:
        ``loop.time`` of the running asyncio loop, ``trio.current_time`` under trio, or
        ``anyio.current_time`` itself on any other backend.
    """
    try:
        import sniffio  # how anyio itself tells the backends apart (trio depends on it)
    except ImportError:  # pragma: no cover - no sniffio, so no trio: asyncio it is
        return asyncio.get_running_loop().time
    library = sniffio.current_async_library()
    if library == "asyncio":
        return asyncio.get_running_loop().time
    if library == "trio":
        import trio

        return trio.current_time
    return anyio.current_time  # pragma: no cover - anyio has no third backend today


@types.coroutine
def _asyncio_yield() -> Generator[None, None, None]:
    """One bare yield to the asyncio loop: what ``asyncio.sleep(0)`` does (and so anyio's
    ``checkpoint`` on asyncio), without the coroutine frames and anyio's per-call backend
    lookup (about 3.5 us of the 8 a checkpoint costs)."""
    yield


def loop_checkpoint() -> Callable[[], Awaitable[None]]:
    """The running event loop's checkpoint (yield once, let the ready tasks run), found
    once: a bare yield under asyncio, ``anyio.lowlevel.checkpoint`` elsewhere (trio)."""
    if _asyncio_loop() is not None:
        return _asyncio_yield
    return anyio.lowlevel.checkpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    """TLS and QUIC settings of one connection."""

    ca_file: str | None = None
    """A PEM file of certificates to trust (the broker's self-signed certificate, say)."""
    insecure: bool = False
    """Skip certificate verification (development only)."""
    cert_file: str | None = None
    """A PEM certificate (chain) to present when the broker asks for one (mutual TLS)."""
    key_file: str | None = None
    """The private key of ``cert_file`` (PEM)."""
    server_name: str | None = None
    """TLS server name (SNI and verification); defaults to the URL's host."""
    max_datagram_size: int = 1452
    """Largest UDP payload QUIC may send; 1452 suits loopback and most Ethernet paths."""
    idle_timeout: float = 60.0
    """Seconds without traffic after which QUIC drops the connection (QUIC uses the smaller
    of this and the broker's)."""
    keepalive: float | None = 5.0
    """Send a QUIC PING when nothing was sent for this many seconds (at most a third of
    ``idle_timeout``), so that an idle connection stays up; ``None`` or 0: never."""
    max_data: int = 8 << 20
    """Connection-level receive window, in bytes."""
    max_stream_data: int = 4 << 20
    """Per-stream receive window, in bytes."""
    quic_engine: str = DEFAULT_ENGINE
    """The QUIC implementation: ``aioquic`` or ``qh3`` (:mod:`felix_runtime.quic_engines`)."""


class _UdpSocket:
    """A connected, non-blocking UDP socket driven through ``anyio.wait_readable`` /
    ``wait_writable``, so one loop pass can drain many datagrams (anyio's
    ``ConnectedUDPSocket`` hands them over one per await and, on asyncio, keeps at most 100
    queued, dropping the rest). Under asyncio, :class:`_AsyncioUdpSocket` waits for the
    socket and the deadline more cheaply."""

    def __init__(self, sock: socket.socket, remote: tuple[str, int]) -> None:
        self.sock = sock
        self.remote = remote
        self._scope: anyio.CancelScope | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> _UdpSocket:
        """A socket connected to ``host:port``: an :class:`_AsyncioUdpSocket` when the
        running loop is asyncio's with ``add_reader`` (not Windows' proactor loop)."""
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        family, _, _, _, addr = infos[0]
        sock = udp_socket(family)  # non-blocking, large buffers: as the broker's
        try:
            sock.connect(addr)
        except BaseException:
            sock.close()
            raise
        remote = (str(addr[0]), int(addr[1]))
        if _asyncio_loop() is not None:
            try:
                return _AsyncioUdpSocket(sock, remote)
            except NotImplementedError:  # a loop without add_reader: the generic way
                pass
        return cls(sock, remote)

    async def receive_many(self, limit: int, deadline: float = math.inf) -> list[bytes]:
        """Wait for at least one datagram, then take up to ``limit`` without waiting.

        Returns:
            The datagrams; empty when ``deadline`` (on the loop's clock) passed first, or
            :meth:`interrupt` ended the wait.
        """
        with anyio.CancelScope(deadline=deadline) as scope:
            self._scope = scope
            try:
                await anyio.wait_readable(self.sock)
            finally:
                self._scope = None
            return self._take(limit)
        return []

    def move_deadline(self, deadline: float) -> None:
        """Move the deadline of the wait in progress (if any)."""
        if self._scope is not None:
            self._scope.deadline = deadline

    def interrupt(self) -> None:
        """End the wait in progress (if any) as if its deadline had passed."""
        if self._scope is not None:
            self._scope.cancel()

    def _take(self, limit: int) -> list[bytes]:
        out: list[bytes] = []
        recv = self.sock.recv
        while len(out) < limit:
            try:
                out.append(recv(65536))
            except BlockingIOError:
                break
        return out

    def send_nowait(self, datagrams: list[tuple[bytes, object]]) -> int:
        """Send datagrams without waiting until the kernel buffer is full; returns how many
        went out."""
        send = self.sock.send
        for i, (data, _addr) in enumerate(datagrams):
            try:
                send(data)
            except BlockingIOError:
                return i
        return len(datagrams)

    async def send(self, data: bytes) -> None:
        """Send one datagram, waiting while the kernel buffer is full."""
        while True:
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                await anyio.wait_writable(self.sock)

    def close(self) -> None:
        self.sock.close()


class _AsyncioUdpSocket(_UdpSocket):
    """The socket under asyncio: the loop watches it for the connection's whole life
    (``add_reader`` once) and a wait is a bare future plus, for the deadline, one timer
    handle. ``anyio.wait_readable`` registers and unregisters the socket with the selector on
    every wait (two ``epoll_ctl`` calls) and the cancel scope of the deadline costs as much
    again: about 25 us of a subscriber's or a publisher's CPU per wake-up, on its path.

    Raises:
        NotImplementedError: the running loop has no ``add_reader`` (Windows' proactor).
    """

    def __init__(self, sock: socket.socket, remote: tuple[str, int]) -> None:
        super().__init__(sock, remote)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._waiting: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        loop.add_reader(sock.fileno(), self._wake, True)

    def _wake(self, readable: bool) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(readable)

    async def receive_many(self, limit: int, deadline: float = math.inf) -> list[bytes]:
        """As :meth:`_UdpSocket.receive_many`. A readiness with nothing left to read (asyncio
        reports the socket again in the loop iteration that runs the reading task, and that
        report can end the next wait) is not an empty batch: the wait goes on."""
        loop = self._loop
        while deadline > loop.time():
            self._waiting = waiting = loop.create_future()
            if deadline != math.inf:
                self._timer = loop.call_at(deadline, self._wake, False)
            try:
                readable = await waiting
            finally:
                self._waiting = None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if not readable:
                return []
            batch = self._take(limit)
            if batch:
                return batch
        return []

    def move_deadline(self, deadline: float) -> None:
        if self._waiting is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline <= self._loop.time():
            self._wake(False)
        elif deadline != math.inf:
            self._timer = self._loop.call_at(deadline, self._wake, False)

    def interrupt(self) -> None:
        self._wake(False)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        super().close()


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under another event loop (trio)."""
    try:
        import sniffio  # how anyio itself tells the backends apart (trio depends on it)
    except ImportError:  # pragma: no cover - no sniffio, so no trio: asyncio it is
        return asyncio.get_running_loop()
    if sniffio.current_async_library() != "asyncio":
        return None
    return asyncio.get_running_loop()


class QuicHandler(Protocol):
    """What the transport drives: the Felix layer above QUIC."""

    def quic_event(self, event: QuicEvent, now: float) -> None:
        """Take one QUIC event (stream data, resets, termination ...)."""

    def pump(self, now: float) -> bool:
        """Move the layer's pending writes into the QUIC connection.

        Returns:
            Whether a task waiting on the layer (for a reply, or on an inbox) was woken
            since the last call: the loop lets it run before it transmits.
        """

    def get_timer(self) -> float | None:
        """The layer's earliest deadline, or None."""

    def handle_timer(self, now: float) -> None:
        """Fire what is due in the layer."""

    def transport_closed(self, reason: str) -> None:
        """The connection is gone (terminated, socket error, closed locally)."""


class QuicTransport:
    """One client QUIC connection over an anyio connected UDP socket.

    Use :meth:`connect` to create it; run :meth:`run` in a task group and await
    :meth:`wait_handshake`; call :meth:`flush` after queueing writes from outside the loop.
    """

    def __init__(self, sock: _UdpSocket, quic: Any, keepalive: float | None = None) -> None:
        self._sock = sock
        self.quic = quic
        self.keepalive = keepalive
        """Seconds without sending after which a PING goes out (None: never)."""
        self.clock = loop_clock()
        """The event loop's clock (``anyio.current_time()``, looked up once)."""
        self._checkpoint = loop_checkpoint()
        self._handler: QuicHandler | None = None
        self._send_lock = anyio.Lock(fast_acquire=True)  # no yield when nobody holds it
        self._flushing = False
        self._flushes_done = 0  # flushes the loop did for a flushing task (see run)
        self._readers_pass = False  # the loop yields to the readers it woke, then transmits
        self._flush_asked = False  # a reader flushed meanwhile: the loop does it
        self._handshake = anyio.Event()
        self._handshake_set = False  # _handshake.is_set(), without anyio's call
        self._done = anyio.Event()
        self.closed_reason: str | None = None
        self.alpn: str | None = None
        self._last_sent = self.clock()
        self.pings_sent = 0
        """Keep-alive PINGs sent so far."""
        self.acks = AckWithData()
        """When the last ACK went early with a request."""
        self.reader_acks = ReaderAcks()
        """When an ACK goes out while nothing else does (:mod:`felix_client._quic_acks`)."""
        self._quiet = quiet_test(quic)  # aioquic's own class: see "Quiet transmits"

    @classmethod
    async def connect(cls, host: str, port: int, options: TransportOptions) -> QuicTransport:
        """Open the UDP socket and start the QUIC handshake (not awaited here).

        Raises:
            OSError: the host does not resolve or the socket cannot be created.
        """
        engine = load_engine(options.quic_engine)
        config = engine.client_configuration(
            server_name=options.server_name or host,
            max_datagram_size=options.max_datagram_size,
            idle_timeout=options.idle_timeout,
            max_data=options.max_data,
            max_stream_data=options.max_stream_data,
            ca_file=options.ca_file,
            insecure=options.insecure,
            cert_file=options.cert_file,
            key_file=options.key_file,
        )
        sock = await _UdpSocket.connect(host, port)
        try:
            quic = engine.client_connection(configuration=config)
            quic.connect(sock.remote, anyio.current_time())
        except BaseException:
            sock.close()  # and the loop stops watching it
            raise
        keepalive = None
        if options.keepalive:
            keepalive = min(options.keepalive, options.idle_timeout / 3)
        return cls(sock, quic, keepalive)

    # ----------------------------------------------------------------------- the loop

    async def run(self, handler: QuicHandler) -> None:
        """Drive the connection until it terminates or the socket fails; then close.

        Args:
            handler: the layer that takes QUIC events and produces writes.
        """
        self._handler = handler
        addr = self._sock.remote
        try:
            await self.flush()
            while self.closed_reason is None:
                try:
                    batch = await self._sock.receive_many(READ_BATCH, self._deadline())
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
                    self._close(_describe_os_error(exc))
                    break
                now = self.clock()
                for data in batch:
                    self.quic.receive_datagram(data, addr, now)
                if batch:
                    self.reader_acks.received(self.quic, len(batch))
                else:  # the deadline passed (also under a flood of data: a
                    # deadline already past ends the next wait at once)
                    timer = self.quic.get_timer()
                    if timer is not None and timer <= now:
                        self.quic.handle_timer(now)
                    handler.handle_timer(now)
                    self._keep_alive(now)
                wrote = False  # a flush's writes are in QUIC: no quiet test
                if self._process(now):
                    # Let the tasks this pass woke run first (see "Readers first").
                    self._readers_pass = True
                    try:
                        await self._checkpoint()
                    finally:
                        self._readers_pass = False
                    if self._flushing or self._flush_asked:  # do their flush now
                        self._flush_asked = False
                        now = self.clock()
                        self._process(now)
                        self.acks.data_written(self.quic, now)
                        self._flushes_done += 1
                        wrote = True
                await self._transmit(wrote)
        finally:
            self._close("connection closed")
            self._done.set()
            self._sock.close()

    def _process(self, now: float) -> bool:
        """Hand every pending QUIC event to the handler, then let it queue writes; whether
        a waiting task was woken (:meth:`QuicHandler.pump`)."""
        assert self._handler is not None
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, EVENTS.handshake_completed):
                self.alpn = event.alpn_protocol
                self.reader_acks.start(self.quic)
                self._handshake_set = True
                self._handshake.set()
            elif isinstance(event, EVENTS.terminated):
                self._handler.quic_event(event, now)
                self._close(describe_termination(event))
                continue
            self._handler.quic_event(event, now)
        return self._handler.pump(now)

    def _deadline(self) -> float:
        """The next wait's deadline: the earliest of QUIC's timer, the handler's and the
        keep-alive's (every pass computes it: no list, no anyio call)."""
        assert self._handler is not None
        timer: float | None = self.quic.get_timer()
        deadline = math.inf if timer is None else timer
        timer = self._handler.get_timer()
        if timer is not None and timer < deadline:
            deadline = timer
        if self.keepalive and self._handshake_set:
            deadline = min(deadline, self._last_sent + self.keepalive)
        return deadline

    def _keep_alive(self, now: float) -> None:
        """Queue a PING when nothing was sent for the keep-alive interval."""
        if self.keepalive and self._handshake_set and now - self._last_sent >= self.keepalive:
            self.pings_sent += 1
            self.quic.send_ping(self.pings_sent)
            self._last_sent = now  # transmitted right after; counts from now

    async def _transmit(self, wrote: bool = False) -> None:
        """Send what QUIC has to send (``wrote``: a flush just moved writes into QUIC). The
        lock keeps the datagrams in order when the kernel buffer is full and a transmit
        waits to write the rest; while nobody holds it (the rule), the datagrams go out
        without taking it (its ``async with`` costs about 2 us a transmit, and every pass
        of a publisher and a subscriber makes one)."""
        if self._send_lock.locked():  # a transmit waits for room: queue behind it
            async with self._send_lock:
                rest = self._send_now(wrote)
                if rest:
                    await self._send_rest(rest)
            return
        rest = self._send_now(wrote)
        if rest:
            async with self._send_lock:  # free, so taken without yielding
                await self._send_rest(rest)

    def _send_now(self, wrote: bool = False) -> list[tuple[bytes, Any]]:
        """Build QUIC's datagrams and write them while the kernel takes them; the rest.
        After a flush's writes (``wrote``) there is something to build: no quiet test."""
        now = self.clock()
        quiet = self._quiet
        if quiet is not None and not wrote and quiet(self.quic, now):
            return []  # what datagrams_to_send would return (see "Quiet transmits")
        datagrams: list[tuple[bytes, Any]] = self.quic.datagrams_to_send(now)
        if not datagrams:
            return datagrams
        self._last_sent = now
        try:
            sent = self._sock.send_nowait(datagrams)  # the kernel buffer is rarely full
        except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError) as exc:
            self._close(_describe_os_error(exc))
            return []
        return datagrams[sent:]

    async def _send_rest(self, rest: list[tuple[bytes, Any]]) -> None:
        try:
            for data, _addr in rest:
                await self._sock.send(data)
        except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError) as exc:
            self._close(_describe_os_error(exc))  # closed while waiting to write

    def _close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._handshake_set = True
        self._handshake.set()  # wake a waiting connect() so it sees the failure
        if self._handler is not None:
            self._handler.transport_closed(reason)
        self._sock.interrupt()

    # -------------------------------------------------------------- called by others

    @property
    def is_closed(self) -> bool:
        """True once the connection is over (``closed_reason`` says why)."""
        return self.closed_reason is not None

    async def flush(self) -> None:
        """Move the handler's writes into QUIC, transmit, and re-arm the loop's timer.

        Call this after any change made from outside the loop task (a new request).
        Concurrent callers coalesce: while one flush is yielding before it transmits, the
        others return at once and their writes go out in its single transmit.
        """
        if self.closed_reason is not None or self._handler is None or self._flushing:
            return
        self._flushing = True
        done = self._flushes_done
        try:
            await self._checkpoint()  # let other ready tasks queue their requests
        finally:
            self._flushing = False
        if self.is_closed or self._flushes_done != done:
            return  # closed while we yielded, or the loop took our writes to transmit them
        now = self.clock()
        self._process(now)
        self.acks.data_written(self.quic, now)  # the request carries the pending ACK
        await self._transmit(wrote=True)
        self._sock.move_deadline(self._deadline())

    async def flush_request(self) -> None:
        """:meth:`flush`, for a request whose caller waits for its reply next.

        Called by a task that the loop's pass just woke (a reply's waiter making its next
        request, see "Readers first"), it returns at once: the loop moves the writes into
        QUIC and transmits right after the tasks it woke have run, which is what the flush
        would wait for (one event-loop iteration per request less). Anywhere else it is
        :meth:`flush`.
        """
        if self._readers_pass:
            self._flush_asked = True
            return
        await self.flush()

    async def wait_handshake(self) -> None:
        """Wait until the TLS handshake completed or the connection failed.

        Raises:
            ConnectionError: the connection closed before the handshake completed.
        """
        await self._handshake.wait()
        if self.closed_reason is not None:
            raise ConnectionError(self.closed_reason)

    async def aclose(self, error_code: int = 0, reason: str = "") -> None:
        """Close the QUIC connection politely and wait (briefly) for the loop to end."""
        if self.closed_reason is None:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            await self._transmit()
            self._close("closed by client")
        if self._handler is not None:
            with anyio.move_on_after(1.0, shield=True):
                await self._done.wait()
        else:
            self._sock.close()


def describe_termination(event: ConnectionTerminated) -> str:
    """Why the peer closed the connection, in one line. A broker that will not take the
    connection (over its connection limit, shutting down) closes it with the QUIC transport
    error ``CONNECTION_REFUSED`` and a reason: "broker refused the connection: <reason>"."""
    reason = event.reason_phrase or f"error code {event.error_code}"
    if event.frame_type is not None and event.error_code == QuicErrorCode.CONNECTION_REFUSED:
        return f"broker refused the connection: {reason}"
    return f"connection closed: {reason}"


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
