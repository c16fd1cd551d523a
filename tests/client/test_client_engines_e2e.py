"""Every pair of QUIC engines, client and broker (aioquic and qh3 each side), over 127.0.0.1:
pub/sub, a queue and the cache, under asyncio and trio; the client's engine from its keyword,
``FELIX_QUIC_ENGINE`` or the CLI flag. (The whole conformance suite runs against a qh3
broker in ``tests/conformance/test_conformance_suite.py``.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from brokers import ROOT, Broker, child_env, start_broker
from brokers import unique_name as unique

from felix_client import Client
from felix_client.sync import BlockingClient

pytest.importorskip("qh3")

ENGINES = ("aioquic", "qh3")


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Broker]]:
    """One asyncio broker per engine, shared by the module."""
    started = {
        engine: start_broker(
            "asyncio", tmp_path_factory.mktemp(f"engine-{engine}"), "--quic-engine", engine
        )
        for engine in ENGINES
    }
    yield started
    for running in started.values():
        assert running.stop() == 0


def test_the_broker_logs_its_engine(brokers: dict[str, Broker]) -> None:
    for engine, running in brokers.items():
        listening = [
            line for line in list(running.log) if line.get("msg") == "felix broker listening"
        ]
        assert str(listening[0]["quic_engine"]).startswith(f"{engine} ")


@pytest.mark.anyio
@pytest.mark.parametrize("broker_engine", ENGINES)
@pytest.mark.parametrize("client_engine", ENGINES)
async def test_streams_queues_and_cache_across_engines(
    brokers: dict[str, Broker], client_engine: str, broker_engine: str
) -> None:
    broker = brokers[broker_engine]
    async with Client(
        broker.url, ca_file=broker.ca_file, timeout=5.0, quic_engine=client_engine
    ) as client:
        stream, queue, cache = unique("s"), unique("q"), unique("c")
        for kind, name in (("stream", stream), ("queue", queue), ("cache", cache)):
            await client.admin.create(kind, name)
        n = 300
        async with client.publisher(stream, max_batch_records=32) as pub:
            for i in range(n):
                await pub.publish(b"%d" % i + b"x" * 200)
        got = []
        with anyio.fail_after(10):
            async with client.subscribe(stream, start="earliest") as sub:
                async for event in sub:
                    got.append(event.payload)
                    if len(got) == n:
                        break
        assert got == [b"%d" % i + b"x" * 200 for i in range(n)]
        await client.enqueue(queue, [b"job-1", b"job-2"])
        seen = []
        with anyio.fail_after(10):
            async with client.consume(queue, prefetch=4) as consumer:
                async for msg in consumer:
                    seen.append(msg.payload)
                    await msg.ack()
                    if len(seen) == 2:
                        break
        assert sorted(seen) == [b"job-1", b"job-2"]
        await client.cache(cache).put("k", b"v" * 5000)
        entry = await client.cache(cache).get("k")
        assert entry is not None and entry.value == b"v" * 5000


def test_blocking_client_engine_from_the_environment(
    brokers: dict[str, Broker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FELIX_QUIC_ENGINE", "qh3")
    broker = brokers["aioquic"]
    with BlockingClient(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        transport = client._client._conns[0].transport  # type: ignore[union-attr]
        from qh3.quic.connection import QuicConnection as Qh3Connection

        assert isinstance(transport.quic, Qh3Connection)
        assert client._client.server_id
    monkeypatch.setenv("FELIX_QUIC_ENGINE", "quiche")
    with pytest.raises(ValueError, match="unknown QUIC engine"):
        BlockingClient(broker.url, ca_file=broker.ca_file)


def test_the_cli_takes_the_engine_flag(brokers: dict[str, Broker], tmp_path: Path) -> None:
    broker = brokers["qh3"]
    common = ["--server", broker.url, "--ca", broker.ca_file]
    for engine in ENGINES:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "felix_client.cli", *common, "--quic-engine", engine),
                *("admin", "create", "cache", unique(f"cli-{engine}")),
            ],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
