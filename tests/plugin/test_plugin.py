"""The ``felix`` pytest plugin (``felix_client/pytest_plugin.py``, docs/testing.md), as a
user gets it: each test runs pytest in a subprocess, in a directory of its own with no
conftest, so only the ``pytest11`` entry point can bring the fixtures in.

``examples/test_with_felix.py`` is run as it is, so the documented example stays true.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "test_with_felix.py"
TIMEOUT = 120.0


def _pytest(where: Path, *args: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    """Run pytest in ``where`` (with a ``pytest.ini`` holding ``ini``), as a user would."""
    (where / "pytest.ini").write_text("[pytest]\n" + ini)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        check=False,
        cwd=str(where),
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("felix") == "felix_client.pytest_plugin", (
        "the pytest11 entry point is missing: reinstall (pip install -e '.[test]')"
    )


@pytest.mark.parametrize(
    ("runtime", "mode"), [("asyncio", "inprocess"), ("anyio-trio", "subprocess")]
)
def test_the_documented_example_passes(tmp_path: Path, runtime: str, mode: str) -> None:
    shutil.copy(EXAMPLE, tmp_path)
    done = _pytest(tmp_path, EXAMPLE.name, "--felix-runtime", runtime, "--felix-broker-mode", mode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout


RUNTIME_CHECK = """
import json, urllib.request

def test_runtime(felix_broker, tmp_path_factory):
    assert felix_broker.runtime == "anyio-trio"
    listening = [l for l in felix_broker.log if l.get("msg") == "felix broker listening"]
    assert listening[0]["runtime"] == "anyio/trio"
    assert felix_broker.url == f"quic://127.0.0.1:{felix_broker.port}"
    assert felix_broker.data_dir.is_relative_to(tmp_path_factory.getbasetemp())
    with urllib.request.urlopen(felix_broker.metrics_url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    # felix_broker_args reached the broker:
    assert "felix_memory_limit_bytes 3.3554432e+07" in text

def test_factory(felix_broker_factory, felix_broker):
    private = felix_broker_factory("--server-id", "private-one")
    assert private.port != felix_broker.port
    assert private.runtime == "anyio-trio"
    assert private.stop() == 0
"""


def test_runtime_and_broker_args_come_from_the_ini_file(tmp_path: Path) -> None:
    (tmp_path / "test_runtime.py").write_text(RUNTIME_CHECK)
    ini = "felix_runtime = anyio-trio\nfelix_broker_args = --broker-memory-limit-bytes 32MiB\n"
    done = _pytest(tmp_path, ini=ini)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_an_unknown_runtime_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    done = _pytest(tmp_path, ini="felix_runtime = nope\n")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "felix_runtime: unknown runtime 'nope'" in done.stderr


def test_a_broker_that_cannot_start_fails_the_test_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text("def test_broken(felix_broker):\n    pass\n")
    done = _pytest(tmp_path, ini="felix_broker_args = --transport-max-datagram-size 5\n")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED
    assert "did not start (exit code 2)" in done.stdout
