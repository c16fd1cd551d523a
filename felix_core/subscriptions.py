"""Subscriptions: a connection following a stream, or a cache's change feed.

:class:`Subscriptions` opens a subscription on the partition's fanout (a stream's, or the
change feed a cache partition starts when first followed), indexes it under its
connection, and ends it or grants it credit on the client's word. Deliveries are the
fanout's: this part only opens, credits and closes.
"""

from __future__ import annotations

from felix_core.completion import completes
from felix_core.connections import Connections
from felix_core.errors import InvalidArgument, LimitExceeded, NotFound
from felix_core.events import EngineEvent, RequestCompleted, SubscriptionOpened
from felix_core.limits import BrokerConfig
from felix_core.partitions import CachePartition, StreamPartition
from felix_core.quotas import MAX_SUBSCRIPTIONS, TenantQuotas
from felix_core.registry import Registry
from felix_core.streams import Fanout

__all__ = ["Subscriptions"]


class Subscriptions:
    """Opens, credits and ends subscriptions (the requests of
    :meth:`Broker.subscribe <felix_core.broker.Broker.subscribe>` and its kin).

    Args:
        config: the limits (subscriptions per connection, credit maxima).
        registry: the partitions.
        connections: the attached connections (each indexes its subscriptions).
        quotas: the per-tenant quotas (subscriptions per tenant, ``max_subscriptions``).
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
    def subscribe(
        self,
        conn_id: int,
        request: int,
        path: tuple[str, str, str],
        start: int,
        start_value: int | None,
        credit_messages: int,
        credit_bytes: int,
        source: str,
        now: float,
    ) -> SubscriptionOpened:
        """Open a subscription; see :meth:`Broker.subscribe`."""
        att = self._connections.attachment(conn_id)
        cfg = self._config
        self._connections.check_accepting()
        if len(att.live_subs()) >= cfg.max_subscriptions_per_connection:
            raise LimitExceeded(
                f"at most {cfg.max_subscriptions_per_connection} subscriptions per connection",
                details={"limit": cfg.max_subscriptions_per_connection},
            )
        partition: StreamPartition | CachePartition
        quotas = self._quotas
        if source == "stream":
            partition = self._registry.stream(path)
            fanout: Fanout = partition.stream
        elif source == "cache":
            partition = self._registry.cache(path)
            fanout = partition.follow(self._out)
        else:
            raise InvalidArgument(
                f"unknown subscription source {source!r}", details={"field": "source"}
            )
        quotas.check_feeds(path[0], MAX_SUBSCRIPTIONS)
        sub = fanout.subscribe(
            self._next_id,
            conn_id,
            start,
            start_value,
            min(credit_messages, cfg.max_credit_messages),
            min(credit_bytes, cfg.max_credit_bytes),
            now,
            paused=att.paused,
        )
        self._next_id += 1
        quotas.add_feed(path[0], MAX_SUBSCRIPTIONS, sub)
        att.subs[sub.id] = (partition, fanout, sub)
        self._registry.reschedule(partition)
        return SubscriptionOpened(
            connection_id=conn_id,
            request=request,
            subscription_id=sub.id,
            first_offset=sub.start_offset,
        )

    @completes
    def unsubscribe(
        self, conn_id: int, request: int | None, subscription_id: int, now: float
    ) -> RequestCompleted | None:
        """End a subscription; see :meth:`Broker.unsubscribe`."""
        entry = self._connections.subscription(conn_id, subscription_id, quiet=request is None)
        if entry is None:
            raise NotFound(  # dropped when no reply is due
                f"subscription {subscription_id} not found",
                details={"subscription_id": subscription_id},
            )
        partition, fanout, _ = entry
        fanout.remove(subscription_id, "unsubscribed")
        self._registry.reschedule(partition)
        if request is None:
            return None
        return RequestCompleted(connection_id=conn_id, request=request)

    def add_credit(
        self, conn_id: int, subscription_id: int, messages: int, nbytes: int, now: float
    ) -> bool:
        """Grant more credit; see :meth:`Broker.add_credit`."""
        if messages < 0 or nbytes < 0:
            raise ValueError("credit must be >= 0")
        entry = self._connections.subscription(conn_id, subscription_id, quiet=True)
        if entry is None:
            return False
        partition, fanout, sub = entry
        cfg = self._config
        messages = min(messages, max(cfg.max_credit_messages - sub.credit_messages, 0))
        nbytes = min(nbytes, max(cfg.max_credit_bytes - sub.credit_bytes, 0))
        fanout.add_credit(sub, messages, nbytes, now)
        self._registry.reschedule(partition)
        return True
