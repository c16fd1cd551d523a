"""The servers a bench run starts for itself: a broker and, next to the cache, redis-server.

The broker runs as users run it, in its own process: ``felix broker --listen 127.0.0.1:0
--metrics 127.0.0.1:0 --data-dir TMP --log-format json`` (with the runtime's flags); its
``felix broker listening`` JSON log line gives the bound address, and a reader thread keeps
its stderr drained. redis-server, when it is on ``PATH``, listens on 127.0.0.1 on a free
port with no persistence, in a temporary directory. Both are stopped with SIGTERM (SIGKILL
after a bounded wait).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import RUNTIMES

__all__ = [
    "RUNTIMES",
    "LocalBroker",
    "LocalRedis",
    "ServerFailed",
    "process_cpu_seconds",
    "process_memory",
    "redis_server_path",
    "reset_peak_memory",
]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerFailed(RuntimeError):
    """A server did not start (its last log lines are in the message)."""


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; NaN where ``/proc``
    cannot tell (not Linux, or the process is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of process ``pid`` in bytes, from ``/proc/PID/status``: its
    resident set now and at its peak; ``(0, 0)`` where ``/proc`` cannot tell."""
    rss = hwm = 0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


def reset_peak_memory(pid: int) -> bool:
    """Reset process ``pid``'s VmHWM to its current RSS (``/proc/PID/clear_refs``, Linux
    4.0+); False where that is not possible (then VmHWM is the peak of its whole life)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


@dataclass
class LocalBroker:
    """A broker subprocess this run started (use it with ``with``)."""

    runtime: str
    data_dir: Path
    quic_engine: str = "aioquic"
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    metrics_url: str = ""
    """Its ``/metrics`` (from the listening line; "" when metrics are off)."""
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ca_file(self) -> str:
        """The broker's self-signed development certificate."""
        return str(self.data_dir / "cert.pem")

    @property
    def key_file(self) -> str:
        """Its private key (the raw QUIC server uses the same pair)."""
        return str(self.data_dir / "key.pem")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        """The ``felix broker`` command line this broker runs with."""
        return [
            sys.executable,
            "-m",
            "felix_client.cli",
            "broker",
            *RUNTIMES[self.runtime],
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
            "--log-format",
            "json",
            "--quic-engine",
            self.quic_engine,
        ]

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}

    def effective_config(self) -> dict[str, Any]:
        """The broker's effective configuration: ``felix broker --print-config`` with the
        command line and environment it runs with, as TOML data.

        Raises:
            ServerFailed: the command failed or printed no TOML.
        """
        done = subprocess.run(
            [*self.command(), "--print-config"],
            cwd=str(self.data_dir),
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        try:
            config: dict[str, Any] = tomllib.loads(done.stdout.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ServerFailed(f"felix broker --print-config: {exc}") from None
        if done.returncode != 0 or "transport" not in config:
            raise ServerFailed(f"felix broker --print-config failed: {done.stderr[-500:]!r}")
        return config

    def __enter__(self) -> LocalBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            cwd=str(self.data_dir),
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_lines, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.get("msg") == "felix broker listening":
                    self.url = f"quic://{line['quic']}"
                    metrics = str(line.get("metrics", "off"))
                    self.metrics_url = metrics if metrics.startswith("http") else ""
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        _stop(self.process)
        tail = [str(line.get("msg")) for line in self.lines[-20:]]
        raise ServerFailed(f"the {self.runtime} broker did not start: {tail}")

    def _read_lines(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"msg": raw.decode(errors="replace").rstrip()}
            if isinstance(line, dict) and len(self.lines) < 10_000:
                self.lines.append(line)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            _stop(self.process)


def redis_server_path() -> str | None:
    """Where ``redis-server`` is, or None when it is not on ``PATH``."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRedis:
    """A redis-server on 127.0.0.1 for the cache comparison (use it with ``with``)."""

    executable: str
    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> LocalRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                cwd=str(self.directory),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ping():
                return self
            _stop(self.process)
        raise ServerFailed("redis-server did not answer PING on 127.0.0.1")

    def _wait_ping(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            _stop(self.process)
