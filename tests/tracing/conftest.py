"""Client tests run under both anyio backends (asyncio and trio). The end-to-end ones use
``broker`` from ``tests/conftest.py``: one broker subprocess per runtime (asyncio,
anyio-asyncio, anyio-trio), shared by the session, so each runs 2 x 3 times."""

from __future__ import annotations

import pytest


@pytest.fixture(
    params=[pytest.param("asyncio", id="client-asyncio"), pytest.param("trio", id="client-trio")]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs once per backend."""
    return str(request.param)
