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
        "committed_batch1_64_vs_1_ratio",
        "committed_1_publisher_fsyncs_per_s",
        "committed_batch1_64_publishers_fsyncs_per_s",
        "restart_extra_s",
        "replay_records_per_s",
    ):
        assert figures[name] > 0, name
    # one publisher waits for each publish's fsync: one fsync round a publish (its last,
    # cut by the deadline, may be one more); 64 share theirs
    assert 0.5 <= figures["committed_1_publisher_publishes_per_fsync"] <= 1.0
    assert 0.5 <= figures["committed_batch1_1_publisher_publishes_per_fsync"] <= 1.0
    assert figures["committed_batch1_64_publishers_publishes_per_fsync"] > 1
    assert figures["committed_64_publishers_publishes_per_fsync"] > 1
    assert figures["restart_log_bytes"] >= 2 << 20
    assert figures["replay_records"] == figures["restart_log_records"] > 0
    assert figures["replay_record_bytes"] == figures["restart_log_bytes"]
    assert 0 < figures["replay_rss_at_open_mib"] <= figures["replay_rss_max_mib"] < 1024
    assert list(tmp_path.iterdir()) == []  # the scratch directories are removed
