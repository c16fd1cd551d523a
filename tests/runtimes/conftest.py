"""One end-to-end suite, three runtimes: ``asyncio``, ``anyio-asyncio`` and ``anyio-trio``.

``broker`` is a broker subprocess of each runtime, shared by the tests of a session (tests
use their own resource names); ``fresh_broker`` starts one for a single test (shutdown).
Tests are ``@pytest.mark.anyio`` and run the client on asyncio unless they ask for more
(``CLIENT_BACKENDS``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .brokers import RUNTIMES, Broker, start_broker

CLIENT_BACKENDS = [pytest.param("asyncio", id="client-asyncio"),
                   pytest.param("trio", id="client-trio")]  # fmt: skip
"""``@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)``: run the client on both."""


@pytest.fixture
def anyio_backend() -> str:
    """The client's event loop (tests may parametrise it with ``CLIENT_BACKENDS``)."""
    return "asyncio"


@pytest.fixture(scope="session", params=list(RUNTIMES))
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Broker]:  # fmt: skip
    """A broker of each runtime, shared by the session's tests."""
    running = start_broker(request.param, tmp_path_factory.mktemp(request.param))
    yield running
    code = running.terminate()
    assert code == 0, f"{running.runtime} broker exited with {code}"


@pytest.fixture
def fresh_broker(broker: Broker, tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    """Start another broker of the same runtime as ``broker`` (stopped after the test)."""
    started: list[Broker] = []

    def start() -> Broker:
        started.append(start_broker(broker.runtime, tmp_path / "fresh"))
        return started[-1]

    yield start
    for running in started:
        running.terminate()


_names = itertools.count(1)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A resource name no other test of the session uses."""
    return f"{request.node.originalname.removeprefix('test_')[:40]}-{next(_names)}"
