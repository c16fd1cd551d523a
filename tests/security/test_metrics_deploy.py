"""The deployment's scrape set-up agrees with ``/metrics`` needing a credential: the brokers
read the scrape-only secret from the same Secret key the ServiceMonitor sends, both scrape
configurations send it as a bearer credential under the job the alert rules select, and no
annotation invites a scrape job that would send none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
BASE = ROOT / "deploy" / "kubernetes" / "base"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _broker_env() -> dict[str, Any]:
    (container,) = _load(BASE / "statefulset.yaml")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_the_brokers_and_the_service_monitor_share_the_scrape_secret() -> None:
    env = _broker_env()
    assert "FELIX_AUTH_TOKENS" in env  # authentication is on: /metrics wants a credential
    scrape_secret = env["FELIX_METRICS_TOKENS"]["valueFrom"]["secretKeyRef"]
    monitor = _load(PROMETHEUS / "servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"]["type"] == "Bearer"
    assert endpoint["authorization"]["credentials"] == scrape_secret
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "metrics"
    headless = _load(BASE / "service-headless.yaml")
    assert "metrics" in {p["name"] for p in headless["spec"]["ports"]}
    labels = headless["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {"targetLabel": "job", "replacement": "felix"} in endpoint["relabelings"]


def test_the_scrape_job_sends_a_bearer_credential_as_job_felix() -> None:
    (job,) = _load(PROMETHEUS / "scrape.yml")["scrape_configs"]
    assert job["job_name"] == "felix" and job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]
    assert 'up{job="felix"}' in (PROMETHEUS / "alerts.yml").read_text()


def test_no_annotation_invites_an_unauthenticated_scrape() -> None:
    template = _load(BASE / "statefulset.yaml")["spec"]["template"]
    annotations = template["metadata"].get("annotations") or {}
    assert "prometheus.io/scrape" not in annotations
