"""Testing code that uses Felix with the ``felix`` pytest plugin (docs/testing.md).

With ``felix`` installed, pytest finds the plugin by itself: no conftest, no set-up code.
``felix_broker`` starts one broker for the session on a free 127.0.0.1 port (in a thread
of the test process by default), ``felix_client`` gives an ``@pytest.mark.anyio`` test an
open async client and ``felix_blocking_client`` gives a plain test an open blocking one;
the ``felix`` marker changes the broker's settings for one test. Run with::

    pytest examples/test_with_felix.py                       # broker on asyncio
    pytest examples/test_with_felix.py --felix-runtime anyio-trio --felix-broker-mode subprocess

``tests/plugin/test_plugin.py`` runs this file in a subprocess pytest, so it stays true.
"""

from __future__ import annotations

import itertools
import urllib.request

import pytest

from felix_client import Client
from felix_client.pytest_plugin import FelixBroker
from felix_client.sync import BlockingClient

_numbers = itertools.count(1)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture
def stream(request: pytest.FixtureRequest) -> str:
    """A stream name of this test's own: the broker is shared by the whole session."""
    return f"{request.node.originalname.removeprefix('test_')}-{next(_numbers)}"


@pytest.mark.anyio
async def test_publish_then_subscribe(felix_client: Client, stream: str) -> None:
    await felix_client.admin.create("stream", stream)
    sent = await felix_client.publish(stream, b"hello")
    assert sent is not None
    async with felix_client.subscribe(stream, start=sent.first_offset) as sub:
        async for event in sub:
            assert event.payload == b"hello"
            break


@pytest.mark.anyio
async def test_queue_delivers_and_acks(felix_client: Client, stream: str) -> None:
    queue = f"jobs-{stream}"
    await felix_client.admin.create("queue", queue)
    await felix_client.enqueue(queue, b"resize 42")
    async with felix_client.consume(queue) as jobs:
        async for job in jobs:
            assert (job.payload, job.attempt) == (b"resize 42", 1)
            await job.ack()
            break


def test_blocking_cache(felix_blocking_client: BlockingClient, stream: str) -> None:
    cache_name = f"cache-{stream}"
    felix_blocking_client.admin("create", "cache", cache_name)
    cache = felix_blocking_client.cache(cache_name)
    cache.put("alice", "logged-in", ttl=60)
    entry = cache.get("alice")
    assert entry is not None
    assert entry.value == b"logged-in"


def test_broker_is_ready(felix_broker: FelixBroker) -> None:
    with urllib.request.urlopen(felix_broker.metrics_url + "/ready", timeout=5) as reply:
        assert reply.status == 200


@pytest.mark.felix(durability="durable")
def test_durable_queue(felix_blocking_client: BlockingClient, stream: str) -> None:
    """The ``felix`` marker: this test's clients use a shared broker (started for the
    marker's settings) whose resources are durable unless their settings say otherwise."""
    queue = f"orders-{stream}"
    felix_blocking_client.admin("create", "queue", queue)
    described = felix_blocking_client.admin("describe", "queue", queue)
    assert described["settings"]["durability"] == "durable"
