"""Engine figures for metrics, computed once for both runtimes' ``/metrics``.

:func:`engine_figures` turns :meth:`Broker.stats() <felix_core.broker.Broker.stats>`
and :meth:`Broker.totals() <felix_core.broker.Broker.totals>` into flat mappings
from a fixed key to a number: broker-wide totals (``queue_depth``, ``cache_hits`` ...) and,
for a broker with few enough queues (caches), the same figures per resource. Nothing here
walks messages or metadata: the engine keeps its counters as things happen (see
``docs/engine.md``).

Labels: a per-resource figure is keyed by ``(tenant, namespace, name)``, resource names
only, never message data. Their number is bounded: a kind with more resources than
``detail_limit`` (the ``metrics_resource_limit`` setting) gets no per-resource figures at
all, only totals, and :attr:`EngineFigures.capped` names it so the scrape says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from felix_core.broker import Broker
from felix_core.cache import CacheStats, CacheTotals
from felix_core.queues import QueueStats, QueueTotals

__all__ = ["CACHE_FIGURES", "QUEUE_FIGURES", "EngineFigures", "engine_figures"]

Path = tuple[str, str, str]

QUEUE_FIGURES = (
    "depth",
    "in_flight",
    "oldest_age_seconds",
    "redeliveries",
    "dead_lettered",
    "records",
    "bytes",
)
"""Figures of each queue (``queue_<figure>`` in the totals)."""
CACHE_FIGURES = ("entries", "bytes", "hits", "misses", "puts", "evictions", "expirations")
"""Figures of each cache (``cache_<figure>`` in the totals)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineFigures:
    """What one scrape exports from the engine."""

    totals: dict[str, float]
    """``Broker.stats()`` plus ``queue_<figure>`` and ``cache_<figure>`` totals."""
    queues: dict[Path, dict[str, float]]
    """Each queue's :data:`QUEUE_FIGURES`; empty when capped."""
    caches: dict[Path, dict[str, float]]
    """Each cache's :data:`CACHE_FIGURES`; empty when capped."""
    capped: frozenset[str]
    """``queue`` and/or ``cache`` when that kind had more resources than the limit."""


def engine_figures(broker: Broker, now: float, detail_limit: int = 0) -> EngineFigures:
    """The engine's figures at ``now``.

    Args:
        broker: the engine.
        now: the current time (for the oldest queue message's age).
        detail_limit: per-resource figures for a kind with at most this many resources.

    Returns:
        An :class:`EngineFigures`. ``oldest_age_seconds`` is 0 when no message is waiting.
    """
    t = broker.totals(now, detail_limit=detail_limit)
    totals: dict[str, float] = dict(broker.stats())
    totals.update({f"queue_{k}": v for k, v in _queue(t.queues).items()})
    totals.update({f"cache_{k}": v for k, v in _cache(t.caches).items()})
    queues = {path: _queue(s) for path, s in t.queue_detail.items()}
    caches = {path: _cache(s) for path, s in t.cache_detail.items()}
    capped = set()
    if t.queues.queues and not queues:
        capped.add("queue")
    if t.caches.caches and not caches:
        capped.add("cache")
    return EngineFigures(totals=totals, queues=queues, caches=caches, capped=frozenset(capped))


def _queue(s: QueueStats | QueueTotals) -> dict[str, float]:
    figures = {k: float(getattr(s, k)) for k in QUEUE_FIGURES if k != "oldest_age_seconds"}
    figures["oldest_age_seconds"] = s.oldest_age_s or 0.0
    return figures


def _cache(s: CacheStats | CacheTotals) -> dict[str, float]:
    return {k: float(getattr(s, k)) for k in CACHE_FIGURES}
