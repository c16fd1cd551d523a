"""A careless caller against a real broker: requests the client refuses, or the broker
refuses, raise the typed error the spec names (docs/wire-protocol.md §8) and leave the
connection usable; TTLs never turn "forever" by rounding; events with headers hash; every
long-lived call takes ``timeout=``. Runs on every runtime, under asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from brokers import Broker

from felix_client import Client, InvalidArgument, NotFound, TooLarge

pytestmark = pytest.mark.anyio
BIG = 16 << 20  # the broker's default max_frame_size: no Publish of this payload fits


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        yield c


async def test_a_refused_request_leaves_the_connection_usable(client: Client, name: str) -> None:
    stream, queue, cache = f"{name}-s", f"{name}-q", f"{name}-c"
    for kind, resource in (("stream", stream), ("queue", queue), ("cache", cache)):
        await client.admin.create(kind, resource)
    with anyio.fail_after(20):
        with pytest.raises(TooLarge):  # refused locally, after a request stream was taken
            await client.publish(stream, b"\0" * BIG)
        with pytest.raises(InvalidArgument):  # refused by the broker, on a later stream
            await client.enqueue(queue, [])
        # Every lane still works: the one taken first included.
        first = await client.publish(stream, b"after")
        assert first is not None
        assert await client.enqueue(queue, b"job") is not None
        await client.cache(cache).put("k", b"v")
        assert [s["name"] for s in await client.admin.list("stream") if s["name"] == stream]


async def test_local_mistakes_raise_the_typed_errors_the_spec_names(
    client: Client, name: str
) -> None:
    stream, cache = f"{name}-s", f"{name}-c"
    await client.admin.create("stream", stream)
    await client.admin.create("cache", cache)
    with anyio.fail_after(20):
        with pytest.raises(TooLarge):
            await client.publish(stream, b"\0" * BIG)
        with pytest.raises(TooLarge):  # the records fit, the frame around them does not
            await client.publish(stream, b"\0" * (BIG - 16))
        for ttl in (-1, -0.0001, float("inf"), float("nan")):
            with pytest.raises(InvalidArgument):
                await client.cache(cache).put("k", b"v", ttl=ttl)
        with pytest.raises(InvalidArgument):
            await client.publish(stream, b"x", headers={"h": "text"})  # type: ignore[dict-item]
        with pytest.raises(InvalidArgument):
            await client.publish_batch(stream, [b"x"], headers=[{"h": 1}])  # type: ignore[dict-item]
        async with client.publisher(stream) as pub:
            with pytest.raises(InvalidArgument):
                await pub.publish(b"x", headers={"h": "text"})  # type: ignore[dict-item]
        assert await client.publish(stream, b"still fine") is not None


async def test_ack_after_the_queue_was_deleted_is_not_found(client: Client, name: str) -> None:
    queue = f"{name}-q"
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"a", b"b"])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=4) as consumer:
            msg = await anext(consumer)
            await client.admin.delete("queue", queue)
            with pytest.raises(NotFound):  # the consumer ends with the queue
                async for _ in consumer:
                    pass
            with pytest.raises(NotFound):
                await msg.ack()
            with pytest.raises(NotFound):
                await msg.nack()
    assert await client.admin.list("queue") is not None  # the connection is fine


async def test_a_tiny_positive_ttl_expires_instead_of_living_forever(
    client: Client, name: str
) -> None:
    cache = client.cache(f"{name}-c")
    await client.admin.create("cache", cache.name)
    await cache.put("k", b"v", ttl=0.0004)  # 0.4 ms: once rounded to 0 = never expires
    await anyio.sleep(0.3)
    assert await cache.get("k") is None
    await cache.put("forever", b"v", ttl=0)
    entry = await cache.get("forever")
    assert entry is not None and entry.ttl_remaining is None


async def test_events_with_headers_hash_and_compare_by_value(client: Client, name: str) -> None:
    stream = f"{name}-s"
    await client.admin.create("stream", stream)
    await client.publish_batch(stream, [b"a", b"b"], headers=[{"h": b"v"}, None])
    with anyio.fail_after(5):
        async with client.subscribe(stream, start="earliest") as sub:
            first, second = await anext(sub), await anext(sub)
    assert first.headers == {"h": b"v"} and second.headers is None
    assert len({first, second, first._replace()}) == 2  # hashable, equal by value
    with pytest.raises(TypeError):
        first.headers["h"] = b"changed"  # type: ignore[index]


async def test_long_lived_calls_take_a_timeout(client: Client, name: str) -> None:
    stream, queue = f"{name}-s", f"{name}-q"
    await client.admin.create("stream", stream)
    await client.admin.create("queue", queue)
    await client.enqueue(queue, b"job")
    with anyio.fail_after(10):
        async with client.subscribe(stream, start="earliest", timeout=2.0) as sub:
            assert sub.subscription_id is not None
        async with client.consume(queue, timeout=2.0) as consumer:
            msg = await anext(consumer)
            await msg.ack()
        async with client.publisher(stream, timeout=2.0) as pub:
            await pub.publish(b"x")
        assert pub.acked_records == 1
