"""``felix --version``, ``felix broker --version`` and ``felix-broker --version``: one version,
the installed distribution's (``felix_client.__version__``), which is pyproject's."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import felix_client
from felix_client import cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_version_is_the_distributions_and_pyprojects() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        written = tomllib.load(f)["project"]["version"]
    assert felix_client.__version__ == version("felix") == written


def test_felix_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"felix {felix_client.__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [["broker", "--version"], ["broker", "--runtime", "anyio", "--version"]],
)
def test_felix_broker_version_does_not_start_a_broker(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"felix-broker {felix_client.__version__}\n"


def test_broker_help_lists_version(capsys: pytest.CaptureFixture[str]) -> None:
    # --help goes on to the runtime's parser (which exits); only the first part is ours
    with pytest.raises(SystemExit):
        cli.broker_main(["--help"])
    assert "--version" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "prefix"), [("felix", "felix"), ("felix-broker", "felix-broker")]
)
def test_console_scripts_print_the_version(script: str, prefix: str) -> None:
    path = BIN / script
    if not path.exists():
        pytest.skip(f"{script} is not installed next to {sys.executable}")
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"{prefix} {felix_client.__version__}\n")
