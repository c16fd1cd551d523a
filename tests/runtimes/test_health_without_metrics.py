"""``--metrics-enabled false`` turns off ``/metrics`` only: orchestration probes (``/live``,
``/ready``) keep answering on the same listener (issue 16). Every runtime."""

from __future__ import annotations

import urllib.error
import urllib.request

from brokers import FreshBroker


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_probes_answer_with_metrics_disabled(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--metrics-enabled", "false")
    listening = next(
        line for line in list(broker.log) if line.get("msg") == "felix broker listening"
    )
    assert listening["metrics"] == "off"
    base = str(listening["health"]).removesuffix("/ready")
    assert _status(f"{base}/live") == 200
    assert _status(f"{base}/ready") == 200
    assert _status(f"{base}/metrics") == 404


def test_metrics_and_probes_share_the_listener(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker()
    host, port = broker.metrics_address
    assert _status(f"http://{host}:{port}/metrics") == 200
    assert _status(f"http://{host}:{port}/ready") == 200
