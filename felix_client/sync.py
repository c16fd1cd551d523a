"""A blocking facade over :class:`~felix_client.client.Client`, for scripts and the REPL.

::

    from felix_client.sync import BlockingClient

    with BlockingClient("quic://127.0.0.1:7447", insecure=True) as client:
        client.publish("orders", b"hello")
        for event in client.subscribe("orders", start="earliest", limit=10):
            print(event.offset, event.payload)
        client.cache("sessions").put("alice", b"42", ttl=60)

The async client runs in an event loop on a helper thread (``anyio``'s blocking portal,
asyncio by default); every method here submits a call to it and waits. Errors are the same
:mod:`felix_client.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._streams import QueueMessage, ack_committed, settle_many
from .client import Cache, Client
from .types import AckMode, CacheEntry, Event, PublishResult, StartLike

__all__ = ["BlockingCache", "BlockingClient", "BlockingQueueMessage"]


class BlockingClient:
    """The blocking counterpart of :class:`Client`; takes the same arguments, plus
    ``backend`` (``"asyncio"`` or ``"trio"``) for the helper thread's event loop.

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, url: str | None = None, *, backend: str = "asyncio", **kwargs: Any):
        self._client = Client(url, **kwargs)
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(backend)
        self._portal = self._portal_cm.__enter__()
        self._client_cm = self._portal.wrap_async_context_manager(self._client)
        try:
            self._client_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._closed = False

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the helper thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(lambda: fn(*args, **kwargs))

    @property
    def client(self) -> Client:
        """The async client underneath (its methods must run on the portal's loop)."""
        return self._client

    def publish(self, stream: str, payload: bytes | str, **kwargs: Any) -> PublishResult | None:
        """See :meth:`Client.publish`."""
        result: PublishResult | None = self._call(self._client.publish, stream, payload, **kwargs)
        return result

    def publish_batch(
        self, stream: str, payloads: Sequence[bytes | str], **kwargs: Any
    ) -> PublishResult | None:
        """See :meth:`Client.publish_batch`."""
        result: PublishResult | None = self._call(
            self._client.publish_batch, stream, payloads, **kwargs
        )
        return result

    def enqueue(
        self, queue: str, payload: bytes | str | Sequence[bytes | str], **kwargs: Any
    ) -> PublishResult | None:
        """See :meth:`Client.enqueue`."""
        result: PublishResult | None = self._call(self._client.enqueue, queue, payload, **kwargs)
        return result

    def subscribe(
        self,
        stream: str,
        *,
        start: StartLike = "latest",
        limit: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Iterator[Event]:
        """Iterate a subscription's events (see :meth:`Client.subscribe`).

        Args:
            limit: stop after this many events (None: until closed or broken).
            timeout: stop when no event arrives for this many seconds (None: wait).
        """
        sub = self._client.subscribe(stream, start=start, **kwargs)
        self._call(sub.open)
        try:
            count = 0
            while limit is None or count < limit:
                event: Event | None = self._call(_next_or_none, sub.__anext__, timeout)
                if event is None:
                    return
                count += 1
                yield event
        finally:
            if not self._closed:
                self._call(sub.close)

    def consume(
        self,
        queue: str,
        *,
        limit: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Iterator[BlockingQueueMessage]:
        """Iterate a queue's deliveries (see :meth:`Client.consume`); settle each one."""
        consumer = self._client.consume(queue, **kwargs)
        self._call(consumer.open)
        try:
            count = 0
            while limit is None or count < limit:
                msg: QueueMessage | None = self._call(_next_or_none, consumer.__anext__, timeout)
                if msg is None:
                    return
                count += 1
                yield BlockingQueueMessage(self._portal, msg)
        finally:
            if not self._closed:
                self._call(consumer.close)

    def ack_many(
        self,
        messages: Iterable[BlockingQueueMessage],
        *,
        wait: bool = False,
        mode: AckMode = AckMode.ACCEPTED,
    ) -> None:
        """Ack many deliveries in one frame per consumer (see :meth:`Consumer.ack_many`)."""
        msgs = [m.message for m in messages]
        self._call(settle_many, msgs, True, 0.0, wait, ack_committed(mode))

    def nack_many(
        self, messages: Iterable[BlockingQueueMessage], delay: float = 0.0, *, wait: bool = False
    ) -> None:
        """Nack many deliveries in one frame per consumer (see :meth:`Consumer.nack_many`)."""
        msgs = [m.message for m in messages]
        self._call(settle_many, msgs, False, delay, wait)

    def cache(self, name: str, **kwargs: Any) -> BlockingCache:
        """See :meth:`Client.cache`."""
        return BlockingCache(self._portal, self._client.cache(name, **kwargs))

    def admin(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run one admin call: ``admin("create", "stream", "orders")``; see :class:`Admin`."""
        if op not in ("create", "describe", "list", "update", "delete"):
            raise ValueError(f"unknown admin operation {op!r}")
        return self._call(getattr(self._client.admin, op), *args, **kwargs)


async def _next_or_none(anext: Callable[[], Any], timeout: float | None) -> Any:
    with anyio.move_on_after(timeout):
        try:
            return await anext()
        except StopAsyncIteration:
            return None
    return None


class BlockingQueueMessage:
    """A queue delivery with blocking :meth:`ack` and :meth:`nack`."""

    def __init__(self, portal: BlockingPortal, msg: QueueMessage) -> None:
        self._portal = portal
        self.message = msg
        self.payload = msg.payload
        self.offset = msg.offset
        self.attempt = msg.attempt

    def ack(self) -> None:
        """See :meth:`QueueMessage.ack`: does not wait for the broker's answer (a failure
        it reports is raised by the consumer's iterator at its next step)."""
        self._portal.call(self.message.ack)

    def ack_sync(self, mode: AckMode = AckMode.ACCEPTED) -> None:
        """See :meth:`QueueMessage.ack_sync`: waits for the broker's confirmation (with
        ``COMMITTED``: once the ack is on disk)."""
        self._portal.call(self.message.ack_sync, mode)

    def nack(self, delay: float = 0.0) -> None:
        """See :meth:`QueueMessage.nack` (does not wait for the broker's answer)."""
        self._portal.call(self.message.nack, delay)

    def nack_sync(self, delay: float = 0.0) -> None:
        """See :meth:`QueueMessage.nack_sync`: waits for the broker's confirmation."""
        self._portal.call(self.message.nack_sync, delay)


class BlockingCache:
    """Blocking counterparts of :class:`~felix_client.client.Cache`'s methods."""

    def __init__(self, portal: BlockingPortal, cache: Cache) -> None:
        self._portal = portal
        self._cache = cache

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(lambda: fn(*args, **kwargs))

    def get(self, key: str, **kwargs: Any) -> CacheEntry | None:
        """See :meth:`Cache.get`."""
        entry: CacheEntry | None = self._call(self._cache.get, key, **kwargs)
        return entry

    def put(self, key: str, value: bytes | str, **kwargs: Any) -> int:
        """See :meth:`Cache.put`."""
        return int(self._call(self._cache.put, key, value, **kwargs))

    def put_if_absent(self, key: str, value: bytes | str, **kwargs: Any) -> bool:
        """See :meth:`Cache.put_if_absent`."""
        return bool(self._call(self._cache.put_if_absent, key, value, **kwargs))

    def compare_and_set(self, key: str, value: bytes | str, *, version: int, **kw: Any) -> int:
        """See :meth:`Cache.compare_and_set`."""
        return int(self._call(self._cache.compare_and_set, key, value, version=version, **kw))

    def delete(self, key: str, **kwargs: Any) -> bool:
        """See :meth:`Cache.delete`."""
        return bool(self._call(self._cache.delete, key, **kwargs))
