"""Fixtures: the raw-QUIC tests run against every runtime's broker (``broker`` and
``fresh_broker`` from ``tests/conftest.py``: asyncio, anyio-asyncio, anyio-trio), each a
``felix broker`` subprocess on 127.0.0.1, port 0, with a self-signed certificate.

The test side is always :class:`~.harness.RawClient` on asyncio (an aioquic
``QuicConnection`` on an asyncio datagram endpoint); the broker's runtime is what varies.
Tests observe the broker only through the wire, its exit code and the metrics endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from brokers import Broker, FreshBroker

from .harness import RawClient


@pytest.fixture
def anyio_backend() -> str:
    """The raw client is asyncio-only (the broker under test runs its own runtime)."""
    return "asyncio"


def config_flags(**overrides: Any) -> list[str]:
    """``felix broker`` flags for settings: ``broker={...}``, ``transport={...}`` and
    top-level keys (``shutdown_grace_s=1.0``), as ``--broker-max-payload-bytes 1024`` etc."""
    flags: list[str] = []
    for section in ("broker", "transport"):
        for key, value in overrides.pop(section, {}).items():
            flags += [f"--{section}-{key}".replace("_", "-"), str(value)]
    for key, value in overrides.items():
        flags += [f"--{key}".replace("_", "-"), str(value)]
    return flags


StartBroker = Callable[..., Awaitable[Broker]]
Connect = Callable[..., Awaitable[RawClient]]


@pytest.fixture
def start_broker(fresh_broker: FreshBroker) -> StartBroker:
    """A private broker of the test's runtime with some settings changed (see
    :func:`config_flags`), for tests that need their own limits, counters, or to stop it."""

    async def start(**overrides: Any) -> Broker:
        flags = config_flags(**overrides)
        return await anyio.to_thread.run_sync(lambda: fresh_broker(*flags))

    return start


@pytest.fixture
async def connect(broker: Broker) -> AsyncIterator[Connect]:
    """``await connect(target=broker, **RawClient kwargs)``: a connected raw client (after
    Hello/Welcome unless ``hello=False`` or ``raw=True``). Hung up after the test, with a
    CONNECTION_CLOSE, so the shared broker forgets it at once."""
    clients: list[RawClient] = []

    async def make(target: Broker | None = None, **kwargs: Any) -> RawClient:
        target = target or broker
        hello = kwargs.pop("hello", True)
        client = RawClient(target.ca_file, **kwargs)
        clients.append(client)
        async with asyncio.timeout(5):
            await client.connect(target.address, hello=hello)
        return client

    yield make
    for client in clients:
        client.hang_up()
