"""The short form of benchmarks/proto_request.py: every request of every round is answered
and turned into its event, and the three steps' figures come out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "proto_request.py"


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
        for step in ("issue", "server", "receive"):
            assert figures[f"{op}_c8_{step}_us"] > 0, (op, step)
