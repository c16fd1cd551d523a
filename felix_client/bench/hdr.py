"""Latency percentiles through an HDR histogram (the ``hdrhistogram`` package).

Load generators keep raw samples (nanoseconds, in an ``array('q')``) while they run, so
recording costs one append in the timed loop; the samples go into a histogram afterwards,
here. Values are recorded in nanoseconds with three significant digits, from 1 ns up to
one hour; percentiles are reported in microseconds.

A latency figure reports p50 / p99 / p999 in its metrics and, for the plots
(:mod:`.plot`), its *distribution*: the latency at each percentile of :data:`LADDER`, a
compact ladder read from the same kind of histogram (the percentiles HDR's own
percentile-distribution output halves towards: 50, 75, 87.5 ... and the tail up to p99.99).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

__all__ = [
    "LADDER",
    "PERCENTILES",
    "Distribution",
    "Latency",
    "distribution",
    "new_histogram",
    "summarize",
]

PERCENTILES = (50.0, 99.0, 99.9)
"""The percentiles every latency figure reports (p50, p99, p999)."""
HIGHEST_NS = 3600 * 10**9
SIGNIFICANT_DIGITS = 3

LADDER = (0.0, 10.0, 25.0, 50.0, 75.0, 87.5, 93.75, 96.875, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)
"""The percentiles of a figure's distribution (0 is the minimum, 100 the maximum)."""

Distribution = list[tuple[float, float]]
"""``[(percentile, microseconds), ...]`` in :data:`LADDER` order."""

Latency = dict[str, float]
"""``{"count", "p50_us", "p99_us", "p999_us", "max_us", "mean_us"}``."""


def new_histogram() -> HdrHistogram:
    """An empty histogram for nanosecond values."""
    return HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_DIGITS)


def _record(samples_ns: Iterable[array[int] | bytes]) -> HdrHistogram:
    histogram = new_histogram()
    record = histogram.record_value
    for chunk in samples_ns:
        values = chunk if isinstance(chunk, array) else array("q", chunk)
        for value in values:
            record(min(max(value, 1), HIGHEST_NS))
    return histogram


def distribution(samples_ns: Iterable[array[int] | bytes]) -> Distribution:
    """The latency at each percentile of :data:`LADDER`, in microseconds.

    Args:
        samples_ns: as for :func:`summarize`.

    Returns:
        ``[(percentile, us), ...]``; empty when there is no sample.
    """
    histogram = _record(samples_ns)
    if histogram.get_total_count() == 0:
        return []
    at = histogram.get_percentile_to_value_dict([p for p in LADDER if 0 < p < 100])
    low, high = histogram.get_min_value(), histogram.get_max_value()
    return [(p, (low if p == 0 else high if p == 100 else at[p]) / 1000.0) for p in LADDER]


def summarize(samples_ns: Iterable[array[int] | bytes]) -> Latency:
    """Record every sample into one histogram and read its percentiles.

    Args:
        samples_ns: arrays of nanosecond latencies (``array('q')`` or its ``tobytes()``);
            values below 1 ns count as 1 ns (a clock that did not move), values above an
            hour as an hour.

    Returns:
        ``count`` and ``p50_us`` / ``p99_us`` / ``p999_us`` / ``max_us`` / ``mean_us``;
        the percentiles are 0.0 when there is no sample.
    """
    histogram = _record(samples_ns)
    count = int(histogram.get_total_count())
    if count == 0:
        return {
            "count": 0,
            **dict.fromkeys(("p50_us", "p99_us", "p999_us", "max_us", "mean_us"), 0.0),
        }
    at = histogram.get_percentile_to_value_dict(list(PERCENTILES))
    return {
        "count": count,
        "p50_us": at[50.0] / 1000.0,
        "p99_us": at[99.0] / 1000.0,
        "p999_us": at[99.9] / 1000.0,
        "max_us": histogram.get_max_value() / 1000.0,
        "mean_us": histogram.get_mean_value() / 1000.0,
    }
