"""The engine: the one object the server glue talks to.

Theory of operation
-------------------
:class:`Broker` is a sans-I/O machine in the style of aioquic's ``QuicConnection``.

Inputs
    * requests, each with its identity (the connection and the caller's number for it):
      admin (:meth:`~Broker.create` ...), streams (:meth:`~Broker.publish`,
      :meth:`~Broker.subscribe` ...), queues (:meth:`~Broker.enqueue`,
      :meth:`~Broker.consume` ...) and caches (:meth:`~Broker.cache_put` ...);
    * feed commands that need no reply (:meth:`~Broker.add_credit`, a stopped feed:
      :meth:`~Broker.unsubscribe` / :meth:`~Broker.cancel_consumer` with request None);
    * connection lifecycle (:meth:`~Broker.attach`, :meth:`~Broker.detach`,
      :meth:`~Broker.pause`, :meth:`~Broker.resume`);
    * what the world says: :meth:`~Broker.metadata_changed` (a record appeared, changed or
      went, whoever wrote it), :meth:`~Broker.metadata_written` (the outcome of a write this
      engine asked for), :meth:`~Broker.log_committed` (a log is committed, durable, up to
      an offset), :meth:`~Broker.log_readable` (a log fetched records a read found pending),
      :meth:`~Broker.log_failed` (a log's storage failed) and :meth:`~Broker.handle_timer`
      (time passed).

Outputs
    * :meth:`~Broker.drain_events`: the one event stream (:mod:`felix_core.events`): every
      request's completion or refusal, placed before the events the request caused; feed
      events per connection; metadata writes for the store; dead-letter notices;
    * :meth:`~Broker.get_timer`.

Every request completes through the events, at once or later: an admin write when its store
answers, a committed publish when its log is durable, everything else at once. Refusals are
:class:`~felix_core.errors.EngineError` records inside a
:class:`~felix_core.events.RequestRefused`; only a bug in the caller (a request on a
connection that was never attached) raises.

Parts (composition, one job each)
    :class:`Broker` is a facade: each input goes to the part whose job it is, and the
    requests on the hot path (publish, enqueue, cache put, get and delete) go straight to
    their partition, with no part in between.

    * :class:`~felix_core.registry.Registry`: one partition per stream, queue and cache
      (log + projection + version), built from the records, and every partition's deadline
      in one heap;
    * :class:`~felix_core.admin.Admin`: the metadata view the engine is fed, the catalog
      that validates admin requests against it, and the writes waiting for their store;
    * :class:`~felix_core.connections.Connections`: per attached connection the index of its
      subscriptions and consumers (the fanouts and groups hold the feeds themselves), its
      back-pressure, and the graceful drain (stop accepting, backlog, end feeds);
    * :class:`~felix_core.subscriptions.Subscriptions` and
      :class:`~felix_core.consumers.Consumers`: open, credit, settle and end feeds;
    * :class:`~felix_core.figures.Figures`: the gauges and counters for metrics;
    * a :class:`~felix_core.limits.MemoryBudget`, charged by the logs and caches themselves
      as they grow and shrink; the engine only asks it, before work that grows memory,
      whether the growth fits (retryable ``Overloaded`` otherwise).

    Every part emits into the one event list; a request's completion or refusal is placed
    by :func:`~felix_core.completion.completes` (written out on publish, enqueue and cache
    put/get, where a decorator's call would cost a third of a get).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from felix_core.admin import Admin
from felix_core.completion import completes
from felix_core.connections import Connections, FeedBacklog, shutting_down
from felix_core.consumers import Consumers
from felix_core.errors import EngineError, InvalidArgument, TooLarge
from felix_core.events import (
    Appended,
    CacheRead,
    CacheRemoved,
    CacheStored,
    EngineEvent,
    RequestRefused,
)
from felix_core.figures import Figures, ResourceTotals
from felix_core.limits import BrokerConfig, MemoryBudget, encoded_record_size
from felix_core.log import LogStore, MemoryLogStore
from felix_core.metadata import Catalog, Kind, MetadataView, Path, ResourceRecord
from felix_core.partitions import CachePartition, QueuePartition, StreamPartition
from felix_core.queue_journal import STATE_SUFFIX
from felix_core.quotas import TenantQuotas
from felix_core.registry import Registry
from felix_core.streams import StartKind, batch_byte_size
from felix_core.subscriptions import Subscriptions

__all__ = ["Broker", "BrokerConfig", "FeedBacklog", "ResourceTotals"]


class Broker:
    """The engine. See the module docstring.

    Args:
        config: limits and defaults (``BrokerConfig()`` when None).
        logs: where resources' logs live (in memory when None).
        now: the current time (stamps the default tenant and namespace).
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        logs: LogStore | None = None,
        now: float = 0.0,
    ) -> None:
        self.config = config = config or BrokerConfig()
        self.logs: LogStore = logs if logs is not None else MemoryLogStore()
        self.budget = MemoryBudget(config.memory_limit_bytes)
        self._out: list[EngineEvent] = []
        out = self._out
        self.quotas = quotas = TenantQuotas(config)
        """Per-tenant quotas; refusals counted in ``quotas.refused``."""
        self.registry = Registry(
            config,
            self.logs,
            self.budget,
            out,
            cache_meter=lambda tenant: quotas.cache_meter(tenant, self.budget),
            inflight=quotas.inflight,
        )
        self.connections = Connections(self.registry, out)
        self.admin = Admin(config, self.logs, self.registry, self.connections, out, quotas)
        self.subscriptions = Subscriptions(config, self.registry, self.connections, quotas, out)
        self.consumers = Consumers(config, self.registry, self.connections, quotas, out)
        self.figures = Figures(self.registry, self.budget, self.connections)
        if config.durability == "durable":
            self.admin.check_durability({"durability": "durable"})
        if config.create_defaults:  # asked of the store; one that has them says so
            self.admin.create_defaults(config.default_tenant, config.default_namespace, now)

    @property
    def view(self) -> MetadataView:
        """The metadata records the engine was fed."""
        return self.admin.view

    @property
    def catalog(self) -> Catalog:
        """Admin validation against :attr:`view`."""
        return self.admin.catalog

    @property
    def writes_in_flight(self) -> int:
        """How many :class:`~felix_core.events.MetadataWrite` events wait for their
        :meth:`metadata_written` answer (0: no write among the events to drain)."""
        return self.admin.writes_in_flight

    # ---------------------------------------------------------------------- outputs

    def drain_events(self) -> builtins.list[EngineEvent]:
        """Take every event produced since the last call (see :mod:`felix_core.events`).

        Returns:
            The events, in order per connection. One :class:`~felix_core.log.LogSlice`
            object may appear in many ``RecordsDelivered`` records: encode it once.
        """
        out = self._out
        if not out:
            return []
        events = out.copy()
        out.clear()
        return events

    def get_timer(self) -> float | None:
        """The earliest deadline of any partition (batch flush, age retention, visibility
        timeouts, delayed nacks, cache expiry), or None.

        Returns:
            An absolute time in seconds (same clock as ``now``), or None.
        """
        return self.registry.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now``.

        Args:
            now: the current time.
        """
        self.registry.handle_timer(now)

    # ----------------------------------------------------------------- connections

    def attach(self, conn_id: int, now: float) -> None:
        """Register a connection before it subscribes or consumes.

        Raises:
            ValueError: the id is attached already (a glue bug).
        """
        self.connections.attach(conn_id)

    def detach(self, conn_id: int, now: float) -> None:
        """Release everything a connection held, silently (it is gone).

        Its subscriptions end without events; its consumers' in-flight deliveries are
        returned for redelivery at once. Unknown ids are ignored.
        """
        self.connections.detach(conn_id, now)

    def pause(self, conn_id: int) -> None:
        """Stop deliveries to a connection (back-pressure) until :meth:`resume`.

        Raises:
            ValueError: the connection is not attached.
        """
        self.connections.pause(conn_id)

    def resume(self, conn_id: int, now: float) -> None:
        """Resume deliveries to a paused connection and deliver what waited.

        Raises:
            ValueError: the connection is not attached.
        """
        self.connections.resume(conn_id, now)

    def _refuse(self, mark: int, conn_id: int, request: int, exc: EngineError) -> None:
        self._out.insert(mark, RequestRefused(connection_id=conn_id, request=request, error=exc))

    # -------------------------------------------------------------------- metadata

    def metadata_changed(
        self, kind: Kind, path: Path, record: ResourceRecord | None, now: float
    ) -> None:
        """A resource's record appeared, changed or went (``record`` None), whoever wrote
        it: the view follows, and so does the partition of a stream, queue or cache (built,
        reconfigured, or closed: its subscriptions and consumers end with ``deleted``).
        Feeding the same record twice, or an older generation, changes nothing.

        Args:
            kind: the kind.
            path: ``(tenant, namespace, name)``.
            record: the record now, or None.
            now: the current time.
        """
        self.admin.changed(kind, path, record, now)

    def metadata_written(
        self, write_id: int, outcome: ResourceRecord | EngineError, now: float
    ) -> None:
        """The store's answer to a :class:`~felix_core.events.MetadataWrite`: the record
        as stored (the view follows at once), or why the store refused. The admin request
        that asked for it completes now. Unknown ids are ignored.

        Args:
            write_id: the write's ``write_id``.
            outcome: the stored (or, for a delete, removed) record, or the store's refusal
                (AlreadyExists, NotFound, Conflict).
            now: the current time.
        """
        self.admin.written(write_id, outcome, now)

    # ------------------------------------------------------------------------- logs

    def log_committed(self, kind: Kind, path: Path, offset: int, now: float) -> None:
        """A log's store has committed every record below ``offset`` (a disk store: they are
        fsynced): the committed appends waiting for it complete (for a durable queue's
        state log, ``<queue>~state``: the committed acks). Unknown logs are ignored.

        Args:
            kind: stream or queue.
            path: the resource.
            offset: every record below it is committed.
            now: the current time.
        """
        queue = self._state_log_owner(kind, path)
        if queue is not None:  # a durable queue's state log: committed acks complete
            self._out.extend(queue.state_commits.committed(offset))
            return
        partition = self.registry.find(kind, path)
        if isinstance(partition, StreamPartition | QueuePartition):
            self._out.extend(partition.commits.committed(offset))
        elif isinstance(partition, CachePartition):  # a compaction may finish
            partition.log_committed(now)

    def _state_log_owner(self, kind: Kind, path: Path) -> QueuePartition | None:
        """The durable queue whose state log ``path`` is (None: not a state log)."""
        if kind is not Kind.QUEUE or not path[2].endswith(STATE_SUFFIX):
            return None
        return self.registry.queues.get((path[0], path[1], path[2][: -len(STATE_SUFFIX)]))

    def log_failed(self, kind: Kind, path: Path, error: EngineError, now: float) -> None:
        """A log's storage failed (a durable log: an fsync or write error): the committed
        appends (a queue's state log: the committed acks) waiting for it are refused with
        ``error``; the log itself refuses further writes. Unknown logs are ignored.

        Args:
            kind: stream or queue.
            path: the resource.
            error: the refusal (``StorageFailed``).
            now: the current time.
        """
        queue = self._state_log_owner(kind, path)
        partition = self.registry.find(kind, path)
        commits = None
        if queue is not None:  # a durable queue's state log: its committed acks are refused
            commits = queue.state_commits
        elif isinstance(partition, StreamPartition | QueuePartition):
            commits = partition.commits
        if commits is not None:
            self._out.extend(
                RequestRefused(connection_id=done.connection_id, request=done.request, error=error)
                for done in commits.fail_all()
            )

    def log_readable(self, kind: Kind, path: Path, now: float) -> None:
        """A log has fetched records a read found pending (from disk): deliver them.
        Unknown logs are ignored.

        Args:
            kind: stream or cache (a cache's change feed).
            path: the resource.
            now: the current time.
        """
        partition = self.registry.find(kind, path)
        if isinstance(partition, StreamPartition):
            partition.stream.pump(now, force=True)
        elif isinstance(partition, CachePartition) and partition.feed is not None:
            partition.feed.pump(now, force=True)
        else:
            return
        self.registry.reschedule(partition)

    # ----------------------------------------------------------------------- admin

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

        Completes, once the store has it, with :class:`~felix_core.events.ResourceDescribed`.
        Refusals: InvalidArgument (unknown kind, bad names or settings), NotFound (the
        parent), AlreadyExists, LimitExceeded, ShuttingDown.

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
        self.admin.create(conn_id, request, kind, (tenant, namespace, name), settings, now)

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
        """Change some settings of a resource; they take effect once the store has them.

        Completes with :class:`~felix_core.events.ResourceDescribed`. Refusals:
        InvalidArgument, NotFound, Conflict (a concurrent update won), ShuttingDown.
        """
        self.admin.update(conn_id, request, kind, (tenant, namespace, name), settings, now)

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
        self.admin.delete(conn_id, request, kind, (tenant, namespace, name))

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
        self.admin.describe(conn_id, request, kind, (tenant, namespace, name), now)

    def list(
        self, conn_id: int, request: int, kind: str, tenant: str = "", namespace: str = ""
    ) -> None:
        """List the resources of a kind under a tenant (and namespace).

        Completes with :class:`~felix_core.events.ResourcesListed`. Refusals:
        InvalidArgument, NotFound (the parent).
        """
        self.admin.list(conn_id, request, kind, tenant, namespace)

    # --------------------------------------------------------------------- streams

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
        committed: bool = False,
        now: float,
    ) -> None:
        """Append records to a stream and deliver them to its subscriptions.

        Completes with :class:`~felix_core.events.Appended` (the offsets): at once, or with
        ``committed`` once the log says the records are committed (:meth:`log_committed`; a
        memory log commits on append). Refusals:
        NotFound, InvalidArgument (an empty batch, keys/headers of the wrong length),
        TooLarge (a payload, key or the batch over the configured maxima or the stream's
        retention), Overloaded (the memory budget is exhausted, or under ``block`` a
        subscriber has not read what the append would evict; retryable), ShuttingDown.

        Args:
            conn_id: the publishing connection (any id).
            request: the caller's number for the request.
            tenant: the tenant.
            namespace: the namespace.
            stream: the stream.
            payloads: one or more payloads.
            keys: None or one optional key per payload.
            headers: None or one optional header dict per payload.
            committed: complete only once the records are committed.
            now: the current time; records are stamped ``int(now * 1000)``.
        """
        out = self._out
        mark = len(out)
        try:
            if not self.connections.accepting:
                raise shutting_down()
            nbytes = self._check_batch(payloads, keys, headers)
            path = (tenant, namespace, stream)
            partition = self.registry.streams.get(path) or self.registry.stream(path)
            self.quotas.check_publish(tenant, len(payloads), nbytes, now)
            first, last = partition.stream.publish(
                payloads, keys, headers, now, nbytes, self.budget
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self.quotas.take_publish(tenant, len(payloads), nbytes)
        self.registry.published(partition)
        done = Appended(
            connection_id=conn_id, request=request, first_offset=first, last_offset=last
        )
        if committed and partition.log.committed_offset <= last:
            partition.commits.wait(done)  # completes in log_committed
        else:
            out.insert(mark, done)

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
        subscription's records. Refusals: NotFound, InvalidArgument (a bad start, source or
        credit), CursorTooOld (``details['first_offset']``), LimitExceeded, ShuttingDown.

        Args:
            conn_id: the subscribing connection (attached).
            request: the caller's number for the request.
            tenant: the tenant.
            namespace: the namespace.
            name: the stream (or cache, with ``source="cache"``).
            start: a :class:`~felix_core.streams.StartKind` value.
            start_value: the offset (OFFSET) or timestamp in ms (TIMESTAMP).
            credit_messages: initial record credit (clamped to the config's maximum).
            credit_bytes: initial record-byte credit (clamped to the config's maximum).
            source: ``stream`` or ``cache``.
            now: the current time.

        Raises:
            ValueError: the connection is not attached (a bug in the caller).
        """
        path = (tenant, namespace, name)
        self.subscriptions.subscribe(
            conn_id, request, path, start, start_value, credit_messages, credit_bytes, source, now
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
        self.subscriptions.unsubscribe(conn_id, request, subscription_id, now)

    def add_credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, *, now: float
    ) -> bool:
        """Grant a subscription more credit (totals are clamped to the config's maxima).

        Credit is not a request (nothing completes); a grant for a subscription that ended
        meanwhile is ignored.

        Returns:
            False when the connection holds no such subscription (nothing changed).

        Raises:
            ValueError: a negative grant (the wire cannot carry one: a bug in the caller).
        """
        return self.subscriptions.add_credit(conn_id, subscription_id, messages, nbytes, now)

    # ---------------------------------------------------------------------- queues

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
        committed: bool = False,
        now: float,
    ) -> None:
        """Append messages to a queue and hand them to its consumers.

        Completes with :class:`~felix_core.events.Appended`, with ``committed`` once the log
        says the messages are committed (as :meth:`publish`). Refusals: NotFound,
        InvalidArgument, TooLarge, Overloaded (the queue or the memory budget is full),
        ShuttingDown.
        """
        out = self._out
        mark = len(out)
        try:
            if not self.connections.accepting:
                raise shutting_down()
            nbytes = self._check_batch(payloads, keys, headers)
            path = (tenant, namespace, queue)
            partition = self.registry.queues.get(path) or self.registry.queue(path)
            self.budget.check(nbytes, "enqueue")
            self.quotas.check_publish(tenant, len(payloads), nbytes, now)
            first = partition.queue.enqueue(payloads, now, keys, headers, nbytes)
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        self.quotas.take_publish(tenant, len(payloads), nbytes)
        done = Appended(
            connection_id=conn_id,
            request=request,
            first_offset=first,
            last_offset=first + len(payloads) - 1,
        )
        if committed and partition.log.committed_offset <= done.last_offset:
            partition.commits.wait(done)  # completes in log_committed
        else:
            out.append(done)
        partition.queue.dispatch(now)
        self.registry.reschedule(partition)

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
        deliveries. Refusals: NotFound, InvalidArgument (a bad group name or prefetch),
        LimitExceeded (prefetch above the queue's maximum, or the connection holds the most
        consumers allowed), ShuttingDown.

        Raises:
            ValueError: the connection is not attached (a bug in the caller).
        """
        self.consumers.consume(conn_id, request, (tenant, namespace, queue), group, prefetch, now)

    def cancel_consumer(
        self, conn_id: int, request: int | None, consumer_id: int, *, now: float
    ) -> None:
        """End a consumer; its in-flight deliveries are returned at once and its
        :class:`~felix_core.events.ConsumerClosed` (reason ``unsubscribed``) follows.

        With ``request`` None (the client stopped the consumer's stream) there is no
        completion and an unknown consumer is ignored. Otherwise completes with
        :class:`~felix_core.events.RequestCompleted`; refused with NotFound.
        """
        self.consumers.cancel(conn_id, request, consumer_id, now)

    def ack(
        self,
        conn_id: int,
        request: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        *,
        committed: bool = False,
        now: float,
    ) -> None:
        """Finish deliveries made to a consumer.

        Completes with :class:`~felix_core.events.RequestCompleted`: at once, or with
        ``committed`` on a durable queue once the state log says the ack's record is
        committed (:meth:`log_committed`; an ephemeral queue completes at once, as a
        committed publish on an ephemeral stream does). Refused with NotFound when the
        connection holds no such consumer or some ids are not in flight to it (the known ones
        are still acked; ``details['delivery_ids']``); a committed ack whose record the
        state log refused (disk full or failed) is refused with that storage error, or
        later with ``StorageFailed`` when the state log fails before committing it.
        """
        self.consumers.ack(conn_id, request, consumer_id, delivery_ids, now, committed)

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
        self.consumers.nack(conn_id, request, consumer_id, delivery_ids, delay_ms, requeue, now)

    # ---------------------------------------------------------------------- caches

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
        failed. Refusals: NotFound, InvalidArgument (a bad key or ttl, both conditions),
        TooLarge, Overloaded (the memory budget), LimitExceeded (the tenant's
        ``max_cache_bytes`` quota), ShuttingDown.

        Args:
            conn_id: the requesting connection (any id).
            request: the caller's number for the request.
            tenant: the tenant.
            namespace: the namespace.
            cache: the cache.
            key: the key (1..1024 UTF-8 bytes).
            value: the value.
            ttl_ms: time to live; None: the cache's default; 0: never expires.
            if_absent: store only when the key has no live entry.
            if_version: store only when the live entry has this version.
            now: the current time.
        """
        out = self._out
        mark = len(out)
        path = (tenant, namespace, cache)
        quotas = self.quotas
        try:
            if not self.connections.accepting:
                raise shutting_down()
            partition = self.registry.caches.get(path) or self.registry.cache(path)
            self.budget.check(len(key) + len(value), "cache put")
            result = partition.cache.put(
                key,
                value,
                now,
                ttl=None if ttl_ms is None else ttl_ms / 1000,
                if_absent=if_absent,
                if_version=if_version,
                admit=quotas.cache_admission(tenant) if quotas.cache_limited else None,
            )
        except EngineError as exc:
            self._refuse(mark, conn_id, request, exc)
            return
        out.append(
            CacheStored(
                connection_id=conn_id,
                request=request,
                stored=result.applied,
                version=result.version,
            )
        )
        if result.applied:  # a failed condition logs nothing and pumps nothing
            partition.changed(now)
        self.registry.reschedule(partition)

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
        out = self._out
        path = (tenant, namespace, cache)
        try:
            partition = self.registry.caches.get(path) or self.registry.cache(path)
            c = partition.cache
            expired = c.expirations
            entry = c.get(key, now)
        except EngineError as exc:
            self._refuse(len(out), conn_id, request, exc)
            return
        if entry is None:
            out.append(
                CacheRead(
                    connection_id=conn_id,
                    request=request,
                    value=None,
                    version=None,
                    ttl_remaining_ms=None,
                )
            )
            if c.expirations != expired:  # a lazy expiry removed the entry and logged it
                partition.changed(now)
                self.registry.reschedule(partition)
            return
        expires = entry.expires_at
        ttl_ms = None if expires == math.inf else max(int((expires - now) * 1000), 0)
        out.append(
            CacheRead(
                connection_id=conn_id,
                request=request,
                value=entry.value,
                version=entry.version,
                ttl_remaining_ms=ttl_ms,
            )
        )

    @completes
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
    ) -> CacheRemoved:
        """Delete a key, possibly only at a given version.

        Completes with :class:`~felix_core.events.CacheRemoved`. Refusals: NotFound,
        InvalidArgument, TooLarge (the key).
        """
        partition = self.registry.cache((tenant, namespace, cache))
        result = partition.cache.delete(key, now, if_version=if_version)
        if result.applied:
            partition.changed(now)
            self.registry.reschedule(partition)
        return CacheRemoved(connection_id=conn_id, request=request, deleted=result.applied)

    # ----------------------------------------------------------------- validation

    def _check_batch(
        self,
        payloads: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
    ) -> int:
        """Validate a publish or enqueue batch against the config (the one place it is
        checked); return its byte size."""
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

    # ----------------------------------------------------------- graceful shutdown
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
        self.connections.stop_accepting()

    def backlog(self, conn_id: int) -> builtins.list[FeedBacklog]:
        """What each live feed of a connection has not finished, one entry per feed.

        Args:
            conn_id: the connection (unknown ids have no feeds).

        Returns:
            A :class:`FeedBacklog` per subscription and consumer, in creation order.
        """
        return self.connections.backlog(conn_id)

    def pending(self, conn_id: int) -> int:
        """The sum of ``undelivered`` and ``unacked`` over :meth:`backlog`, without building
        it (cheap enough to poll while draining). 0: the connection's feeds have caught up.

        Args:
            conn_id: the connection (unknown ids have nothing pending).
        """
        return self.connections.pending(conn_id)

    def end_feeds(self, conn_id: int, now: float) -> None:
        """End a connection's subscriptions and consumers with reason ``shutdown``.

        Each subscription's ``SubscriptionClosed`` carries the offset it would resume at;
        in-flight queue deliveries return to their queue. Unknown ids are ignored.
        """
        self.connections.end_feeds(conn_id, now)

    def end_denied_feeds(
        self, conn_id: int, denied: Callable[[str, Path], str | None], now: float
    ) -> int:
        """End the subscriptions and consumers of a connection that ``denied(kind, path)``
        refuses, with reason ``forbidden`` and the message it returns (a connection whose
        permissions were narrowed: a role changed, a token refreshed). ``kind`` is
        ``stream``, ``cache`` (a change feed) or ``queue``. Unknown ids are ignored.

        Returns:
            How many feeds ended.
        """
        return self.connections.end_feeds_where(conn_id, denied, now)

    def shutdown(self, now: float) -> None:
        """Stop: :meth:`stop_accepting`, then end every subscription and consumer with
        reason ``shutdown`` (:meth:`end_feeds` for every connection).

        Afterwards new work is refused with ``ShuttingDown``; reads, acks and admin reads
        still work.
        """
        connections = self.connections
        connections.stop_accepting()
        for conn_id in connections:
            connections.end_feeds(conn_id, now)

    # --------------------------------------------------------------------- figures

    def totals(self, now: float, *, detail_limit: int = 0) -> ResourceTotals:
        """Queue and cache figures for metrics, cheap enough for every scrape.

        Counters are kept as things happen and include deleted resources (they never
        decrease); gauges cost O(groups) per queue and O(1) per cache. Per-resource detail
        costs O(resources) and is produced only for a kind with at most ``detail_limit``
        resources.

        Args:
            now: the current time (for the oldest queue message's age).
            detail_limit: the most queues (caches) for which per-resource stats are returned.
        """
        return self.figures.totals(now, detail_limit)

    def stats(self) -> dict[str, int]:
        """Gauges and counters for metrics (cheap; safe to call per scrape).

        Returns:
            A flat mapping of metric name to value.
        """
        return self.figures.stats()


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
