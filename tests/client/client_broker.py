"""A real broker for end-to-end client tests: a subprocess on 127.0.0.1 and a free port.

It is started once per test session (``felix_runtime_asyncio.main`` in a fresh interpreter,
in-memory, a self-signed certificate in a temporary data directory) and stopped with SIGTERM.
Tests are skipped when the runtime has no ``main`` yet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class RunningBroker:
    """Where the test broker listens and how to trust it."""

    url: str
    ca_file: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the metrics endpoint)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runtime_available() -> bool:
    """Whether the selected runtime has a ``main``."""
    import importlib

    module = RUNTIMES[os.environ.get("FELIX_TEST_BROKER", "asyncio")][0]
    try:
        runtime = importlib.import_module(module)
    except ImportError:  # pragma: no cover
        return False
    return callable(getattr(runtime, "main", None))


def env_with_path() -> dict[str, str]:
    """The environment for child processes: the repository on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("FELIX_SERVER", None)
    return env


def _wait_ready(url: str, ca_file: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll with a real client handshake until the broker answers (bounded)."""
    import anyio

    from felix_client import Client, FelixError

    async def probe() -> bool:
        try:
            async with Client(url, ca_file=ca_file, timeout=1.0):
                return True
        except FelixError:
            return False

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = (Path(ca_file).parent / "broker.log").read_text(errors="replace")
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{out[-3000:]}")
        if Path(ca_file).exists() and anyio.run(probe):
            return
        time.sleep(0.1)
    raise RuntimeError("broker did not become ready in time")


RUNTIMES = {
    "asyncio": ("felix_runtime_asyncio", ()),
    "anyio-asyncio": ("felix_runtime_anyio", ("--backend", "asyncio")),
    "anyio-trio": ("felix_runtime_anyio", ("--backend", "trio")),
}
"""Broker runtimes by the name ``FELIX_TEST_BROKER`` selects (default ``asyncio``)."""


def start_broker(data_dir: Path, *extra: str, port: int | None = None) -> RunningBroker:
    """Start a broker subprocess (on ``port``, or a free one) and wait until it serves."""
    port = port or free_udp_port()
    module, runtime_args = RUNTIMES[os.environ.get("FELIX_TEST_BROKER", "asyncio")]
    cmd = [
        sys.executable, "-c",
        f"import sys, {module} as r; sys.exit(r.main(sys.argv[1:]))", *runtime_args,
        "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{free_tcp_port()}",
        "--data-dir", str(data_dir), *extra,
    ]  # fmt: skip
    with open(data_dir / "broker.log", "wb") as log:  # a pipe nobody reads could fill up
        proc = subprocess.Popen(
            cmd, cwd=str(data_dir), env=env_with_path(), stdout=log, stderr=subprocess.STDOUT
        )
    broker = RunningBroker(f"quic://127.0.0.1:{port}", str(data_dir / "cert.pem"), data_dir, proc)
    try:
        _wait_ready(broker.url, broker.ca_file, proc)
    except BaseException:
        stop_broker(broker)
        raise
    return broker


def stop_broker(broker: RunningBroker) -> int | None:
    """SIGTERM, then SIGKILL after a bounded wait. Returns the exit code."""
    proc = broker.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
