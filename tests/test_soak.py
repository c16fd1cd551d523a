"""The soak script in its bounded form (``scripts/soak.py --seconds 3``), on both runtimes:
churn, slow subscribers under both drop policies, vanishing consumers and cache traffic,
then every ``/metrics`` gauge back to 0, the broker's RSS under its bound and a clean exit.
Run it longer by hand: ``.venv/bin/python scripts/soak.py --seconds 300``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("runtime", ["asyncio", "anyio"])
def test_soak_bounded(runtime: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--seconds",
            "3",
            "--runtime",
            runtime,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["ok"] and set(report["gauges_after"].values()) == {0}
    counts = report["counts"]
    for done in ("churn.connections", "queue.vanished", "queue.acked", "cache.ops"):
        assert counts.get(done, 0) > 0, counts
    assert counts.get("slow.drop_oldest.missed", 0) > 0, counts  # the policy did fire
