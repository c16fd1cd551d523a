"""Engine-wide figures for metrics: ``Broker.stats()`` plus queue and cache totals.

Both runtimes' metrics endpoints call :func:`engine_stats` at scrape time. Queue and cache
totals (depth, in-flight, redeliveries, dead letters; entries, bytes, hits, misses,
evictions, expirations) are summed over every queue and cache through the broker's public
admin API when ``Broker.stats()`` does not carry them itself. The keys are fixed words, never
resource names, so they are safe as metric names.
"""

from __future__ import annotations

from felix_core.broker import Broker
from felix_core.errors import EngineError

__all__ = ["CACHE_TOTALS", "QUEUE_TOTALS", "engine_stats"]

QUEUE_TOTALS = ("depth", "in_flight", "redeliveries", "dead_lettered", "records", "bytes")
"""Per-queue stats summed into ``queue_<name>``."""
CACHE_TOTALS = ("entries", "bytes", "hits", "misses", "evictions", "expirations", "puts")
"""Per-cache stats summed into ``cache_<name>``."""


def engine_stats(broker: Broker, now: float) -> dict[str, float]:
    """``Broker.stats()`` with ``queue_*`` and ``cache_*`` totals added.

    Args:
        broker: the engine.
        now: the current time (queue stats need it).

    Returns:
        A flat mapping from a fixed key to a number.
    """
    out: dict[str, float] = dict(broker.stats())
    if "queue_depth" in out and "cache_hits" in out:
        return out  # the engine reports its own totals
    totals = {f"queue_{k}": 0.0 for k in QUEUE_TOTALS}
    totals.update({f"cache_{k}": 0.0 for k in CACHE_TOTALS})
    try:
        for tenant in broker.list("tenant"):
            t = tenant["tenant"]
            for ns in broker.list("namespace", t):
                n = ns["namespace"]
                for kind, keys in (("queue", QUEUE_TOTALS), ("cache", CACHE_TOTALS)):
                    for res in broker.list(kind, t, n):
                        stats = broker.describe(kind, t, n, res["name"], now=now).get("stats")
                        for key in keys:
                            value = (stats or {}).get(key)
                            if isinstance(value, int | float):
                                totals[f"{kind}_{key}"] += value
    except EngineError:  # a resource vanished mid-scan: report what was summed
        pass
    for key, value in totals.items():
        out.setdefault(key, value)
    return out
