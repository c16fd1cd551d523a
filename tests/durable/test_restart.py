"""A broker restarted on the same data directory keeps what it acknowledged (issue 10), on
every runtime, driven as a user drives it: ``felix`` commands against a real broker
subprocess.

* resource definitions survive, whatever their durability (``felix admin list``);
* a durable stream's records published with ``--ack committed`` are all there, with their
  offsets, content and order, when a subscriber reads from the earliest offset;
* an ephemeral stream is there, empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from brokers import Broker, child_env, selected_runtimes, start_broker

TIMEOUT = 20


def metrics(broker: Broker) -> dict[str, float]:
    """Every sample of ``/metrics`` without labels, by name."""
    host, port = broker.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        page = reply.read().decode()
    return {m[0]: float(m[1]) for m in re.findall(r"^(felix_\w+) (\S+)$", page, re.M)}


def felix(broker: Broker, *args: str, stdin: str | None = None) -> str:
    script = shutil.which("felix", path=os.path.dirname(sys.executable))
    cmd = [script] if script else [sys.executable, "-m", "felix_client.cli"]
    done = subprocess.run(
        [*cmd, "--server", broker.url, "--ca", broker.ca_file, *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.parametrize("runtime", selected_runtimes())
def test_a_restart_keeps_definitions_and_committed_records(runtime: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_broker(runtime, data)
    try:
        felix(broker, "admin", "create", "stream", "orders", "--set", "durability=durable")
        felix(broker, "admin", "create", "stream", "scratch")
        felix(broker, "admin", "create", "queue", "jobs", "--set", "max_attempts=3")
        lines = "".join(f"order-{i}\n" for i in range(20))
        felix(broker, "pub", "orders", "--ack", "committed", stdin=lines)
        felix(broker, "pub", "scratch", "gone")
        described = json.loads(felix(broker, "admin", "describe", "stream", "orders", "-o", "json"))
        figures = metrics(broker)
        assert figures["felix_storage_logs"] == 1  # the durable stream's
        assert figures["felix_storage_appends_total"] >= 1
        assert figures["felix_storage_append_duration_seconds_count"] >= 1
        assert figures["felix_storage_sync_duration_seconds_count"] >= 1
        assert figures["felix_storage_syncs_total"] >= 1
        assert figures["felix_storage_unsynced_bytes"] == 0  # committed: fsynced
    finally:
        assert broker.stop() == 0
    assert any(m == "storage: resource definitions and durable logs" for m in broker.log_messages())

    again = start_broker(runtime, data)
    try:
        assert felix(again, "admin", "list", "stream").splitlines() == ["orders", "scratch"]
        assert felix(again, "admin", "list", "queue").splitlines() == ["jobs"]
        after = json.loads(felix(again, "admin", "describe", "stream", "orders", "-o", "json"))
        assert after["settings"] == described["settings"]
        assert after["uid"] == described["uid"]
        out = felix(again, "sub", "orders", "--from", "earliest", "--count", "20", "-o", "json")
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["offset"] for e in events] == list(range(20))
        assert [e["payload"] for e in events] == [f"order-{i}" for i in range(20)]
        stats = json.loads(felix(again, "admin", "describe", "stream", "scratch", "-o", "json"))
        assert stats["stats"]["next_offset"] == 0  # ephemeral: the definition only
        assert metrics(again)["felix_storage_recovery_duration_seconds"] > 0
    finally:
        assert again.stop() == 0
