"""The route to this broker's own engine, and the engine's metadata store.

:class:`LocalRoute` turns each wire request into the one engine call that serves it (the
request's identity goes along: the engine completes it through its events), forwards feed
commands, and applies the engine's metadata writes to the store, feeding the answers and the
changes back. It is the :class:`~felix_server.router.Route` of every resource today.

Off the loop: once :meth:`LocalRoute.write_off_loop` is called (the server's storage glue
does it when the store is a :class:`~felix_core.metadata.StagedMetadataStore`, the file
store), the writes are queued instead, and :meth:`LocalRoute.take_jobs` hands them out one
at a time as storage jobs (:class:`MetadataJob`): the checks on the loop (``prepare``), the
files and their fsyncs on a worker thread (``write``, with the directories of a new durable
resource's logs made first), the answer and the change back on the loop (``commit``) when
the job is done. So an admin write still answers only once it is on disk, and the loop
never waits for a disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from felix_core import events as ce
from felix_core.broker import Broker
from felix_core.disklog import StorageNotice
from felix_core.errors import EngineError, StorageFailed, StorageFull
from felix_core.filesystem import FileSystemError, NoSpace
from felix_core.metadata import (
    MemoryMetadataStore,
    MetadataStore,
    Path,
    PreparedWrite,
    ResourceRecord,
    StagedMetadataStore,
)
from felix_proto import messages as m

__all__ = ["LocalRoute", "MetadataJob"]

DirsFor = Callable[[ResourceRecord], Callable[[], None] | None]
"""Given a record about to be created, the file work to do before its definition is
written (making its logs' directories), or None."""


class MetadataJob:
    """One metadata write as a storage job: ``run`` on a worker thread, ``finish`` on the
    loop (see the module docstring)."""

    __slots__ = ("_before", "_route", "prepared", "write_id")

    def __init__(
        self,
        route: LocalRoute,
        write_id: int,
        prepared: PreparedWrite,
        before: Callable[[], None] | None,
    ) -> None:
        self._route = route
        self.write_id = write_id
        self.prepared = prepared
        self._before = before

    @property
    def kind(self) -> str:
        """The resource's kind."""
        return self.prepared.record.kind.value

    @property
    def path(self) -> Path:
        """The resource."""
        return self.prepared.record.path

    def run(self) -> object:
        """Make the directories, then write the definition (raises what ``write`` does)."""
        if self._before is not None:
            try:
                self._before()
            except NoSpace as exc:  # the definition is not written: the create fails
                raise StorageFull(f"cannot create the resource's directory: {exc}") from exc
            except FileSystemError as exc:
                raise StorageFailed(f"cannot create the resource's directory: {exc}") from exc
        store = self._route._staged
        assert store is not None
        store.write(self.prepared)
        return None

    def finish(self, outcome: object, now: float) -> list[StorageNotice]:
        """Answer the write (and feed the change) on the loop thread."""
        self._route._written(self, outcome, now)
        return []


class LocalRoute:
    """The route to this broker's own engine: one engine call per request kind, and the
    engine's metadata store, which this route applies the engine's writes to.

    The engine never calls its store: it emits :class:`~felix_core.events.MetadataWrite`
    events and learns the outcome, and every change, as inputs. This route applies each
    write as it takes the engine's events and feeds the answers back at once (the memory
    store completes at once), or, after :meth:`write_off_loop`, queues it and feeds the
    answer back when its :class:`MetadataJob` is done (the file store; a store that answers
    later, etcd, would do the same when its transaction returns). At start it feeds the
    engine every record the store holds.

    Args:
        engine: the engine.
        store: the metadata store (a fresh in-memory one when None).
        now: the current time.
    """

    def __init__(self, engine: Broker, store: MetadataStore | None = None, now: float = 0.0):
        self.engine = engine
        self._admin = engine.admin  # whose writes this route applies
        self.store: MetadataStore = store if store is not None else MemoryMetadataStore()
        for record in self.store.records():
            engine.metadata_changed(record.kind, record.path, record, now)
        self._staged: StagedMetadataStore | None = None  # set by write_off_loop
        self._dirs_for: DirsFor | None = None
        self._queued: deque[ce.MetadataWrite] = deque()
        self._job: MetadataJob | None = None
        self._early = self._settle(engine.drain_events(), now)  # the defaults' writes

    def write_off_loop(self, dirs_for: DirsFor | None = None) -> bool:
        """From now on, hand the metadata writes out as jobs (:meth:`take_jobs`) if the
        store can make them in steps; returns whether it can.

        Args:
            dirs_for: the file work to do, on the job's thread, before a create's record
                is written (the directories of a new durable resource's logs).
        """
        if not isinstance(self.store, StagedMetadataStore):
            return False
        self._staged = self.store
        self._dirs_for = dirs_for
        return True

    def take_jobs(self, now: float) -> list[MetadataJob]:
        """The next queued metadata write as a job, if none is in flight (a write whose
        checks fail is answered at once, without a job)."""
        store = self._staged
        if store is None or self._job is not None:
            return []
        while self._queued:
            event = self._queued.popleft()
            try:
                prepared = store.prepare(event.op, event.record, event.expected_generation)
            except EngineError as exc:
                self.engine.metadata_written(event.write_id, exc, now)
                continue
            before = None
            if self._dirs_for is not None and prepared.current is None:
                before = self._dirs_for(prepared.record)
            self._job = MetadataJob(self, event.write_id, prepared, before)
            return [self._job]
        return []

    @property
    def writes_queued(self) -> int:
        """Metadata writes waiting for their job or in it."""
        return len(self._queued) + (self._job is not None)

    def _written(self, job: MetadataJob, outcome: object, now: float) -> None:
        """A :class:`MetadataJob` is done: answer its write, feed the change."""
        assert job is self._job and self._staged is not None
        self._job = None
        engine = self.engine
        if isinstance(outcome, EngineError):
            engine.metadata_written(job.write_id, outcome, now)
            return
        if isinstance(outcome, BaseException):  # a bug in the store: refuse, stay up
            engine.metadata_written(job.write_id, StorageFailed(f"{outcome!r}"), now)
            return
        stored = self._staged.commit(job.prepared)
        engine.metadata_written(job.write_id, stored, now)
        for kind, path, record in self._staged.take_changes():
            engine.metadata_changed(kind, path, record, now)

    def submit(self, conn_id: int, request: int, message: m.Message, now: float) -> None:
        """Make the engine call that serves ``message``.

        Raises:
            KeyError: ``message`` is not a request (a bug in the caller).
        """
        _HANDLERS[type(message)](self, conn_id, request, message, now)

    def credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, now: float
    ) -> None:
        """More credit for a subscription (ignored if it ended meanwhile)."""
        self.engine.add_credit(conn_id, subscription_id, messages, nbytes, now=now)

    def stop_subscription(self, conn_id: int, subscription_id: int, now: float) -> None:
        """End a subscription whose stream the client stopped (no reply is due)."""
        self.engine.unsubscribe(conn_id, None, subscription_id, now=now)

    def stop_consumer(self, conn_id: int, consumer_id: int, now: float) -> None:
        """End a consumer whose stream the client stopped (no reply is due)."""
        self.engine.cancel_consumer(conn_id, None, consumer_id, now=now)

    def take_events(self, now: float) -> list[ce.EngineEvent]:
        """The engine's events since the last call, its metadata writes applied."""
        events = self.engine.drain_events()
        if self._early:
            events, self._early = self._early + events, []
        if not events or not self._admin.writes_in_flight:
            return events  # no write to apply among them
        return self._settle(events, now)

    def _settle(self, events: list[ce.EngineEvent], now: float) -> list[ce.EngineEvent]:
        """Apply the metadata writes among ``events`` and feed the outcomes back, until no
        write is left; return the other events, in order."""
        engine, store = self.engine, self.store
        out: list[ce.EngineEvent] = []
        while events:
            wrote = False
            for event in events:
                if not isinstance(event, ce.MetadataWrite):
                    out.append(event)
                    continue
                if self._staged is not None:  # written by a job (take_jobs)
                    self._queued.append(event)
                    continue
                wrote = True
                try:
                    stored = store.apply(event.op, event.record, event.expected_generation)
                except EngineError as exc:
                    engine.metadata_written(event.write_id, exc, now)
                else:
                    engine.metadata_written(event.write_id, stored, now)
                for kind, path, record in store.take_changes():
                    engine.metadata_changed(kind, path, record, now)
            if not wrote:
                break
            events = engine.drain_events()
        return out

    # -- one engine call per request kind ------------------------------------------------

    def _publish(self, conn: int, req: int, msg: m.Publish, now: float) -> None:
        self.engine.publish(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            msg.stream,
            [msg.payload],
            keys=None if msg.key is None else [msg.key],
            headers=None if msg.headers is None else [msg.headers],
            committed=msg.ack == m.AckMode.COMMITTED,
            now=now,
        )

    def _publish_batch(self, conn: int, req: int, msg: m.PublishBatch, now: float) -> None:
        self._append(self.engine.publish, conn, req, msg, msg.stream, now)

    def _enqueue(self, conn: int, req: int, msg: m.Enqueue, now: float) -> None:
        self._append(self.engine.enqueue, conn, req, msg, msg.queue, now)

    @staticmethod
    def _append(
        call: _AppendCall,
        conn: int,
        req: int,
        msg: m.PublishBatch | m.Enqueue,
        name: str,
        now: float,
    ) -> None:
        """A batch of records for ``name``'s log: a publish batch or an enqueue."""
        call(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            name,
            msg.payloads,
            keys=msg.keys,
            headers=msg.headers,
            committed=msg.ack == m.AckMode.COMMITTED,
            now=now,
        )

    def _subscribe(self, conn: int, req: int, msg: m.Subscribe, now: float) -> None:
        self.engine.subscribe(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            msg.stream,
            start=msg.start,
            start_value=msg.start_value,
            credit_messages=msg.credit_messages,
            credit_bytes=msg.credit_bytes,
            source=msg.source,
            now=now,
        )

    def _unsubscribe(self, conn: int, req: int, msg: m.Unsubscribe, now: float) -> None:
        self.engine.unsubscribe(conn, req, msg.subscription_id, now=now)

    def _consume(self, conn: int, req: int, msg: m.Consume, now: float) -> None:
        self.engine.consume(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            msg.queue,
            group=msg.group,
            prefetch=msg.prefetch,
            now=now,
        )

    def _cancel_consume(self, conn: int, req: int, msg: m.CancelConsume, now: float) -> None:
        self.engine.cancel_consumer(conn, req, msg.consumer_id, now=now)

    def _ack(self, conn: int, req: int, msg: m.Ack, now: float) -> None:
        committed = msg.mode == m.AckMode.COMMITTED
        self.engine.ack(conn, req, msg.consumer_id, msg.delivery_ids, committed=committed, now=now)

    def _nack(self, conn: int, req: int, msg: m.Nack, now: float) -> None:
        self.engine.nack(
            conn, req, msg.consumer_id, msg.delivery_ids, delay_ms=msg.delay_ms, now=now
        )

    def _cache_put(self, conn: int, req: int, msg: m.CachePut, now: float) -> None:
        self.engine.cache_put(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            msg.cache,
            msg.key,
            msg.value,
            ttl_ms=msg.ttl_ms,
            if_absent=msg.if_absent,
            if_version=msg.if_version,
            now=now,
        )

    def _cache_get(self, conn: int, req: int, msg: m.CacheGet, now: float) -> None:
        self.engine.cache_get(conn, req, msg.tenant, msg.namespace, msg.cache, msg.key, now=now)

    def _cache_delete(self, conn: int, req: int, msg: m.CacheDelete, now: float) -> None:
        self.engine.cache_delete(
            conn,
            req,
            msg.tenant,
            msg.namespace,
            msg.cache,
            msg.key,
            if_version=msg.if_version,
            now=now,
        )

    def _admin_create(self, conn: int, req: int, msg: m.AdminCreate, now: float) -> None:
        self.engine.create(
            conn, req, msg.kind, msg.tenant, msg.namespace, msg.name, msg.settings, now=now
        )

    def _admin_describe(self, conn: int, req: int, msg: m.AdminDescribe, now: float) -> None:
        self.engine.describe(conn, req, msg.kind, msg.tenant, msg.namespace, msg.name, now=now)

    def _admin_update(self, conn: int, req: int, msg: m.AdminUpdate, now: float) -> None:
        self.engine.update(
            conn, req, msg.kind, msg.tenant, msg.namespace, msg.name, msg.settings, now=now
        )

    def _admin_list(self, conn: int, req: int, msg: m.AdminList, now: float) -> None:
        self.engine.list(conn, req, msg.kind, msg.tenant, msg.namespace)

    def _admin_delete(self, conn: int, req: int, msg: m.AdminDelete, now: float) -> None:
        self.engine.delete(conn, req, msg.kind, msg.tenant, msg.namespace, msg.name, now=now)


class _AppendCall(Protocol):
    """:meth:`Broker.publish <felix_core.broker.Broker.publish>` or
    :meth:`Broker.enqueue <felix_core.broker.Broker.enqueue>`."""

    def __call__(
        self,
        conn_id: int,
        request: int,
        tenant: str,
        namespace: str,
        name: str,
        payloads: Sequence[bytes],
        /,
        *,
        keys: Sequence[bytes | None] | None,
        headers: Sequence[dict[str, bytes] | None] | None,
        committed: bool,
        now: float,
    ) -> None: ...


_Handler = Callable[[LocalRoute, int, int, Any, float], None]

_HANDLERS: dict[type[m.Message], _Handler] = {
    m.Publish: LocalRoute._publish,
    m.PublishBatch: LocalRoute._publish_batch,
    m.Enqueue: LocalRoute._enqueue,
    m.Subscribe: LocalRoute._subscribe,
    m.Unsubscribe: LocalRoute._unsubscribe,
    m.Consume: LocalRoute._consume,
    m.CancelConsume: LocalRoute._cancel_consume,
    m.Ack: LocalRoute._ack,
    m.Nack: LocalRoute._nack,
    m.CachePut: LocalRoute._cache_put,
    m.CacheGet: LocalRoute._cache_get,
    m.CacheDelete: LocalRoute._cache_delete,
    m.AdminCreate: LocalRoute._admin_create,
    m.AdminDescribe: LocalRoute._admin_describe,
    m.AdminUpdate: LocalRoute._admin_update,
    m.AdminList: LocalRoute._admin_list,
    m.AdminDelete: LocalRoute._admin_delete,
}
