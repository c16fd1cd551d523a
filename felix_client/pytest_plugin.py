"""pytest fixtures for code that talks to Felix: a broker for the session and clients.

Installed with the ``felix`` distribution and registered through the ``pytest11`` entry
point (name ``felix``), so ``pip install felix`` is all a project needs; ``-p no:felix``
turns it off. Fixtures (documented in ``docs/testing.md``):

``felix_broker`` (session)
    A broker listening on a free 127.0.0.1 port, its metrics on another, its data
    directory (and self-signed certificate) under pytest's temporary directory: a thread
    of the test process (:class:`BrokerThread`, the default) or a subprocess (``python -m
    felix_client.cli broker``). It exposes ``url``, ``address``, ``ca_file``,
    ``metrics_url``, ``client_kwargs()``, ``token_for()``, ``log`` and ``stop()`` either
    way. Stopped gracefully at the end of the session; a non-zero exit code is reported as
    an error.
``felix_test_broker``
    The shared broker with the settings of the test's ``felix`` marker
    (``@pytest.mark.felix(runtime=..., durability=..., mode=...)``): ``felix_broker`` for a
    test without one, else one started on first use per distinct set of settings.
``felix_broker_factory``
    Starts private brokers (``factory(*flags)``) for a test that needs its own settings or
    must stop one; all are stopped after the test.
``felix_client``
    An open :class:`felix_client.Client` to ``felix_test_broker``, for
    ``@pytest.mark.anyio`` tests (asyncio or trio, through anyio's pytest plugin and its
    ``anyio_backend``).
``felix_blocking_client``
    An open :class:`felix_client.sync.BlockingClient` to ``felix_test_broker``.

Options (command line, then ini key, then default): ``--felix-runtime`` /
``felix_runtime``: ``asyncio`` (default), ``anyio-asyncio`` or ``anyio-trio``;
``--felix-broker-mode`` / ``felix_broker_mode``: ``inprocess`` (default) or
``subprocess``; ``--felix-durability`` / ``felix_durability``: the durability of the
resources the brokers create when their settings do not say (``broker.durability``,
``ephemeral`` by default). The ini key ``felix_broker_args`` adds ``felix broker`` flags
(they win over the plugin's own). The ini key ``felix_auth = true`` (or
``factory(auth=True)``) starts brokers that accept only Felix tokens signed by a key the
plugin makes: ``broker.token_for(subject, tenant=..., permissions=...)`` signs one, and the
client fixtures connect with ``token_for()`` (every permission in tenant ``default``).

Either mode keeps the tests' event loop, asyncio or trio, independent of the broker's: an
in-process broker runs its runtime's own loop in its thread. A subprocess also keeps a
crash of either side apart. The module imports nothing from Felix at import time: pytest
loads it in every session of a project that has ``felix`` installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from felix_client.client import Client
    from felix_client.sync import BlockingClient
    from felix_server.config import ServerConfig

__all__ = ["DURABILITIES", "MODES", "RUNTIMES", "BrokerThread", "FelixBroker", "start_broker"]

RUNTIMES: dict[str, tuple[str, ...]] = {
    "asyncio": ("--runtime", "asyncio"),
    "anyio-asyncio": ("--runtime", "anyio", "--backend", "asyncio"),
    "anyio-trio": ("--runtime", "anyio", "--backend", "trio"),
}
"""Runtime id -> the ``felix broker`` flags that select it."""
DEFAULT_RUNTIME = "asyncio"
MODES = ("inprocess", "subprocess")
"""Where a broker runs: a thread of the test process, or a ``felix broker`` subprocess."""
DEFAULT_MODE = "inprocess"
DURABILITIES = ("ephemeral", "durable")
"""The durability a broker gives the resources it creates (``broker.durability``)."""
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
    """A running broker: a subprocess (``process``) or a thread of this process
    (``thread``); the rest of its surface is the same either way."""

    runtime: str
    """``asyncio``, ``anyio-asyncio`` or ``anyio-trio``."""
    process: subprocess.Popen[bytes] | None
    """The broker subprocess (None for an in-process broker)."""
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
    thread: BrokerThread | None = None
    """The in-process broker's thread (None for a subprocess)."""

    @property
    def mode(self) -> str:
        """``inprocess`` or ``subprocess``."""
        return "inprocess" if self.thread is not None else "subprocess"

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
        """Graceful shutdown (a subprocess: SIGTERM), waited for (bounded: a subprocess is
        killed after :data:`STOP_TIMEOUT`, an in-process broker that has not stopped by then
        is reported with code 1); returns the exit code (0: a clean shutdown)."""
        if self.thread is not None:
            return self.thread.stop()
        proc = self.process
        assert proc is not None
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
    env: Mapping[str, str] | None = None,
    auth: bool = False,
    mode: str = DEFAULT_MODE,
    durability: str | None = None,
) -> FelixBroker:
    """Start a broker on 127.0.0.1 (free ports) with its data in ``data_dir``; wait until
    it listens.

    Args:
        data_dir: its data directory (created if missing; reused: same certificate).
        flags: extra ``felix broker`` flags; they come last, so they win.
        runtime: a key of :data:`RUNTIMES`.
        port: its QUIC port (0: a free one; a restarted broker can take its old one back).
        env: the environment its settings are read from (default: this process's, without
            ``FELIX_*``); a subprocess's whole environment.
        auth: accept only Felix tokens, signed by a key made in ``data_dir`` (kept across
            restarts on the same directory): :meth:`FelixBroker.token_for` signs them.
        mode: ``inprocess`` (a thread of this process with its own event loop) or
            ``subprocess`` (``python -m felix_client.cli broker``).
        durability: the durability of the resources it creates when their settings do not
            say (``broker.durability``: ``ephemeral`` or ``durable``); None: the broker's
            default (``ephemeral``).

    Raises:
        ValueError: unknown runtime, mode or durability.
        RuntimeError: it exited, or did not listen within :data:`START_TIMEOUT`.
    """
    for name, value, known in (
        ("runtime", runtime, RUNTIMES),
        ("mode", mode, MODES),
        ("durability", durability or DURABILITIES[0], DURABILITIES),
    ):
        if value not in known:
            raise ValueError(f"unknown Felix {name} {value!r} (one of {', '.join(known)})")
    data_dir.mkdir(parents=True, exist_ok=True)
    signing_key = _issuer_key(data_dir) if auth else None
    if signing_key is not None:
        flags = ("--auth-issuer-key", str(signing_key.with_suffix(".pub")), *flags)
    if durability is not None:
        flags = ("--set", f"broker.durability={durability}", *flags)
    args = [
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
    environ = _broker_env() if env is None else dict(env)
    broker = FelixBroker(runtime, None, data_dir, signing_key=signing_key)
    if mode == "inprocess":
        broker.thread = BrokerThread(runtime, args, environ, broker.log)
        alive = broker.thread.is_alive
    else:
        proc = broker.process = subprocess.Popen(
            [sys.executable, "-m", "felix_client.cli", "broker", *RUNTIMES[runtime], *args],
            cwd=str(data_dir),
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=_read_log, args=(proc, broker.log), daemon=True).start()

        def alive() -> bool:
            return proc.poll() is None

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and alive():
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


class BrokerThread:
    """A broker in a thread of this process, on an event loop of its own (asyncio, or
    anyio on asyncio or trio).

    It runs the runtime's own ``run(config, stop)`` with the settings loaded as the
    ``felix broker`` command loads them (:func:`felix_runtime.process.load_broker_config`)
    and the same exit codes (:func:`felix_runtime.process.run_broker`); given ``stop``, the
    runtime installs no signal handler (only the main thread may). It leaves the test
    process's logging configuration alone: its ``felix`` log records (which still reach
    pytest's log capture) are also kept, as dicts like the JSON log lines of a subprocess,
    in ``log``.

    Args:
        runtime: a key of :data:`RUNTIMES`.
        args: ``felix broker`` flags (without the runtime's).
        env: the environment its settings are read from (``FELIX_*``).
        log: where its log lines go.
    """

    def __init__(
        self, runtime: str, args: list[str], env: Mapping[str, str], log: deque[dict[str, Any]]
    ) -> None:
        self.runtime = runtime
        self.code: int | None = None
        """The exit code, once the thread has ended."""
        self._args = args
        self._env = env
        self._log = log
        self._lock = threading.Lock()
        self._stopper: Callable[[], object] | None = None
        self._stop_requested = False
        self._thread = threading.Thread(
            target=self._main, name=f"felix-broker-{runtime}", daemon=True
        )
        _THREAD_LOG.install()
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the broker's thread still runs."""
        return self._thread.is_alive()

    def stop(self) -> int:
        """Ask for a graceful shutdown and join the thread (at most :data:`STOP_TIMEOUT`
        seconds); returns the exit code (1 if it has not stopped by then)."""
        with self._lock:
            self._stop_requested = True
            stopper = self._stopper
        if stopper is not None:
            with contextlib.suppress(RuntimeError):  # its loop has just ended
                stopper()
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._log.append({"level": "error", "msg": f"not stopped after {STOP_TIMEOUT} s"})
            return 1
        assert self.code is not None
        return self.code

    def _main(self) -> None:
        from felix_runtime.process import load_broker_config, run_broker
        from felix_server.config import ConfigError

        _THREAD_LOG.route(self._log)
        try:
            config, _ = load_broker_config(self._args, self._env, prog="felix broker")
            self.code = run_broker(config, self._run)
        except ConfigError as exc:  # as the command: exit code 2
            self._log.append({"level": "error", "msg": f"felix-broker: {exc}"})
            self.code = 2
        except SystemExit as exc:  # a flag argparse refuses
            self._log.append({"level": "error", "msg": f"felix-broker: bad flags {self._args}"})
            self.code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # a crash is an exit code, as for a subprocess
            self._log.append({"level": "error", "msg": f"broker thread crashed: {exc!r}"})
            self.code = 1
        finally:
            _THREAD_LOG.unroute()
            with self._lock:
                self._stopper = None

    def _run(self, config: ServerConfig) -> int:
        if self.runtime == "asyncio":
            import asyncio

            from felix_runtime_asyncio.app import run

            async def serve() -> int:
                stop = asyncio.Event()
                self._stop_with(stop.set)
                return await run(config, stop)

            return asyncio.run(serve())
        import anyio

        from felix_runtime_anyio.app import run as run_anyio

        async def serve_anyio() -> int:
            stop = anyio.Event()
            self._stop_with(stop.set)
            return await run_anyio(config, stop)

        return anyio.run(serve_anyio, backend=self.runtime.removeprefix("anyio-"))

    def _stop_with(self, set_stop: Callable[[], object]) -> None:
        """Called on the broker's loop: from now on :meth:`stop` calls ``set_stop`` there,
        through the loop's thread-safe, non-blocking entry (asyncio's
        ``call_soon_threadsafe``, trio's ``run_sync_soon``)."""
        import sniffio

        if sniffio.current_async_library() == "trio":
            import trio

            soon: Callable[..., object] = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            import asyncio

            soon = asyncio.get_running_loop().call_soon_threadsafe
        with self._lock:
            self._stopper = lambda: soon(set_stop)
            early = self._stop_requested
        if early:
            set_stop()


class _ThreadLog(logging.Handler):
    """Hands each ``felix`` log record made in an in-process broker's thread to that
    broker's ``log``, as the dict a JSON log line of a subprocess broker would be."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._routes: dict[int, deque[dict[str, Any]]] = {}

    def install(self) -> None:
        """Attach to the ``felix`` logger (again, if the test process's logging was
        reconfigured since) and let its info records through."""
        felix = logging.getLogger("felix")
        if self not in felix.handlers:
            felix.addHandler(self)
        if felix.getEffectiveLevel() > logging.INFO:
            felix.setLevel(logging.INFO)

    def route(self, out: deque[dict[str, Any]]) -> None:
        """Send the calling thread's records to ``out``."""
        self._routes[threading.get_ident()] = out

    def unroute(self) -> None:
        self._routes.pop(threading.get_ident(), None)

    def emit(self, record: logging.LogRecord) -> None:
        out = self._routes.get(record.thread or 0)
        if out is None:
            return
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(
                {k: v if isinstance(v, int | float | bool) else str(v) for k, v in fields.items()}
            )
        out.append(line)


_THREAD_LOG = _ThreadLog()


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
    group.addoption(
        "--felix-broker-mode",
        choices=MODES,
        default=None,
        help=f"where the brokers run (ini: felix_broker_mode; default {DEFAULT_MODE})",
    )
    group.addoption(
        "--felix-durability",
        choices=DURABILITIES,
        default=None,
        help="durability of the resources the brokers create when their settings do not "
        "say (ini: felix_durability; default ephemeral)",
    )
    parser.addini("felix_runtime", f"runtime of the felix_broker fixture ({', '.join(RUNTIMES)})")
    parser.addini("felix_broker_mode", f"where the brokers run ({', '.join(MODES)})")
    parser.addini(
        "felix_durability", f"default durability of resources ({', '.join(DURABILITIES)})"
    )
    parser.addini("felix_broker_args", "extra `felix broker` flags for felix_broker", type="args")
    parser.addini(
        "felix_auth",
        "felix_broker accepts only tokens (broker.token_for signs them)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "felix(runtime=None, durability=None, mode=None): the broker settings of the test's "
        "felix_test_broker, felix_client, felix_blocking_client and felix_broker_factory",
    )
    _defaults(config)  # a bad setting is a usage error at once, not one error per test


@dataclass(frozen=True)
class _Settings:
    """What a test broker is: its runtime, where it runs, its resources' durability."""

    runtime: str
    mode: str
    durability: str


_CHOICES = {"runtime": tuple(RUNTIMES), "mode": MODES, "durability": DURABILITIES}
_OPTIONS = {
    "runtime": ("felix_runtime", "felix_runtime", DEFAULT_RUNTIME),
    "mode": ("felix_broker_mode", "felix_broker_mode", DEFAULT_MODE),
    "durability": ("felix_durability", "felix_durability", DURABILITIES[0]),
}
"""Setting -> (option dest, ini key, default)."""


def _defaults(config: pytest.Config) -> _Settings:
    """The session's settings: command line, then ini file, then the defaults."""
    chosen: dict[str, str] = {}
    for name, (dest, ini, default) in _OPTIONS.items():
        value = str(config.getoption(dest) or config.getini(ini) or default)
        if value not in _CHOICES[name]:
            raise pytest.UsageError(f"{ini}: unknown {name} {value!r}")
        chosen[name] = value
    return _Settings(**chosen)


def _marked(node: pytest.Item | pytest.Collector, config: pytest.Config) -> _Settings:
    """The session's settings, overridden by the node's closest ``felix`` marker."""
    settings = _defaults(config)
    marker = node.get_closest_marker("felix")
    if marker is None:
        return settings
    if marker.args or not set(marker.kwargs) <= set(_CHOICES):
        pytest.fail(f"felix marker: keywords {', '.join(_CHOICES)} only", pytrace=False)
    for name, value in marker.kwargs.items():
        if value not in _CHOICES[name]:
            pytest.fail(f"felix marker: unknown {name} {value!r}", pytrace=False)
    return _Settings(**{**settings.__dict__, **marker.kwargs})


def _stop_checked(broker: FelixBroker) -> None:
    code = broker.stop()
    if code != 0:
        pytest.fail(
            f"the Felix broker exited with code {code}: {broker.log_messages()[-20:]}",
            pytrace=False,
        )


class _SessionBrokers:
    """The session's shared brokers, one per distinct :class:`_Settings`, started on first
    use and stopped at the end of the session."""

    def __init__(self, config: pytest.Config, tmp: pytest.TempPathFactory) -> None:
        self._config = config
        self._tmp = tmp
        self._brokers: dict[_Settings, FelixBroker] = {}

    def get(self, settings: _Settings) -> FelixBroker:
        if settings not in self._brokers:
            config = self._config
            self._brokers[settings] = start_broker(
                self._tmp.mktemp("felix-broker"),
                *[str(arg) for arg in config.getini("felix_broker_args")],
                runtime=settings.runtime,
                auth=bool(config.getini("felix_auth")),
                mode=settings.mode,
                durability=settings.durability,
            )
        return self._brokers[settings]

    def stop(self) -> None:
        brokers, self._brokers = list(self._brokers.values()), {}
        for broker in brokers:
            _stop_checked(broker)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _felix_session_brokers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_SessionBrokers]:
    brokers = _SessionBrokers(request.config, tmp_path_factory)
    yield brokers
    brokers.stop()


@pytest.fixture(scope="session")
def felix_broker(
    request: pytest.FixtureRequest, _felix_session_brokers: _SessionBrokers
) -> FelixBroker:
    """A Felix broker on a free 127.0.0.1 port, shared by the session's tests (the
    settings of the command line and ini file)."""
    return _felix_session_brokers.get(_defaults(request.config))


@pytest.fixture
def felix_test_broker(
    request: pytest.FixtureRequest, _felix_session_brokers: _SessionBrokers
) -> FelixBroker:
    """The shared broker with the settings of the test's ``felix`` marker (``felix_broker``
    itself for a test without one); the client fixtures connect to it."""
    return _felix_session_brokers.get(_marked(request.node, request.config))


@pytest.fixture
def felix_broker_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., FelixBroker]]:
    """``factory(*flags, data_dir=None, auth=None)`` starts a private broker (the
    session's settings and the test's ``felix`` marker, the ini flags, then ``flags``;
    ``auth`` defaults to the ini ``felix_auth``); all are stopped after the test."""
    started: list[FelixBroker] = []
    base = [str(arg) for arg in request.config.getini("felix_broker_args")]
    settings = _marked(request.node, request.config)

    def factory(*flags: str, data_dir: Path | None = None, auth: bool | None = None) -> FelixBroker:
        where = data_dir or tmp_path / f"felix-broker-{len(started)}"
        secured = bool(request.config.getini("felix_auth")) if auth is None else auth
        started.append(
            start_broker(
                where,
                *base,
                *flags,
                runtime=settings.runtime,
                auth=secured,
                mode=settings.mode,
                durability=settings.durability,
            )
        )
        return started[-1]

    yield factory
    for broker in started:
        _stop_checked(broker)


@pytest.fixture
async def felix_client(felix_test_broker: FelixBroker) -> AsyncIterator[Client]:
    """An open ``felix_client.Client`` to ``felix_test_broker`` (for ``@pytest.mark.anyio``)."""
    from felix_client.client import Client

    async with Client(felix_test_broker.url, **felix_test_broker.client_kwargs()) as client:
        yield client


@pytest.fixture
def felix_blocking_client(felix_test_broker: FelixBroker) -> Iterator[BlockingClient]:
    """An open ``felix_client.sync.BlockingClient`` to ``felix_test_broker``."""
    from felix_client.sync import BlockingClient

    with BlockingClient(felix_test_broker.url, **felix_test_broker.client_kwargs()) as client:
        yield client
