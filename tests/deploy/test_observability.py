"""``deploy/grafana/felix.json`` and ``deploy/prometheus/alerts.yml`` against a live broker.

A real broker (``tests/brokers.py``) gets a stream, a queue and a cache and some traffic,
so per-resource series exist; its ``/metrics`` is scraped once. Every ``felix_*`` metric
the dashboard and the alert rules reference must be exported (a histogram's ``_bucket``,
``_sum`` and ``_count`` and a counter's ``_total`` count as its own), and every label they
select or group by must be a label of those series. The same broker shows that the
probe paths of ``deploy/kubernetes`` (``/live``, ``/ready``) are served and others are not.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from brokers import Broker, start_broker

from felix_client import Client

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "felix.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_LABELS = {"instance", "job"}
"""Labels Prometheus attaches to every scraped series (target labels)."""
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus makes itself for each target."""
SUFFIXES = ("_bucket", "_sum", "_count", "_total")
METRIC = re.compile(r"\b(felix_[a-z0-9_]+|up)\b(\{[^}]*\})?")
LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass
class Scrape:
    """The metric names a live broker exports and the label names seen on each."""

    families: set[str] = field(default_factory=set)
    """Names from ``# TYPE`` lines (also for labelled metrics with no series yet)."""
    labels: dict[str, set[str]] = field(default_factory=dict)
    """Sample name -> label names seen on its series."""
    status: dict[str, int] = field(default_factory=dict)
    """HTTP status of GET path on the metrics port."""

    def resolve(self, name: str) -> str | None:
        """The exported family ``name`` belongs to, or None."""
        if name in self.families or name in self.labels:
            return name
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in self.families:
                return name.removesuffix(suffix)
        return None


async def _exercise(broker: Broker) -> None:
    async with Client(broker.url, **broker.client_kwargs()) as client:
        await client.admin.create("stream", "orders")
        await client.admin.create("queue", "jobs")
        await client.admin.create("cache", "sessions")
        sent = await client.publish("orders", b"hello")
        assert sent is not None
        async with client.subscribe("orders", start=sent.first_offset) as sub:
            async for _ in sub:
                break
        await client.enqueue("jobs", b"one")
        await client.enqueue("jobs", b"two")
        async with client.consume("jobs") as jobs:
            async for job in jobs:
                await job.ack()
                break
        cache = client.cache("sessions")
        await cache.put("alice", b"42", ttl=60)
        await cache.get("alice")
        await cache.get("bob")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    broker = start_broker("asyncio", tmp_path_factory.mktemp("observability"))
    try:
        anyio.run(_exercise, broker)
        base = f"http://{broker.metrics_address[0]}:{broker.metrics_address[1]}"
        found = Scrape()
        for path in ("/live", "/ready", "/healthz"):
            found.status[path] = _get(base + path)[0]
        status, text = _get(base + "/metrics")
        assert status == 200
    finally:
        code = broker.stop()
    assert code == 0
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            found.families.add(line.split()[2])
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split()[0]
            keys = LABEL.findall(rest.partition("}")[0]) if rest else []
            found.labels.setdefault(name, set()).update(keys)
    yield found


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def _all_exprs() -> list[str]:
    return _dashboard_exprs() + [rule["expr"] for rule in _alert_rules()]


def test_the_probe_paths_are_served(scrape: Scrape) -> None:
    assert scrape.status == {"/live": 200, "/ready": 200, "/healthz": 404}


def test_per_resource_series_exist(scrape: Scrape) -> None:
    assert {"tenant", "namespace", "queue"} <= scrape.labels["felix_queue_depth_per_queue"]
    assert {"tenant", "namespace", "cache"} <= scrape.labels["felix_cache_entries_per_cache"]


@pytest.mark.parametrize("expr", _all_exprs(), ids=lambda expr: expr[:70])
def test_every_referenced_metric_is_exported(scrape: Scrape, expr: str) -> None:
    names = [m.group(1) for m in METRIC.finditer(expr)]
    assert names, expr
    for name in names:
        if name not in PROMETHEUS_SERIES:
            assert scrape.resolve(name), f"{name} is not on /metrics"


@pytest.mark.parametrize("expr", _all_exprs(), ids=lambda expr: expr[:70])
def test_every_referenced_label_exists(scrape: Scrape, expr: str) -> None:
    """Selector labels must be on the selected metric; grouping labels on one of the
    expression's metrics (checked where the broker has series for all of them: a labelled
    counter nothing has incremented yet has none, so its labels are unknown)."""
    seen: set[str] = set(PROMETHEUS_LABELS)
    all_series = True
    for match in METRIC.finditer(expr):
        name, selector = match.group(1), match.group(2) or ""
        if name in PROMETHEUS_SERIES:
            continue
        if name not in scrape.labels:
            all_series = False
            continue
        labels = scrape.labels[name] | PROMETHEUS_LABELS
        seen |= labels
        for label in LABEL.findall(selector):
            assert label in labels, f"{name} has no label {label!r}"
    if not all_series:
        return
    for group in GROUPING.findall(expr):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            assert label in seen | {"le"}, f"no metric of {expr!r} has label {label!r}"


def test_every_exported_family_has_help_and_the_dashboard_shows_the_main_ones(
    scrape: Scrape,
) -> None:
    text = " ".join(_dashboard_exprs())
    for family in (
        "felix_publish_records_total",
        "felix_deliveries_total",
        "felix_request_duration_seconds_bucket",
        "felix_queue_depth_per_queue",
        "felix_queue_oldest_age_seconds_per_queue",
        "felix_connections",
        "felix_memory_used_bytes",
        "felix_subscribe_dropped_total",
        "felix_cache_hits_per_cache_total",
    ):
        assert family in text, family
        assert scrape.resolve(family), family


# --------------------------------------------------------------- structure of the files


def test_dashboard_panels_are_well_formed_and_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for dx in range(pos["w"]):
            for dy in range(pos["h"]):
                cell = (pos["x"] + dx, pos["y"] + dy)
                assert cell not in cells, (panel["title"], cells.get(cell))
                cells[cell] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var == "__rate_interval", var


def test_alert_rules_are_well_formed() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        depth = 0
        for char in rule["expr"]:
            depth += {"(": 1, ")": -1}.get(char, 0)
            assert depth >= 0, rule["alert"]
        assert depth == 0, rule["alert"]
    alerts = " ".join(names)
    for topic in ("Down", "Memory", "Backlog", "InternalErrors", "Losing"):
        assert topic in alerts, topic
