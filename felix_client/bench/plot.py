"""``felix bench plot FILE --out DIR``: PNG plots of a ``felix bench --json-file`` result.

* ``latency.png``: the publish-to-deliver distribution of every ``pubsub-latency`` figure
  (one line per payload and fanout) next to raw QUIC ping-pong, one panel per QUIC engine.
  The x axis is the percentile on HDR's ``1 / (1 - p)`` scale, so the tail (p99, p99.9)
  gets as much room as the median; figures without a ``distribution`` (older files) are
  drawn from their p50 / p99 / p999 / max, dashed.
* ``throughput.png``: delivered msg/s of every ``pubsub-throughput`` figure, by payload,
  fanout and QUIC engine, one panel per batch size, with raw QUIC one-way of each engine
  (the ceiling) as a black tick over each payload.
* ``memory.png`` (when the file has ``memory`` figures): the broker's baseline and peak RSS
  with the stalled subscriber, against the bound, per engine.

Invalid figures (unexplained loss, say) are left out, and the titles say how many.

matplotlib is in the ``bench`` extra; it is imported only here, with the Agg backend (no
display needed). Exit status: 0 when the plots were written, 1 when the file cannot be
plotted (the message says why), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PlotError", "load", "main", "plot"]

X_MAX = 1e5
"""Where the maximum (p100) is drawn on the ``1 / (1 - p)`` axis (next to p99.999)."""
TICKS = ((50.0, "50%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"))
TICKS_TAIL = ((99.99, "99.99%"), (100.0, "max"))
ENGINE_COLORS = {"aioquic": "tab:blue", "qh3": "tab:orange"}


class PlotError(Exception):
    """The file cannot be plotted (not a ``felix bench`` JSON document, nothing to plot)."""


def load(path: Path) -> dict[str, Any]:
    """Read and check a ``felix bench --json-file`` document.

    Raises:
        PlotError: the file is missing, not JSON, or not a ``felix bench`` document.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PlotError(f"{path} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or "felix_bench" not in doc:
        raise PlotError(f"{path} is not a felix bench JSON document (no 'felix_bench' key)")
    figures = doc.get("figures")
    if not isinstance(figures, list) or not all(
        isinstance(f, dict) and isinstance(f.get("metrics"), dict) for f in figures
    ):
        raise PlotError(f"{path}: 'figures' must be a list of figures with metrics")
    return doc


def _engine(figure: dict[str, Any]) -> str:
    params = figure.get("params") or {}
    return str(params.get("quic_engine") or params.get("engine") or "aioquic")


def _x(percentile: float) -> float:
    return X_MAX if percentile >= 100 else min(1.0 / (1.0 - percentile / 100.0), X_MAX)


def _ladder(figure: dict[str, Any]) -> tuple[list[tuple[float, float]], bool]:
    """The figure's ``(percentile, us)`` points and whether they are its full ladder."""
    points = figure.get("distribution")
    if points:
        return [(float(p), float(us)) for p, us in points], True
    m = figure["metrics"]
    coarse = [(50.0, "p50_us"), (99.0, "p99_us"), (99.9, "p999_us"), (100.0, "max_us")]
    return [(p, float(m[k])) for p, k in coarse if m.get(k) is not None], False


def _is_ping_pong(figure: dict[str, Any]) -> bool:
    return figure.get("scenario") == "raw-quic" and "/ping-pong/" in str(figure.get("id"))


def _latency(figures: list[dict[str, Any]], path: Path, title: str) -> bool:
    from matplotlib.figure import Figure

    latency = [f for f in figures if f.get("scenario") == "pubsub-latency" and f["metrics"]]
    if not latency:
        return False
    engines = sorted({_engine(f) for f in latency})
    fig = Figure(figsize=(6.5 * len(engines), 5.0), layout="constrained")
    axes = fig.subplots(1, len(engines), squeeze=False, sharey=True)[0]
    full = True
    for ax, engine in zip(axes, engines, strict=True):
        lines = [f for f in figures if _is_ping_pong(f) and _engine(f) == engine]
        lines += sorted(
            (f for f in latency if _engine(f) == engine),
            key=lambda f: (f["params"].get("fanout", 0), f["params"].get("payload", 0)),
        )
        for f in lines:
            points, complete = _ladder(f)
            full = full and complete
            if not points:
                continue
            raw = _is_ping_pong(f)
            p = f.get("params") or {}
            label = (
                f"raw QUIC ping-pong {p.get('size', '?')} B"
                if raw
                else f"{p.get('payload', '?')} B, fanout {p.get('fanout', '?')}"
            )
            ax.plot(
                [_x(pc) for pc, _ in points],
                [max(us, 1e-3) for _, us in points],
                color="black" if raw else None,
                linestyle="-" if complete else "--",
                marker="" if complete else "o",
                linewidth=2.2 if raw else 1.5,
                label=label,
            )
        _percentile_axis(ax)
        ax.set_title(f"{engine}: publish -> deliver")
    axes[0].set_ylabel("latency (us, log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
    note = "" if full else " (dashed: p50/p99/p999/max only)"
    fig.suptitle(
        f"Publish-to-deliver latency distribution, batch 1, ack per message{note}\n{title}"
    )
    fig.savefig(path, dpi=100)
    return True


def _percentile_axis(ax: Axes) -> None:
    ticks = TICKS + TICKS_TAIL
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1.0, X_MAX * 1.5)
    ax.set_xticks([_x(p) for p, _ in ticks], [text for _, text in ticks])
    ax.minorticks_off()
    ax.set_xlabel("percentile")
    ax.grid(True, which="major", alpha=0.3)


def _throughput(figures: list[dict[str, Any]], path: Path, title: str) -> bool:
    from matplotlib.figure import Figure

    tput = [
        f
        for f in figures
        if f.get("scenario") == "pubsub-throughput" and f["metrics"].get("msg_per_s")
    ]
    if not tput:
        return False
    batches = sorted({int(f["params"]["batch"]) for f in tput})
    payloads = sorted({int(f["params"]["payload"]) for f in tput})
    series = sorted({(_engine(f), int(f["params"]["fanout"])) for f in tput})
    ceiling = {
        (_engine(f), int(f["params"].get("size", 0))): float(f["metrics"]["msg_per_s"])
        for f in figures
        if f.get("scenario") == "raw-quic" and f["metrics"].get("msg_per_s")
    }
    fanouts = sorted({fanout for _, fanout in series})
    fig = Figure(figsize=(6.5 * len(batches), 5.0), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False, sharey=True)[0]
    width = 0.8 / len(series)
    for ax, batch in zip(axes, batches, strict=True):
        for i, (engine, fanout) in enumerate(series):
            values = {
                int(f["params"]["payload"]): float(f["metrics"]["msg_per_s"])
                for f in tput
                if int(f["params"]["batch"]) == batch
                and (_engine(f), int(f["params"]["fanout"])) == (engine, fanout)
            }
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(payloads))]
            shade = 0.45 + 0.55 * (fanouts.index(fanout) + 1) / len(fanouts)
            ax.bar(
                xs,
                [values.get(size, 0.0) for size in payloads],
                width,
                color=ENGINE_COLORS.get(engine, "tab:gray"),
                alpha=shade,
                hatch="//" if fanout > 1 else None,
                label=f"{engine}, fanout {fanout}",
            )
        for j, size in enumerate(payloads):
            for engine in sorted({e for e, _ in series}):
                top = ceiling.get((engine, size))
                if top:
                    ax.hlines(top, j - 0.45, j + 0.45, colors="black", linewidth=1.2)
                    ax.annotate(f"raw {engine}", (j - 0.45, top), fontsize="x-small", va="bottom")
        ax.set_xticks(range(len(payloads)), [f"{size} B" for size in payloads])
        ax.set_xlabel("payload")
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}")
        ax.grid(True, axis="y", which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(series), fontsize="small")
    axes[0].set_ylabel("delivered msg/s, all subscribers (log scale)")
    fig.suptitle(f"Pub/sub throughput by payload and fanout (black: raw QUIC one-way)\n{title}")
    fig.savefig(path, dpi=100)
    return True


def _memory(figures: list[dict[str, Any]], path: Path, title: str) -> bool:
    from matplotlib.figure import Figure

    memory = [
        f for f in figures if f.get("scenario") == "memory" and f["metrics"].get("peak_rss_mib")
    ]
    if not memory:
        return False
    fig = Figure(figsize=(3.0 + 2.0 * len(memory), 4.5), layout="constrained")
    ax = fig.subplots()
    names = [_engine(f) for f in memory]
    xs = range(len(memory))
    m = [f["metrics"] for f in memory]
    ax.bar(xs, [x["baseline_rss_mib"] for x in m], 0.6, color="tab:gray", label="baseline")
    ax.bar(
        xs,
        [x["peak_rss_mib"] - x["baseline_rss_mib"] for x in m],
        0.6,
        bottom=[x["baseline_rss_mib"] for x in m],
        color=[ENGINE_COLORS.get(n, "tab:gray") for n in names],
        label="growth to the peak",
    )
    for i, x in enumerate(m):
        ax.hlines(x["bound_mib"], i - 0.4, i + 0.4, colors="red", linewidth=2)
        ax.annotate(f"bound {x['bound_mib']:,.0f}", (i - 0.4, x["bound_mib"]), va="bottom")
        growth = x["peak_rss_mib"] - x["baseline_rss_mib"]
        ax.annotate(
            f"peak {x['peak_rss_mib']:,.0f}\n(+{growth:,.0f})",
            (i, x["peak_rss_mib"]),
            ha="center",
            va="top",
            color="white",
            fontsize="small",
        )
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("broker RSS (MiB)")
    publishes = memory[0]["params"].get("publishes", 0)
    ax.set_title(
        f"Broker RSS, one stalled subscriber, {publishes:,} publishes\n"
        "bound = baseline + limits + 50 MB (red)",
        fontsize="medium",
    )
    ax.legend(fontsize="small", loc="lower right")
    fig.suptitle(title, fontsize="small")
    fig.savefig(path, dpi=100)
    return True


def plot(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots of ``doc`` into ``out`` (created if missing).

    Returns:
        The files written.

    Raises:
        PlotError: matplotlib is missing, or ``doc`` has no figure to plot.
    """
    try:
        import matplotlib
    except ImportError:
        raise PlotError("matplotlib is not installed: pip install 'felix[bench]'") from None
    matplotlib.use("Agg")
    figures = [f for f in doc["figures"] if f.get("valid", True)]
    run = doc.get("run") or {}
    title = ", ".join(str(run[k]) for k in ("date", "engine", "machine") if run.get(k) is not None)
    left_out = len(doc["figures"]) - len(figures)
    if left_out:
        title += f" ({left_out} invalid figure{'s' * (left_out > 1)} left out)"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("latency.png", _latency),
        ("throughput.png", _throughput),
        ("memory.png", _memory),
    ):
        if draw(figures, out / name, title):
            written.append(out / name)
    if not written:
        raise PlotError(
            "nothing to plot: no valid pubsub-latency, pubsub-throughput or memory figure"
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``felix bench plot`` (and ``python -m felix_client.bench.plot``)."""
    parser = argparse.ArgumentParser(
        prog="felix bench plot",
        description="PNG plots (latency distribution, throughput by payload and fanout, "
        "memory) of a `felix bench --json-file` result.",
    )
    parser.add_argument("file", type=Path, help="a felix bench --json-file document")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="directory for the PNGs (default .)"
    )
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        written = plot(load(args.file), args.out)
    except PlotError as exc:
        print(f"felix bench plot: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
