"""One Felix connection: the QUIC transport, the sans-IO client machine, and dispatch.

Theory of operation. :class:`Connection` is the :class:`~felix_client._transport.QuicHandler`
of one :class:`~felix_client._transport.QuicTransport`. QUIC stream events go into the
:class:`felix_proto.client.ClientConnection` machine; the machine's events come out and are
*dispatched* without blocking: replies wake the task waiting on that request id, records and
deliveries go into the inbox of their subscription or consumer, a terminal event fails every
waiter and closes every inbox. The machine's writes go into QUIC in :meth:`pump`.

A request is made in the caller's task: call the machine (which queues the frame and returns
a request id), register a waiter, :meth:`~QuicTransport.flush`, wait. Every wait is bounded
by the request timeout, which the machine keeps: each request carries a deadline, the
transport's loop fires the machine's timer, and a ``RequestTimedOut`` event wakes the waiter
with :class:`RequestTimeout` (no per-request timer or cancel scope here). If the transport
ends first, every waiter is woken with the connection's error. No protocol decision is taken
here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
from aioquic.quic import events as quic_events

from felix_proto import events as ev
from felix_proto.client import ClientConnection
from felix_proto.connection import TOKEN_REFRESH
from felix_proto.errors import ErrorCode, LocalProtocolError
from felix_proto.messages import EndReason
from felix_server.quic_engine import EVENTS

from ._acks import AckBatches
from ._inbox import Inbox
from ._local import local_error
from ._transport import QuicTransport, TransportOptions, describe_termination
from .errors import (
    ConnectionLost,
    FelixError,
    NotFound,
    RequestTimeout,
    ShuttingDown,
    error_from_code,
)

__all__ = ["Connection", "FeedItem", "closed_by_broker"]

E = TypeVar("E", bound=ev.Event)

FeedItem = (
    ev.EventsReceived
    | ev.GapReported
    | ev.SubscriptionEnded
    | ev.DeliveryReceived
    | ev.DeliveriesReceived
    | ev.ConsumerEnded
)
"""What a subscription's or a consumer's inbox carries."""

_REPLY_EVENTS = (
    ev.PublishAcked,
    ev.TokenReceived,
    ev.SubscriptionStarted,
    ev.ConsumerStarted,
    ev.CacheValueReceived,
    ev.CachePutCompleted,
    ev.CacheDeleteCompleted,
    ev.AdminReplied,
    ev.RequestSucceeded,
)


class _FutureEvent:
    """The one-shot event of a request under asyncio: a bare future.

    ``anyio.Event`` on asyncio is an ``asyncio.Event`` (a waiter deque, a future and two
    more coroutine frames on every wait); a request is woken once, so its future alone
    does. Cancelling the waiting task cancels the future, and :meth:`set` then does nothing.
    """

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        return self._future.done()

    def wait(self) -> asyncio.Future[None]:
        return self._future


def _event_factory(welcomed: anyio.Event) -> Callable[[], anyio.Event | _FutureEvent]:
    """What makes a request's event, found once per connection: a future of the running
    asyncio loop under asyncio, else (trio) the backend's Event class (the type of
    ``welcomed``), instantiated directly to skip anyio.Event's per-call backend lookup."""
    try:
        import sniffio  # how anyio itself tells the backends apart (trio depends on it)
    except ImportError:  # pragma: no cover - no sniffio, so no trio: asyncio it is
        library = "asyncio"
    else:
        library = sniffio.current_async_library()
    if library == "asyncio":
        create_future = asyncio.get_running_loop().create_future
        return lambda: _FutureEvent(create_future())
    return type(welcomed)


class _Waiter:
    """One pending request: woken by its reply, its timeout or the connection's end."""

    __slots__ = ("done", "error", "reply")

    def __init__(self, done: anyio.Event | _FutureEvent) -> None:
        self.done = done
        self.reply: ev.Event | None = None
        self.error: FelixError | None = None


class Connection:
    """A connected, handshaken Felix connection. Create it with :meth:`open`.

    Attributes:
        welcome: the broker's ``Welcomed`` event (server id, limits ...).
        closed_error: why the connection ended, once it has (``None`` while it is up).
    """

    def __init__(self, transport: QuicTransport, machine: ClientConnection, timeout: float):
        self.transport = transport
        self.machine = machine
        self.timeout = timeout
        self.welcome: ev.Welcomed | None = None
        self.goaway: ev.GoAwayReceived | None = None
        self.closed_error: FelixError | None = None
        self._welcomed = anyio.Event()
        self._new_event = _event_factory(self._welcomed)  # one per request
        self._clock = transport.clock
        self._waiters: dict[int, _Waiter] = {}
        self._feeds: dict[tuple[str, int], Inbox[FeedItem]] = {}
        self._early: dict[tuple[str, int], list[FeedItem]] = {}
        self._lost_reason: str | None = None
        self._fatal: FelixError | None = None  # a connection-level Error (expired token ...)
        self._cache_streams: list[int] = []
        self._next_cache = 0
        self.acks = AckBatches(timeout, feeds=self._feeds)
        """Queue settlements waiting for the end of the pass, and frames awaiting answers."""
        self._ack_wake = anyio.Event()
        self._ack_answered: anyio.Event | None = None
        self._woke = False  # a waiter or an inbox's reader was woken (see pump)

    # --------------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        task_group: anyio.abc.TaskGroup,
        host: str,
        port: int,
        *,
        options: TransportOptions,
        token: str | None,
        client_name: str,
        timeout: float,
        capabilities: Sequence[str] = (TOKEN_REFRESH,),
    ) -> Connection:
        """Connect, run the transport in ``task_group`` and complete both handshakes.

        Raises:
            ConnectionLost: the broker is unreachable, TLS failed, or the connection closed.
            RequestTimeout: the handshakes did not complete within ``timeout``.
            FelixError: the broker refused the ``Hello`` (``Unauthenticated`` ...).
        """
        try:
            transport = await QuicTransport.connect(host, port, options)
        except OSError as exc:
            raise ConnectionLost(f"cannot reach {host}:{port}: {exc}") from None
        machine = ClientConnection(
            token=token,
            client_name=client_name,
            default_timeout=timeout,
            auto_credit=None,
            capabilities=list(capabilities),
            batch_deliveries=True,  # a consumer reads a DeliveryBatch's columns as they are
        )
        conn = cls(transport, machine, timeout)
        task_group.start_soon(transport.run, conn)
        try:
            with anyio.fail_after(timeout):
                try:
                    await transport.wait_handshake()
                except ConnectionError as exc:
                    raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from None
                machine.connect(now=transport.clock(), timeout=timeout)
                await transport.flush()
                await conn._welcomed.wait()
        except TimeoutError:
            await transport.aclose()
            raise RequestTimeout(
                f"no answer from {host}:{port} within {timeout:g}s (is the broker running?)"
            ) from None
        except BaseException:
            await transport.aclose()
            raise
        if conn.closed_error is not None:
            await transport.aclose()
            raise conn.closed_error
        # Started once the connection is up: its end (transport_closed) stops it.
        task_group.start_soon(conn._flush_acks_soon)
        return conn

    @property
    def is_open(self) -> bool:
        """True while requests can be made."""
        return self.closed_error is None and self.goaway is None

    async def aclose(self) -> None:
        """Close the connection (pending requests fail with ``ConnectionLost``)."""
        if self.closed_error is None:
            self.acks.write(self.machine, self._clock(), self._ack_failed)  # before the close
            with contextlib.suppress(LocalProtocolError):
                self.machine.close(0, "client closed")
            await self.transport.flush()
        await self.transport.aclose()

    # ------------------------------------------------------------------- requests

    async def request(self, call: Callable[[ClientConnection, float], int]) -> ev.Event:
        """Make one request and wait for its reply.

        Args:
            call: ``(machine, now) -> request_id``; queues the request in the machine with
                its deadline (the call's ``timeout``, else the connection's default): the
                machine times the request out (see the module docstring).

        Returns:
            The reply event (``PublishAcked``, ``CacheValueReceived`` ...).

        Raises:
            FelixError: the typed error the broker returned, ``RequestTimeout`` or
                ``ConnectionLost``.
        """
        rid = self.start(call)
        waiter = self._waiters[rid]  # wait(rid), inlined: one coroutine frame less per op
        try:
            await self.transport.flush_request()
            await waiter.done.wait()
        finally:
            self._waiters.pop(rid, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None  # done is set only with a reply or an error
        return waiter.reply

    def start(self, call: Callable[[ClientConnection, float], int]) -> int:
        """Queue a request and register its waiter; :meth:`wait` for it after a flush.

        After ``GoAway`` the machine itself decides: requests that finish work (unsubscribe,
        cancel, confirmed acks and nacks) still go out, new work raises ``ShuttingDown``.
        """
        self._check_not_closed()
        try:
            rid = call(self.machine, self._clock())
        except LocalProtocolError as exc:
            self.check_open()
            raise local_error(exc) from None
        self._waiters[rid] = _Waiter(self._new_event())
        return rid

    async def wait(self, rid: int) -> ev.Event:
        """Flush, then wait for the reply to request ``rid``: its reply, its timeout
        (``RequestTimedOut`` from the machine) or the connection's end wakes it."""
        waiter = self._waiters[rid]
        try:
            await self.transport.flush()
            await waiter.done.wait()
        finally:
            self._waiters.pop(rid, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None  # done is set only with a reply or an error
        return waiter.reply

    async def send(self, call: Callable[[ClientConnection, float], object]) -> None:
        """Queue a message that expects no reply (credit, ack without id) and flush. Allowed
        after ``GoAway``: the broker keeps delivering until its grace period ends."""
        self._check_not_closed()
        try:
            call(self.machine, self._clock())
        except LocalProtocolError as exc:
            self.check_open()
            raise local_error(exc) from None
        await self.transport.flush()

    # ------------------------------------------------------------- settlements

    async def settle(
        self,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        ack: bool,
        delay_ms: int = 0,
        wait: bool = False,
        committed: bool = False,
    ) -> None:
        """Ack (or nack) deliveries: buffered until the pass ends (see :mod:`._acks`).

        Args:
            consumer_id: the consumer they were delivered to.
            delivery_ids: deliveries awaiting settlement.
            ack: ack (True) or nack (False).
            delay_ms: the nack's redelivery delay.
            committed: an ack the broker answers once it is on disk (mode ``COMMITTED``).
            wait: write the buffer now and wait for the broker's answer to the frame that
                carries these ids.

        Raises:
            NotFound: the consumer has ended or an id is not awaiting settlement.
            ConnectionLost: the connection is gone.
            FelixError: with ``wait``, the broker's error (or ``RequestTimeout``).
        """
        acks = self.acks
        if len(acks.sent) >= acks.max_unconfirmed:
            while len(acks.sent) >= acks.max_unconfirmed and self.closed_error is None:
                await self._ack_answer()  # back-pressure: too many frames await answers
        if self.closed_error is not None:
            self._check_not_closed()
        if ("con", consumer_id) not in self._feeds:
            raise NotFound(
                f"consumer {consumer_id} has ended (queue deleted, consumer closed or "
                f"connection lost): its deliveries cannot be settled"
            )
        first = acks.add(consumer_id, delivery_ids, ack, delay_ms, committed)
        if wait:
            rids = acks.write(self.machine, self._clock(), self._ack_failed)
            rid = rids.get((consumer_id, ack, delay_ms, committed))
            if rid is None:  # the machine refused the frame: the consumer has ended
                error = acks.take_error(consumer_id)
                raise error if error is not None else NotFound("the consumer has ended")
            self._waiters[rid] = _Waiter(self._new_event())
            await self.wait(rid)
        elif acks.full(consumer_id):
            # Half the prefetch is settled: send it now, so the broker refills while the
            # other half is handled (one yield per half prefetch, not per message).
            acks.write(self.machine, self._clock(), self._ack_failed)
            await self.transport.flush()
        elif first:
            self._ack_wake.set()

    async def flush_acks(self, consumer_id: int | None = None) -> None:
        """Write the buffered settlements now and wait until the broker answered every
        frame of ``consumer_id`` (or of every consumer).

        Raises:
            FelixError: a kept failure of one of that consumer's frames.
        """
        if self.closed_error is None and self.acks.count:
            self.acks.write(self.machine, self._clock(), self._ack_failed)
            await self.transport.flush()
        while self.acks.unconfirmed(consumer_id) and self.closed_error is None:
            await self._ack_answer()
        if consumer_id is not None:
            error = self.acks.take_error(consumer_id)
            if error is not None:
                raise error

    async def _ack_answer(self) -> None:
        """Wait until the broker answers some settlement frame (or the connection ends)."""
        if self._ack_answered is None:
            self._ack_answered = anyio.Event()
        await self._ack_answered.wait()

    async def _flush_acks_soon(self) -> None:
        """The connection's flusher: once woken by a first buffered settlement, it flushes
        after the tasks that are ready have run (:meth:`QuicTransport.flush` yields once),
        so one pass's settlements leave in one frame per consumer."""
        while self.closed_error is None:
            await self._ack_wake.wait()
            self._ack_wake = anyio.Event()
            await self.transport.flush()

    def _ack_failed(self, consumer_id: int, error: FelixError) -> None:
        self.acks.errors.setdefault(consumer_id, error)

    def cache_stream(self, streams: int) -> int | None:
        """A request stream for the next cache request: round-robin over ``streams`` of
        them (opened on first use), so concurrent requests do not queue behind each other."""
        if streams <= 1:
            return None
        if len(self._cache_streams) < streams:
            try:
                self._cache_streams.append(self.machine.open_request_stream())
            except LocalProtocolError:
                return None
            return self._cache_streams[-1]
        self._next_cache = (self._next_cache + 1) % streams
        return self._cache_streams[self._next_cache]

    def feed(self, kind: str, ident: int) -> Inbox[FeedItem]:
        """Open the inbox of subscription (``kind="sub"``) or consumer (``"con"``) ``ident``.

        Items that arrived before the inbox existed are replayed into it first.
        """
        inbox: Inbox[FeedItem] = Inbox(self._new_event)
        for item in self._early.pop((kind, ident), []):
            inbox.send_nowait(item)
        if self.closed_error is not None:
            inbox.close()
        else:
            self._feeds[(kind, ident)] = inbox
        return inbox

    def forget_feed(self, kind: str, ident: int) -> None:
        """Drop an inbox (its owner stopped reading)."""
        if kind == "con":
            self.acks.early.pop(ident, None)
            self.acks.errors.pop(ident, None)
        send = self._feeds.pop((kind, ident), None)
        if send is not None:
            send.close()
        self._early.pop((kind, ident), None)

    def check_open(self) -> None:
        """Raise the error new work on this connection gets: :class:`ShuttingDown` after
        ``GoAway``, the closing error once closed; nothing while it is open."""
        self._check_not_closed()
        if self.goaway is not None:
            raise ShuttingDown(f"broker is shutting down: {self.goaway.reason}")

    def _check_not_closed(self) -> None:
        if self.closed_error is not None:
            raise type(self.closed_error)(
                self.closed_error.message, details=self.closed_error.details
            )

    # ------------------------------------------------ QuicHandler (the loop task)

    def quic_event(self, event: quic_events.QuicEvent, now: float) -> None:
        """Feed one QUIC event to the machine and dispatch what it produces."""
        if isinstance(event, EVENTS.stream_data):
            self.machine.stream_data_received(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, EVENTS.reset_or_stop):
            self.machine.stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, EVENTS.terminated):
            self._lost_reason = self._lost_reason or describe_termination(event)
            if self._fatal is None and not self.machine.closed:
                self._fatal = closed_by_broker(event)
            self.machine.connection_lost()
        self._dispatch()

    def pump(self, now: float) -> bool:
        """Move the machine's writes into QUIC; whether a waiter or an inbox's reader was
        woken since the last call (the transport lets them run before it transmits).

        The machine allocates a request stream's id when it first needs one, which is not
        always when it first writes to it (a request refused locally after the id was taken,
        a stream opened ahead for cache requests), so a stream may be written to first after
        a higher one. aioquic opens client streams in id order and treats a lower id it
        skipped as finished ("Cannot send data on a finished stream"), which would kill that
        lane for good; so every lower client stream is opened first (an empty write sends
        nothing: the broker learns of it with its first data, as QUIC allows).
        """
        quic = self.transport.quic
        if self.acks.count:  # this pass's settlements: one frame per consumer
            self.acks.write(self.machine, now, self._ack_failed)
        for stream_id, data, end_stream in self.machine.data_to_send():
            if stream_id % 4 == 0:  # client-initiated bidirectional
                next_id = quic.get_next_available_stream_id()
                while next_id < stream_id:
                    quic.send_stream_data(next_id, b"", False)
                    next_id += 4
            quic.send_stream_data(stream_id, data, end_stream)
        self._dispatch()
        woke, self._woke = self._woke, False
        return woke

    def get_timer(self) -> float | None:
        """The machine's earliest deadline."""
        return self.machine.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire the machine's due timers (request timeouts, pings)."""
        timer = self.machine.get_timer()
        if timer is not None and timer <= now:
            self.machine.handle_timer(now)
            self._dispatch()

    def transport_closed(self, reason: str) -> None:
        """The QUIC connection is gone: tell the machine, fail everything still pending."""
        if self.closed_error is None:
            self._lost_reason = self._lost_reason or reason
            self.machine.connection_lost()
            self._dispatch()
        self._terminate(self._fatal or ConnectionLost(reason))

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        while (event := self.machine.next_event()) is not None:
            self._dispatch_one(event)

    def _dispatch_one(self, event: ev.Event) -> None:
        if type(event) is ev.DeliveriesReceived:  # the hot path of a consumer
            send = self._feeds.get(("con", event.consumer_id))
            if send is not None:
                send.send_nowait(event)
                self._woke = True
                return
        if type(event) is ev.EventsReceived:  # the hot path of a subscription
            send = self._feeds.get(("sub", event.subscription_id))
            if send is not None:
                send.send_nowait(event)
                self._woke = True
                return
        if isinstance(event, _REPLY_EVENTS):
            self._resolve(event.request_id, reply=event)
        elif isinstance(event, ev.EventsReceived | ev.GapReported | ev.SubscriptionEnded):
            self._to_feed("sub", event.subscription_id, event)
        elif isinstance(event, ev.DeliveriesReceived | ev.DeliveryReceived | ev.ConsumerEnded):
            self._to_feed("con", event.consumer_id, event)
        elif isinstance(event, ev.RequestFailed):
            fatal = self._fatal
            if event.code == ErrorCode.CONNECTION_LOST and fatal is not None:
                # the connection ended for a reason the broker gave: each waiter its copy
                failure = type(fatal)(fatal.message, details=fatal.details)
            else:
                failure = error_from_code(
                    event.code, event.message, retryable=event.retryable, details=event.details
                )
            self._resolve(event.request_id, error=failure)
        elif isinstance(event, ev.RequestTimedOut):
            self._resolve(event.request_id, error=RequestTimeout("no reply before the deadline"))
        elif isinstance(event, ev.Welcomed):
            self.welcome = event
            self._welcomed.set()
        elif isinstance(event, ev.GoAwayReceived):
            self.goaway = event
        elif isinstance(event, ev.CloseRequested):
            self.transport.quic.close(error_code=event.error_code, reason_phrase=event.reason)
        elif isinstance(event, ev.ErrorReceived) and event.stream_id == 0:
            # a connection-level Error (e.g. UNAUTHENTICATED when the token expired): the
            # broker closes right after it, and this is why
            self._fatal = error_from_code(event.code, event.message, details=event.details)
        elif isinstance(event, ev.ConnectionTerminated):
            if self._fatal is not None:
                error: FelixError = self._fatal
            elif event.error_code in (0, ErrorCode.CONNECTION_LOST):
                reason = self._lost_reason or event.reason or "connection closed"
                error = ConnectionLost(reason)
            else:
                error = error_from_code(event.error_code, event.reason, details=event.details)
            self._terminate(error)
        # PongReceived and ProtocolViolation need nothing here.

    def _resolve(
        self, rid: int, *, reply: ev.Event | None = None, error: FelixError | None = None
    ) -> None:
        waiter = self._waiters.get(rid)
        acks = self.acks
        if (
            acks.sent
            and acks.answered(rid, error, awaited=waiter is not None)
            and self._ack_answered is not None
        ):
            self._ack_answered.set()
            self._ack_answered = None
        if waiter is None:
            return  # fire-and-forget request, or the caller gave up
        waiter.reply, waiter.error = reply, error
        waiter.done.set()
        self._woke = True

    def _to_feed(self, kind: str, ident: int, item: Any) -> None:
        if (
            isinstance(item, ev.SubscriptionEnded | ev.ConsumerEnded)
            and item.reason == EndReason.ERROR
            and self.machine.closed
        ):
            # The machine ends every feed with reason "error" when the connection ends; that
            # is no fault of the feed. Leave the end to _terminate, which closes the inbox:
            # its reader raises ConnectionLost (or resumes, with reconnect), not INTERNAL.
            return
        send = self._feeds.get((kind, ident))
        if send is None:
            self._early.setdefault((kind, ident), []).append(item)
            return
        send.send_nowait(item)
        self._woke = True
        if isinstance(item, ev.SubscriptionEnded | ev.ConsumerEnded):
            send.close()
            del self._feeds[(kind, ident)]

    def _terminate(self, error: FelixError) -> None:
        if self.closed_error is None:
            self.closed_error = error
        self._welcomed.set()
        for waiter in self._waiters.values():
            if not waiter.done.is_set():
                waiter.error = self.closed_error
                waiter.done.set()
        for send in self._feeds.values():
            send.close()
        self._feeds.clear()
        self.acks.sent.clear()  # unsettled deliveries are redelivered by the broker
        if self._ack_answered is not None:
            self._ack_answered.set()
        self._ack_wake.set()  # the flusher sees the end


def closed_by_broker(event: quic_events.ConnectionTerminated) -> FelixError | None:
    """The typed error of a connection the broker closed with a Felix error code.

    The broker closes a connection with a QUIC application close whose code is an
    :class:`~felix_proto.errors.ErrorCode` (``OVERLOADED`` when the requests it holds unread
    go over ``transport.max_data``, ``SHUTTING_DOWN`` at the end of the grace period ...)
    and a reason. Pending requests and new work then fail with that code's class
    (:class:`~felix_client.errors.Overloaded` ...), the reason as the message and
    ``details["close_reason"]``, instead of a bare :class:`ConnectionLost`.

    Returns:
        None for a close that carries no Felix code: code 0, ``CONNECTION_LOST``, or a QUIC
        transport error (``frame_type`` set: TLS failures, refusals, idle timeouts).
    """
    code = event.error_code
    if event.frame_type is not None or code in (0, ErrorCode.CONNECTION_LOST):
        return None
    reason = event.reason_phrase or f"error code {code}"
    return error_from_code(
        code, f"broker closed the connection: {reason}", details={"close_reason": reason}
    )
