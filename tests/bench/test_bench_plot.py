"""``felix bench plot``: PNGs from a recorded ``felix bench --json-file`` result, and a
clear refusal of a file it cannot plot.

``data/small-bench.json`` was recorded with ``felix bench all --seconds 0.3 --payload 100
--fanout 1,2 --batch 1,16 --concurrency 1 --consumers 1 --quic-engine aioquic,qh3
--no-redis --json-file ...``: both engines, latency ladders, throughput, memory.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from brokers import child_env

from felix_client.bench.plot import _ladder, main

SMALL = Path(__file__).parent / "data" / "small-bench.json"
PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and that it is not tiny."""
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert len(data) > 20_000, (path, len(data))  # axes, lines, labels: not an empty canvas
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def test_felix_bench_plot_draws_latency_throughput_and_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "felix_client.cli",
            "bench",
            "plot",
            str(SMALL),
            "--out",
            str(tmp_path / "img"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    names = ["latency.png", "throughput.png", "memory.png"]
    assert done.stdout.split() == [str(tmp_path / "img" / name) for name in names]
    for name in names:
        width, height = _png_size(tmp_path / "img" / name)
        assert width >= 400 and height >= 300, name
    # Two engines: a panel each, side by side.
    assert _png_size(tmp_path / "img" / "latency.png")[0] >= 1200


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SMALL.read_text())
    doc.update(changes)
    return doc


def test_invalid_figures_are_left_out(tmp_path: Path) -> None:
    doc = _doc()
    for figure in doc["figures"]:
        figure["valid"] = figure["scenario"] != "pubsub-throughput"
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(doc))
    assert main([str(partial), "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["latency.png", "memory.png"]


def test_a_file_with_percentiles_only_is_drawn_from_them(tmp_path: Path) -> None:
    doc = _doc()
    for figure in doc["figures"]:
        figure.pop("distribution", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert main([str(old), "--out", str(tmp_path)]) == 0
    _png_size(tmp_path / "latency.png")
    latency = next(f for f in doc["figures"] if f["scenario"] == "pubsub-latency")
    points, complete = _ladder(latency)
    assert not complete
    assert [p for p, _ in points] == [50.0, 99.0, 99.9, 100.0]
    full = next(f for f in _doc()["figures"] if f["scenario"] == "pubsub-latency")
    assert _ladder(full) == ([tuple(p) for p in full["distribution"]], True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"figures": []}', "not a felix bench JSON document"),
        ('{"felix_bench": 1, "figures": {}}', "'figures' must be a list"),
        ('{"felix_bench": 1, "figures": [{"id": "x"}]}', "'figures' must be a list"),
        (
            '{"felix_bench": 1, "figures": [{"id": "q", "scenario": "queue", "metrics": {}}]}',
            "nothing to plot",
        ),
    ],
)
def test_a_file_that_cannot_be_plotted_is_refused_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert main([str(bad), "--out", str(tmp_path / "img")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("felix bench plot: error: ") and message in err, err
    assert not list(tmp_path.glob("**/*.png"))


def test_usage_errors_exit_2() -> None:
    assert main([]) == 2
