"""The broker facade: the one object the runtime glue talks to.

Theory of operation
-------------------
:class:`Broker` is a sans-I/O machine in the style of aioquic's ``QuicConnection``. Its
inputs are method calls (admin, publish, subscribe, queue and cache operations, each taking
``now``), connection lifecycle calls (:meth:`Broker.attach`, :meth:`Broker.detach`,
:meth:`Broker.pause`, :meth:`Broker.resume`) and :meth:`Broker.handle_timer`. Its outputs
are the return values of the calls (the reply to the request), :meth:`Broker.drain_events`
(per-connection deliveries and terminal notices, see :mod:`felix_core.events`) and
:meth:`Broker.get_timer`. Refusals are :class:`~felix_core.errors.EngineError`. The glue
replies to a request first and then drains: a call may already have produced deliveries.

Parts. Metadata lives in a :class:`~felix_core.metadata.MetadataStore` behind a
:class:`~felix_core.metadata.Catalog`. Streams are :class:`~felix_core.streams.Stream`
objects; queues live in one :class:`~felix_core.queues.QueueEngine`; caches in one
:class:`~felix_core.cache.CacheEngine`, whose per-cache change logs can be followed like a
stream through a :class:`~felix_core.streams.Fanout` (``subscribe(..., source="cache")``).

Engines are built *lazily from metadata*: every operation looks its resource up in the
store and (re)builds or updates the in-memory engine when the record's ``uid`` or
``generation`` differs from what the engine was built from. A record that vanished (deleted
elsewhere) ends the engine's subscriptions and consumers with reason ``deleted``. So the
facade never assumes it is the only writer of metadata.

Memory. A :class:`~felix_core.limits.MemoryBudget` counts the record bytes of stream and
queue logs and the bytes of cache entries. Operations that grow memory are checked first
(refused with a retryable ``Overloaded`` past the limit) and charged by the exact change of
the part they touched afterwards.

Timers. Each stream (and cache feed) reports its own deadline; the facade keeps them in a
heap with lazy invalidation, and combines the heap's head with the queue and cache engines'
timers in :meth:`Broker.get_timer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from felix_core.broker_core import BrokerCore, ResourceTotals, _Connection
from felix_core.cache import CacheEntry
from felix_core.errors import EngineError, InvalidArgument, LimitExceeded, NotFound
from felix_core.events import (
    Appended,
    CacheRead,
    CacheRemoved,
    CacheStored,
    ConsumerClosed,
    ConsumerOpened,
    RequestCompleted,
    RequestRefused,
    ResourceDescribed,
    ResourcesListed,
    SubscriptionOpened,
)
from felix_core.limits import BrokerConfig
from felix_core.log import LogSlice
from felix_core.metadata import Path
from felix_core.streams import Fanout, StartKind, Subscription

__all__ = ["Broker", "BrokerConfig", "ResourceTotals"]


class Broker(BrokerCore):
    """The engine facade. See the module docstring.

    Construct with ``Broker(config, metadata=store, now=now)`` (see :class:`BrokerCore`).
    """

    def _publish(
        self,
        conn_id: int,
        tenant: str,
        namespace: str,
        stream: str,
        payloads: Sequence[bytes],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
        now: float,
    ) -> tuple[int, int]:
        """Append records to a stream and deliver them to its subscriptions.

        Args:
            conn_id: the publishing connection (counted when attached; may be any id).
            tenant: the tenant.
            namespace: the namespace.
            stream: the stream.
            payloads: one or more payloads.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.
            now: the current time; records are stamped ``int(now * 1000)``.

        Returns:
            ``(first_offset, last_offset)`` of the appended records.

        Raises:
            NotFound: no such stream.
            InvalidArgument: an empty batch, or keys/headers of the wrong length.
            TooLarge: a payload, key or the batch exceeds the configured maxima or the
                stream's retention.
            Overloaded: the memory budget is exhausted, or (policy ``block``) a subscriber
                has not read what the append would evict. Retryable.
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        nbytes = self._check_batch(payloads, keys, headers)
        st = self._stream((tenant, namespace, stream), now)
        log = st.log
        before = log.byte_size
        if not self.budget.fits(nbytes):
            evict = log.evictions_for(len(payloads), nbytes, st.settings.retention)
            freed = 0
            if evict:
                got = log.read(log.first_offset, evict, 1 << 62)
                freed = got.byte_size if isinstance(got, LogSlice) else 0
            self.budget.check(nbytes - freed, "publish")
        first, last = st.publish(payloads, keys, headers, now, nbytes)
        self.budget.adjust(log.byte_size - before)
        self._schedule(st)
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.published += len(payloads)
        return first, last

    def _subscribe(
        self,
        conn_id: int,
        tenant: str,
        namespace: str,
        name: str,
        *,
        start: int = StartKind.LATEST,
        start_value: int | None = None,
        credit_messages: int = 1024,
        credit_bytes: int = 1 << 20,
        source: str = "stream",
        now: float,
    ) -> tuple[int, int]:
        """Subscribe a connection to a stream, or to a cache's change feed.

        Args:
            conn_id: the subscribing connection (attached).
            tenant: the tenant.
            namespace: the namespace.
            name: the stream (or cache, with ``source="cache"``).
            start: a :class:`~felix_core.streams.StartKind` value.
            start_value: the offset (OFFSET) or timestamp in ms (TIMESTAMP).
            credit_messages: initial record credit (clamped to the config's maximum).
            credit_bytes: initial record-byte credit (clamped to the config's maximum).
            source: ``stream`` or ``cache``.
            now: the current time.

        Returns:
            ``(subscription_id, first_offset)``: the id and the first offset it receives.

        Raises:
            ValueError: the connection is not attached.
            NotFound: no such stream or cache.
            InvalidArgument: a bad start, source or credit.
            CursorTooOld: the start offset was trimmed (``details['first_offset']``).
            LimitExceeded: the connection holds the most subscriptions allowed.
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        conn = self._conn(conn_id)
        cfg = self.config
        if len(conn.subs) >= cfg.max_subscriptions_per_connection:
            raise LimitExceeded(
                f"at most {cfg.max_subscriptions_per_connection} subscriptions per connection",
                details={"limit": cfg.max_subscriptions_per_connection},
            )
        fanout = self._fanout(source, (tenant, namespace, name), now)
        sub_id = self._next_sub_id
        sub = fanout.subscribe(
            sub_id,
            conn_id,
            start,
            start_value,
            min(credit_messages, cfg.max_credit_messages),
            min(credit_bytes, cfg.max_credit_bytes),
            now,
            paused=conn.paused,
        )
        self._next_sub_id += 1
        conn.subs[sub_id] = fanout
        self._schedule(fanout)
        return sub_id, sub.start_offset

    def _fanout(self, source: str, path: Path, now: float) -> Fanout:
        if source == "stream":
            return self._stream(path, now)
        if source == "cache":
            return self._cache_feed(path, now)
        raise InvalidArgument(
            f"unknown subscription source {source!r}", details={"field": "source"}
        )

    def _subscription(self, conn_id: int, sub_id: int) -> tuple[_Connection, Fanout, Subscription]:
        conn = self._conn(conn_id)
        fanout = conn.subs.get(sub_id)
        sub = fanout.subscriptions.get(sub_id) if fanout is not None else None
        if fanout is None or sub is None:
            raise NotFound(f"subscription {sub_id} not found", details={"subscription_id": sub_id})
        return conn, fanout, sub

    def _add_credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, *, now: float
    ) -> None:
        """Grant a subscription more credit (totals are clamped to the config's maxima).

        Args:
            conn_id: the connection holding the subscription.
            subscription_id: the subscription.
            messages: more records (>= 0).
            nbytes: more record bytes (>= 0).
            now: the current time.

        Raises:
            ValueError: the connection is not attached.
            NotFound: the connection holds no such subscription.
            InvalidArgument: a negative grant.
        """
        _, fanout, sub = self._subscription(conn_id, subscription_id)
        cfg = self.config
        messages = min(messages, max(cfg.max_credit_messages - sub.credit_messages, 0))
        nbytes = min(nbytes, max(cfg.max_credit_bytes - sub.credit_bytes, 0))
        fanout.add_credit(sub, messages, nbytes, now)
        self._schedule(fanout)

    def _unsubscribe(self, conn_id: int, subscription_id: int, *, now: float) -> None:
        """End a subscription; outputs ``SubscriptionClosed`` with reason ``unsubscribed``.

        Raises:
            ValueError: the connection is not attached.
            NotFound: the connection holds no such subscription.
        """
        _, fanout, _ = self._subscription(conn_id, subscription_id)
        fanout.remove(subscription_id, "unsubscribed")
        self._schedule(fanout)

    def _enqueue(
        self,
        conn_id: int,
        tenant: str,
        namespace: str,
        queue: str,
        payloads: Sequence[bytes],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
        now: float,
    ) -> tuple[int, int]:
        """Append messages to a queue and hand them to its consumers.

        Returns:
            ``(first_offset, last_offset)`` of the messages.

        Raises:
            NotFound: no such queue.
            InvalidArgument: an empty batch, or keys/headers of the wrong length.
            TooLarge: a payload, key or the batch exceeds a maximum or the queue's bounds.
            Overloaded: the queue is full or the memory budget is exhausted (retryable).
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        nbytes = self._check_batch(payloads, keys, headers)
        path = self._queue((tenant, namespace, queue), now)
        q = self._queues.queue(path)
        self.budget.check(nbytes, "enqueue")
        before = q.byte_size
        first = self._queues.enqueue_batch(path, payloads, now, keys=keys, headers=headers)
        self.budget.adjust(q.byte_size - before)
        return first, first + len(payloads) - 1

    def _consume(
        self,
        conn_id: int,
        tenant: str,
        namespace: str,
        queue: str,
        *,
        group: str = "default",
        prefetch: int = 64,
        now: float,
    ) -> int:
        """Add a consumer for a connection to a queue's consumer group.

        Returns:
            The consumer id.

        Raises:
            ValueError: the connection is not attached.
            NotFound: no such queue.
            InvalidArgument: a bad group name or prefetch.
            LimitExceeded: prefetch above the queue's maximum, or the connection holds the
                most consumers allowed.
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        conn = self._conn(conn_id)
        limit = self.config.max_consumers_per_connection
        if len(conn.consumers) >= limit:
            raise LimitExceeded(
                f"at most {limit} consumers per connection", details={"limit": limit}
            )
        path = self._queue((tenant, namespace, queue), now)
        consumer_id = self._queues.consume(path, conn_id, now, group=group, prefetch=prefetch)
        conn.consumers[consumer_id] = path
        return consumer_id

    def _consumer(self, conn_id: int, consumer_id: int) -> _Connection:
        conn = self._conn(conn_id)
        if consumer_id not in conn.consumers:
            raise NotFound(
                f"consumer {consumer_id} not found", details={"consumer_id": consumer_id}
            )
        return conn

    def _ack(
        self, conn_id: int, consumer_id: int, delivery_ids: Sequence[int], *, now: float
    ) -> None:
        """Finish deliveries made to a consumer.

        Raises:
            ValueError: the connection is not attached.
            NotFound: the connection holds no such consumer, or some ids are not in flight
                to it (the known ones are still acked; ``details['delivery_ids']``).
        """
        conn = self._consumer(conn_id, consumer_id)
        q = self._queues.queue(conn.consumers[consumer_id])
        before = q.byte_size
        try:
            self._queues.ack(consumer_id, delivery_ids, now)
        finally:
            self.budget.adjust(q.byte_size - before)

    def _nack(
        self,
        conn_id: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        delay_ms: int = 0,
        requeue: bool = True,
        now: float,
    ) -> None:
        """Return deliveries for redelivery after ``delay_ms`` (or dead-letter them).

        Raises:
            ValueError: the connection is not attached.
            NotFound: the connection holds no such consumer, or some ids are unknown.
            InvalidArgument: a negative delay.
        """
        conn = self._consumer(conn_id, consumer_id)
        if delay_ms < 0:
            raise InvalidArgument("delay_ms must be >= 0", details={"field": "delay_ms"})
        before = self._queues.byte_size
        try:
            self._queues.nack(
                consumer_id, delivery_ids, now, delay=delay_ms / 1000, requeue=requeue
            )
        finally:
            self.budget.adjust(self._queues.byte_size - before)
        del conn  # ownership was checked above

    def _cancel_consumer(self, conn_id: int, consumer_id: int, *, now: float) -> None:
        """End a consumer; its in-flight deliveries are returned at once.

        Outputs ``ConsumerClosed`` with reason ``unsubscribed`` for its stream.

        Raises:
            ValueError: the connection is not attached.
            NotFound: the connection holds no such consumer.
        """
        conn = self._consumer(conn_id, consumer_id)
        path = conn.consumers.pop(consumer_id)
        self._queues.cancel(consumer_id, now)
        self._queue_out.append(
            ConsumerClosed(
                connection_id=conn_id, consumer_id=consumer_id, queue=path, reason="unsubscribed"
            )
        )

    def purge(self, tenant: str, namespace: str, queue: str, *, now: float) -> int:
        """Drop every message of a queue that is not in flight.

        Returns:
            How many messages the most affected group lost.

        Raises:
            NotFound: no such queue.
        """
        path = self._queue((tenant, namespace, queue), now)
        before = self._queues.byte_size
        purged = self._queues.purge(path, now)
        self.budget.adjust(self._queues.byte_size - before)
        return purged

    # -- caches ----------------------------------------------------------------------------

    def _cache_put(
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
    ) -> tuple[bool, int | None]:
        """Store a value, possibly conditionally (put-if-absent, compare-and-set).

        Args:
            tenant: the tenant.
            namespace: the namespace.
            cache: the cache.
            key: the key (1..1024 UTF-8 bytes).
            value: the value.
            ttl_ms: time to live; None: the cache's default; 0: never expires.
            if_absent: store only when the key has no live entry.
            if_version: store only when the live entry has this version.
            now: the current time.

        Returns:
            ``(stored, version)``: True and the new version, or False and the current
            version (None when there is no live entry) when the condition failed.

        Raises:
            NotFound: no such cache.
            InvalidArgument: a bad key or ttl, or both conditions given.
            TooLarge: key, value or entry above the cache's limits.
            Overloaded: the memory budget is exhausted (retryable).
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        path = (tenant, namespace, cache)
        c = self._cache(path, now)
        self.budget.check(len(key) + len(value), "cache put")
        before = c.byte_size
        result = c.put(
            key,
            value,
            now,
            ttl=None if ttl_ms is None else ttl_ms / 1000,
            if_absent=if_absent,
            if_version=if_version,
        )
        self.budget.adjust(c.byte_size - before)
        if path in self._feeds:  # a failed condition logs nothing and pumps nothing
            self._pump_feed(path, now)
        return result.applied, result.version

    def _cache_get(
        self, tenant: str, namespace: str, cache: str, key: str, *, now: float
    ) -> CacheEntry | None:
        """Read a key (lazily expiring it when its time is up).

        Args:
            tenant: the tenant.
            namespace: the namespace.
            cache: the cache.
            key: the key.
            now: the current time.

        Returns:
            The live entry (``value``, ``version``, ``ttl_remaining(now)``) or None.

        Raises:
            NotFound: no such cache.
            InvalidArgument: a bad key.
            TooLarge: the key is too long.
        """
        path = (tenant, namespace, cache)
        c = self._cache(path, now)
        changes = c.changes
        fed = changes.next_offset
        before = c.byte_size
        entry = c.get(key, now)
        if changes.next_offset != fed:  # a lazy expiry removed the entry and logged it
            self.budget.adjust(c.byte_size - before)
            self._after_cache_change(path, now)
        return entry

    def _cache_delete(
        self,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        *,
        if_version: int | None = None,
        now: float,
    ) -> bool:
        """Delete a key, possibly only at a given version.

        Returns:
            True when a live entry was removed.

        Raises:
            NotFound: no such cache.
            InvalidArgument: a bad key.
            TooLarge: the key is too long.
        """
        path = (tenant, namespace, cache)
        c = self._cache(path, now)
        before = c.byte_size
        result = c.delete(key, now, if_version=if_version)
        self.budget.adjust(c.byte_size - before)
        if result.applied:
            self._after_cache_change(path, now)
        return result.applied

    def _after_cache_change(self, path: Path, now: float) -> None:
        if path in self._feeds:
            self._pump_feed(path, now)

    # -- requests -------------------------------------------------------------------------
    #
    # Each request names its connection and the caller's number for it, and completes
    # through the event stream with exactly one RequestCompleted (or a subclass carrying the
    # result) or RequestRefused. The completion is placed before every event the request
    # caused (a subscription's first records follow its SubscriptionOpened).

    def _refuse(self, mark: int, conn_id: int, request: int, exc: EngineError) -> None:
        self._out.insert(mark, RequestRefused(connection_id=conn_id, request=request, error=exc))

    def publish(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        stream: str,
        payloads: Sequence[bytes],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
        now: float,
    ) -> None:
        """Append records to a stream and deliver them to its subscriptions.

        Completes with :class:`~felix_core.events.Appended` (the offsets); refusals as for
        the private ``_publish``: NotFound, InvalidArgument, TooLarge, Overloaded,
        ShuttingDown.

        Args:
            conn_id: the publishing connection (counted when attached; may be any id).
            request: the caller's number for the request.
            tenant: the tenant.
            namespace: the namespace.
            stream: the stream.
            payloads: one or more payloads.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.
            now: the current time; records are stamped ``int(now * 1000)``.
        """
        out = self._out
        mark = len(out)
        try:
            first, last = self._publish(
                conn_id, tenant, namespace, stream, payloads, keys=keys, headers=headers, now=now
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        out.insert(
            mark,
            Appended(connection_id=conn_id, request=request, first_offset=first, last_offset=last),
        )

    def enqueue(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        queue: str,
        payloads: Sequence[bytes],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
        now: float,
    ) -> None:
        """Append messages to a queue and hand them to its consumers.

        Completes with :class:`~felix_core.events.Appended`. Refusals: NotFound,
        InvalidArgument, TooLarge, Overloaded (the queue or the memory budget is full),
        ShuttingDown.
        """
        out = self._out
        mark = len(out)
        try:
            first, last = self._enqueue(
                conn_id, tenant, namespace, queue, payloads, keys=keys, headers=headers, now=now
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        out.insert(
            mark,
            Appended(connection_id=conn_id, request=request, first_offset=first, last_offset=last),
        )

    def subscribe(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        name: str,
        *,
        start: int = StartKind.LATEST,
        start_value: int | None = None,
        credit_messages: int = 1024,
        credit_bytes: int = 1 << 20,
        source: str = "stream",
        now: float,
    ) -> None:
        """Subscribe a connection to a stream, or to a cache's change feed.

        Completes with :class:`~felix_core.events.SubscriptionOpened`, followed by the
        subscription's records. Refusals: NotFound, InvalidArgument, CursorTooOld
        (``details['first_offset']``), LimitExceeded, ShuttingDown.

        Raises:
            ValueError: the connection is not attached (a bug in the caller).
        """
        out = self._out
        mark = len(out)
        try:
            sub_id, first = self._subscribe(
                conn_id,
                tenant,
                namespace,
                name,
                start=start,
                start_value=start_value,
                credit_messages=credit_messages,
                credit_bytes=credit_bytes,
                source=source,
                now=now,
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        out.insert(
            mark,
            SubscriptionOpened(
                connection_id=conn_id, request=request, subscription_id=sub_id, first_offset=first
            ),
        )

    def unsubscribe(
        self, conn_id: int, request: int | None, subscription_id: int, *, now: float
    ) -> None:
        """End a subscription; its :class:`~felix_core.events.SubscriptionClosed` (reason
        ``unsubscribed``) follows the completion.

        With ``request`` None (the client stopped the feed's stream: no reply is due) there
        is no completion and an unknown subscription is ignored. Otherwise completes with
        :class:`~felix_core.events.RequestCompleted`; refused with NotFound.

        Raises:
            ValueError: ``request`` is given and the connection is not attached.
        """
        if request is None:
            if self._owns_subscription(conn_id, subscription_id):
                self._unsubscribe(conn_id, subscription_id, now=now)
            return
        out = self._out
        mark = len(out)
        try:
            self._unsubscribe(conn_id, subscription_id, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        out.insert(mark, RequestCompleted(connection_id=conn_id, request=request))

    def _owns_subscription(self, conn_id: int, subscription_id: int) -> bool:
        conn = self._conns.get(conn_id)
        return conn is not None and subscription_id in conn.subs

    def add_credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, *, now: float
    ) -> bool:
        """Grant a subscription more credit (totals are clamped to the config's maxima).

        Credit is not a request (nothing completes); a grant for a subscription that ended
        meanwhile is ignored.

        Args:
            conn_id: the connection holding the subscription.
            subscription_id: the subscription.
            messages: more records (>= 0).
            nbytes: more record bytes (>= 0).
            now: the current time.

        Returns:
            False when the connection holds no such subscription (nothing changed).

        Raises:
            ValueError: a negative grant (the wire cannot carry one: a bug in the caller).
        """
        if messages < 0 or nbytes < 0:
            raise ValueError("credit must be >= 0")
        if not self._owns_subscription(conn_id, subscription_id):
            return False
        self._add_credit(conn_id, subscription_id, messages, nbytes, now=now)
        return True

    def consume(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        queue: str,
        *,
        group: str = "default",
        prefetch: int = 64,
        now: float,
    ) -> None:
        """Add a consumer for a connection to a queue's consumer group.

        Completes with :class:`~felix_core.events.ConsumerOpened`, followed by its
        deliveries. Refusals: NotFound, InvalidArgument, LimitExceeded, ShuttingDown.

        Raises:
            ValueError: the connection is not attached (a bug in the caller).
        """
        mark = len(self._out)
        try:
            consumer_id = self._consume(
                conn_id, tenant, namespace, queue, group=group, prefetch=prefetch, now=now
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, ConsumerOpened(connection_id=conn_id, request=request, consumer_id=consumer_id)
        )

    def cancel_consumer(
        self, conn_id: int, request: int | None, consumer_id: int, *, now: float
    ) -> None:
        """End a consumer; its in-flight deliveries are returned at once and its
        :class:`~felix_core.events.ConsumerClosed` (reason ``unsubscribed``) follows.

        With ``request`` None (the client stopped the consumer's stream) there is no
        completion and an unknown consumer is ignored. Otherwise completes with
        :class:`~felix_core.events.RequestCompleted`; refused with NotFound.
        """
        if request is None:
            conn = self._conns.get(conn_id)
            if conn is not None and consumer_id in conn.consumers:
                self._cancel_consumer(conn_id, consumer_id, now=now)
            return
        mark = len(self._out)
        try:
            self._cancel_consumer(conn_id, consumer_id, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(mark, RequestCompleted(connection_id=conn_id, request=request))

    def ack(
        self,
        conn_id: int,
        request: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        now: float,
    ) -> None:
        """Finish deliveries made to a consumer.

        Completes with :class:`~felix_core.events.RequestCompleted`. Refused with NotFound
        when the connection holds no such consumer or some ids are not in flight to it (the
        known ones are still acked; ``details['delivery_ids']``).
        """
        mark = len(self._out)
        try:
            self._ack(conn_id, consumer_id, delivery_ids, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(mark, RequestCompleted(connection_id=conn_id, request=request))

    def nack(
        self,
        conn_id: int,
        request: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        delay_ms: int = 0,
        requeue: bool = True,
        now: float,
    ) -> None:
        """Return deliveries for redelivery after ``delay_ms`` (or dead-letter them).

        Completes with :class:`~felix_core.events.RequestCompleted`. Refusals: NotFound (as
        for :meth:`ack`), InvalidArgument (a negative delay).
        """
        mark = len(self._out)
        try:
            self._nack(
                conn_id, consumer_id, delivery_ids, delay_ms=delay_ms, requeue=requeue, now=now
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(mark, RequestCompleted(connection_id=conn_id, request=request))

    def cache_put(
        self,
        conn_id: int,
        request: int,
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
    ) -> None:
        """Store a value, possibly conditionally (put-if-absent, compare-and-set).

        Completes with :class:`~felix_core.events.CacheStored`: stored and the new version,
        or not stored and the live entry's version (None without one) when the condition
        failed. Refusals: NotFound, InvalidArgument, TooLarge, Overloaded, ShuttingDown.
        """
        mark = len(self._out)
        try:
            stored, version = self._cache_put(
                tenant,
                namespace,
                cache,
                key,
                value,
                ttl_ms=ttl_ms,
                if_absent=if_absent,
                if_version=if_version,
                now=now,
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark,
            CacheStored(connection_id=conn_id, request=request, stored=stored, version=version),
        )

    def cache_get(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        *,
        now: float,
    ) -> None:
        """Read a key (lazily expiring it when its time is up).

        Completes with :class:`~felix_core.events.CacheRead` (``value`` None on a miss).
        Refusals: NotFound, InvalidArgument, TooLarge (the key).
        """
        mark = len(self._out)
        try:
            entry = self._cache_get(tenant, namespace, cache, key, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        if entry is None:
            read = CacheRead(
                connection_id=conn_id,
                request=request,
                value=None,
                version=None,
                ttl_remaining_ms=None,
            )
        else:
            ttl = entry.ttl_remaining(now)
            read = CacheRead(
                connection_id=conn_id,
                request=request,
                value=entry.value,
                version=entry.version,
                ttl_remaining_ms=None if ttl is None else max(int(ttl * 1000), 0),
            )
        self._out.insert(mark, read)

    def cache_delete(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        cache: str,
        key: str,
        *,
        if_version: int | None = None,
        now: float,
    ) -> None:
        """Delete a key, possibly only at a given version.

        Completes with :class:`~felix_core.events.CacheRemoved`. Refusals: NotFound,
        InvalidArgument, TooLarge (the key).
        """
        mark = len(self._out)
        try:
            deleted = self._cache_delete(
                tenant, namespace, cache, key, if_version=if_version, now=now
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, CacheRemoved(connection_id=conn_id, request=request, deleted=deleted)
        )

    # -- admin ------------------------------------------------------------------------

    def create(
        self,
        conn_id: int,
        request: int,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        settings: Mapping[str, Any] | None = None,
        *,
        now: float,
    ) -> None:
        """Create a tenant, namespace, stream, queue or cache.

        Completes with :class:`~felix_core.events.ResourceDescribed`. Refusals:
        InvalidArgument (unknown kind, bad names or settings), NotFound (the parent),
        AlreadyExists, LimitExceeded, ShuttingDown.

        Args:
            conn_id: the requesting connection (any id).
            request: the caller's number for the request.
            kind: a :class:`~felix_core.metadata.Kind` value.
            tenant: the tenant (the new tenant's name for kind ``tenant``).
            namespace: the namespace ("" for a tenant).
            name: the resource name ("" for tenants and namespaces).
            settings: the kind's settings (see docs/engine.md); absent ones take defaults.
            now: the current time.
        """
        mark = len(self._out)
        try:
            resource = self._create(kind, tenant, namespace, name, settings, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, ResourceDescribed(connection_id=conn_id, request=request, resource=resource)
        )

    def describe(
        self,
        conn_id: int,
        request: int,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        *,
        now: float,
    ) -> None:
        """Describe a resource, with live ``stats`` for streams, queues and caches.

        Completes with :class:`~felix_core.events.ResourceDescribed`. Refusals:
        InvalidArgument, NotFound.
        """
        mark = len(self._out)
        try:
            resource = self._describe_resource(kind, tenant, namespace, name, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, ResourceDescribed(connection_id=conn_id, request=request, resource=resource)
        )

    def list(
        self,
        conn_id: int,
        request: int,
        kind: str,
        tenant: str = "",
        namespace: str = "",
    ) -> None:
        """List the resources of a kind under a tenant (and namespace).

        Completes with :class:`~felix_core.events.ResourcesListed`. Refusals:
        InvalidArgument, NotFound (the parent).
        """
        mark = len(self._out)
        try:
            resources = self._list(kind, tenant, namespace)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, ResourcesListed(connection_id=conn_id, request=request, resources=resources)
        )

    def update(
        self,
        conn_id: int,
        request: int,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        settings: Mapping[str, Any] | None = None,
        *,
        now: float,
    ) -> None:
        """Change some settings of a resource; they take effect at once.

        Completes with :class:`~felix_core.events.ResourceDescribed`. Refusals:
        InvalidArgument, NotFound, Conflict (a concurrent update won), ShuttingDown.
        """
        mark = len(self._out)
        try:
            resource = self._update(kind, tenant, namespace, name, settings, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(
            mark, ResourceDescribed(connection_id=conn_id, request=request, resource=resource)
        )

    def delete(
        self,
        conn_id: int,
        request: int,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        *,
        now: float,
    ) -> None:
        """Delete a resource; its subscriptions and consumers end with reason ``deleted``.

        Completes with :class:`~felix_core.events.RequestCompleted`. Refusals:
        InvalidArgument, NotFound, Conflict (a tenant or namespace that is not empty).
        """
        mark = len(self._out)
        try:
            self._delete(kind, tenant, namespace, name, now=now)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self._out.insert(mark, RequestCompleted(connection_id=conn_id, request=request))
