"""Drive a ``felix_core.Broker`` call by call, the way one requester would.

The engine completes every request through its event stream. :class:`Calls` numbers each
request, applies the engine's metadata writes to a store (a
:class:`~felix_core.metadata.MemoryMetadataStore`, shared if given) and feeds the store's
answers and changes back, as the server's local route does, takes the request's completion
from the stream and returns the result (or raises the refusal), and keeps every other event
for :meth:`Calls.drain_events`, so a test reads like a sequence of calls::

    b = Calls(Broker())
    b.create("stream", "default", "default", "s", now=0.0)
    sub, first = b.subscribe(1, "default", "default", "s", now=0.0)   # conn 1 attached

Requests that name a connection take it first, as on the engine (publish, enqueue,
subscribe, unsubscribe, consume, cancel_consumer, ack, nack); admin and cache requests are
made as connection ``conn_id`` (0 by default). Everything else passes through.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from felix_core import events as ce
from felix_core.broker import Broker
from felix_core.errors import EngineError
from felix_core.metadata import MemoryMetadataStore

__all__ = ["Calls", "result_of"]

_WITH_CONNECTION = frozenset(
    ("publish", "enqueue", "subscribe", "unsubscribe", "consume", "cancel_consumer", "ack", "nack")
)
_AS_CALLER = frozenset(
    ("create", "describe", "list", "update", "delete", "cache_put", "cache_get", "cache_delete")
)


def result_of(done: ce.RequestCompleted | ce.RequestRefused) -> Any:
    """A completion's result as a plain value; a refusal is raised."""
    if isinstance(done, ce.RequestRefused):
        raise done.error
    if isinstance(done, ce.Appended):
        return done.first_offset, done.last_offset
    if isinstance(done, ce.SubscriptionOpened):
        return done.subscription_id, done.first_offset
    if isinstance(done, ce.ConsumerOpened):
        return done.consumer_id
    if isinstance(done, ce.CacheStored):
        return done.stored, done.version
    if isinstance(done, ce.CacheRead):
        return None if done.value is None else done
    if isinstance(done, ce.CacheRemoved):
        return done.deleted
    if isinstance(done, ce.ResourceDescribed):
        return done.resource
    if isinstance(done, ce.ResourcesListed):
        return done.resources
    return None


class Calls:
    """A broker, driven by calls that return their completions. See the module docstring.

    Args:
        broker: the engine.
        store: its metadata store (a new one when None; share one between engines to have
            them see each other's writes, :meth:`sync`).
        conn_id: the connection admin and cache requests are made as.
    """

    def __init__(
        self, broker: Broker, store: MemoryMetadataStore | None = None, conn_id: int = 0
    ) -> None:
        self.broker = broker
        self.store = store if store is not None else MemoryMetadataStore()
        self.conn_id = conn_id
        self.completions: list[ce.RequestCompleted | ce.RequestRefused] = []
        """Completions of requests made elsewhere (not through this object)."""
        self._kept: list[ce.EngineEvent] = []
        self._next = 1
        self.sync(0.0)
        self._kept = self._events(0.0)

    def sync(self, now: float = 0.0) -> None:
        """Feed the engine what the store holds (another engine's writes included): every
        record (the engine ignores the ones it has) and the removal of every record it has
        that the store no longer does."""
        stored = {(r.kind, r.path): r for r in self.store.records()}
        for record in self.broker.view.records():
            if (record.kind, record.path) not in stored:
                self.broker.metadata_changed(record.kind, record.path, None, now)
        for record in stored.values():
            self.broker.metadata_changed(record.kind, record.path, record, now)

    def _events(self, now: float) -> list[ce.EngineEvent]:
        """The engine's events, its metadata writes applied to the store."""
        out: list[ce.EngineEvent] = []
        events = self.broker.drain_events()
        while events:
            wrote = False
            for event in events:
                if not isinstance(event, ce.MetadataWrite):
                    out.append(event)
                    continue
                wrote = True
                try:
                    stored = self.store.apply(event.op, event.record, event.expected_generation)
                except EngineError as exc:
                    self.broker.metadata_written(event.write_id, exc, now)
                else:
                    self.broker.metadata_written(event.write_id, stored, now)
                self.sync(now)
            if not wrote:
                break
            events = self.broker.drain_events()
        return out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.broker, name)
        if name in _WITH_CONNECTION:
            return partial(self._call, attr, True)
        if name in _AS_CALLER:
            return partial(self._call, attr, False)
        return attr

    def _call(self, op: Any, with_connection: bool, *args: Any, **kwargs: Any) -> Any:
        conn, rest = (args[0], args[1:]) if with_connection else (self.conn_id, args)
        number = self._next
        self._next += 1
        now = kwargs.get("now", 0.0)
        self.sync(now)
        op(conn, number, *rest, **kwargs)
        done = None
        for event in self._events(now):
            if isinstance(event, ce.RequestCompleted | ce.RequestRefused):
                if event.connection_id == conn and event.request == number:
                    done = event
                else:
                    self.completions.append(event)
            else:
                self._kept.append(event)
        assert done is not None, f"request {number} did not complete"
        return result_of(done)

    def drain_events(self) -> list[ce.EngineEvent]:
        """Every event but the completions of this object's requests, in order."""
        out, self._kept = self._kept, []
        for event in self._events(0.0):
            if isinstance(event, ce.RequestCompleted | ce.RequestRefused):
                self.completions.append(event)
            else:
                out.append(event)
        return out


class ThroughRouter:
    """Requests made to a running server's engine from a test, through its router, so every
    event they cause reaches the sessions as usual.

    Each call is made as a short-lived connection of its own (attached for the call only):
    its completion is returned (its refusal raised) like :class:`Calls` does; the
    connection argument of publish and enqueue is ignored.

    Args:
        router: the server's :class:`~felix_server.router.Router`.
    """

    CONN_ID = -1
    """The connection id the calls are made as (never one a server gives out)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self._next = 1

    def __getattr__(self, name: str) -> Any:
        if name in _WITH_CONNECTION:
            return partial(self._call, name, True)
        if name in _AS_CALLER:
            return partial(self._call, name, False)
        raise AttributeError(name)

    def _call(self, name: str, with_connection: bool, *args: Any, **kwargs: Any) -> Any:
        rest = args[1:] if with_connection else args
        now = kwargs.get("now", 0.0)
        number = self._next
        self._next += 1
        conn, router = self.CONN_ID, self.router
        router.attach(conn, now)
        try:
            getattr(router.engine, name)(conn, number, *rest, **kwargs)
            router.collect(now)  # an input made to the engine directly
            mail = router.take(conn, now)
        finally:
            router.detach(conn, now)
        (done,) = [e for e in mail if isinstance(e, ce.RequestCompleted | ce.RequestRefused)]
        return result_of(done)
