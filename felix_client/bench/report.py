"""Figures, their ratios to the anchors of the same run, the summary table and the JSON.

A :class:`Figure` is one measured line: a rate (``msg_per_s``, ``ops_per_s``), latency
percentiles (``p50_us`` ...), or both, with what it cost in CPU. Most figures name an
*anchor*, another figure of the same run that bounds them: raw aioquic one-way for
message rates, raw aioquic ping-pong for latencies, redis-py for cache rates. After the run
:func:`attach_ratios` divides each figure's metric by its anchor's (the machine is shared
and noisy, so a ratio is only meaningful within one run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .profiles import Breakdown, format_table

__all__ = [
    "RATIO_METRICS",
    "Figure",
    "attach_ratios",
    "document",
    "print_profiles",
    "print_table",
]

RATIO_METRICS = ("msg_per_s", "ops_per_s", "p50_us", "p99_us", "p999_us")
"""Metrics divided by the anchor's same metric when both figures have them."""
LOWER_IS_BETTER = frozenset({"p50_us", "p99_us", "p999_us"})


@dataclass(slots=True, kw_only=True)
class Figure:
    """One measured line of a bench run."""

    id: str
    """Unique in the run, e.g. ``pubsub-throughput/payload=100/batch=64/fanout=1``."""
    scenario: str
    label: str
    """For the table, e.g. ``pub/sub 100 B batch 64 fanout 1``."""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    anchor: str | None = None
    """The id of the figure this one is compared with."""
    ratios: dict[str, float] = field(default_factory=dict)
    """metric -> this figure's value / the anchor's."""
    valid: bool = True
    """False when the measurement cannot be trusted (unexplained loss, a missing count)."""
    notes: list[str] = field(default_factory=list)
    distribution: list[tuple[float, float]] = field(default_factory=list)
    """A latency figure's ``[(percentile, us), ...]`` (:func:`.hdr.distribution`), for the
    plots; empty for the others."""
    profile: dict[str, Breakdown] = field(default_factory=dict)
    """``--profile``: process (``broker``, ``worker 1 (publish_job)``) -> its samples by
    layer over the figure; empty without it."""

    def as_dict(self) -> dict[str, Any]:
        """The figure as JSON-ready data."""
        return {
            "id": self.id,
            "scenario": self.scenario,
            "label": self.label,
            "params": dict(self.params),
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "anchor": self.anchor,
            "ratios": {k: _finite(v) for k, v in self.ratios.items()},
            "valid": self.valid,
            "notes": list(self.notes),
            **({"distribution": [list(p) for p in self.distribution]} if self.distribution else {}),
            **({"profile": _profiles(self.profile)} if self.profile else {}),
        }


def _profiles(profile: dict[str, Breakdown]) -> dict[str, Any]:
    return {process: b.as_dict() for process, b in profile.items()}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def attach_ratios(figures: Sequence[Figure]) -> None:
    """Fill every figure's ``ratios`` from its anchor in ``figures`` (same run).

    A figure whose anchor is not among ``figures`` gets a note and no ratio; an anchor that
    is itself invalid gives ratios with a note saying so.
    """
    by_id = {f.id: f for f in figures}
    for figure in figures:
        figure.ratios = {}
        if figure.anchor is None:
            continue
        anchor = by_id.get(figure.anchor)
        if anchor is None:
            figure.notes.append(f"anchor {figure.anchor} was not measured in this run")
            continue
        for metric in RATIO_METRICS:
            mine, theirs = figure.metrics.get(metric), anchor.metrics.get(metric)
            if mine is not None and theirs:
                figure.ratios[metric] = mine / theirs
        if not anchor.valid:
            figure.notes.append(f"anchor {anchor.id} is invalid")


def document(figures: Sequence[Figure], run: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` document: how the run was made, then every figure."""
    return {
        "felix_bench": 1,
        "run": run,
        "valid": all(f.valid for f in figures),
        "figures": [f.as_dict() for f in figures],
    }


def _rate(figure: Figure) -> str:
    m = figure.metrics
    if "msg_per_s" in m:
        text = f"{m['msg_per_s']:,.0f} msg/s"
        if "mb_per_s" in m:
            text += f" {m['mb_per_s']:,.1f} MB/s"
        return text
    if "ops_per_s" in m:
        return f"{m['ops_per_s']:,.0f} ops/s"
    if "peak_rss_mib" in m:
        return f"peak RSS {m['peak_rss_mib']:,.0f} MiB (bound {m['bound_mib']:,.0f})"
    return ""


def _latency(figure: Figure) -> str:
    m = figure.metrics
    if "p50_us" not in m:
        return ""
    return f"{m['p50_us']:,.0f} / {m['p99_us']:,.0f} / {m['p999_us']:,.0f}"


def _times(value: float) -> str:
    """``x0.63``; three decimals under 0.1 so that a small ratio does not read as 0."""
    return f"x{value:.2f}" if value >= 0.1 else f"x{value:.3f}"


def _ratio(figure: Figure) -> str:
    r = figure.ratios
    if not r:
        return ""
    for rate in ("msg_per_s", "ops_per_s"):
        if rate in r:
            return _times(r[rate])
    return f"p50 {_times(r.get('p50_us', math.nan))} p99 {_times(r.get('p99_us', math.nan))}"


def print_table(figures: Sequence[Figure], run: dict[str, Any], out: TextIO) -> None:
    """The summary table (what ``felix bench`` prints without ``--json``)."""
    print(
        f"felix bench {run['scenario']}: {run['date']}, broker {run['broker']}, "
        f"engine {run['engine']}, load generators on {run['loop']}, "
        f"{run['seconds']:g} s per figure, {run['machine']}",
        file=out,
    )
    header = ("figure", "rate", "p50 / p99 / p999 us", "vs anchor", "anchor")
    rows = [
        (
            f.label + ("" if f.valid else "  [INVALID]"),
            _rate(f),
            _latency(f),
            _ratio(f),
            f.anchor or "",
        )
        for f in figures
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in (0, 4) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(header), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in rows:
        print(line(row), file=out)
    notes = [(f.label, note) for f in figures for note in f.notes]
    if notes:
        print("", file=out)
        for label, note in notes:
            print(f"{label}: {note}", file=out)
    print("", file=out)
    print(
        "vs anchor: rates as figure / anchor (higher is better), latencies as figure / "
        "anchor (lower is better).",
        file=out,
    )


def print_profiles(figures: Sequence[Figure], out: TextIO) -> None:
    """``--profile``: the share of samples by layer per figure and process (after the
    summary table; nothing when no figure has a profile)."""
    rows = [(f.label, process, b) for f in figures for process, b in f.profile.items()]
    if not rows:
        return
    print("", file=out)
    print(
        "profiles (py-spy): share of each process's samples by layer (innermost frame of a "
        "known layer); busy = samples / (rate x seconds sampled)",
        file=out,
    )
    for line in format_table(rows):
        print(line, file=out)
