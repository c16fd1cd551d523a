"""Queues driven on their own, the way the engine drives them, for the queue tests.

The engine keeps one :class:`~felix_core.queues.Queue` per queue partition, every queue
sharing a :class:`~felix_core.queues.QueueContext`, and indexes consumers by id per
connection. :class:`QueueDriver` does the same with none of the rest (no metadata, no
partitions, no memory budget), so the tests can exercise the queue semantics directly:
keys are ``(tenant, namespace, name)``, configs are :class:`~felix_core.queues.QueueConfig`,
and the calls mirror the engine's queue requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from felix_core.errors import AlreadyExists, NotFound
from felix_core.events import EngineEvent
from felix_core.log import MemoryLog, record_size
from felix_core.queues import (
    Consumer,
    Queue,
    QueueConfig,
    QueueContext,
    QueueKey,
    QueueStats,
    QueueTotals,
)


class QueueDriver:
    """Queues, their consumers and their events, without an engine around them."""

    def __init__(self) -> None:
        self.out: list[EngineEvent] = []
        self.context = QueueContext(self.out, self._queues_get)
        self._queues: dict[QueueKey, Queue] = {}
        self._consumers: dict[int, Consumer] = {}
        self._paused: set[int] = set()
        self._next_consumer = 1

    def _queues_get(self, key: QueueKey) -> Queue | None:
        return self._queues.get(key)

    # -- queues -------------------------------------------------------------------------

    def create_queue(self, key: QueueKey, config: QueueConfig | None = None) -> Queue:
        if key in self._queues:
            raise AlreadyExists(f"queue {key[2]!r} exists", details={"queue": key[2]})
        q = Queue(key, config or QueueConfig(), self.context, MemoryLog())
        self._queues[key] = q
        return q

    def queue(self, key: QueueKey) -> Queue:
        q = self._queues.get(key)
        if q is None:
            raise NotFound(f"queue {key[2]!r} not found", details={"queue": key[2]})
        return q

    def update_queue(self, key: QueueKey, config: QueueConfig) -> None:
        self.queue(key).reconfigure(config)

    def delete_queue(self, key: QueueKey) -> None:
        q = self.queue(key)
        self._forget(q.end("deleted"))
        del self._queues[key]

    def delete_group(self, key: QueueKey, group: str) -> None:
        self._forget(self.queue(key).delete_group(group))

    def _forget(self, ended: Iterable[Consumer]) -> None:
        for c in ended:
            self._consumers.pop(c.id, None)

    def __contains__(self, key: object) -> bool:
        return key in self._queues

    def __iter__(self) -> Iterator[QueueKey]:
        return iter(self._queues)

    @property
    def byte_size(self) -> int:
        return sum(q.log.byte_size for q in self._queues.values())

    def stats(self, key: QueueKey, now: float) -> QueueStats:
        return self.queue(key).stats(now)

    def totals(self, now: float) -> QueueTotals:
        queues = self._queues.values()
        stamps = [s for q in queues if (s := q.oldest_timestamp_ms()) is not None]
        return QueueTotals(
            queues=len(self._queues),
            records=sum(q.log.record_count for q in queues),
            bytes=self.byte_size,
            depth=sum(q.depth() for q in queues),
            in_flight=sum(q.in_flight() for q in queues),
            oldest_age_s=max(0.0, now - min(stamps) / 1000.0) if stamps else None,
            redeliveries=self.context.redeliveries,
            dead_lettered=self.context.dead_lettered,
        )

    # -- producing ----------------------------------------------------------------------

    def enqueue(
        self,
        queue: QueueKey,
        payload: bytes,
        now: float,
        *,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        return self.enqueue_batch(
            queue,
            [payload],
            now,
            keys=None if key is None else [key],
            headers=None if headers is None else [headers],
        )

    def enqueue_batch(
        self,
        queue: QueueKey,
        payloads: Sequence[bytes],
        now: float,
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
    ) -> int:
        q = self.queue(queue)
        n = len(payloads)
        nbytes = sum(map(record_size, payloads, keys or [None] * n, headers or [None] * n))
        offset = q.enqueue(payloads, now, keys, headers, nbytes)
        q.dispatch(now)
        return offset

    # -- consuming ----------------------------------------------------------------------

    def consume(
        self,
        queue: QueueKey,
        connection_id: int,
        now: float,
        *,
        group: str = "default",
        prefetch: int = 64,
    ) -> int:
        q = self.queue(queue)
        c = q.join(
            self._next_consumer, connection_id, group, prefetch, connection_id in self._paused
        )
        self._next_consumer += 1
        self._consumers[c.id] = c
        c.group.dispatch(now)
        return c.id

    def _consumer(self, consumer_id: int) -> Consumer:
        c = self._consumers.get(consumer_id)
        if c is None or c.closed:
            raise NotFound(
                f"consumer {consumer_id} not found", details={"consumer_id": consumer_id}
            )
        return c

    def cancel(self, consumer_id: int, now: float) -> None:
        c = self._consumer(consumer_id)
        del self._consumers[consumer_id]
        c.queue.leave(c, now)
        c.group.dispatch(now)

    def ack(self, consumer_id: int, delivery_ids: Iterable[int], now: float) -> None:
        c = self._consumer(consumer_id)
        c.queue.ack(c, delivery_ids, now)

    def nack(
        self,
        consumer_id: int,
        delivery_ids: Iterable[int],
        now: float,
        *,
        delay: float = 0.0,
        requeue: bool = True,
    ) -> None:
        c = self._consumer(consumer_id)
        c.queue.nack(c, delivery_ids, now, delay=delay, requeue=requeue)

    def consumer_backlog(self, consumer_id: int) -> tuple[int, int]:
        c = self._consumer(consumer_id)
        return c.queue.backlog(c)

    # -- connections --------------------------------------------------------------------

    def _of(self, connection_id: int) -> list[Consumer]:
        return [c for c in self._consumers.values() if c.connection_id == connection_id]

    def pause_connection(self, connection_id: int) -> None:
        self._paused.add(connection_id)
        for c in self._of(connection_id):
            c.paused = True

    def resume_connection(self, connection_id: int, now: float) -> None:
        self._paused.discard(connection_id)
        consumers = self._of(connection_id)
        for c in consumers:
            c.paused = False
        for c in consumers:
            c.group.dispatch(now)

    def detach_connection(self, connection_id: int, now: float) -> None:
        self._paused.discard(connection_id)
        consumers = self._of(connection_id)
        for c in consumers:
            del self._consumers[c.id]
            c.queue.leave(c, now)
        for c in consumers:
            c.group.dispatch(now)

    # -- outputs and time ---------------------------------------------------------------

    def drain_outputs(self) -> list[EngineEvent]:
        out = list(self.out)
        self.out.clear()
        return out

    def get_timer(self) -> float | None:
        deadlines = [t for q in self._queues.values() if (t := q.next_deadline()) is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for q in list(self._queues.values()):
            q.fire(now)
