"""The engine's figures for metrics: gauges and counters, cheap enough for every scrape.

:class:`Figures` reads them off the parts that keep them as things happen (the partitions'
streams, queues and caches, the memory budget, the attached connections); it keeps no
state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from felix_core.cache import CacheStats, CacheTotals
from felix_core.connections import Connections
from felix_core.limits import MemoryBudget
from felix_core.metadata import Path
from felix_core.queues import QueueStats, QueueTotals
from felix_core.registry import Registry

__all__ = ["Figures", "ResourceTotals"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceTotals:
    """Queue and cache figures for metrics: :meth:`Broker.totals`.

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


class Figures:
    """Reads the engine's figures off its parts.

    Args:
        registry: the partitions.
        budget: the memory budget.
        connections: the attached connections.
    """

    def __init__(self, registry: Registry, budget: MemoryBudget, connections: Connections) -> None:
        self._registry = registry
        self._budget = budget
        self._connections = connections

    def totals(self, now: float, detail_limit: int) -> ResourceTotals:
        """Queue and cache figures; see :meth:`Broker.totals`."""
        registry = self._registry
        queue_detail: dict[Path, QueueStats] = {}
        if len(registry.queues) <= detail_limit:
            queue_detail = registry.queue_detail(now)
        cache_detail: dict[Path, CacheStats] = {}
        if len(registry.caches) <= detail_limit:
            cache_detail = registry.cache_detail()
        return ResourceTotals(
            queues=registry.queue_totals(now),
            caches=registry.cache_totals(),
            queue_detail=queue_detail,
            cache_detail=cache_detail,
        )

    def stats(self) -> dict[str, int]:
        """Flat gauges and counters; see :meth:`Broker.stats`."""
        registry = self._registry
        budget = self._budget
        streams = [p.stream for p in registry.streams.values()]
        feeds = [p.feed for p in registry.caches.values() if p.feed is not None]
        consumers = sum(
            len(g.consumers) for p in registry.queues.values() for g in p.queue.groups.values()
        )
        return {
            "connections": len(self._connections),
            "subscriptions": sum(len(f.subscriptions) for f in (*streams, *feeds)),
            "consumers": consumers,
            "streams": len(registry.streams),
            "queues": len(registry.queues),
            "caches": len(registry.caches),
            "memory_used_bytes": budget.used,
            "memory_limit_bytes": budget.limit,
            "memory_high_water_bytes": budget.high_water,
            "memory_refusals": budget.refused,
            "stream_published_records": sum(s.published_records for s in streams),
            "stream_delivered_records": sum(s.delivered_records for s in streams),
            "stream_gap_records": sum(s.gap_records for s in streams),
            "stream_lagged_subscriptions": sum(s.lagged for s in streams),
            "stream_blocked_publishes": sum(s.blocked for s in streams),
        }
