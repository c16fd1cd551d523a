"""Start a broker of any runtime as a subprocess on 127.0.0.1 (port 0) and stop it.

Shared by every test directory: ``tests/conftest.py`` builds the session's ``broker``
fixture (one broker process per runtime) and ``fresh_broker`` on top of it.

The broker runs through the ``felix broker`` entry point (``felix_client.cli.broker_main``)
with ``--runtime`` / ``--backend``, so the CLI dispatch is exercised too. It logs JSON lines
on stderr; a reader thread keeps the pipe drained and :func:`start_broker` waits (bounded)
for the ``felix broker listening`` line, which carries the bound QUIC and metrics
addresses. A subprocess (rather than a thread) keeps the test's own event loop, asyncio or
trio, independent of the broker's, and gives a real exit code and real signals.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 15.0
"""Seconds a broker may take to print its listening line."""
STOP_TIMEOUT = 10.0
"""Seconds a broker may take to exit after SIGTERM (before SIGKILL)."""

RUNTIMES: dict[str, list[str]] = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio-asyncio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-trio": ["--runtime", "anyio", "--backend", "trio"],
    "asyncio-qh3": ["--runtime", "asyncio", "--quic-engine", "qh3"],
}
"""Runtime id -> the ``felix broker`` flags that select it (``asyncio-qh3``: the asyncio
runtime on the qh3 QUIC engine)."""
DEFAULT_RUNTIMES = ("asyncio", "anyio-asyncio", "anyio-trio")
"""What the end-to-end tests run against by default. ``FELIX_TEST_RUNTIMES=asyncio-qh3``
runs the whole end-to-end suite against a qh3 broker (``make test`` covers qh3 with
``tests/client/test_client_engines_e2e.py`` and the conformance suite instead)."""


_unique_names = itertools.count()


def unique_name(prefix: str) -> str:
    """A resource name no other test of the session uses: one counter for every module,
    because the brokers are shared by the whole session."""
    return f"{prefix}-{os.getpid()}-{next(_unique_names)}"


def selected_runtimes() -> list[str]:
    """The runtimes the end-to-end tests run against: :data:`DEFAULT_RUNTIMES`, or the
    comma-separated ids of :data:`RUNTIMES` in ``FELIX_TEST_RUNTIMES``."""
    chosen = os.environ.get("FELIX_TEST_RUNTIMES", "").replace(" ", "")
    if not chosen:
        return list(DEFAULT_RUNTIMES)
    unknown = set(chosen.split(",")) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"FELIX_TEST_RUNTIMES: unknown runtime(s) {sorted(unknown)}")
    return [r for r in RUNTIMES if r in chosen.split(",")]


_NO_CONTEXTS = tempfile.mkdtemp(prefix="felix-test-config-")
"""``FELIX_CONFIG_DIR`` of every felix the tests start: empty, outside the repository."""

ENTRY = "import sys; from felix_client.cli import broker_main; sys.exit(broker_main(sys.argv[1:]))"


@dataclass
class Broker:
    """A running broker subprocess."""

    runtime: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    """Every JSON log line so far (appended by the reader thread)."""
    host: str = ""
    port: int = 0
    metrics: tuple[str, int] = ("", 0)

    @property
    def url(self) -> str:
        """``quic://127.0.0.1:PORT``."""
        return f"quic://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """The bound QUIC address."""
        return (self.host, self.port)

    @property
    def ca_file(self) -> str:
        """The broker's self-signed certificate."""
        return str(self.data_dir / "cert.pem")

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``felix_client.Client`` (besides the URL)."""
        return {"ca_file": self.ca_file, "timeout": 5.0}

    def log_messages(self) -> list[str]:
        """The ``msg`` of every log line so far."""
        return [str(line.get("msg")) for line in list(self.lines)]

    def terminate(self) -> int:
        """SIGTERM, wait (bounded; SIGKILL after), return the exit code."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode


FreshBroker = Callable[..., Broker]
"""The ``fresh_broker`` fixture: ``fresh_broker(*flags, port=0, data_dir=None) -> Broker``."""


def child_env() -> dict[str, str]:
    """The environment for a broker: the repository on ``PYTHONPATH``, no ``FELIX_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
    # No CLI context of the developer's (~/.config/felix) may leak into a test's felix: an
    # empty directory of this test process (a test that writes contexts sets its own).
    env["FELIX_CONFIG_DIR"] = _NO_CONTEXTS
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _read_lines(proc: subprocess.Popen[bytes], out: list[dict[str, Any]]) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append({"msg": raw.decode(errors="replace").rstrip()})


def start_broker(runtime: str, data_dir: Path, *extra: str, port: int = 0) -> Broker:
    """Start a ``runtime`` broker with its data in ``data_dir``; wait until it listens.

    ``port`` is the QUIC port (0: any free one); ``extra`` flags come last, so they win.

    Raises:
        RuntimeError: it exited or did not listen within :data:`START_TIMEOUT`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        *RUNTIMES[runtime],
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
        "--shutdown-grace-s",
        "0.5",
        "--shutdown-drain-s",
        "3",
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=str(data_dir),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    broker = Broker(runtime, proc, data_dir)
    threading.Thread(target=_read_lines, args=(proc, broker.lines), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in list(broker.lines):
            if line.get("msg") == "felix broker listening":
                host, _, port = str(line["quic"]).rpartition(":")
                broker.host, broker.port = host, int(port)
                # the HTTP listener (health, and metrics unless disabled)
                metrics = str(line["health"]).removeprefix("http://").split("/")[0]
                mhost, _, mport = metrics.rpartition(":")
                broker.metrics = (mhost, int(mport))
                return broker
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    broker.terminate()
    raise RuntimeError(f"{runtime} broker did not start: {broker.log_messages()[-20:]}")
