"""The broker's plumbing: connections, metadata-backed engines, memory, outputs and timers.

:class:`BrokerCore` is the base of :class:`felix_core.broker.Broker`, which adds the data
operations (publish, subscribe, queue and cache calls). The split only keeps modules short;
the theory of operation is in :mod:`felix_core.broker`. Everything here is part of the
public facade except the underscored helpers, which the operations use.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from felix_core.cache import Cache, CacheEngine, CacheStats, CacheTotals
from felix_core.errors import InvalidArgument, NotFound, ShuttingDown, TooLarge
from felix_core.events import ConsumerClosed, EngineEvent
from felix_core.limits import BrokerConfig, MemoryBudget, encoded_record_size
from felix_core.log import LogStore, MemoryLogStore
from felix_core.metadata import (
    Catalog,
    Kind,
    MemoryMetadataStore,
    MetadataStore,
    Path,
    ResourceRecord,
)
from felix_core.queues import QueueEngine, QueueStats, QueueTotals
from felix_core.settings import BatchPolicy, StreamSettings, cache_config, queue_config
from felix_core.streams import Fanout, Stream, Subscription, batch_byte_size
from felix_proto.deadlines import Deadlines

__all__ = ["BrokerCore", "FeedBacklog", "ResourceTotals"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceTotals:
    """Queue and cache figures for metrics: :meth:`BrokerCore.totals`.

    The per-resource maps are keyed by ``(tenant, namespace, name)``: resource names, never
    message data. They are bounded by the caller's ``detail_limit``: a kind with more
    resources than that gets an empty map (totals only), so a scrape's size and its label
    cardinality stay bounded however many queues or caches a broker holds.
    """

    queues: QueueTotals
    """Over every queue."""
    caches: CacheTotals
    """Over every cache."""
    queue_detail: dict[Path, QueueStats]
    """Each queue's stats, or empty when there are more queues than ``detail_limit``."""
    cache_detail: dict[Path, CacheStats]
    """Each cache's stats, or empty when there are more caches than ``detail_limit``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedBacklog:
    """What one live subscription or consumer has not finished: :meth:`BrokerCore.backlog`."""

    kind: str
    """``stream``, ``cache`` (a cache's change feed) or ``queue`` (a consumer)."""
    feed_id: int
    """The subscription or consumer id."""
    resource: Path
    """The stream, cache or queue followed."""
    undelivered: int
    """Records not handed out yet: from a subscription's cursor (or the first retained
    offset) to its log's end; for a consumer, its group's messages waiting for a delivery
    or redelivery (dead letters parked for their target are not counted)."""
    unacked: int
    """A consumer's deliveries not yet acked or nacked (0 for a subscription)."""


def _undelivered(fanout: Fanout, sub_id: int) -> int:
    """Records between a subscription's cursor (or the log's start) and the log's end."""
    log = fanout.log
    return max(log.next_offset - max(fanout.subscriptions[sub_id].cursor, log.first_offset), 0)


class _Connection:
    """What one attached connection holds."""

    __slots__ = ("consumers", "id", "paused", "published", "subs")

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.subs: dict[int, Fanout] = {}
        self.consumers: dict[int, Path] = {}
        self.paused = False
        self.published = 0


class BrokerCore:
    """Connections, admin, engines, memory, outputs and timers. See :mod:`felix_core.broker`."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        metadata: MetadataStore | None = None,
        logs: LogStore | None = None,
        now: float = 0.0,
    ) -> None:
        """Create a broker.

        Args:
            config: limits and defaults (``BrokerConfig()`` when None).
            metadata: the metadata store (a fresh in-memory one when None).
            logs: where resources' logs live (in memory when None).
            now: the current time, for the creation time of the default resources.
        """
        self.config = config = config or BrokerConfig()
        self.store: MetadataStore = metadata if metadata is not None else MemoryMetadataStore()
        self.catalog = Catalog(self.store, config)
        self.logs: LogStore = logs if logs is not None else MemoryLogStore()
        if config.durability == "durable":
            self._check_durability({"durability": "durable"})
        self.budget = MemoryBudget(config.memory_limit_bytes)
        self._out: list[EngineEvent] = []
        self._streams: dict[Path, Stream] = {}
        self._versions: dict[tuple[Kind, Path], tuple[int, int]] = {}
        self._queues = QueueEngine()
        self._queue_out: list[EngineEvent] = []
        self._caches = CacheEngine()
        self._feeds: dict[Path, Fanout] = {}
        self._feed_batch = BatchPolicy(
            max_events=config.batch_max_events,
            max_bytes=config.batch_max_bytes,
            max_delay_s=config.batch_max_delay_us / 1e6,
        )
        self._conns: dict[int, _Connection] = {}
        self._next_sub_id = 1
        self._deadlines: Deadlines[Fanout] = Deadlines()  # streams and cache feeds
        self._shutting_down = False
        if config.create_defaults:
            self._ensure(Kind.TENANT, (config.default_tenant, "", ""), now)
            self._ensure(Kind.NAMESPACE, (config.default_tenant, config.default_namespace, ""), now)

    def _ensure(self, kind: Kind, path: Path, now: float) -> None:
        if self.store.get(kind, path) is None:
            self.catalog.create(kind, path, {}, now)

    def attach(self, conn_id: int, now: float) -> None:
        """Register a connection before it subscribes or consumes.

        Args:
            conn_id: the runtime's id for the connection.
            now: the current time.

        Raises:
            ValueError: the id is attached already (a glue bug).
        """
        if conn_id in self._conns:
            raise ValueError(f"connection {conn_id} is attached already")
        self._conns[conn_id] = _Connection(conn_id)

    def detach(self, conn_id: int, now: float) -> None:
        """Release everything a connection held, silently (it is gone).

        Its subscriptions end without output; its consumers' in-flight deliveries are
        returned for redelivery at once. Unknown ids are ignored.

        Args:
            conn_id: the connection.
            now: the current time.
        """
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        for sub_id, fanout in builtins.list(conn.subs.items()):
            fanout.remove(sub_id, None)
        conn.subs.clear()
        before = self._queues.byte_size
        self._queues.detach_connection(conn_id, now)
        self.budget.adjust(self._queues.byte_size - before)

    def pause(self, conn_id: int) -> None:
        """Stop deliveries to a connection (runtime back-pressure) until :meth:`resume`.

        Args:
            conn_id: the connection.

        Raises:
            ValueError: the connection is not attached.
        """
        conn = self._conn(conn_id)
        conn.paused = True
        for sub_id, fanout in conn.subs.items():
            fanout.subscriptions[sub_id].paused = True
        self._queues.pause_connection(conn_id)

    def resume(self, conn_id: int, now: float) -> None:
        """Resume deliveries to a paused connection and deliver what waited.

        Args:
            conn_id: the connection.
            now: the current time.

        Raises:
            ValueError: the connection is not attached.
        """
        conn = self._conn(conn_id)
        conn.paused = False
        fanouts: dict[int, Fanout] = {}
        for sub_id, fanout in conn.subs.items():
            fanout.subscriptions[sub_id].paused = False
            fanouts[id(fanout)] = fanout
        for fanout in fanouts.values():
            fanout.pump(now, force=True)
            self._schedule(fanout)
        self._queues.resume_connection(conn_id, now)

    def _conn(self, conn_id: int) -> _Connection:
        conn = self._conns.get(conn_id)
        if conn is None:
            raise ValueError(f"connection {conn_id} is not attached")
        return conn

    def _running(self) -> None:
        if self._shutting_down:
            raise ShuttingDown("the broker is shutting down")

    def _create(
        self,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        settings: Mapping[str, Any] | None = None,
        *,
        now: float,
    ) -> dict[str, Any]:
        """Create a tenant, namespace, stream, queue or cache.

        Args:
            kind: a :class:`~felix_core.metadata.Kind` value.
            tenant: the tenant (the new tenant's name for kind ``tenant``).
            namespace: the namespace ("" for a tenant).
            name: the resource name ("" for tenants and namespaces).
            settings: the kind's settings (see docs/engine.md); absent ones take defaults.
            now: the current time.

        Returns:
            The resource as a mapping (the wire's ``AdminResource.resource``).

        Raises:
            InvalidArgument: unknown kind, bad names or bad settings.
            NotFound: the parent tenant or namespace does not exist.
            AlreadyExists: the resource exists.
            LimitExceeded: the parent holds as many resources as allowed.
            ShuttingDown: the broker is shutting down.
        """
        self._running()
        k = Catalog.parse_kind(kind)
        self._check_durability(settings or {})
        record = self.catalog.create(k, (tenant, namespace, name), settings or {}, now)
        self._materialize(record, now)
        return self._describe(record, now)

    def _describe_resource(
        self, kind: str, tenant: str, namespace: str = "", name: str = "", *, now: float
    ) -> dict[str, Any]:
        """Describe a resource, with live ``stats`` for streams, queues and caches.

        Returns:
            The resource as a mapping.

        Raises:
            InvalidArgument: unknown kind or bad names.
            NotFound: no such resource.
        """
        k = Catalog.parse_kind(kind)
        record = self.catalog.describe(k, (tenant, namespace, name))
        self._materialize(record, now)
        return self._describe(record, now)

    def _list(self, kind: str, tenant: str = "", namespace: str = "") -> list[dict[str, Any]]:
        """List the resources of a kind under a tenant (and namespace).

        Returns:
            The resources as mappings (without stats), sorted by path.

        Raises:
            InvalidArgument: unknown kind or bad names.
            NotFound: the parent does not exist.
        """
        k = Catalog.parse_kind(kind)
        return [r.to_dict() for r in self.catalog.list(k, tenant, namespace)]

    def _update(
        self,
        kind: str,
        tenant: str,
        namespace: str = "",
        name: str = "",
        settings: Mapping[str, Any] | None = None,
        *,
        now: float,
    ) -> dict[str, Any]:
        """Change some settings of a resource; they take effect at once.

        Returns:
            The updated resource as a mapping.

        Raises:
            InvalidArgument: unknown kind, bad names or bad settings.
            NotFound: no such resource.
            Conflict: a concurrent update won.
        """
        self._running()
        k = Catalog.parse_kind(kind)
        self._check_durability(settings or {})
        record = self.catalog.update(k, (tenant, namespace, name), settings or {}, now)
        self._materialize(record, now)
        return self._describe(record, now)

    def _delete(
        self, kind: str, tenant: str, namespace: str = "", name: str = "", *, now: float
    ) -> None:
        """Delete a resource; its subscriptions and consumers end with reason ``deleted``.

        Raises:
            InvalidArgument: unknown kind or bad names.
            NotFound: no such resource.
            Conflict: a tenant or namespace that is not empty.
        """
        k = Catalog.parse_kind(kind)
        record = self.catalog.delete(k, (tenant, namespace, name))
        self._drop(k, record.path)

    def _check_durability(self, settings: Mapping[str, Any]) -> None:
        """Refuse ``durability=durable`` unless the log store keeps logs across restarts.

        Raises:
            InvalidArgument: ``durable`` asked of a store that is not durable.
        """
        if settings.get("durability") == "durable" and not self.logs.durable:
            raise InvalidArgument(
                "durability 'durable' is not available: this broker keeps every resource in "
                "memory and nothing survives a restart",
                details={"field": "durability"},
            )

    def _describe(self, record: ResourceRecord, now: float) -> dict[str, Any]:
        out = record.to_dict()
        if record.kind is Kind.STREAM:
            out["stats"] = self._streams[record.path].stats()
        elif record.kind is Kind.QUEUE:
            out["stats"] = asdict(self._queues.stats(record.path, now))
        elif record.kind is Kind.CACHE:
            feed = self._feeds.get(record.path)
            out["stats"] = {
                **asdict(self._caches.cache(record.path).stats()),
                "feed_subscriptions": len(feed.subscriptions) if feed is not None else 0,
            }
        return out

    def _materialize(self, record: ResourceRecord, now: float) -> None:
        if record.kind is Kind.STREAM:
            self._stream(record.path, now)
        elif record.kind is Kind.QUEUE:
            self._queue(record.path, now)
        elif record.kind is Kind.CACHE:
            self._cache(record.path, now)

    def _record(self, kind: Kind, path: Path, now: float) -> ResourceRecord:
        """The current record, dropping the engine when the record is gone or replaced."""
        record = self.store.get(kind, path)
        version = self._versions.get((kind, path))
        if record is None or (version is not None and version[0] != record.uid):
            if version is not None:
                self._drop(kind, path)
            if record is None:
                raise NotFound(f"{kind.value} {'/'.join(path)} not found", details={"kind": kind})
        return record

    def _stream(self, path: Path, now: float) -> Stream:
        record = self._record(Kind.STREAM, path, now)
        version = (record.uid, record.generation)
        stream = self._streams.get(path)
        if stream is None:
            settings = StreamSettings.from_mapping(record.settings, self.config)
            log = self.logs.open_log(Kind.STREAM.value, path, record.settings)
            stream = Stream(settings, self._out, log=log)
            stream._on_end = self._forget_sub
            self._streams[path] = stream
            self._versions[(Kind.STREAM, path)] = version
        elif self._versions[(Kind.STREAM, path)] != version:
            before = stream.log.byte_size
            stream.update_settings(StreamSettings.from_mapping(record.settings, self.config), now)
            self.budget.adjust(stream.log.byte_size - before)
            self._versions[(Kind.STREAM, path)] = version
            self._schedule(stream)
        return stream

    def _queue(self, path: Path, now: float) -> Path:
        record = self._record(Kind.QUEUE, path, now)
        version = (record.uid, record.generation)
        current = self._versions.get((Kind.QUEUE, path))
        if current != version:
            config = queue_config(record.settings)
            if current is None:
                log = self.logs.open_log(Kind.QUEUE.value, path, record.settings)
                self._queues.create_queue(path, config, log=log)
            else:
                self._queues.update_queue(path, config)
            self._versions[(Kind.QUEUE, path)] = version
            target = config.dead_letter_queue
            if (
                target is not None
                and (Kind.QUEUE, (path[0], path[1], target)) not in self._versions
            ):
                # Absent targets are fine: the queue engine parks dead letters meanwhile.
                with suppress(NotFound):
                    self._queue((path[0], path[1], target), now)
        return path

    def _drop(self, kind: Kind, path: Path) -> None:
        """Tear down the engine of a deleted resource; end its users with ``deleted``."""
        if self._versions.pop((kind, path), None) is None:
            return
        self.logs.drop_log(kind.value, path)
        if kind is Kind.STREAM:
            stream = self._streams.pop(path)
            stream.end_all("deleted", "the stream was deleted")
            stream.closed = True
            self._deadlines.discard(stream)
            self.budget.adjust(-stream.log.byte_size)
        elif kind is Kind.QUEUE:
            before = self._queues.byte_size
            self._queues.delete_queue(path)
            self.budget.adjust(self._queues.byte_size - before)
        else:
            cache = self._caches.delete_cache(path)
            self.budget.adjust(-cache.byte_size)
            feed = self._feeds.pop(path, None)
            if feed is not None:
                feed.end_all("deleted", "the cache was deleted")
                feed.closed = True
                self._deadlines.discard(feed)

    def _cache(self, path: Path, now: float) -> Cache:
        record = self._record(Kind.CACHE, path, now)
        version = (record.uid, record.generation)
        current = self._versions.get((Kind.CACHE, path))
        if current is None:
            changes = self.logs.open_log(Kind.CACHE.value, path, record.settings)
            cache = self._caches.create_cache(path, cache_config(record.settings), changes=changes)
            self._versions[(Kind.CACHE, path)] = version
            return cache
        cache = self._caches.cache(path)
        if current != version:
            before = cache.byte_size
            self._caches.update_cache(path, cache_config(record.settings), now)
            self.budget.adjust(cache.byte_size - before)
            self._versions[(Kind.CACHE, path)] = version
            self._pump_feed(path, now)
        return cache

    def _cache_feed(self, path: Path, now: float) -> Fanout:
        """The fanout following a cache's change log (created on first subscription)."""
        cache = self._cache(path, now)
        feed = self._feeds.get(path)
        if feed is None:
            feed = Fanout(cache.changes, self._out, batch=self._feed_batch, on_end=self._forget_sub)
            self._feeds[path] = feed
        return feed

    def _pump_feed(self, path: Path, now: float) -> None:
        feed = self._feeds.get(path)
        if feed is not None:
            feed.pump(now)
            self._schedule(feed)

    def _forget_sub(self, sub: Subscription) -> None:
        conn = self._conns.get(sub.conn_id)
        if conn is not None:
            conn.subs.pop(sub.id, None)

    def _check_batch(
        self,
        payloads: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
    ) -> int:
        """Validate a publish/enqueue batch against the config; return its byte size."""
        n = len(payloads)
        cfg = self.config
        if n == 0:
            raise InvalidArgument("at least one payload is needed", details={"field": "payloads"})
        if (keys is not None and len(keys) != n) or (headers is not None and len(headers) != n):
            raise InvalidArgument(
                "keys and headers must be as long as payloads", details={"field": "keys"}
            )
        if n > cfg.max_batch_records:
            raise TooLarge(
                f"at most {cfg.max_batch_records} records per batch", details={"records": n}
            )
        if max(map(len, payloads)) > cfg.max_payload_bytes:
            raise TooLarge(
                f"a payload exceeds {cfg.max_payload_bytes} bytes",
                details={"max_payload_bytes": cfg.max_payload_bytes},
            )
        if keys is not None and max(len(k) if k else 0 for k in keys) > cfg.max_key_bytes:
            raise TooLarge(
                f"a key exceeds {cfg.max_key_bytes} bytes",
                details={"max_key_bytes": cfg.max_key_bytes},
            )
        if headers is not None or cfg.max_payload_bytes + cfg.max_key_bytes + 10 > (
            cfg.max_record_bytes
        ):
            _check_record_sizes(payloads, keys, headers, cfg.max_record_bytes)
        nbytes = batch_byte_size(payloads, keys, headers)
        if nbytes > cfg.max_batch_bytes:
            raise TooLarge(
                f"the batch exceeds {cfg.max_batch_bytes} bytes", details={"bytes": nbytes}
            )
        return nbytes

    def drain_events(self) -> builtins.list[EngineEvent]:
        """Take every event produced since the last call, in order per connection.

        Returns:
            Stream events, then queue events (see :mod:`felix_core.events`). One
            :class:`~felix_core.log.LogSlice` object may appear in many ``RecordsDelivered``
            records: encode it once.
        """
        out: builtins.list[EngineEvent] = builtins.list(self._out)
        self._out.clear()
        events = self._queues.drain_outputs()
        if self._queue_out:
            events = self._queue_out + events
            self._queue_out = []
        for event in events:
            if isinstance(event, ConsumerClosed):
                conn = self._conns.get(event.connection_id)
                if conn is not None:
                    conn.consumers.pop(event.consumer_id, None)
        out.extend(events)
        return out

    def _schedule(self, fanout: Fanout) -> None:
        self._deadlines.set(fanout, None if fanout.closed else fanout.get_timer())

    def get_timer(self) -> float | None:
        """The earliest deadline of any part (batch flush, age retention, visibility
        timeouts, delayed nacks, cache expiry), or None.

        Returns:
            An absolute time in seconds (same clock as ``now``), or None.
        """
        deadlines = [
            t
            for t in (
                self._deadlines.earliest(),
                self._queues.get_timer(),
                self._caches.get_timer(),
            )
            if t is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now``.

        Args:
            now: the current time.
        """
        for fanout in self._deadlines.pop_due(now):
            before = fanout.log.byte_size
            fanout.handle_timer(now)
            if isinstance(fanout, Stream):
                self.budget.adjust(fanout.log.byte_size - before)
            self._schedule(fanout)
        queue_deadline = self._queues.get_timer()
        if queue_deadline is not None and queue_deadline <= now:
            before = self._queues.byte_size
            self._queues.handle_timer(now)
            self.budget.adjust(self._queues.byte_size - before)
        cache_deadline = self._caches.get_timer()
        if cache_deadline is not None and cache_deadline <= now:
            before = self._caches.byte_size
            self._caches.handle_timer(now)
            self.budget.adjust(self._caches.byte_size - before)
            for path in self._feeds:
                self._pump_feed(path, now)

    # -- graceful shutdown ----------------------------------------------------------
    #
    # A runtime drains before it stops: stop_accepting() refuses new work while every
    # subscription and consumer goes on; backlog()/pending() say what each connection's feeds
    # have not finished; end_feeds() ends one connection's feeds once it has caught up, and
    # shutdown() ends whatever is left when the grace period is over.

    def stop_accepting(self) -> None:
        """Refuse new work with ``ShuttingDown`` from now on (idempotent).

        Subscriptions and consumers go on: deliveries, credit, acks and nacks still work, so
        a graceful shutdown can drain them before :meth:`end_feeds` / :meth:`shutdown`.
        """
        self._shutting_down = True

    def backlog(self, conn_id: int) -> builtins.list[FeedBacklog]:
        """What each live feed of a connection has not finished, one entry per feed.

        Args:
            conn_id: the connection (unknown ids have no feeds).

        Returns:
            A :class:`FeedBacklog` per subscription and consumer, in creation order.
        """
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        paths: dict[int, tuple[str, Path]] = {}
        if conn.subs:
            paths = {id(f): ("stream", p) for p, f in self._streams.items()}
            paths.update((id(f), ("cache", p)) for p, f in self._feeds.items())
        out = []
        for sub_id, fanout in conn.subs.items():
            kind, path = paths.get(id(fanout), ("stream", ("", "", "")))
            undelivered = _undelivered(fanout, sub_id)
            out.append(
                FeedBacklog(
                    kind=kind, feed_id=sub_id, resource=path, undelivered=undelivered, unacked=0
                )
            )
        for consumer_id, path in conn.consumers.items():
            waiting, unacked = self._consumer_backlog(consumer_id)
            out.append(
                FeedBacklog(
                    kind="queue",
                    feed_id=consumer_id,
                    resource=path,
                    undelivered=waiting,
                    unacked=unacked,
                )
            )
        return out

    def pending(self, conn_id: int) -> int:
        """The sum of ``undelivered`` and ``unacked`` over :meth:`backlog`, without building
        it (cheap enough to poll while draining). 0: the connection's feeds have caught up.

        Args:
            conn_id: the connection (unknown ids have nothing pending).
        """
        conn = self._conns.get(conn_id)
        if conn is None:
            return 0
        total = sum(_undelivered(fanout, sub_id) for sub_id, fanout in conn.subs.items())
        for consumer_id in conn.consumers:
            total += sum(self._consumer_backlog(consumer_id))
        return total

    def _consumer_backlog(self, consumer_id: int) -> tuple[int, int]:
        try:
            return self._queues.consumer_backlog(consumer_id)
        except NotFound:  # ended (its queue was deleted), its ConsumerClosed not drained yet
            return 0, 0

    def end_feeds(self, conn_id: int, now: float) -> None:
        """End a connection's subscriptions and consumers with reason ``shutdown``.

        Each subscription's ``SubscriptionClosed`` carries the offset it would resume at;
        in-flight queue deliveries return to their queue. Unknown ids are ignored.

        Args:
            conn_id: the connection.
            now: the current time.
        """
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        for sub_id, fanout in builtins.list(conn.subs.items()):
            fanout.remove(sub_id, "shutdown", "the broker is shutting down")
        for consumer_id, path in builtins.list(conn.consumers.items()):
            self._queues.cancel(consumer_id, now)
            self._queue_out.append(
                ConsumerClosed(
                    connection_id=conn.id, consumer_id=consumer_id, queue=path, reason="shutdown"
                )
            )
        conn.consumers.clear()

    def shutdown(self, now: float) -> None:
        """Stop: :meth:`stop_accepting`, then end every subscription and consumer with
        reason ``shutdown`` (:meth:`end_feeds` for every connection).

        Afterwards new work is refused with ``ShuttingDown``; reads, acks and admin reads
        still work.

        Args:
            now: the current time.
        """
        self.stop_accepting()
        for conn_id in builtins.list(self._conns):
            self.end_feeds(conn_id, now)

    def totals(self, now: float, *, detail_limit: int = 0) -> ResourceTotals:
        """Queue and cache figures for metrics, cheap enough for every scrape.

        Counters are kept as things happen and include deleted resources (they never
        decrease); gauges cost O(groups) per queue and O(1) per cache. Per-resource detail
        costs O(resources) and is produced only for a kind with at most ``detail_limit``
        resources.

        Args:
            now: the current time (for the oldest queue message's age).
            detail_limit: the most queues (caches) for which per-resource stats are returned.

        Returns:
            A :class:`ResourceTotals` snapshot.
        """
        queues, caches = self._queues, self._caches
        queue_detail: dict[Path, QueueStats] = {}
        if len(queues) <= detail_limit:
            queue_detail = {path: queues.stats(path, now) for path in queues}
        cache_detail: dict[Path, CacheStats] = {}
        if len(caches) <= detail_limit:
            cache_detail = {path: caches.cache(path).stats() for path in caches}
        return ResourceTotals(
            queues=queues.totals(now),
            caches=caches.totals(),
            queue_detail=queue_detail,
            cache_detail=cache_detail,
        )

    def stats(self) -> dict[str, int]:
        """Gauges and counters for metrics (cheap; safe to call per scrape).

        Returns:
            A flat mapping of metric name to value.
        """
        streams = self._streams.values()
        return {
            "connections": len(self._conns),
            "subscriptions": sum(len(c.subs) for c in self._conns.values()),
            "consumers": sum(len(c.consumers) for c in self._conns.values()),
            "streams": len(self._streams),
            "queues": sum(1 for k, _ in self._versions if k is Kind.QUEUE),
            "caches": sum(1 for k, _ in self._versions if k is Kind.CACHE),
            "memory_used_bytes": self.budget.used,
            "memory_limit_bytes": self.budget.limit,
            "memory_high_water_bytes": self.budget.high_water,
            "memory_refusals": self.budget.refused,
            "stream_published_records": sum(s.published_records for s in streams),
            "stream_delivered_records": sum(s.delivered_records for s in streams),
            "stream_gap_records": sum(s.gap_records for s in streams),
            "stream_lagged_subscriptions": sum(s.lagged for s in streams),
            "stream_blocked_publishes": sum(s.blocked for s in streams),
        }


def _check_record_sizes(
    payloads: Sequence[bytes],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[dict[str, bytes] | None] | None,
    limit: int,
) -> None:
    """Refuse a batch with a record whose encoded size exceeds ``limit``."""
    for i, payload in enumerate(payloads):
        size = encoded_record_size(
            payload,
            keys[i] if keys is not None else None,
            headers[i] if headers is not None else None,
        )
        if size > limit:
            raise TooLarge(
                f"a record is {size} bytes encoded (payload, key and headers); at most "
                f"{limit} are accepted",
                details={"max_record_bytes": limit, "record_bytes": size, "index": i},
            )
