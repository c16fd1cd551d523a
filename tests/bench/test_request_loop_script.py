"""The short form of benchmarks/request_loop.py: against the broker it starts, the client's
requests are counted (every figure comes out, and a request costs at least one loop
iteration and one datagram read at concurrency 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "request_loop.py"


def test_short_run_counts_the_client_loop() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--seconds", "0.2", "--concurrency", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)["c=1"]
    assert figures["requests_per_s"] > 0
    assert figures["loop_iterations_per_request"] >= 1
    assert figures["datagrams_read_per_request"] >= 1
    assert figures["datagrams_sent_per_request"] >= 1
