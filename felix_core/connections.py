"""The engine's connections: what each holds, its back-pressure, and the graceful drain.

Theory of operation
-------------------
A connection is *attached* before it subscribes or consumes and *detached* when it goes.
:class:`Connections` keeps, per attached connection, an :class:`Attachment`: the index of
its subscriptions and consumers. The feeds themselves live in their fanouts and consumer
groups; when one ends elsewhere (its resource deleted, a lagging subscription cut) it is
marked ``closed`` and the index drops it when it next meets it, so ending a feed never has
to call back up here.

Pausing a connection (back-pressure) pauses each of its feeds; resuming delivers what
waited. A draining engine first stops accepting new work (:meth:`Connections.stop_accepting`,
after which :meth:`Connections.check_accepting` refuses with ``ShuttingDown``) while feeds
go on; :meth:`Connections.backlog` / :meth:`Connections.pending` say what each connection's
feeds have not finished, and :meth:`Connections.end_feeds` ends them (reason
``shutdown``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from felix_core.errors import ShuttingDown
from felix_core.events import ConsumerClosed, EngineEvent
from felix_core.metadata import Path
from felix_core.partitions import CachePartition, QueuePartition, StreamPartition
from felix_core.queues import Consumer
from felix_core.registry import Registry
from felix_core.streams import Fanout, Subscription

__all__ = [
    "Attachment",
    "Connections",
    "ConsumerEntry",
    "FeedBacklog",
    "SubEntry",
    "shutting_down",
]

SubEntry = tuple[StreamPartition | CachePartition, Fanout, Subscription]
"""A subscription as a connection indexes it: its partition, its fanout, itself."""
ConsumerEntry = tuple[QueuePartition, Consumer]
"""A consumer as a connection indexes it: its queue's partition, itself."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedBacklog:
    """What one live subscription or consumer has not finished: :meth:`Broker.backlog`."""

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


class Attachment:
    """One attached connection: the index of its feeds (the fanouts and groups hold them;
    an entry whose feed ended elsewhere, ``closed``, is pruned when met)."""

    __slots__ = ("consumers", "id", "paused", "subs")

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.subs: dict[int, SubEntry] = {}
        self.consumers: dict[int, ConsumerEntry] = {}
        self.paused = False

    def live_subs(self) -> dict[int, SubEntry]:
        """The subscriptions still open (ended ones pruned)."""
        if any(entry[2].closed for entry in self.subs.values()):
            self.subs = {sid: entry for sid, entry in self.subs.items() if not entry[2].closed}
        return self.subs

    def live_consumers(self) -> dict[int, ConsumerEntry]:
        """The consumers still in their group (ended ones pruned)."""
        if any(entry[1].closed for entry in self.consumers.values()):
            self.consumers = {
                cid: entry for cid, entry in self.consumers.items() if not entry[1].closed
            }
        return self.consumers


class Connections:
    """The attached connections and the engine's intake (accepting or draining).

    Args:
        registry: the partitions (rescheduled when a connection's feeds move).
        out: the engine's event stream (consumers ended by a drain say so there).
    """

    def __init__(self, registry: Registry, out: list[EngineEvent]) -> None:
        self._registry = registry
        self._out = out
        self._conns: dict[int, Attachment] = {}
        self.accepting = True
        """False once :meth:`stop_accepting` was called: new work is refused."""

    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._conns))

    def get(self, conn_id: int) -> Attachment | None:
        """The connection's attachment, or None when it is not attached."""
        return self._conns.get(conn_id)

    def attachment(self, conn_id: int) -> Attachment:
        """The connection's attachment.

        Raises:
            ValueError: the connection is not attached (a bug in the caller).
        """
        att = self._conns.get(conn_id)
        if att is None:
            raise ValueError(f"connection {conn_id} is not attached")
        return att

    def subscription(self, conn_id: int, sub_id: int, *, quiet: bool) -> SubEntry | None:
        """One open subscription of a connection, or None (an ended one is pruned here;
        written out, not through :class:`Attachment`: credit and acks come this way).

        Raises:
            ValueError: the connection is not attached and ``quiet`` is False.
        """
        att = self._conns.get(conn_id)
        if att is None:
            if quiet:
                return None
            raise ValueError(f"connection {conn_id} is not attached")
        entry = att.subs.get(sub_id)
        if entry is not None and entry[2].closed:
            del att.subs[sub_id]
            entry = None
        return entry

    def consumer(self, conn_id: int, consumer_id: int, *, quiet: bool) -> ConsumerEntry | None:
        """One consumer of a connection still in its group, or None.

        Raises:
            ValueError: the connection is not attached and ``quiet`` is False.
        """
        att = self._conns.get(conn_id)
        if att is None:
            if quiet:
                return None
            raise ValueError(f"connection {conn_id} is not attached")
        entry = att.consumers.get(consumer_id)
        if entry is not None and entry[1].closed:
            del att.consumers[consumer_id]  # its queue went
            entry = None
        return entry

    def check_accepting(self) -> None:
        """Raises:
        ShuttingDown: the engine stopped accepting new work."""
        if not self.accepting:
            raise shutting_down()

    # -- lifecycle -----------------------------------------------------------------------

    def attach(self, conn_id: int) -> None:
        """Register a connection. Raises ValueError when it is attached already."""
        if conn_id in self._conns:
            raise ValueError(f"connection {conn_id} is attached already")
        self._conns[conn_id] = Attachment(conn_id)

    def detach(self, conn_id: int, now: float) -> None:
        """Release everything a connection held, silently (unknown ids are ignored)."""
        att = self._conns.pop(conn_id, None)
        if att is None:
            return
        for sub_id, (_, fanout, _) in att.live_subs().items():
            fanout.remove(sub_id, None)
        consumers = att.live_consumers().values()
        for partition, consumer in consumers:  # all leave first: none gets the others' share
            partition.queue.leave(consumer, now)
        for partition, consumer in consumers:
            consumer.group.dispatch(now)
            self._registry.reschedule(partition)

    def pause(self, conn_id: int) -> None:
        """Stop deliveries to a connection. Raises ValueError when it is not attached."""
        att = self.attachment(conn_id)
        att.paused = True
        for _, _, sub in att.live_subs().values():
            sub.paused = True
        for _, consumer in att.live_consumers().values():
            consumer.paused = True

    def resume(self, conn_id: int, now: float) -> None:
        """Resume deliveries to a paused connection and deliver what waited. Raises
        ValueError when it is not attached."""
        att = self.attachment(conn_id)
        att.paused = False
        fanouts: dict[int, tuple[StreamPartition | CachePartition, Fanout]] = {}
        for partition, fanout, sub in att.live_subs().values():
            sub.paused = False
            fanouts[id(fanout)] = (partition, fanout)
        consumers = att.live_consumers().values()
        for _, consumer in consumers:
            consumer.paused = False
        for partition, fanout in fanouts.values():
            fanout.pump(now, force=True)
            self._registry.reschedule(partition)
        for qp, consumer in consumers:
            consumer.group.dispatch(now)
            self._registry.reschedule(qp)

    def forget_consumers(self, ended: list[Consumer]) -> None:
        """Drop consumers that ended elsewhere (their queue went) from their connections."""
        for consumer in ended:
            att = self._conns.get(consumer.connection_id)
            if att is not None:
                att.consumers.pop(consumer.id, None)

    # -- the graceful drain --------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new work from now on (idempotent); feeds go on."""
        self.accepting = False

    def backlog(self, conn_id: int) -> list[FeedBacklog]:
        """What each live feed of a connection has not finished, in creation order
        (unknown ids have no feeds)."""
        att = self._conns.get(conn_id)
        if att is None:
            return []
        out = []
        for sub_id, (partition, fanout, sub) in att.live_subs().items():
            kind = "stream" if isinstance(partition, StreamPartition) else "cache"
            out.append(
                FeedBacklog(
                    kind=kind,
                    feed_id=sub_id,
                    resource=partition.path,
                    undelivered=_undelivered(fanout, sub),
                    unacked=0,
                )
            )
        for consumer_id, (qp, consumer) in att.live_consumers().items():
            waiting, unacked = qp.queue.backlog(consumer)
            out.append(
                FeedBacklog(
                    kind="queue",
                    feed_id=consumer_id,
                    resource=qp.path,
                    undelivered=waiting,
                    unacked=unacked,
                )
            )
        return out

    def pending(self, conn_id: int) -> int:
        """The sum of ``undelivered`` and ``unacked`` over :meth:`backlog`, without
        building it (unknown ids have nothing pending)."""
        att = self._conns.get(conn_id)
        if att is None:
            return 0
        total = sum(_undelivered(fanout, sub) for _, fanout, sub in att.live_subs().values())
        for qp, consumer in att.live_consumers().values():
            total += sum(qp.queue.backlog(consumer))
        return total

    def end_feeds(self, conn_id: int, now: float) -> None:
        """End a connection's subscriptions and consumers with reason ``shutdown``
        (unknown ids are ignored)."""
        att = self._conns.get(conn_id)
        if att is None:
            return
        for sub_id, (partition, fanout, _) in att.live_subs().items():
            fanout.remove(sub_id, "shutdown", "the broker is shutting down")
            self._registry.reschedule(partition)
        for qp, consumer in att.live_consumers().values():
            self.close_consumer(qp, consumer, "shutdown", now)
        att.subs.clear()
        att.consumers.clear()

    def end_feeds_where(
        self, conn_id: int, denied: Callable[[str, Path], str | None], now: float
    ) -> int:
        """End each feed of a connection that ``denied(kind, path)`` refuses (it returns
        the message to end it with, or None to keep it) with reason ``forbidden``. ``kind``
        is ``stream``, ``cache`` (a change feed) or ``queue``. Unknown ids are ignored.

        Returns:
            How many feeds ended.
        """
        att = self._conns.get(conn_id)
        if att is None:
            return 0
        ended = 0
        for sub_id, (partition, fanout, _) in list(att.live_subs().items()):
            kind = "stream" if isinstance(partition, StreamPartition) else "cache"
            message = denied(kind, partition.path)
            if message is not None:
                fanout.remove(sub_id, "forbidden", message)
                self._registry.reschedule(partition)
                del att.subs[sub_id]
                ended += 1
        for consumer_id, (qp, consumer) in list(att.live_consumers().items()):
            message = denied("queue", qp.path)
            if message is not None:
                self.close_consumer(qp, consumer, "forbidden", now, message)
                del att.consumers[consumer_id]
                ended += 1
        return ended

    def close_consumer(
        self,
        partition: QueuePartition,
        consumer: Consumer,
        reason: str,
        now: float,
        message: str = "",
    ) -> None:
        """Take a consumer out of its group, saying so (:class:`ConsumerClosed` with
        ``reason``): its in-flight deliveries return to the queue for the others at once.
        Its connection's index drops it when it next meets it."""
        self._out.append(
            ConsumerClosed(
                connection_id=consumer.connection_id,
                consumer_id=consumer.id,
                queue=partition.path,
                reason=reason,
                message=message,
            )
        )
        partition.queue.leave(consumer, now)
        consumer.group.dispatch(now)
        self._registry.reschedule(partition)


def shutting_down() -> ShuttingDown:
    """The refusal of new work once the engine stopped accepting it."""
    return ShuttingDown("the broker is shutting down")


def _undelivered(fanout: Fanout, sub: Subscription) -> int:
    """Records between a subscription's cursor (or the log's start) and the log's end."""
    log = fanout.log
    return max(log.next_offset - max(sub.cursor, log.first_offset), 0)
