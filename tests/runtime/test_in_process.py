"""``felix_runtime_asyncio.app.BrokerProcess`` in-process: asyncio only, on purpose.

Every other test here runs against a ``felix broker`` subprocess of each runtime. This one
tests the asyncio adapter's own in-process object (what ``main`` wraps, and what tooling
may embed): ``start()`` binds port 0 and reports its address, ``server``/``metrics`` are
live, ``shutdown()`` drains to ``finished`` and ``close()`` is safe afterwards. The anyio
runtime has no such object, so there is nothing to run it against on the other two.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from felix_proto import events as fe
from felix_runtime_asyncio.app import BrokerProcess
from felix_server.config import ServerConfig

from .harness import RawClient

pytestmark = pytest.mark.anyio


async def test_broker_process_start_shutdown_close(tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        shutdown_grace_s=0.5,
        shutdown_drain_s=3.0,
    )
    proc = await BrokerProcess(config).start()
    client = RawClient(str(proc.cert_path))
    try:
        assert proc.address[1] != 0 and proc.server is not None and proc.server.ready
        assert proc.metrics is not None and proc.metrics.address[1] != 0
        async with asyncio.timeout(5):
            await client.connect(proc.address)
        assert client.of(fe.Welcomed)
        async with asyncio.timeout(5):
            await proc.shutdown()
        assert proc.server.finished and not proc.server.ready
        assert client.of(fe.GoAwayReceived)
    finally:
        client.close()
        await proc.close()
