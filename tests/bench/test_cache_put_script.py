"""The short form of benchmarks/cache_put.py: every case runs (a compare-and-set of each
round applies) and prints its figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cache_put.py"


ARGS = ["--json", "--batches", "3", "--batch", "8", "--keys", "16", "--fill", "100"]


def test_short_run_prints_every_case() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)["cpu_us_per_call"]
    assert set(figures) == {"put", "put_ttl", "put_cas", "get"}
    assert all(us > 0 for us in figures.values()), figures
