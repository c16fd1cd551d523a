"""``scripts/conn_memory.py`` in its short form: rounds of QUIC connections that never say
Hello (every other one hangs up, the rest vanish and are closed by the handshake timeout),
after which the broker must hold no session, no demux entry, no engine connection, and no
more live ``QuicConnection``, ``Session`` or ``ServerConnection`` objects than before (counted
with ``gc``, not RSS). Run it long by hand to see the allocator's part:
``.venv/bin/python scripts/conn_memory.py --connections 1000 --rounds 7``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_connections_without_hello_leave_no_objects_behind() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "conn_memory.py"),
            "--connections",
            "20",
            "--rounds",
            "2",
            "--handshake-timeout",
            "0.5",
            "--check",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["problems"] == []
    for r in report["rounds"]:
        assert (r["sessions"], r["demux_cids"], r["engine_connections"]) == (0, 0, 0)
        assert r["objects"] == report["baseline"]["objects"]
