"""Queue consumers: joining a group, acks and nacks, and per-connection flow control.

The consumer half of :class:`~felix_core.queues.QueueEngine`'s inputs. Each operation
changes the bookkeeping of one consumer and its group, then lets the delivery machinery
(:mod:`felix_core.queue_delivery`) dispatch what became possible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from felix_core.errors import InvalidArgument, LimitExceeded, NotFound
from felix_core.events import ConsumerClosed
from felix_core.names import validate_name
from felix_core.queue_delivery import _DeliveryMachinery
from felix_core.queue_state import _Consumer, _Group
from felix_core.queue_types import TRIM_EVERY, QueueKey

__all__: list[str] = []


class _ConsumerOperations(_DeliveryMachinery):
    """Consumers, acks, nacks and connections; see :class:`~felix_core.queues.QueueEngine`."""

    __slots__ = ()

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
        """Add a consumer to a group (creating the group if needed).

        A new group starts at the oldest message some existing group has not finished, or
        at the oldest retained message when the queue had no group.

        Args:
            queue: the queue.
            connection_id: the connection that owns the consumer (for pause and detach).
            now: the current time.
            group: the consumer group's name (a name: see :mod:`felix_core.names`).
            prefetch: how many unacknowledged deliveries the consumer may hold.

        Returns:
            The new consumer's id.

        Raises:
            NotFound: no such queue.
            InvalidArgument: bad group name or prefetch < 1.
            LimitExceeded: prefetch above the queue's ``max_prefetch``.
        """
        q = self.queue(queue)
        validate_name("group", group)
        if prefetch < 1:
            raise InvalidArgument("prefetch must be >= 1", details={"prefetch": prefetch})
        if prefetch > q.config.max_prefetch:
            raise LimitExceeded(
                "prefetch above the queue's max_prefetch",
                details={"prefetch": prefetch, "max_prefetch": q.config.max_prefetch},
            )
        g = q.groups.get(group)
        if g is None:
            q.trim()
            g = q.groups[group] = _Group(group, q)
        cid = self._next_consumer_id
        self._next_consumer_id += 1
        c = _Consumer(cid, connection_id, g, prefetch, connection_id in self._paused)
        g.consumers.append(c)
        self._consumers[cid] = c
        self._by_connection.setdefault(connection_id, {})[cid] = c
        self._dispatch(g, now)
        return cid

    def cancel(self, consumer_id: int, now: float) -> None:
        """Remove a consumer; its in-flight deliveries are returned for redelivery at once.

        Args:
            consumer_id: the consumer.
            now: the current time.

        Raises:
            NotFound: no such consumer.
        """
        c = self._consumer(consumer_id)
        self._remove(c, now)
        self._dispatch(c.group, now)

    def ack(self, consumer_id: int, delivery_ids: Iterable[int], now: float) -> None:
        """Finish deliveries.

        Known ids are acked even when some are unknown; the error then lists the unknown
        ones (typically deliveries that timed out and were handed out again).

        Args:
            consumer_id: the consumer the deliveries were made to.
            delivery_ids: the deliveries to finish.
            now: the current time.

        Raises:
            NotFound: no such consumer, or some ids are not in flight to it
                (``details['delivery_ids']``).
        """
        c = self._consumer(consumer_id)
        self._alive(c)
        g = c.group
        mine = c.inflight
        unknown: list[int] = []
        done = 0
        for did in delivery_ids:
            d = mine.pop(did, None)
            if d is None:
                unknown.append(did)
                continue
            del g.inflight[did]
            del g.outstanding[d.offset]
            done += 1
        g.acked += done
        q = g.queue
        q.finished += done
        if q.finished >= TRIM_EVERY:
            q.trim()
        self._dispatch(g, now)
        _raise_unknown(unknown)

    def nack(
        self,
        consumer_id: int,
        delivery_ids: Iterable[int],
        now: float,
        *,
        delay: float = 0.0,
        requeue: bool = True,
    ) -> None:
        """Return deliveries: redeliver after ``delay``, or dead-letter them at once.

        A returned message whose attempts are used up is dead-lettered instead.

        Args:
            consumer_id: the consumer the deliveries were made to.
            delivery_ids: the deliveries to return.
            now: the current time.
            delay: seconds to wait before the redelivery (0: at once).
            requeue: False dead-letters the messages with reason ``rejected``.

        Raises:
            NotFound: no such consumer, or some ids are not in flight to it (the known
                ones are still returned).
            InvalidArgument: ``delay`` is negative or not finite.
        """
        if not (delay >= 0 and math.isfinite(delay)):
            raise InvalidArgument("delay must be a finite number >= 0", details={"delay": delay})
        c = self._consumer(consumer_id)
        self._alive(c)
        g = c.group
        unknown: list[int] = []
        for did in delivery_ids:
            d = c.inflight.pop(did, None)
            if d is None:
                unknown.append(did)
                continue
            del g.inflight[did]
            g.nacked += 1
            if requeue:
                self._return(g, d.offset, now, now + delay, "nack")
            else:
                self._dead_letter(g, d.offset, "rejected", "rejected", now)
        self._dispatch(g, now)
        _raise_unknown(unknown)

    # -- connections --------------------------------------------------------------------

    def pause_connection(self, connection_id: int) -> None:
        """Stop delivering to a connection's consumers (runtime back-pressure).

        In-flight deliveries keep their timeouts. Consumers the connection adds while paused
        start paused.

        Args:
            connection_id: the connection.
        """
        self._paused.add(connection_id)
        for c in self._by_connection.get(connection_id, {}).values():
            c.paused = True

    def resume_connection(self, connection_id: int, now: float) -> None:
        """Undo :meth:`pause_connection` and deliver what is waiting.

        Args:
            connection_id: the connection.
            now: the current time.
        """
        self._paused.discard(connection_id)
        consumers = list(self._by_connection.get(connection_id, {}).values())
        for c in consumers:
            c.paused = False
        for c in consumers:
            self._dispatch(c.group, now)

    def detach_connection(self, connection_id: int, now: float) -> None:
        """Release everything a connection held: its consumers' deliveries go back at once.

        Args:
            connection_id: the connection (unknown ids are ignored).
            now: the current time.
        """
        self._paused.discard(connection_id)
        consumers = list(self._by_connection.get(connection_id, {}).values())
        for c in consumers:
            self._remove(c, now)
        for c in consumers:
            self._dispatch(c.group, now)

    def consumer_backlog(self, consumer_id: int) -> tuple[int, int]:
        """What a consumer's group still has to hand out, and what the consumer holds.

        Args:
            consumer_id: the consumer.

        Returns:
            ``(waiting, unacked)``: the group's messages waiting for a delivery or
            redelivery (new, ready and delayed; dead letters parked for their target are
            not counted) and the consumer's in-flight deliveries.

        Raises:
            NotFound: no such consumer.
        """
        c = self._consumer(consumer_id)
        g = c.group
        return g.waiting() - len(g.parked), len(c.inflight)

    # -- internals ----------------------------------------------------------------------

    def _consumer(self, consumer_id: int) -> _Consumer:
        c = self._consumers.get(consumer_id)
        if c is None:
            raise NotFound(
                f"consumer {consumer_id} not found", details={"consumer_id": consumer_id}
            )
        return c

    def _remove(self, c: _Consumer, now: float) -> None:
        """Unlink a consumer and return its in-flight deliveries in delivery order.

        Like a timeout, the loss is charged once, to the oldest delivery (the one the
        consumer was most likely working on), and only if the consumer was live; the
        deliveries behind it in its prefetch go back uncharged.
        """
        g = c.group
        g.consumers.remove(c)
        del self._consumers[c.id]
        mine = self._by_connection[c.connection_id]
        del mine[c.id]
        if not mine:
            del self._by_connection[c.connection_id]
        charged = not c.suspected
        self._alive(c)
        for did, d in c.inflight.items():
            del g.inflight[did]
            self._return(g, d.offset, now, now, "consumer_lost", charged)
            charged = False
        c.inflight.clear()

    def _end_group(self, g: _Group) -> None:
        """End a group's consumers (queue or group deleted); nothing is redelivered."""
        key = g.queue.key
        for c in list(g.consumers):
            c.inflight.clear()
            del self._consumers[c.id]
            mine = self._by_connection[c.connection_id]
            del mine[c.id]
            if not mine:
                del self._by_connection[c.connection_id]
            self._outputs.append(
                ConsumerClosed(
                    connection_id=c.connection_id, consumer_id=c.id, queue=key, reason="deleted"
                )
            )
        g.consumers.clear()
        g.suspects = 0
        g.inflight.clear()


def _raise_unknown(unknown: list[int]) -> None:
    if unknown:
        raise NotFound(
            f"{len(unknown)} delivery id(s) not in flight to this consumer",
            details={"delivery_ids": unknown},
        )
