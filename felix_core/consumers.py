"""Queue consumers: a connection's place in a queue's consumer group.

:class:`Consumers` adds a consumer to a group (the group then hands it deliveries up to its
prefetch), indexes it under its connection, settles its deliveries (ack, nack) and takes it
out of its group, whose in-flight deliveries return to the queue at once. Deliveries,
redelivery and dead letters are the queue's: this part only joins, settles and leaves.
"""

from __future__ import annotations

from collections.abc import Sequence

from felix_core.completion import completes
from felix_core.connections import Connections, ConsumerEntry
from felix_core.errors import InvalidArgument, LimitExceeded, NotFound
from felix_core.events import ConsumerOpened, EngineEvent, RequestCompleted
from felix_core.limits import BrokerConfig
from felix_core.quotas import MAX_CONSUMERS, TenantQuotas
from felix_core.registry import Registry

__all__ = ["Consumers"]


class Consumers:
    """Joins, settles and ends queue consumers (the requests of
    :meth:`Broker.consume <felix_core.broker.Broker.consume>` and its kin).

    Args:
        config: the limits (consumers per connection).
        registry: the partitions.
        connections: the attached connections (each indexes its consumers).
        quotas: the per-tenant quotas (consumers per tenant, ``max_consumers``).
        out: the engine's event stream.
    """

    def __init__(
        self,
        config: BrokerConfig,
        registry: Registry,
        connections: Connections,
        quotas: TenantQuotas,
        out: list[EngineEvent],
    ) -> None:
        self._config = config
        self._registry = registry
        self._connections = connections
        self._quotas = quotas
        self._out = out
        self._next_id = 1

    @completes
    def consume(
        self,
        conn_id: int,
        request: int,
        path: tuple[str, str, str],
        group: str,
        prefetch: int,
        now: float,
    ) -> ConsumerOpened:
        """Add a consumer; see :meth:`Broker.consume`."""
        att = self._connections.attachment(conn_id)
        self._connections.check_accepting()
        limit = self._config.max_consumers_per_connection
        if len(att.live_consumers()) >= limit:
            raise LimitExceeded(
                f"at most {limit} consumers per connection", details={"limit": limit}
            )
        partition = self._registry.queue(path)
        self._quotas.check_feeds(path[0], MAX_CONSUMERS)
        consumer = partition.queue.join(self._next_id, conn_id, group, prefetch, att.paused)
        self._next_id += 1
        self._quotas.add_feed(path[0], MAX_CONSUMERS, consumer)
        att.consumers[consumer.id] = (partition, consumer)
        consumer.group.dispatch(now)
        self._registry.reschedule(partition)
        return ConsumerOpened(connection_id=conn_id, request=request, consumer_id=consumer.id)

    @completes
    def cancel(
        self, conn_id: int, request: int | None, consumer_id: int, now: float
    ) -> RequestCompleted | None:
        """End a consumer; see :meth:`Broker.cancel_consumer`."""
        entry = self._connections.consumer(conn_id, consumer_id, quiet=request is None)
        if entry is None:
            raise _no_consumer(consumer_id)  # dropped when no reply is due
        partition, consumer = entry
        self._connections.close_consumer(partition, consumer, "unsubscribed", now)
        if request is None:
            return None
        return RequestCompleted(connection_id=conn_id, request=request)

    @completes
    def ack(
        self,
        conn_id: int,
        request: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        now: float,
        committed: bool = False,
    ) -> RequestCompleted | None:
        """Finish deliveries; see :meth:`Broker.ack`.

        A committed ack on a durable queue completes once every state record written up to
        it (its ``FINISHED`` record among them) is committed: it waits in the partition's
        ``state_commits`` (many acks share one fsync). On an ephemeral queue a committed ack
        completes at once, as a committed publish on an ephemeral stream does.
        """
        partition, consumer = self._held(conn_id, consumer_id)
        try:  # some ids not in flight: the known ones are acked all the same
            partition.queue.ack(consumer, delivery_ids, now)
        finally:
            self._registry.reschedule(partition)
        done = RequestCompleted(connection_id=conn_id, request=request)
        journal = partition.queue.journal
        if not committed or journal is None:
            return done
        error = journal.error
        if error is not None:  # a state record was refused and no checkpoint made up for it
            raise type(error)(
                f"the ack is applied but not on disk ({error.message}): the messages may be "
                "delivered again after a restart",
                details=dict(error.details),
            )
        until = journal.log.next_offset
        if journal.log.committed_offset >= until:
            return done
        partition.state_commits.wait(done, until)  # completes in Broker.log_committed
        return None

    @completes
    def nack(
        self,
        conn_id: int,
        request: int,
        consumer_id: int,
        delivery_ids: Sequence[int],
        delay_ms: int,
        requeue: bool,
        now: float,
    ) -> RequestCompleted:
        """Return deliveries for redelivery; see :meth:`Broker.nack`."""
        partition, consumer = self._held(conn_id, consumer_id)
        if delay_ms < 0:
            raise InvalidArgument("delay_ms must be >= 0", details={"field": "delay_ms"})
        try:  # as for ack: the known ids are nacked all the same
            partition.queue.nack(
                consumer, delivery_ids, now, delay=delay_ms / 1000, requeue=requeue
            )
        finally:
            self._registry.reschedule(partition)
        return RequestCompleted(connection_id=conn_id, request=request)

    def _held(self, conn_id: int, consumer_id: int) -> ConsumerEntry:
        entry = self._connections.consumer(conn_id, consumer_id, quiet=False)
        if entry is None:
            raise _no_consumer(consumer_id)
        return entry


def _no_consumer(consumer_id: int) -> NotFound:
    return NotFound(f"consumer {consumer_id} not found", details={"consumer_id": consumer_id})
