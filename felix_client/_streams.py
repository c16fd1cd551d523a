"""Long-lived client objects: the batching :class:`Publisher`, the :class:`Subscription`
and :class:`Consumer` async iterators, and :class:`QueueMessage`.

They talk to the broker only through a small :class:`Backend` interface that
:class:`~felix_client.client.Client` implements, so they can be tested against fakes and
know nothing of the machine's method names.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import repeat
from time import monotonic
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.abc

from felix_proto import events as ev
from felix_proto.messages import AckMode, Delivery, DeliveryBatch, EndReason

from . import _tracing
from ._acks import AckBatches
from ._inbox import FeedReader
from ._local import check_headers
from .errors import (
    ConnectionLost,
    CursorTooOld,
    FelixError,
    Forbidden,
    InternalError,
    InvalidArgument,
    NotFound,
    Overloaded,
    ShuttingDown,
    Unauthenticated,
)
from .types import Event, Headers, PublishResult, Start

__all__ = [
    "Backend",
    "Consumer",
    "Publisher",
    "QueueMessage",
    "RecordBatch",
    "Subscription",
    "settle_many",
]


class RecordBatch:
    """The records of one publisher batch, as columns (no object per record).

    ``keys`` and ``headers`` stay None until a record of the batch has one; from then on
    they hold one entry per record (None for the records without).
    """

    __slots__ = ("headers", "keys", "payloads", "size")

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.keys: list[bytes | None] | None = None
        self.headers: list[dict[str, bytes] | None] | None = None
        self.size = 0
        """Bytes counted against batch and in-flight limits (:func:`record_size`)."""

    def __len__(self) -> int:
        return len(self.payloads)

    def add(self, payload: bytes, key: bytes | None, headers: dict[str, bytes] | None) -> None:
        """Append one record (the general case; :meth:`Publisher.publish` inlines the
        plain one: bytes, no key, no headers, in a batch without keys or headers)."""
        n = len(self.payloads)
        self.payloads.append(payload)
        if self.keys is not None:
            self.keys.append(key)
        elif key is not None:
            self.keys = [None] * n + [key]
        if self.headers is not None:
            self.headers.append(headers)
        elif headers is not None:
            self.headers = [None] * n + [headers]
        self.size += record_size(payload, key, headers)


def record_size(payload: bytes, key: bytes | None, headers: dict[str, bytes] | None) -> int:
    """Bytes one record counts against a publisher's batch and in-flight limits."""
    size = len(payload) + (len(key) if key else 0)
    if headers:
        size += sum(len(k) + len(v) for k, v in headers.items())
    return size


SendBatch = Callable[[RecordBatch, AckMode], Awaitable[PublishResult | None]]
"""Sends one batch and returns its offsets (None for ``AckMode.NONE``)."""


class Backend(Protocol):
    """What subscriptions and consumers need from the client (one connection each)."""

    async def open_feed(
        self, kind: str, spec: dict[str, Any]
    ) -> tuple[object, ev.Event, FeedReader[object]]:
        """Subscribe or consume; returns (connection, started event, inbox)."""
        ...

    async def credit(self, conn: object, sub_id: int, messages: int, nbytes: int) -> None:
        """Grant more credit on a subscription."""
        ...

    async def close_feed(self, conn: object, kind: str, ident: int) -> None:
        """Unsubscribe or cancel a consumer (best effort)."""
        ...

    def settle(
        self,
        conn: object,
        consumer_id: int,
        delivery_ids: Sequence[int],
        ack: bool,
        delay: float,
        wait: bool,
        committed: bool = False,
    ) -> Awaitable[None]:
        """Ack or nack deliveries: buffered until the loop pass ends, or, with ``wait``,
        sent at once and confirmed by the broker; ``committed`` acks are answered once the
        broker has them on disk."""
        ...

    async def flush_acks(self, conn: object, consumer_id: int) -> None:
        """Send a consumer's buffered settlements and wait for the broker's answers; raise
        the first failure of an unawaited one."""
        ...

    def take_ack_error(self, conn: object, consumer_id: int) -> FelixError | None:
        """The first failure of a consumer's unawaited settlements, once."""
        ...

    def ack_batches(self, conn: object) -> AckBatches:
        """The connection's settlement buffer (its :meth:`AckBatches.add_ack` fast path and
        kept failures, which consumers read without a call through the client)."""
        ...

    async def log_identity(self, spec: dict[str, Any]) -> tuple[int, int] | None:
        """What tells the subscribed log apart from a re-created one of the same name (the
        resource's ``(uid, created_ms)``), or None when the broker does not say.

        Raises:
            NotFound: the stream (or cache) does not exist.
        """
        ...

    @property
    def reconnect(self) -> bool:
        """Whether feeds resume after a connection loss."""
        ...


# ------------------------------------------------------------------------- publisher


MAX_IDLE_SENDERS = 64
"""Sender tasks a publisher keeps waiting for batches; more than that many batches in
flight at once spawn tasks that end with their batch."""


class _IdleSender:
    """A publisher's sender task waiting for its next batch."""

    __slots__ = ("batch", "ready")

    def __init__(self) -> None:
        self.ready = anyio.Event()
        self.batch: RecordBatch | None = None


class Publisher:
    """Batches records for one stream, with bounded in-flight bytes.

    Use it as an async context manager; leaving the block flushes and waits for every ack::

        async with client.publisher("orders", max_in_flight_bytes=4 << 20) as pub:
            for line in lines:
                await pub.publish(line)

    A batch is sent when it reaches ``max_batch_records`` or ``max_batch_bytes``, or
    ``linger`` seconds after its first record. ``publish`` waits while more than
    ``max_in_flight_bytes`` are sent but not yet acknowledged. A batch the broker refuses
    with ``OVERLOADED`` (a subscriber under the ``block`` policy is behind) is re-sent after
    a backoff, up to ``overload_retries`` times, and new batches wait out the backoff too;
    batches that were already in flight then may land out of order. The first failed
    batch's error is raised by the next ``publish``, ``flush`` or the block's exit.
    """

    def __init__(
        self,
        send_batch: SendBatch,
        *,
        ack: AckMode = AckMode.ACCEPTED,
        max_batch_records: int = 512,
        max_batch_bytes: int = 256 * 1024,
        max_in_flight_bytes: int = 8 << 20,
        linger: float = 0.002,
        overload_retries: int = 8,
    ) -> None:
        if max_batch_records < 1 or max_batch_bytes < 1 or max_in_flight_bytes < 1:
            raise ValueError("publisher limits must be positive")
        self._send_batch = send_batch
        self.ack = AckMode(ack)
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.max_in_flight_bytes = max_in_flight_bytes
        self.linger = linger
        self.overload_retries = overload_retries
        self._backoff_until = 0.0
        self.retries = 0
        """Batches re-sent after an ``OVERLOADED`` answer."""
        self._batch = RecordBatch()
        self._batch_started = 0.0  # when the current batch got its first record
        self._sends = 0  # batches sent: how the linger task sees that its batch went
        self._batches_started = 0  # batches that got a first record (under linger)
        self._linger_wake: anyio.Event | None = None  # set while the linger task idles
        self._in_flight = 0
        self._room: anyio.Event | None = None  # made by the first waiter, set by an ack
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle: list[_IdleSender] = []  # sender tasks waiting for a batch
        self._error: FelixError | None = None
        self.sent_records = 0
        """Records handed to the broker."""
        self.acked_records = 0
        """Records acknowledged (equal to ``sent_records`` under ``AckMode.NONE``)."""
        self.last_offset: int | None = None
        """Last offset acknowledged so far."""
        self.peak_in_flight_bytes = 0
        """Largest in-flight byte count observed (for tests and tuning)."""

    @property
    def in_flight_bytes(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self._in_flight

    async def __aenter__(self) -> Publisher:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        if self.linger > 0:
            tg.start_soon(self._linger_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        tg = self._tg
        try:
            if exc is None:
                await self.flush()
        finally:
            self._tg = None
            # The background tasks never raise (failures are kept in _error), so closing
            # the group cleanly lets the caller's exception through unwrapped.
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        return None

    async def publish(
        self, payload: bytes, *, key: bytes | None = None, headers: dict[str, bytes] | None = None
    ) -> None:
        """Queue one record; send the batch if it is full.

        Raises:
            FelixError: an earlier batch failed.
            InvalidArgument: a header name is not a ``str`` or a value is not ``bytes``.
            RuntimeError: the publisher is not entered (``async with``).
        """
        if self._error is not None:
            raise self._error
        if self._tg is None:
            raise RuntimeError("use the publisher as 'async with client.publisher(...)'")
        batch = self._batch
        # The common record (bytes, no key, no headers, in a batch of such) is appended
        # here, with no call and no object per record; the others take _add.
        if (
            key is None
            and headers is None
            and batch.keys is None
            and batch.headers is None
            and type(payload) is bytes
        ):
            size = len(payload)
            if batch.size + size > self.max_batch_bytes and batch.payloads:
                await self._send_current()
                batch = self._batch
            batch.payloads.append(payload)
            batch.size += size
        else:
            batch = await self._add(payload, key, headers)
        n = len(batch.payloads)
        if n >= self.max_batch_records or batch.size >= self.max_batch_bytes:
            await self._send_current()
        elif n == 1 and self.linger > 0:
            self._batch_started = monotonic()  # a duration base: cheaper than the loop's clock
            self._batches_started += 1
            wake = self._linger_wake
            if wake is not None:
                self._linger_wake = None
                wake.set()

    async def _add(
        self, payload: bytes | str, key: bytes | None, headers: dict[str, bytes] | None
    ) -> RecordBatch:
        """Append a record with a key or headers (or a ``str`` payload, sent as UTF-8);
        returns the batch it went into."""
        check_headers(headers)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        batch = self._batch
        if batch.payloads and batch.size + record_size(data, key, headers) > self.max_batch_bytes:
            await self._send_current()
            batch = self._batch
        batch.add(data, key, headers)
        return batch

    async def flush(self) -> None:
        """Send the partial batch and wait until every batch is acknowledged.

        Raises:
            FelixError: a batch failed.
        """
        if self._batch.payloads:
            await self._send_current()
        while self._in_flight > 0:
            await self._wait_room()
        self._raise_pending()

    async def _linger_loop(self) -> None:
        """The one background task that sends a batch ``linger`` seconds after its first
        record, unless it went before (full, or flushed).

        While batches keep coming it stays armed, waking once per ``linger`` at most; it
        idles (woken by the next batch's first record) only after a whole ``linger``
        without a new batch. Idling between two batches would cost a wake-up per batch:
        it would look at the batches right after one was sent, and find none open.
        """
        seen = -1
        while True:
            if self._batch.payloads:
                sends = self._sends
                wait = self._batch_started + self.linger - monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                if self._sends == sends and self._batch.payloads:
                    await self._send_current()
            elif self._batches_started != seen:
                seen = self._batches_started
                await anyio.sleep(self.linger)
            else:
                self._linger_wake = wake = anyio.Event()
                await wake.wait()

    async def _wait_room(self) -> None:
        """Wait until the next batch is acknowledged."""
        if self._room is None:
            self._room = anyio.Event()
        await self._room.wait()

    async def _send_current(self) -> None:
        batch = self._batch
        if not batch.payloads:
            return
        self._batch = RecordBatch()
        self._sends += 1
        size = batch.size
        while self._in_flight > 0 and self._in_flight + size > self.max_in_flight_bytes:
            await self._wait_room()
            self._raise_pending()
        if self._backoff_until:
            pause = self._backoff_until - anyio.current_time()
            if pause > 0:  # the broker said OVERLOADED: hold new batches back as well
                await anyio.sleep(pause)
        self._in_flight += size
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self._in_flight)
        self.sent_records += len(batch.payloads)
        if self._idle:  # a sender that finished its last batch takes this one
            slot = self._idle.pop()
            slot.batch = batch
            slot.ready.set()
        else:
            assert self._tg is not None
            self._tg.start_soon(self._sender, batch, name="felix publisher sender")
        await anyio.lowlevel.checkpoint()

    async def _sender(self, batch: RecordBatch) -> None:
        """Send one batch and wait for its ack, then wait (idle) for another: a sender
        task per batch in flight, kept for the publisher's life, so that a batch costs a
        wake-up rather than a task."""
        while True:
            await self._await_ack(batch)
            if len(self._idle) >= MAX_IDLE_SENDERS:
                return  # after a burst of small batches, keep only so many tasks around
            slot = _IdleSender()
            self._idle.append(slot)
            await slot.ready.wait()
            assert slot.batch is not None
            batch = slot.batch

    async def _await_ack(self, batch: RecordBatch) -> None:
        delay = 0.01
        try:
            for attempt in range(self.overload_retries + 1):
                try:
                    result = await self._send_batch(batch, self.ack)
                    break
                except Overloaded as exc:
                    if attempt == self.overload_retries:
                        raise
                    self.retries += 1
                    wait = delay  # or as long as the broker said (a tenant's rate quota)
                    retry_after_ms = exc.details.get("retry_after_ms")
                    if isinstance(retry_after_ms, int) and retry_after_ms > 0:
                        wait = max(wait, retry_after_ms / 1000)
                    self._backoff_until = max(self._backoff_until, anyio.current_time() + wait)
                    await anyio.sleep(wait)
                    delay = min(delay * 2, 1.0)
        except FelixError as exc:
            if self._error is None:
                self._error = exc
        else:
            self.acked_records += len(batch.payloads)
            if result is not None:
                self.last_offset = result.last_offset
        finally:
            self._in_flight -= batch.size
            room = self._room
            if room is not None:
                self._room = None
                room.set()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error


# ---------------------------------------------------------------------- subscription


_new_event: Callable[[Iterable[object]], Event] = partial(tuple.__new__, Event)
"""Build an :class:`Event` from one row of its fields (in field order), skipping the
NamedTuple's Python ``__new__``: the per-record step of a batch, all in C."""
_ZEROS = repeat(0)
"""The ``gap_before`` column of a batch (zip stops at the batch's end)."""


def _frozen_headers(headers: dict[str, bytes] | None) -> Headers | None:
    """One record's headers as the read-only, hashable mapping an :class:`Event` holds."""
    return None if headers is None else Headers(headers)


def _record_bytes(event: Event) -> int:
    """What one record uses of a subscription's byte credit: payload, key, and per header
    the UTF-8 length of its name plus its value (the broker's and the machine's measure)."""
    total = len(event.payload) + (len(event.key) if event.key else 0)
    if event.headers:
        total += sum(len(name.encode()) + len(value) for name, value in event.headers.items())
    return total


_END_ERRORS: dict[str, type[FelixError]] = {
    EndReason.LAGGED: Overloaded,
    EndReason.DELETED: NotFound,
    EndReason.TOO_OLD: CursorTooOld,
    EndReason.SHUTDOWN: ShuttingDown,
    EndReason.ERROR: InternalError,
    EndReason.FORBIDDEN: Forbidden,
}


class Subscription:
    """An async iterator of :class:`~felix_client.types.Event` from one stream (or cache
    change feed). Create it with :meth:`Client.subscribe`; use ``async with`` so it is
    closed, and ``async for`` to read::

        async with client.subscribe("orders", start="earliest") as sub:
            async for event in sub:
                print(event.offset, event.payload)

    Credit: the broker may run ``credit_messages`` records / ``credit_bytes`` bytes ahead of
    the reader; credit is returned as records are read, so a slow reader slows the feed.
    Gaps (records skipped by the broker) are counted in :attr:`missed` and flagged on the
    next event's ``gap_before``. The iteration ends when the subscription is closed; other
    ends raise the matching :class:`~felix_client.errors.FelixError`. With ``reconnect``
    on, a lost connection or a broker shutdown resumes from :attr:`next_offset`, on the same
    log only: the stream's identity (its ``uid`` and creation time, from ``describe``) is
    read when the subscription starts and again before each resume, and a stream that is
    gone or was re-created (a new log, whose offsets mean other records) raises
    :class:`~felix_client.errors.NotFound` instead of resuming.
    """

    def __init__(self, backend: Backend, spec: dict[str, Any], start: Start) -> None:
        self._backend = backend
        self._spec = spec
        self._start = start
        # Credit goes back once half of either window is used: used * 2 >= window.
        self._top_up_messages = (int(spec["credit_messages"]) + 1) // 2
        self._top_up_bytes = (int(spec["credit_bytes"]) + 1) // 2
        self._conn: object | None = None
        self._inbox: FeedReader[object] | None = None
        self._pending: deque[Event] = deque()
        self._used_messages = 0
        self._used_bytes = 0
        self._gap = 0
        self._closed = False
        self.subscription_id: int | None = None
        """The broker's id for the current subscription."""
        self.first_offset: int | None = None
        """The first offset the (latest) subscription delivers."""
        self.next_offset: int | None = None
        """The offset after the last record read (where a resume continues)."""
        self.missed = 0
        """Records the broker skipped over the life of this object."""
        self.end_reason: str | None = None
        """Why the subscription ended, once it has."""
        self.resumes = 0
        """How many times the subscription was resumed after a connection loss."""
        self.log_identity: tuple[int, int] | None = None
        self._tracer = getattr(backend, "tracer", None)
        """The followed log's ``(uid, created_ms)`` (read only with ``reconnect`` on)."""

    @property
    def buffered(self) -> int:
        """Records received and not read yet: the next ``buffered`` reads do not wait."""
        return len(self._pending)

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def open(self) -> None:
        """Subscribe now (``async with`` and the first ``async for`` step do it for you).

        Raises:
            FelixError: the broker refused (``NotFound``, ``CursorTooOld`` ...).
        """
        if self._inbox is not None:
            return
        conn, started, inbox = await self._backend.open_feed(
            "sub", self._spec | {"start": self._start}
        )
        assert isinstance(started, ev.SubscriptionStarted)
        self._conn, self._inbox = conn, inbox
        self.subscription_id = started.subscription_id
        self.first_offset = started.first_offset
        if self.next_offset is None:
            self.next_offset = started.first_offset
        self._used_messages = self._used_bytes = 0
        if self._backend.reconnect and self.log_identity is None:
            try:
                self.log_identity = await self._backend.log_identity(self._spec)
            except BaseException:
                await self.close()  # no subscription left behind on the broker
                raise

    async def close(self) -> None:
        """Unsubscribe (best effort) and stop the iteration."""
        if self._closed:
            return
        self._closed = True
        if self._inbox is not None and self.subscription_id is not None:
            with anyio.CancelScope(shield=True):
                await self._backend.close_feed(self._conn, "sub", self.subscription_id)
        self.end_reason = self.end_reason or EndReason.UNSUBSCRIBED

    async def __anext__(self) -> Event:
        """Return the next record, waiting for it.

        Raises:
            StopAsyncIteration: the subscription was closed.
            FelixError: it ended for another reason, or the connection was lost.
        """
        while True:
            # Credit is returned as records are read; only a due top-up awaits, and it comes
            # before a record is taken: a cancellation while it waits must not lose a record
            # that next_offset already counts as read.
            if (
                self._used_messages >= self._top_up_messages
                or self._used_bytes >= self._top_up_bytes
            ) and not self._closed:
                await self._top_up()
            if self._pending:
                event = self._pending.popleft()
                self.next_offset = event.offset + 1
                self._used_messages += 1
                if event.key is None and event.headers is None:
                    self._used_bytes += len(event.payload)
                else:
                    self._used_bytes += _record_bytes(event)
                if self._tracer is not None:
                    spec = self._spec
                    _tracing.consumer_span(
                        self._tracer,
                        spec["stream"],
                        spec["tenant"],
                        spec["namespace"],
                        event.headers,
                        event.offset,
                    )
                return event
            if self._closed:
                raise StopAsyncIteration
            if self._inbox is None:
                await self.open()
            assert self._inbox is not None
            try:
                item = await self._inbox.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._closed:
                    raise StopAsyncIteration from None
                await self._lost(_why_lost(self._conn, "connection lost during subscription"))
                continue
            self._take(item)
            if isinstance(item, ev.SubscriptionEnded):
                await self._ended(item)

    def _take(self, item: object) -> None:
        if isinstance(item, ev.EventsReceived):
            b = item.batch
            payloads = b.payloads
            n = len(payloads)
            if not n:
                return
            base = b.base_offset
            ts = b.timestamps_ms or repeat(0, n)
            keys = b.keys or repeat(None, n)
            headers = map(_frozen_headers, b.headers) if b.headers else repeat(None, n)
            # One row per record, in Event's field order (the infinite _ZEROS column ends with
            # the others), built by tuple.__new__: no Python-level call per record.
            rows = zip(range(base, base + n), payloads, ts, keys, headers, _ZEROS, strict=False)
            events = map(_new_event, rows)
            if self._gap:  # only the first record after a gap carries it
                first = next(events)
                self._pending.append(first._replace(gap_before=self._gap))
                self._gap = 0
            self._pending.extend(events)
        elif isinstance(item, ev.GapReported):
            self.missed += item.missed
            self._gap += item.missed
            self.next_offset = item.next_offset

    async def _ended(self, item: ev.SubscriptionEnded) -> None:
        self.end_reason = item.reason
        if item.next_offset is not None and not self._pending:
            self.next_offset = item.next_offset
        if item.reason == EndReason.UNSUBSCRIBED or self._closed:
            self._closed = True
            return
        cls = _END_ERRORS.get(item.reason, InternalError)
        await self._lost(cls(item.message or f"subscription ended: {item.reason}"))

    async def _lost(self, error: FelixError) -> None:
        if not (self._backend.reconnect and isinstance(error, ConnectionLost | ShuttingDown)):
            self._closed = True
            self._inbox = None
            raise error
        # Resume after the last record handed out (records still pending are kept).
        if self._pending:
            resume_at = self._pending[-1].offset + 1
        else:
            resume_at = self.next_offset if self.next_offset is not None else 0
        self._start = Start.offset(resume_at)
        self._inbox = None
        await self._check_same_log(resume_at)
        self.resumes += 1
        await self.open()

    async def _check_same_log(self, resume_at: int) -> None:
        """Refuse to resume into a log other than the one followed so far.

        Raises:
            NotFound: the stream is gone (an in-memory broker restarted, or it was deleted)
                or was re-created since the subscription started.
        """
        what = f"{self._spec['source']} {self._spec['stream']!r}"
        try:
            identity = await self._backend.log_identity(self._spec)
        except NotFound as exc:
            self._closed = True
            raise NotFound(
                f"{what} no longer exists after the connection was lost (the broker "
                f"restarted without keeping it, or it was deleted); cannot resume at offset "
                f"{resume_at}"
            ) from exc
        if identity is not None and self.log_identity is not None and identity != self.log_identity:
            self._closed = True
            raise NotFound(
                f"{what} was re-created after the connection was lost ((uid, created_ms) "
                f"{self.log_identity} is now {identity}): its log is new, so offset "
                f"{resume_at} would name another record; subscribe again to follow it",
                details={"recreated": True, "next_offset": resume_at},
            )

    async def _top_up(self) -> None:
        if self.subscription_id is not None:
            messages, nbytes, self._used_messages, self._used_bytes = (
                self._used_messages,
                self._used_bytes,
                0,
                0,
            )
            with contextlib.suppress(FelixError):  # a loss shows up on the next read
                await self._backend.credit(self._conn, self.subscription_id, messages, nbytes)


# ---------------------------------------------------------------------------- queues


_Row = tuple[int, int, int, bytes, int, bytes | None, dict[str, bytes] | None]
"""One delivery as the consumer reads it: ``(delivery_id, attempt, offset, payload,
timestamp_ms, key, headers)``, a row of a ``DeliveryBatch``'s columns."""


def _rows(batch: DeliveryBatch) -> Iterator[_Row]:
    """The deliveries of a (validated) ``DeliveryBatch``, in order, as rows of its columns:
    what :func:`felix_proto.client.unbatch` gives, without a record per delivery."""
    return zip(
        batch.delivery_ids,
        batch.attempts,
        batch.offsets,
        batch.payloads,
        batch.timestamps_ms or repeat(0),
        batch.keys or repeat(None),
        batch.headers or repeat(None),
        strict=False,  # equal lengths were checked when decoded; repeat() has none
    )


def _row(d: Delivery) -> _Row:
    """A lone ``Delivery`` frame's row (a broker without ``delivery-batch``)."""
    return (d.delivery_id, d.attempt, d.offset, d.payload, d.timestamp_ms, d.key, d.headers)


class QueueMessage:
    """A message delivered to a queue consumer. Settle it with :meth:`ack` or :meth:`nack`
    (cheap: no round trip), or :meth:`ack_sync` / :meth:`nack_sync` (wait for the broker)."""

    __slots__ = (
        "_acks",
        "_backend",
        "_conn",
        "attempt",
        "consumer_id",
        "delivery_id",
        "headers",
        "key",
        "offset",
        "payload",
        "settled",
        "timestamp_ms",
        "trace",
    )

    def __init__(
        self,
        backend: Backend,
        conn: object,
        consumer_id: int,
        row: _Row,
        trace: _tracing.Delivered | None = None,
        acks: AckBatches | None = None,
    ):
        self._backend = backend
        self._conn = conn
        self._acks = acks
        """The connection's settlement buffer, for the fast path of :meth:`ack`."""
        self.consumer_id = consumer_id
        (
            self.delivery_id,
            self.attempt,
            self.offset,
            self.payload,
            self.timestamp_ms,
            self.key,
            self.headers,
        ) = row
        self.settled = False
        self.trace = trace
        """With tracing on: what the settlement's span needs (its parent is the receive
        span)."""

    def __repr__(self) -> str:
        return (
            f"QueueMessage(offset={self.offset}, attempt={self.attempt}, "
            f"payload={self.payload[:40]!r})"
        )

    async def ack(self) -> None:  # the hot path: _settle inlined
        """Finish the message: it will not be delivered again.

        Does not wait for the broker: the ack leaves with the others of this loop pass, in
        one frame. A failure the broker reports later (the delivery had timed out and was
        handed out again) is raised by the consumer's next step (``async for`` or
        :meth:`Consumer.flush_acks`). Use :meth:`ack_sync` to wait for the confirmation.

        Raises:
            NotFound: the consumer has ended (queue deleted, consumer closed) or the message
                was settled already.
            ConnectionLost: the connection is gone (the broker will redeliver).
        """
        if self.settled:
            raise NotFound(f"delivery {self.delivery_id} was settled already")
        if self.trace is not None:
            await self._settle(True, 0.0, False)
            return
        acks = self._acks
        if acks is None or not acks.add_ack(self.consumer_id, self.delivery_id):
            await self._backend.settle(
                self._conn, self.consumer_id, [self.delivery_id], True, 0, False
            )
        self.settled = True

    async def ack_sync(self, mode: AckMode = AckMode.ACCEPTED) -> None:
        """Finish the message and wait until the broker confirms it.

        Args:
            mode: ``ACCEPTED``: the broker confirms once the ack is applied (a crash of a
                durable queue's broker just after may still deliver the message again).
                ``COMMITTED``: once the ack is on disk (fsynced) on a durable queue, so the
                message is never delivered again, even after ``kill -9`` or a power loss;
                on an ephemeral queue (nothing on disk) it means ``ACCEPTED``.

        Raises:
            InvalidArgument: ``mode`` is ``NONE``.
            FelixError: as for :meth:`ack`, and the broker's refusal (``NotFound`` for a
                delivery it no longer holds; ``StorageFull`` / ``StorageFailed`` when a
                committed ack could not be put on disk) or ``RequestTimeout``.
        """
        await self._settle(True, 0.0, True, ack_committed(mode))

    async def nack(self, delay: float = 0.0) -> None:
        """Return the message for redelivery, after ``delay`` seconds; like :meth:`ack`,
        without waiting for the broker.

        Raises:
            InvalidArgument: a negative, infinite or NaN ``delay``.
            FelixError: as for :meth:`ack`.
        """
        await self._settle(False, delay, False)

    async def nack_sync(self, delay: float = 0.0) -> None:
        """:meth:`nack` and wait until the broker confirms it (see :meth:`ack_sync`)."""
        await self._settle(False, delay, True)

    async def _settle(self, ack: bool, delay: float, wait: bool, committed: bool = False) -> None:
        if self.settled:
            raise NotFound(f"delivery {self.delivery_id} was settled already")
        span = None
        if self.trace is not None:
            tr, parent, queue, tenant, namespace = self.trace
            op = "ack" if ack else "nack"
            span = _tracing.operation_span(tr, op, "settle", queue, tenant, namespace, parent)
        with _tracing.ending(span):
            await self._backend.settle(
                self._conn, self.consumer_id, [self.delivery_id], ack, delay, wait, committed
            )
        self.settled = True


def ack_committed(mode: AckMode) -> bool:
    """Whether an ack with ``mode`` is a committed one (``NONE`` makes no sense for an ack)."""
    if mode == AckMode.NONE:
        raise InvalidArgument("an ack's mode is ACCEPTED or COMMITTED")
    return AckMode(mode) == AckMode.COMMITTED


async def settle_many(
    messages: Iterable[QueueMessage],
    ack: bool,
    delay: float = 0.0,
    wait: bool = False,
    committed: bool = False,
) -> None:
    """Ack or nack many messages, one frame per consumer (see :meth:`Consumer.ack_many`).

    Raises:
        NotFound: a message was settled already, or its consumer has ended.
        FelixError: with ``wait``, the broker's refusal.
    """
    groups: dict[tuple[int, int], list[QueueMessage]] = {}
    for msg in messages:
        if msg.settled:
            raise NotFound(f"delivery {msg.delivery_id} was settled already")
        groups.setdefault((id(msg._conn), msg.consumer_id), []).append(msg)
    for group in groups.values():
        first = group[0]
        traced = [m.trace for m in group if m.trace is not None]
        span = None
        if traced:
            span = _tracing.settle_batch_span("ack" if ack else "nack", traced)
        with _tracing.ending(span):
            await first._backend.settle(
                first._conn,
                first.consumer_id,
                [m.delivery_id for m in group],
                ack,
                delay,
                wait,
                committed,
            )
        for msg in group:
            msg.settled = True


class Consumer:
    """An async iterator of :class:`QueueMessage` from one queue's consumer group::

        async with client.consume("jobs", group="workers", prefetch=16) as consumer:
            async for msg in consumer:
                handle(msg.payload)
                await msg.ack()

    The broker holds at most ``prefetch`` unsettled deliveries for this consumer. Acks and
    nacks do not wait for the broker: those of one loop pass leave in one frame, and a
    failure the broker reports later is raised by the next ``async for`` step (or
    :meth:`flush_acks`). Closing sends the buffered settlements and waits for their answers
    first; unsettled deliveries then go back for redelivery.
    """

    def __init__(self, backend: Backend, spec: dict[str, Any]) -> None:
        self._backend = backend
        self._spec = spec
        self._conn: object | None = None
        self._inbox: FeedReader[object] | None = None
        self._acks: AckBatches | None = None
        self._rows: Iterator[_Row] | None = None
        """The rest of the ``DeliveryBatch`` being read (taken without yielding)."""
        self._closed = False
        self.consumer_id: int | None = None
        self.end_reason: str | None = None
        self._tracer = getattr(backend, "tracer", None)

    async def __aenter__(self) -> Consumer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Consumer:
        return self

    async def open(self) -> None:
        """Join the group now (``async with`` does it for you)."""
        if self._inbox is not None:
            return
        conn, started, inbox = await self._backend.open_feed("con", self._spec)
        assert isinstance(started, ev.ConsumerStarted)
        self._conn, self._inbox, self.consumer_id = conn, inbox, started.consumer_id
        self._acks = self._backend.ack_batches(conn)

    async def close(self) -> None:
        """Send the buffered settlements, then leave the group (best effort); unsettled
        deliveries go back to the queue."""
        if self._closed:
            return
        self._closed = True
        if self.consumer_id is not None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(FelixError):  # a failed ack is redelivered anyway
                    await self._backend.flush_acks(self._conn, self.consumer_id)
                await self._backend.close_feed(self._conn, "con", self.consumer_id)

    async def ack_many(
        self,
        messages: Iterable[QueueMessage],
        *,
        wait: bool = False,
        mode: AckMode = AckMode.ACCEPTED,
    ) -> None:
        """Ack many messages in one frame (per consumer).

        Args:
            messages: messages of this consumer (others are settled on their own consumer).
            wait: wait until the broker confirms.
            mode: when the broker confirms: ``COMMITTED`` once the acks are on disk (see
                :meth:`QueueMessage.ack_sync`).

        Raises:
            InvalidArgument: ``mode`` is ``NONE``.
            NotFound: a message was settled already, or its consumer has ended.
            FelixError: with ``wait``, the broker's refusal.
        """
        await settle_many(messages, True, 0.0, wait, ack_committed(mode))

    async def nack_many(
        self, messages: Iterable[QueueMessage], delay: float = 0.0, *, wait: bool = False
    ) -> None:
        """Return many messages for redelivery after ``delay`` seconds, in one frame.

        Raises:
            InvalidArgument: a negative, infinite or NaN ``delay``.
            FelixError: as for :meth:`ack_many`.
        """
        await settle_many(messages, False, delay, wait)

    async def flush_acks(self) -> None:
        """Send the buffered settlements now and wait until the broker answered all of
        this consumer's.

        Raises:
            FelixError: the first failure the broker reported for one of them.
        """
        if self.consumer_id is not None and self._conn is not None:
            await self._backend.flush_acks(self._conn, self.consumer_id)

    async def __anext__(self) -> QueueMessage:
        """Return the next delivery, waiting for it.

        Raises:
            StopAsyncIteration: the consumer was closed.
            FelixError: the consumer ended for another reason or the connection was lost.
        """
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._inbox is None:
                await self.open()
            assert self._inbox is not None and self.consumer_id is not None
            acks = self._acks
            if acks is None or acks.errors:
                error = self._backend.take_ack_error(self._conn, self.consumer_id)
                if error is not None:
                    raise error
            rows = self._rows
            if rows is not None:
                row = next(rows, None)
                if row is not None:
                    if self._tracer is not None:
                        return self._traced(row)
                    cid = self.consumer_id
                    return QueueMessage(self._backend, self._conn, cid, row, None, acks)
                self._rows = None
            try:
                # What already arrived is taken without yielding, so the acks of a pass
                # pile up and leave in one frame when the loop next runs the flusher.
                item = self._inbox.receive_nowait()
            except anyio.WouldBlock:
                item = None
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                item = None
            try:
                if item is None:
                    item = await self._inbox.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._closed:
                    raise StopAsyncIteration from None
                lost = _why_lost(self._conn, "connection lost while consuming")
                if self._backend.reconnect and isinstance(lost, ConnectionLost):
                    self._inbox = None  # unsettled deliveries are redelivered by the broker
                    continue
                raise lost from None
            if type(item) is ev.DeliveriesReceived:
                self._rows = _rows(item.batch)
                continue
            if isinstance(item, ev.DeliveryReceived):
                if self._tracer is not None:
                    return self._traced(_row(item.delivery))
                return QueueMessage(
                    self._backend, self._conn, self.consumer_id, _row(item.delivery), None, acks
                )
            if isinstance(item, ev.ConsumerEnded):
                self.end_reason = item.reason
                if item.reason == EndReason.UNSUBSCRIBED or self._closed:
                    self._closed = True
                    raise StopAsyncIteration
                cls = _END_ERRORS.get(item.reason, InternalError)
                raise cls(item.message or f"consumer ended: {item.reason}")

    def _traced(self, row: _Row) -> QueueMessage:
        """A delivery with its CONSUMER span recorded (a child of its producer's)."""
        assert self._tracer is not None and self.consumer_id is not None
        spec = self._spec
        _, attempt, offset, _, _, _, headers = row
        queue, tenant, namespace = spec["queue"], spec["tenant"], spec["namespace"]
        context = _tracing.consumer_span(
            self._tracer, queue, tenant, namespace, headers, offset, attempt
        )
        trace = (self._tracer, context, queue, tenant, namespace)
        return QueueMessage(self._backend, self._conn, self.consumer_id, row, trace)


def _why_lost(conn: object, what: str) -> FelixError:
    """Why a feed's connection ended: the broker's ``UNAUTHENTICATED`` when it closed the
    connection for that reason (the token expired), else :class:`ConnectionLost`."""
    error = getattr(conn, "closed_error", None)
    if isinstance(error, Unauthenticated):
        return error
    return ConnectionLost(what)
