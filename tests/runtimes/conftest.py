"""The ``felix_client`` end-to-end suite; ``broker``, ``fresh_broker`` and ``name`` come
from ``tests/conftest.py`` (one broker per runtime: asyncio, anyio-asyncio, anyio-trio).

Tests are ``@pytest.mark.anyio`` and run the client on asyncio unless they ask for more
(``CLIENT_BACKENDS``).
"""

from __future__ import annotations

import pytest

CLIENT_BACKENDS = [
    pytest.param("asyncio", id="client-asyncio"),
    pytest.param("trio", id="client-trio"),
]
"""``@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)``: run the client on both."""


@pytest.fixture
def anyio_backend() -> str:
    """The client's event loop (tests may parametrise it with ``CLIENT_BACKENDS``)."""
    return "asyncio"
