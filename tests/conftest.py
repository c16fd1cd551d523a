"""Shared test configuration: hypothesis profiles and the end-to-end broker fixtures.

Hypothesis: ``ci`` (selected when the CI environment variable is set) keeps the run short;
``dev`` is the default for local runs. ``FELIX_HYPOTHESIS_PROFILE`` overrides both
(``thorough`` for a long local fuzz).

Brokers (see ``brokers.py``): every end-to-end test asks for ``broker`` (or ``runtime`` /
``fresh_broker``) and so runs once per runtime: ``asyncio``, ``anyio-asyncio`` and
``anyio-trio`` (``FELIX_TEST_RUNTIMES=asyncio,...`` narrows that for a quick local run;
``FELIX_TEST_RUNTIMES=asyncio-qh3`` runs them all against a broker on the qh3 QUIC engine).
``broker`` is one broker process per runtime, shared by the whole session: tests use their
own resource names (``name``). pytest groups the tests by runtime, so only one shared broker
runs at a time. ``fresh_broker`` starts a private broker of the same runtime for a test that
needs its own settings, exact counters, or to stop it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Broker, FreshBroker, selected_runtimes, start_broker
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(
    os.environ.get("FELIX_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="session", params=selected_runtimes())
def runtime(request: pytest.FixtureRequest) -> str:
    """The broker runtime under test (the test id carries it)."""
    return str(request.param)


@pytest.fixture(scope="session")
def broker(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker subprocess of each runtime, shared by the session's tests."""
    running = start_broker(runtime, tmp_path_factory.mktemp(f"broker-{runtime}"))
    yield running
    code = running.stop()
    assert code == 0, f"{running.runtime} broker exited with {code}"


@pytest.fixture
def fresh_broker(runtime: str, tmp_path: Path) -> Iterator[FreshBroker]:
    """Start private brokers of the test's runtime (extra ``felix broker`` flags win over
    the defaults; ``data_dir`` reuses a directory, and so the certificate, of an earlier
    one). All are stopped after the test."""
    started: list[Broker] = []

    def start(*flags: str, port: int = 0, data_dir: Path | None = None) -> Broker:
        where = data_dir or tmp_path / f"fresh-{len(started)}"
        started.append(start_broker(runtime, where, *flags, port=port))
        return started[-1]

    yield start
    for running in started:
        running.stop()


_names = itertools.count(1)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A resource name no other test of the session uses."""
    return f"{request.node.originalname.removeprefix('test_')[:40]}-{next(_names)}"
