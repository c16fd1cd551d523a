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
    for name in ("get_c8_server_us", "get_c8_client_us", "put_c8_server_us", "put_c8_client_us"):
        assert figures[name] > 0, name
