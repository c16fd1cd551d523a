"""The distribution as a user gets it: ``python -m build`` makes an sdist and a wheel (the
wheel built from the sdist, so the sdist is complete), the wheel installs into a fresh
virtual environment, and the installed copy runs: ``felix --help``, a broker on
127.0.0.1 port 0, and a publish/subscribe round trip through the installed ``felix`` CLI.

The fresh venv gets the wheel with ``pip install --no-deps``; the run-time dependencies
(aioquic, msgpack, anyio, prometheus-client) come from this environment's site-packages
through a ``.pth`` file, so the test needs no index and takes seconds. Paths added by a
``.pth`` are not site directories, so this environment's editable ``felix`` (itself a
``.pth`` hook) stays inactive there: the test checks that every package is imported from
the fresh venv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import site
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "felix_proto",
    "felix_core",
    "felix_server",
    "felix_runtime",
    "felix_runtime_asyncio",
    "felix_runtime_anyio",
    "felix_client",
    "conformance",
]
"""The typed packages: each ships a ``py.typed`` marker."""
BUILD_TIMEOUT = 180.0
RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Dist:
    """The built artifacts and the venv the wheel is installed in."""

    wheel: Path
    sdist: Path
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def script(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the source tree must not shadow the installed copy), no FELIX_*."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FELIX_")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    (wheel,) = out.glob("felix-*.whl")
    (sdist,) = out.glob("felix-*.tar.gz")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=RUN_TIMEOUT,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=RUN_TIMEOUT,
    )
    (target,) = (venv / "lib").glob("python3*/site-packages")
    (target / "felix-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return Dist(wheel, sdist, venv)


def test_wheel_and_sdist_carry_the_project_version(dist: Dist) -> None:
    version = _project_version()
    assert dist.wheel.name == f"felix-{version}-py3-none-any.whl"
    assert dist.sdist.name == f"felix-{version}.tar.gz"


def test_wheel_ships_py_typed_and_the_conformance_vectors(dist: Dist) -> None:
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    for package in PACKAGES:
        assert f"{package}/py.typed" in names, package
    vectors = {n for n in names if n.startswith("conformance/vectors/")}
    in_tree = {f"conformance/vectors/{p.name}" for p in (ROOT / "conformance/vectors").iterdir()}
    in_tree = {n for n in in_tree if n.endswith((".json", ".md"))}
    assert in_tree, "no vectors in the source tree"
    assert in_tree <= vectors


def test_wheel_declares_the_trio_extra_the_readme_tells_users_to_install(dist: Dist) -> None:
    metadata = zipfile.ZipFile(dist.wheel).read(f"felix-{_project_version()}.dist-info/METADATA")
    lines = metadata.decode().splitlines()
    assert "Provides-Extra: trio" in lines
    assert any(re.match(r"Requires-Dist: trio\b.*extra == \"trio\"", line) for line in lines)
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[trio]'" in readme
    assert 'backend="trio"' in readme


def test_wheel_registers_the_console_scripts_and_the_pytest_plugin(dist: Dist) -> None:
    text = zipfile.ZipFile(dist.wheel).read(
        f"felix-{_project_version()}.dist-info/entry_points.txt"
    )
    lines = [line.replace(" ", "") for line in text.decode().splitlines()]
    for line in (
        "felix=felix_client.cli:main",
        "felix-broker=felix_client.cli:broker_main",
        "[pytest11]",
        "felix=felix_client.pytest_plugin",
    ):
        assert line in lines, line


def test_installed_copy_is_the_one_imported_and_knows_its_version(dist: Dist) -> None:
    code = (
        "import json, felix_client, "
        + ", ".join(PACKAGES)
        + "; print(json.dumps({'version': felix_client.__version__, 'files': {m: "
        "__import__(m).__file__ for m in " + repr(PACKAGES) + "}}))"
    )
    done = subprocess.run(
        [dist.python, "-c", code],
        cwd=str(dist.venv),
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["version"] == _project_version()
    for module, path in found["files"].items():
        assert Path(path).is_relative_to(dist.venv), (module, path)


def test_installed_cli_answers_help(dist: Dist) -> None:
    for cmd in (
        [dist.script("felix"), "--help"],
        [dist.python, "-m", "felix_client.cli", "--help"],
        [dist.script("felix-broker"), "--help"],
    ):
        done = subprocess.run(
            cmd,
            check=False,
            cwd=str(dist.venv),
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, (cmd, done.stderr)
        assert "usage:" in done.stdout


def test_installed_cli_reports_the_version(dist: Dist) -> None:
    for cmd, prog in (
        ([dist.script("felix"), "--version"], "felix"),
        ([dist.script("felix"), "broker", "--version"], "felix-broker"),
        ([dist.script("felix-broker"), "--version"], "felix-broker"),
    ):
        done = subprocess.run(
            cmd,
            check=False,
            cwd=str(dist.venv),
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, (cmd, done.stderr)
        assert done.stdout.strip() == f"{prog} {_project_version()}"


@pytest.fixture
def installed_broker(dist: Dist, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``felix broker`` of the installed copy on 127.0.0.1:0; yields (url, ca file)."""
    lines: list[str] = []
    proc = subprocess.Popen(
        [
            dist.script("felix"),
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--log-format",
            "json",
            "--shutdown-grace-s",
            "0.2",
            "--shutdown-drain-s",
            "2",
        ],
        cwd=str(tmp_path),
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
    url = ""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not url and time.monotonic() < deadline and proc.poll() is None:
        for line in list(lines):
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("msg") == "felix broker listening":
                url = f"quic://{record['quic']}"
        time.sleep(0.02)
    try:
        assert url, f"the installed broker did not start: {lines[-10:]}"
        yield url, str(tmp_path / "cert.pem")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    assert proc.returncode == 0, lines[-10:]


def test_installed_broker_and_cli_round_trip(
    dist: Dist, installed_broker: tuple[str, str], tmp_path: Path
) -> None:
    url, ca = installed_broker

    def felix(*args: str) -> str:
        done = subprocess.run(
            [dist.script("felix"), "--server", url, "--ca", ca, "--output", "json", *args],
            check=False,
            cwd=str(tmp_path),
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    felix("admin", "create", "stream", "packaged")
    felix("pub", "packaged", "from the wheel")
    (event,) = [
        json.loads(line)
        for line in felix("sub", "packaged", "--from", "earliest", "--count", "1").splitlines()
    ]
    assert event["payload"] == "from the wheel"
