"""The short form of benchmarks/cache_path.py: both operations are served (every request of
every round answered, no failure) and both sides' figures come out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cache_path.py"


def test_short_run_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--rounds", "3", "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    for op in ("get", "put"):
        for side in ("server", "client", "client_issue"):
            assert figures[f"{op}_c8_{side}_us"] > 0, (op, side)
