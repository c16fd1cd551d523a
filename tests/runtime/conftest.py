"""Fixtures: an in-process asyncio broker on 127.0.0.1, port 0, self-signed certificate."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from felix_core.limits import BrokerConfig
from felix_runtime_asyncio.app import BrokerProcess
from felix_server.config import ServerConfig, TransportConfig

from .harness import RawClient


def make_config(tmp: Path, **overrides: Any) -> ServerConfig:
    broker = overrides.pop("broker", {})
    transport = overrides.pop("transport", {})
    return ServerConfig(
        listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        data_dir=str(tmp / "data"),
        broker=dataclasses.replace(BrokerConfig(), **broker),
        transport=dataclasses.replace(TransportConfig(), **transport),
        **{"shutdown_grace_s": 0.5, "shutdown_drain_s": 3.0, **overrides},
    )


@pytest.fixture
def anyio_backend() -> str:
    """The asyncio runtime's tests run on asyncio only."""
    return "asyncio"


StartBroker = Callable[..., Awaitable[BrokerProcess]]
Connect = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def start_broker(tmp_path: Path) -> AsyncIterator[StartBroker]:
    started: list[BrokerProcess] = []

    async def start(**overrides: Any) -> BrokerProcess:
        proc = await BrokerProcess(make_config(tmp_path, **overrides)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.close()


@pytest.fixture
async def broker(start_broker: StartBroker) -> BrokerProcess:
    return await start_broker()


@pytest.fixture
async def connect(broker: BrokerProcess) -> AsyncIterator[Connect]:
    clients: list[RawClient] = []

    async def make(proc: BrokerProcess | None = None, **kwargs: Any) -> RawClient:
        target = proc or broker
        hello = kwargs.pop("hello", True)
        client = RawClient(str(target.cert_path), **kwargs)
        clients.append(client)
        async with asyncio.timeout(5):
            await client.connect(target.address, hello=hello)
        return client

    yield make
    for client in clients:
        client.close()
