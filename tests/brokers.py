"""Start a broker of any runtime as a subprocess on 127.0.0.1 (port 0) and stop it.

Shared by every test directory: ``tests/conftest.py`` builds the session's ``broker``
fixture (one broker process per runtime) and ``fresh_broker`` on top of it.

Brokers start through the project's own pytest plugin (``felix_client.pytest_plugin``:
``python -m felix_client.cli broker`` with ``--runtime`` / ``--backend``, JSON log lines on
stderr read by a thread, a bounded wait for the ``felix broker listening`` line). This module
adds the suite's runtime ids (the qh3 engine among them), an environment without the
developer's CLI contexts, and a longer shutdown grace that the shutdown tests rely on.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from felix_client.pytest_plugin import FelixBroker
from felix_client.pytest_plugin import start_broker as plugin_start_broker

ROOT = Path(__file__).resolve().parents[1]
SHUTDOWN = ("--shutdown-grace-s", "0.5", "--shutdown-drain-s", "3")
"""The graceful-shutdown timings of every test broker."""

RUNTIMES: dict[str, list[str]] = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio-asyncio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-trio": ["--runtime", "anyio", "--backend", "trio"],
    "asyncio-qh3": ["--runtime", "asyncio", "--quic-engine", "qh3"],
    "asyncio-uvloop": ["--runtime", "asyncio", "--loop", "uvloop"],
    "anyio-uvloop": ["--runtime", "anyio", "--backend", "asyncio", "--loop", "uvloop"],
}
"""Runtime id -> the ``felix broker`` flags that select it (``asyncio-qh3``: the asyncio
runtime on the qh3 QUIC engine; ``*-uvloop``: on uvloop's event loop)."""
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


Broker = FelixBroker
"""A running broker subprocess: the pytest plugin's (``felix_client.pytest_plugin``), so
the suite starts brokers exactly as the plugin's users do."""


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


def start_broker(runtime: str, data_dir: Path, *extra: str, port: int = 0) -> Broker:
    """Start a ``runtime`` broker (a key of :data:`RUNTIMES`) with its data in
    ``data_dir`` and wait until it listens, through the plugin's ``start_broker``.

    ``port`` is the QUIC port (0: any free one); ``extra`` flags come last, so they win.

    Raises:
        RuntimeError: it exited or did not listen in time.
    """
    # The plugin's own runtime flags come first; these repeat them, and the last ones win.
    flags = (*RUNTIMES[runtime], *SHUTDOWN, *extra)
    # A subprocess: the suite's tests signal and kill their brokers (broker.process).
    broker = plugin_start_broker(data_dir, *flags, port=port, env=child_env(), mode="subprocess")
    broker.runtime = runtime
    return broker
