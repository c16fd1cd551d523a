"""Client tests run under both anyio backends (asyncio and trio); ``broker`` is a real
broker subprocess shared by the session (see ``client_broker.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_broker import RunningBroker, runtime_available, start_broker, stop_broker


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs once per backend."""
    return str(request.param)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One broker for the whole session."""
    if not runtime_available():
        pytest.skip("the broker runtime has no main yet")
    running = start_broker(tmp_path_factory.mktemp("broker"))
    yield running
    stop_broker(running)
