"""The examples in docs/ and examples/ run as written against every runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from brokers import Broker

ROOT = Path(__file__).resolve().parents[2]


def test_plain_loop_client_publishes(broker: Broker, name: str) -> None:
    """docs/felix-proto.md: the sans-IO client driven by a select() loop."""
    script = ROOT / "examples" / "plain_loop_client.py"
    args = [sys.executable, str(script), broker.host, str(broker.port), broker.ca_file, name]
    first = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "stored at offset 0"
    again = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    assert again.returncode == 0, again.stderr  # the stream exists now: ALREADY_EXISTS path
    assert again.stdout.strip() == "stored at offset 1"


def test_the_spec_shows_the_example_file() -> None:
    """The code block in the guide is the tested file, not a copy that can drift."""
    spec = (ROOT / "docs" / "felix-proto.md").read_text()
    body = (ROOT / "examples" / "plain_loop_client.py").read_text()
    start = body.index("def publish_once")
    end = body.index('\n\nif __name__ == "__main__":')
    assert body[start:end] in spec
