"""``felix top``: a live terminal view of a broker, from its Prometheus ``/metrics``.

Theory of operation. The command scrapes ``/metrics`` every ``--interval`` seconds. Each
scrape is parsed (prometheus_client's text parser) into a :class:`Scrape`: the samples by
name, stamped with the monotonic time it was taken. :func:`compute_view` turns the last
two scrapes into a :class:`TopView` (gauges read from the newer one; rates are counter
differences over the time between them; a counter that went down means the broker
restarted, and counts from zero as in Prometheus's ``rate``), and :func:`render` turns a
view into a rich renderable. Both are pure, so the tests check them on metric text without
a terminal; :func:`run_top` is the loop around them (HTTP, the clock, ``rich.live.Live``).

A broker that cannot be reached does not end the view: the last figures stay on screen,
marked stale, with the error, until the broker answers again (Ctrl-C quits). With
``--once`` the command takes two scrapes ``--interval`` apart, prints one frame (or, with
``--output json``, the :class:`TopView` as JSON) and exits (1 if the broker could not be
scraped).

The metric names read are in :data:`METRICS` (docs/broker.md, Metrics); per-queue and
per-cache series exist only while the broker exports them (``metrics_resource_limit``), and
the view says when a kind was capped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "METRICS",
    "CacheRow",
    "QueueRow",
    "Scrape",
    "TopView",
    "compute_view",
    "metrics_url",
    "parse_scrape",
    "render",
    "run_top",
]

_QUEUE = ("tenant", "namespace", "queue")
_CACHE = ("tenant", "namespace", "cache")

METRICS = (
    "felix_ready",
    "felix_connections",
    "felix_subscriptions",
    "felix_queue_consumers",
    "felix_publish_records_total",
    "felix_enqueue_records_total",
    "felix_deliveries_total",
    "felix_delivered_bytes_total",
    "felix_memory_used_bytes",
    "felix_memory_limit_bytes",
    "felix_memory_refusals_total",
    "felix_subscribe_dropped_total",
    "felix_stream_gap_records_total",
    "felix_connections_refused_total",
    "felix_queue_depth_per_queue",
    "felix_queue_in_flight_per_queue",
    "felix_queue_redeliveries_per_queue_total",
    "felix_queue_oldest_age_seconds_per_queue",
    "felix_cache_entries_per_cache",
    "felix_cache_hits_per_cache_total",
    "felix_cache_misses_per_cache_total",
    "felix_metrics_resource_series_capped",
)
"""Every metric ``felix top`` reads (a test checks each against a live broker)."""


def metrics_url(text: str) -> str:
    """A ``/metrics`` URL from ``--metrics``: a full ``http(s)://`` URL as given, or the
    broker's own ``--metrics HOST:PORT`` form (``http://HOST:PORT/metrics``).

    Raises:
        ValueError: another scheme, or no host.
    """
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid --metrics URL {text!r}: use http://HOST:PORT/metrics")
    if parts.path in ("", "/"):
        url = url.rstrip("/") + "/metrics"
    return url


# ---------------------------------------------------------------------------- scrapes

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One parsed ``/metrics`` page."""

    at: float
    """Monotonic seconds when it was taken."""
    samples: Mapping[str, Mapping[Labels, float]]
    """Sample name (``felix_deliveries_total``) -> label set -> value."""

    def total(self, name: str) -> float:
        """The sum of every series of ``name`` (0 when it has none yet)."""
        return sum(self.samples.get(name, {}).values())

    def by(self, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """``name``'s series keyed by the values of the labels ``keys`` (summed over the
        other labels)."""
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.samples.get(name, {}).items():
            d = dict(labels)
            key = tuple(d.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + value
        return out


def parse_scrape(text: str, at: float) -> Scrape:
    """Parse Prometheus text exposition.

    Raises:
        ValueError: it is not Prometheus text.
    """
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = float(sample.value)
    return Scrape(at, samples)


# ------------------------------------------------------------------------------- view


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRow:
    """One queue's figures."""

    name: str
    """``tenant/namespace/queue``."""
    depth: float
    in_flight: float
    redeliveries: float
    redelivery_rate: float | None
    oldest_age: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheRow:
    """One cache's figures."""

    name: str
    """``tenant/namespace/cache``."""
    entries: float
    hit_ratio: float | None
    """Hits / (hits + misses) since the broker started; ``None`` before any lookup."""
    lookup_rate: float | None
    """Gets per second between the two scrapes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopView:
    """What one frame shows. Rates are ``None`` until there are two scrapes."""

    interval: float | None
    ready: bool
    connections: float
    subscriptions: float
    consumers: float
    publish_rate: float | None
    """Stream records published per second."""
    enqueue_rate: float | None
    delivery_rate: float | None
    """Records delivered per second (streams and queues)."""
    delivered_bytes_rate: float | None
    memory_used: float
    memory_limit: float
    memory_refusals: float
    drops: float
    """Subscriptions dropped (lagged out) since the broker started."""
    drop_rate: float | None
    gap_records: float
    refused: float
    """Connections refused (max_connections, shutting_down) since the broker started."""
    refused_rate: float | None
    queues: tuple[QueueRow, ...]
    caches: tuple[CacheRow, ...]
    capped: tuple[str, ...]
    """Kinds whose per-resource series the broker stopped exporting."""


def _rate(prev: Scrape | None, cur: Scrape, before: float, now: float) -> float | None:
    """A counter's rate between two scrapes (``None`` without an earlier one)."""
    if prev is None or cur.at <= prev.at:
        return None
    delta = now - before if now >= before else now  # a reset: counted from zero
    return delta / (cur.at - prev.at)


def _total_rate(prev: Scrape | None, cur: Scrape, name: str) -> float | None:
    before = prev.total(name) if prev is not None else 0.0
    return _rate(prev, cur, before, cur.total(name))


def _name(key: tuple[str, ...]) -> str:
    return "/".join(key)


def compute_view(prev: Scrape | None, cur: Scrape) -> TopView:
    """The figures of one frame from the newest scrape and the one before it (if any)."""
    depth = cur.by("felix_queue_depth_per_queue", _QUEUE)
    in_flight = cur.by("felix_queue_in_flight_per_queue", _QUEUE)
    redeliveries = cur.by("felix_queue_redeliveries_per_queue_total", _QUEUE)
    ages = cur.by("felix_queue_oldest_age_seconds_per_queue", _QUEUE)
    before = prev.by("felix_queue_redeliveries_per_queue_total", _QUEUE) if prev else {}
    queues = []
    for key in sorted(set(depth) | set(in_flight), key=lambda k: (-depth.get(k, 0.0), k)):
        now = redeliveries.get(key, 0.0)
        queues.append(
            QueueRow(
                name=_name(key),
                depth=depth.get(key, 0.0),
                in_flight=in_flight.get(key, 0.0),
                redeliveries=now,
                redelivery_rate=_rate(prev, cur, before.get(key, 0.0), now),
                oldest_age=ages.get(key, 0.0),
            )
        )
    entries = cur.by("felix_cache_entries_per_cache", _CACHE)
    hits = cur.by("felix_cache_hits_per_cache_total", _CACHE)
    misses = cur.by("felix_cache_misses_per_cache_total", _CACHE)
    lookups_before: dict[tuple[str, ...], float] = {}
    if prev is not None:
        for name in ("felix_cache_hits_per_cache_total", "felix_cache_misses_per_cache_total"):
            for key, value in prev.by(name, _CACHE).items():
                lookups_before[key] = lookups_before.get(key, 0.0) + value
    caches = []
    for key in sorted(entries, key=lambda k: (-entries[k], k)):
        lookups = hits.get(key, 0.0) + misses.get(key, 0.0)
        caches.append(
            CacheRow(
                name=_name(key),
                entries=entries[key],
                hit_ratio=hits.get(key, 0.0) / lookups if lookups else None,
                lookup_rate=_rate(prev, cur, lookups_before.get(key, 0.0), lookups),
            )
        )
    capped = cur.by("felix_metrics_resource_series_capped", ("kind",))
    interval = cur.at - prev.at if prev is not None and cur.at > prev.at else None

    return TopView(
        interval=interval,
        ready=cur.total("felix_ready") > 0,
        connections=cur.total("felix_connections"),
        subscriptions=cur.total("felix_subscriptions"),
        consumers=cur.total("felix_queue_consumers"),
        publish_rate=_total_rate(prev, cur, "felix_publish_records_total"),
        enqueue_rate=_total_rate(prev, cur, "felix_enqueue_records_total"),
        delivery_rate=_total_rate(prev, cur, "felix_deliveries_total"),
        delivered_bytes_rate=_total_rate(prev, cur, "felix_delivered_bytes_total"),
        memory_used=cur.total("felix_memory_used_bytes"),
        memory_limit=cur.total("felix_memory_limit_bytes"),
        memory_refusals=cur.total("felix_memory_refusals_total"),
        drops=cur.total("felix_subscribe_dropped_total"),
        drop_rate=_total_rate(prev, cur, "felix_subscribe_dropped_total"),
        gap_records=cur.total("felix_stream_gap_records_total"),
        refused=cur.total("felix_connections_refused_total"),
        refused_rate=_total_rate(prev, cur, "felix_connections_refused_total"),
        queues=tuple(queues),
        caches=tuple(caches),
        capped=tuple(sorted(k[0] for k, v in capped.items() if v > 0)),
    )


# ---------------------------------------------------------------------------- render


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _per_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def _bytes(value: float) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(
    view: TopView | None,
    source: str,
    *,
    error: str | None = None,
    limit: int = 20,
) -> RenderableType:
    """One frame: a summary, then the queues and the caches (at most ``limit`` rows each,
    the deepest and largest first).

    Args:
        view: the figures, or ``None`` before the first successful scrape.
        source: the ``/metrics`` URL (shown in the title).
        error: why the latest scrape failed (the figures shown are then stale).
        limit: rows per table.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text.assemble(("felix top", "bold"), f"  {source}")
    if view is not None and view.interval is not None:
        title.append(f"  every {view.interval:.1f}s")
    parts: list[RenderableType] = [title]
    if error is not None:
        stale = " (figures below are stale)" if view is not None else ""
        parts.append(Text(f"cannot scrape: {error}{stale}", style="bold red"))
    if view is None:
        parts.append(Text("waiting for the first scrape ..."))
        return Group(*parts)

    mem_pct = view.memory_used / view.memory_limit if view.memory_limit else 0.0
    mem_style = "bold red" if mem_pct >= 0.9 else ("yellow" if mem_pct >= 0.75 else "")
    out_rate = view.delivered_bytes_rate
    gap = "   "
    parts.append(
        Text.assemble(
            "broker ",
            ("ready", "green") if view.ready else ("NOT READY", "bold red"),
            f"{gap}connections {_count(view.connections)}",
            f"{gap}subscriptions {_count(view.subscriptions)}",
            f"{gap}queue consumers {_count(view.consumers)}",
        )
    )
    parts.append(
        Text(
            f"publish {_per_s(view.publish_rate)}{gap}enqueue {_per_s(view.enqueue_rate)}"
            f"{gap}deliver {_per_s(view.delivery_rate)}"
            f"{gap}out {'-' if out_rate is None else _bytes(out_rate) + '/s'}"
        )
    )
    parts.append(
        Text.assemble(
            (
                f"memory {_bytes(view.memory_used)} / {_bytes(view.memory_limit)} ({mem_pct:.1%})",
                mem_style,
            ),
            f"{gap}memory refusals {_count(view.memory_refusals)}",
        )
    )
    parts.append(
        Text.assemble(
            (
                f"drops {_count(view.drops)} ({_per_s(view.drop_rate)})",
                "bold red" if view.drop_rate else "",
            ),
            f"{gap}gap records {_count(view.gap_records)}",
            gap,
            (
                f"refused connections {_count(view.refused)} ({_per_s(view.refused_rate)})",
                "yellow" if view.refused_rate else "",
            ),
        )
    )

    queues = Table(title="queues", title_justify="left", expand=False)
    for header in ("queue", "depth", "in flight", "redeliveries", "redeliv/s", "oldest"):
        queues.add_column(header, **_column(header == "queue"))
    for q in view.queues[:limit]:
        queues.add_row(
            q.name,
            _count(q.depth),
            _count(q.in_flight),
            _count(q.redeliveries),
            _per_s(q.redelivery_rate),
            _age(q.oldest_age),
        )
    _more(queues, len(view.queues) - limit)
    caches = Table(title="caches", title_justify="left", expand=False)
    for header in ("cache", "entries", "hit ratio", "gets/s"):
        caches.add_column(header, **_column(header == "cache"))
    for c in view.caches[:limit]:
        caches.add_row(c.name, _count(c.entries), _ratio(c.hit_ratio), _per_s(c.lookup_rate))
    _more(caches, len(view.caches) - limit)
    parts.extend([queues, caches])
    if view.capped:
        parts.append(
            Text(
                f"per-resource series capped by the broker for: {', '.join(view.capped)} "
                "(metrics_resource_limit): not every one is listed",
                style="yellow",
            )
        )
    return Group(*parts)


def _column(is_name: bool) -> dict[str, Any]:
    """Names wrap rather than lose their end to an ellipsis; figures align right."""
    if is_name:
        return {"justify": "left", "overflow": "fold"}
    return {"justify": "right", "no_wrap": True}


def _more(table: Any, hidden: int) -> None:
    if hidden > 0:
        table.add_row(f"... {hidden} more", *[""] * (len(table.columns) - 1))


# ------------------------------------------------------------------------------ loop


def _fetch(url: str, timeout: float, token: str | None = None) -> str:
    """GET ``url``; with ``token`` (the context's credential), as ``Authorization: Bearer``:
    a broker with authentication serves ``/metrics`` to its clients' credentials only."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(64 << 20)
    return data.decode("utf-8", errors="replace")


def _scrape(url: str, timeout: float, token: str | None = None) -> Scrape:
    return parse_scrape(_fetch(url, timeout, token), time.monotonic())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def run_top(args: argparse.Namespace) -> int:
    """``felix top``: return 0 (Ctrl-C), or 1 (rich missing; ``--once`` could not scrape)."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        print("felix: error: felix top needs rich: pip install 'felix[top]'", file=sys.stderr)
        return 1
    try:
        url = metrics_url(args.metrics)
    except ValueError as exc:
        print(f"felix: error: {exc}", file=sys.stderr)
        return 2
    as_json = getattr(args, "output", "text") == "json"
    if as_json and not args.once:
        print("felix: error: --output json needs --once (one frame)", file=sys.stderr)
        return 2
    timeout = min(args.timeout, max(args.interval, 1.0))
    token = getattr(args, "token", None)
    if args.once:
        try:
            first = _scrape(url, timeout, token)
            time.sleep(args.interval)
            second = _scrape(url, timeout, token)
        except (OSError, ValueError) as exc:
            print(f"felix: error: cannot scrape {url}: {_reason(exc)}", file=sys.stderr)
            return 1
        frame = compute_view(first, second)
        if as_json:
            print(json.dumps({"metrics": url, **dataclasses.asdict(frame)}))
        else:
            Console().print(render(frame, url, limit=args.limit))
        return 0
    prev: Scrape | None = None
    view: TopView | None = None
    try:
        with Live(render(None, url), screen=True, auto_refresh=False) as live:
            while True:
                error = None
                try:
                    cur = _scrape(url, timeout, token)
                except (OSError, ValueError) as exc:
                    error = _reason(exc)
                else:
                    view = compute_view(prev, cur)
                    prev = cur
                live.update(render(view, url, error=error, limit=args.limit), refresh=True)
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
