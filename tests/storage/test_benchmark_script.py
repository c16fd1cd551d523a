"""The short form of benchmarks/storage.py: every figure comes out, and the replay really
reads back every record the restart measurement wrote, in a broker of bounded RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "storage.py"


def test_short_run_prints_every_figure(tmp_path: Path) -> None:
    args = ["--json", "--seconds", "0.05", "--restart-mib", "2", "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    for name in (
        "durable_vs_ephemeral_ratio",
        "committed_64_vs_1_ratio",
        "committed_64_vs_plain_fsync_ratio",
        "committed_64_publishers_12_per_pass_publishes_per_s",
        "committed_64_publishers_12_per_pass_vs_1_ratio",
        "worker_handoff_us",
        "restart_extra_s",
        "replay_records_per_s",
    ):
        assert figures[name] > 0, name
    assert figures["restart_log_bytes"] >= 2 << 20
    assert figures["replay_records"] == figures["restart_log_records"] > 0
    assert figures["replay_record_bytes"] == figures["restart_log_bytes"]
    assert 0 < figures["replay_rss_at_open_mib"] <= figures["replay_rss_max_mib"] < 1024
    assert list(tmp_path.iterdir()) == []  # the scratch directories are removed
