"""pytest fixtures for code that talks to Felix: a broker for the session and clients.

Installed with the ``felix`` distribution and registered through the ``pytest11`` entry
point (name ``felix``), so ``pip install felix`` is all a project needs; ``-p no:felix``
turns it off. Fixtures (documented in ``docs/testing.md``):

``felix_broker`` (session)
    A broker subprocess (``python -m felix_client.cli broker``) listening on a free
    127.0.0.1 port, its metrics on another, its data directory (and self-signed
    certificate) under pytest's temporary directory. It exposes ``url``, ``ca_file``,
    ``host``, ``port``, ``metrics_url`` and ``client_kwargs()``. Stopped with SIGTERM at the
    end of the session; a non-zero exit code is reported as an error.
``felix_broker_factory``
    Starts private brokers (``factory(*flags)``) for a test that needs its own settings or
    must stop one; all are stopped after the test.
``felix_client``
    An open :class:`felix_client.Client` to ``felix_broker``, for ``@pytest.mark.anyio``
    tests (asyncio or trio, through anyio's pytest plugin and its ``anyio_backend``).
``felix_blocking_client``
    An open :class:`felix_client.sync.BlockingClient` to ``felix_broker``.

Options: ``--felix-runtime`` (or the ini key ``felix_runtime``) picks the broker runtime:
``asyncio`` (default), ``anyio-asyncio`` or ``anyio-trio``. The ini key
``felix_broker_args`` adds ``felix broker`` flags (they win over the plugin's own). The ini
key ``felix_auth = true`` (or ``factory(auth=True)``) starts brokers that accept only Felix
tokens signed by a key the plugin makes: ``broker.token_for(subject, tenant=...,
permissions=...)`` signs one, and the client fixtures connect with ``token_for()`` (every
permission in tenant ``default``).

The broker is a subprocess rather than a thread so that the tests' event loop, asyncio or
trio, stays independent of the broker's, and a crash of either is seen as such. The module
imports nothing from Felix at import time: pytest loads it in every session of a project
that has ``felix`` installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from felix_client.client import Client
    from felix_client.sync import BlockingClient

__all__ = ["RUNTIMES", "FelixBroker", "start_broker"]

RUNTIMES: dict[str, tuple[str, ...]] = {
    "asyncio": ("--runtime", "asyncio"),
    "anyio-asyncio": ("--runtime", "anyio", "--backend", "asyncio"),
    "anyio-trio": ("--runtime", "anyio", "--backend", "trio"),
}
"""Runtime id -> the ``felix broker`` flags that select it."""
DEFAULT_RUNTIME = "asyncio"
START_TIMEOUT = 20.0
"""Seconds a broker may take to log ``felix broker listening``."""
STOP_TIMEOUT = 10.0
"""Seconds a broker may take to exit after SIGTERM (it is killed after that)."""
LOG_LINES_KEPT = 1000
"""The broker's most recent log lines kept for error messages (older ones are dropped)."""
_TEST_SHUTDOWN = ("--shutdown-grace-s", "0.2", "--shutdown-drain-s", "3")
"""Short graceful-shutdown timings, so that stopping a test broker takes well under 1 s."""


@dataclass
class FelixBroker:
    """A running broker subprocess."""

    runtime: str
    """``asyncio``, ``anyio-asyncio`` or ``anyio-trio``."""
    process: subprocess.Popen[bytes]
    data_dir: Path
    """Its data directory (holds ``cert.pem``)."""
    host: str = ""
    port: int = 0
    """The bound QUIC (UDP) port."""
    metrics_host: str = ""
    metrics_port: int = 0
    """The bound metrics and health (HTTP) port."""
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))
    """Its most recent JSON log lines."""
    signing_key: Path | None = None
    """Started with ``auth``: the PEM Ed25519 private key of the token issuer it trusts."""

    @property
    def url(self) -> str:
        """``quic://127.0.0.1:PORT``, for ``felix_client.Client`` and ``felix --server``."""
        return f"quic://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """The bound QUIC address, ``(host, port)``."""
        return (self.host, self.port)

    @property
    def metrics_address(self) -> tuple[str, int]:
        """The bound metrics and health address, ``(host, port)``."""
        return (self.metrics_host, self.metrics_port)

    @property
    def ca_file(self) -> str:
        """The broker's self-signed certificate: the CA file clients must trust."""
        return str(self.data_dir / "cert.pem")

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``/metrics``, ``/live``, ``/ready`` below it)."""
        return f"http://{self.metrics_host}:{self.metrics_port}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``felix_client.Client`` / ``BlockingClient`` besides the URL
        (with ``auth``, a :meth:`token_for` token of every permission in tenant ``default``)."""
        kwargs: dict[str, Any] = {"ca_file": self.ca_file, "timeout": 10.0}
        if self.signing_key is not None:
            kwargs["token"] = self.token_for()
        return kwargs

    def token_for(
        self,
        subject: str = "pytest",
        *,
        tenant: str = "default",
        permissions: tuple[str, ...] | list[str] = ("*",),
        ttl: float = 3600.0,
    ) -> str:
        """A Felix token this broker accepts: ``subject`` in ``tenant`` with
        ``permissions`` (``ACTION[:NAMESPACE/NAME]``, e.g. ``publish:default/orders``; ``*``:
        every action everywhere), valid for ``ttl`` seconds.

        Raises:
            RuntimeError: the broker was not started with ``auth``.
            ValueError: a bad tenant name or permission.
        """
        if self.signing_key is None:
            raise RuntimeError(
                "token_for needs a broker started with auth (ini felix_auth = true, or "
                "felix_broker_factory(auth=True))"
            )
        from felix_core.access import Permission
        from felix_runtime.tokens import issue_token, load_private_key

        return issue_token(
            load_private_key(self.signing_key.read_bytes()),
            subject=subject,
            tenant=tenant,
            now=time.time(),
            ttl=ttl,
            token_id=uuid.uuid4().hex,
            permissions=[Permission.parse(p) for p in permissions],
        )

    def log_messages(self) -> list[str]:
        """The ``msg`` of each kept log line."""
        return [str(line.get("msg")) for line in list(self.log)]

    def stop(self) -> int:
        """SIGTERM, wait (bounded; SIGKILL after :data:`STOP_TIMEOUT`); returns the exit code."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        return proc.returncode


def _read_log(proc: subprocess.Popen[bytes], out: deque[dict[str, Any]]) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        out.append(line if isinstance(line, dict) else {"msg": raw.decode(errors="replace")})


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("http://").split("/")[0].rpartition(":")
    return host, int(port)


def _broker_env() -> dict[str, str]:
    """The test process's environment without ``FELIX_*`` (a developer's ``FELIX_CONFIG``
    or ``FELIX_LISTEN`` must not leak into a test broker)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}


def start_broker(
    data_dir: Path,
    *flags: str,
    runtime: str = DEFAULT_RUNTIME,
    port: int = 0,
    env: dict[str, str] | None = None,
    auth: bool = False,
) -> FelixBroker:
    """Start a broker on 127.0.0.1 (free ports) with its data in ``data_dir``; wait until
    it listens.

    Args:
        data_dir: its data directory (created if missing; reused: same certificate).
        flags: extra ``felix broker`` flags; they come last, so they win.
        runtime: a key of :data:`RUNTIMES`.
        port: its QUIC port (0: a free one; a restarted broker can take its old one back).
        env: its environment (default: this process's, without ``FELIX_*``).
        auth: accept only Felix tokens, signed by a key made in ``data_dir`` (kept across
            restarts on the same directory): :meth:`FelixBroker.token_for` signs them.

    Raises:
        ValueError: unknown runtime.
        RuntimeError: it exited, or did not listen within :data:`START_TIMEOUT`.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown Felix runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    data_dir.mkdir(parents=True, exist_ok=True)
    signing_key = _issuer_key(data_dir) if auth else None
    if signing_key is not None:
        flags = ("--auth-issuer-key", str(signing_key.with_suffix(".pub")), *flags)
    cmd = [
        sys.executable,
        "-m",
        "felix_client.cli",
        "broker",
        *RUNTIMES[runtime],
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
        *_TEST_SHUTDOWN,
        *flags,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=str(data_dir),
        env=_broker_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    broker = FelixBroker(runtime, proc, data_dir, signing_key=signing_key)
    threading.Thread(target=_read_log, args=(proc, broker.log), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        for line in list(broker.log):
            if line.get("msg") == "felix broker listening":
                broker.host, broker.port = _split(str(line["quic"]))
                broker.metrics_host, broker.metrics_port = _split(str(line["health"]))
                return broker
        time.sleep(0.02)
    code = broker.stop()
    raise RuntimeError(
        f"the Felix {runtime} broker did not start (exit code {code}): "
        f"{broker.log_messages()[-20:]}"
    )


def _issuer_key(data_dir: Path) -> Path:
    """The token issuer's private key in ``data_dir`` (``test-issuer.key``, its public key
    beside it as ``test-issuer.pub``), made on first use."""
    private = data_dir / "test-issuer.key"
    if not private.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private.with_suffix(".pub").write_bytes(public)
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return private


# ------------------------------------------------------------------------ pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("felix", "Felix broker fixtures")
    group.addoption(
        "--felix-runtime",
        choices=sorted(RUNTIMES),
        default=None,
        help=f"runtime of the felix_broker fixture (ini: felix_runtime; default {DEFAULT_RUNTIME})",
    )
    parser.addini("felix_runtime", f"runtime of the felix_broker fixture ({', '.join(RUNTIMES)})")
    parser.addini("felix_broker_args", "extra `felix broker` flags for felix_broker", type="args")
    parser.addini(
        "felix_auth",
        "felix_broker accepts only tokens (broker.token_for signs them)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    _runtime(config)  # a bad runtime is a usage error at once, not one error per test


def _runtime(config: pytest.Config) -> str:
    chosen = config.getoption("felix_runtime") or config.getini("felix_runtime")
    runtime = str(chosen or DEFAULT_RUNTIME)
    if runtime not in RUNTIMES:
        raise pytest.UsageError(f"felix_runtime: unknown runtime {runtime!r}")
    return runtime


def _stop_checked(broker: FelixBroker) -> None:
    code = broker.stop()
    if code != 0:
        pytest.fail(
            f"the Felix broker exited with code {code}: {broker.log_messages()[-20:]}",
            pytrace=False,
        )


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def felix_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FelixBroker]:
    """A Felix broker on a free 127.0.0.1 port, shared by the session's tests."""
    flags = [str(arg) for arg in request.config.getini("felix_broker_args")]
    broker = start_broker(
        tmp_path_factory.mktemp("felix-broker"),
        *flags,
        runtime=_runtime(request.config),
        auth=bool(request.config.getini("felix_auth")),
    )
    yield broker
    _stop_checked(broker)


@pytest.fixture
def felix_broker_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., FelixBroker]]:
    """``factory(*flags, data_dir=None, auth=None)`` starts a private broker (the
    session's runtime and ini flags, then ``flags``; ``auth`` defaults to the ini
    ``felix_auth``); all are stopped after the test."""
    started: list[FelixBroker] = []
    base = [str(arg) for arg in request.config.getini("felix_broker_args")]

    def factory(*flags: str, data_dir: Path | None = None, auth: bool | None = None) -> FelixBroker:
        where = data_dir or tmp_path / f"felix-broker-{len(started)}"
        secured = bool(request.config.getini("felix_auth")) if auth is None else auth
        started.append(
            start_broker(where, *base, *flags, runtime=_runtime(request.config), auth=secured)
        )
        return started[-1]

    yield factory
    for broker in started:
        _stop_checked(broker)


@pytest.fixture
async def felix_client(felix_broker: FelixBroker) -> AsyncIterator[Client]:
    """An open ``felix_client.Client`` to ``felix_broker`` (for ``@pytest.mark.anyio``)."""
    from felix_client.client import Client

    async with Client(felix_broker.url, **felix_broker.client_kwargs()) as client:
        yield client


@pytest.fixture
def felix_blocking_client(felix_broker: FelixBroker) -> Iterator[BlockingClient]:
    """An open ``felix_client.sync.BlockingClient`` to ``felix_broker``."""
    from felix_client.sync import BlockingClient

    with BlockingClient(felix_broker.url, **felix_broker.client_kwargs()) as client:
        yield client
