"""The conformance self-tests run on asyncio (aioquic's asyncio client API needs it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
