"""The client against a real broker over QUIC on 127.0.0.1, under asyncio and trio, against
every broker runtime (``broker`` comes from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from brokers import Broker
from brokers import unique_name as unique

from felix_client import (
    AckMode,
    AlreadyExists,
    Client,
    Conflict,
    FelixError,
    NotFound,
    Start,
    errors,
)
from felix_client.sync import BlockingClient
from felix_proto.events import CacheValueReceived

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        yield c


async def test_handshake_reports_server(client: Client) -> None:
    assert client.server_id


async def test_publish_then_subscribe_from_earliest(client: Client) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    first = await client.publish(stream, b"a", key=b"k1", headers={"h": b"v"})
    assert first is not None and first.first_offset == first.last_offset
    batch = await client.publish_batch(stream, [b"b", b"c"])
    assert batch is not None and batch.first_offset == first.last_offset + 1
    got = []
    with anyio.fail_after(5):
        async with client.subscribe(stream, start="earliest") as sub:
            async for event in sub:
                got.append(event)
                if len(got) == 3:
                    break
    assert [e.payload for e in got] == [b"a", b"b", b"c"]
    assert [e.offset for e in got] == [first.first_offset + i for i in range(3)]
    assert got[0].key == b"k1" and got[0].headers == {"h": b"v"}
    assert all(e.timestamp_ms > 0 for e in got)


async def test_publisher_batches_reach_a_live_subscriber_in_order(client: Client) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    n = 2000
    async with client.subscribe(stream, start="latest", credit_messages=256) as sub:
        async with client.publisher(
            stream, max_batch_records=100, max_in_flight_bytes=64 * 1024
        ) as pub:
            for i in range(n):
                await pub.publish(b"%d" % i)
        assert pub.acked_records == n
        with anyio.fail_after(10):
            offsets = []
            async for event in sub:
                assert event.payload == b"%d" % len(offsets)
                offsets.append(event.offset)
                if len(offsets) == n:
                    break
    assert offsets == list(range(offsets[0], offsets[0] + n))


async def test_subscribe_from_an_offset(client: Client) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    await client.publish_batch(stream, [b"%d" % i for i in range(10)])
    with anyio.fail_after(5):
        async with client.subscribe(stream, start=Start.offset(7)) as sub:
            assert sub.first_offset == 7
            got = [(await anext(sub)).payload for _ in range(3)]
    assert got == [b"7", b"8", b"9"]


async def test_unknown_stream_is_not_found_not_a_hang(client: Client) -> None:
    with anyio.fail_after(5):
        with pytest.raises(NotFound):
            await client.publish(unique("missing"), b"x")
        with pytest.raises(NotFound):
            async with client.subscribe(unique("missing")):
                pass


async def test_admin_lifecycle_and_errors(client: Client) -> None:
    name = unique("adm")
    created = await client.admin.create("stream", name)
    assert isinstance(created, dict)
    with pytest.raises(AlreadyExists):
        await client.admin.create("stream", name)
    described = await client.admin.describe("stream", name)
    assert isinstance(described, dict)
    listed = await client.admin.list("stream")
    assert any(name in str(r) for r in listed)
    await client.admin.delete("stream", name)
    with pytest.raises(NotFound):
        await client.admin.describe("stream", name)


async def test_cache_put_get_delete_cas_and_ttl(client: Client) -> None:
    name = unique("c")
    await client.admin.create("cache", name)
    cache = client.cache(name)
    assert await cache.get("k") is None
    v1 = await cache.put("k", b"one")
    entry = await cache.get("k")
    assert entry is not None and entry.value == b"one" and entry.version == v1
    assert not await cache.put_if_absent("k", b"other")
    assert await cache.put_if_absent("k2", b"fresh")
    v2 = await cache.compare_and_set("k", b"two", version=v1)
    assert v2 != v1
    with pytest.raises(Conflict):
        await cache.compare_and_set("k", b"three", version=v1)
    assert await cache.delete("k")
    assert not await cache.delete("k")
    await cache.put("short", b"x", ttl=0.2)
    got = await cache.get("short")
    assert got is not None and got.ttl_remaining is not None and got.ttl_remaining <= 0.2
    await anyio.sleep(0.4)
    assert await cache.get("short") is None


async def test_queue_ack_and_nack_redelivers(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"job-1", b"job-2"])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=4) as consumer:
            first = await anext(consumer)
            assert first.attempt == 1
            await first.nack()
            seen = []
            async for msg in consumer:
                seen.append((msg.payload, msg.attempt))
                await msg.ack()
                if len(seen) == 2:
                    break
    assert sorted(seen) == sorted([(b"job-2", 1), (first.payload, 2)])


async def test_concurrent_cache_requests_over_a_pool(broker: Broker) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, pool_size=2, request_streams=4) as c:
        name = unique("c")
        await c.admin.create("cache", name)
        cache = c.cache(name)
        results: dict[int, bytes | None] = {}

        async def worker(i: int) -> None:
            await cache.put(f"k{i}", b"v%d" % i)
            entry = await cache.get(f"k{i}")
            results[i] = entry.value if entry else None

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(worker, i)
        assert results == {i: b"v%d" % i for i in range(64)}


async def test_a_cache_request_on_an_open_connection_is_the_connections_own(
    broker: Broker,
) -> None:
    # the hot path hands back Connection.request's coroutine (one coroutine frame less per
    # cache call); the first request of a pool slot opens its connection on the slow path
    from felix_client._connection import Connection

    async with Client(broker.url, ca_file=broker.ca_file, pool_size=2) as c:
        name = unique("c")
        await c.admin.create("cache", name)
        cache = c.cache(name)
        await cache.put("k", b"v")
        assert (await cache.get("k")) is not None  # both slots are open now
        path = {"tenant": c.tenant, "namespace": c.namespace, "cache": name}
        pending = c.cache_request(
            lambda m, now, sid: m.cache_get(key="k", now=now, stream_id=sid, **path),
            operation="get",
            path=path,
        )
        assert getattr(pending, "cr_code", None) is Connection.request.__code__
        reply = await pending
        assert isinstance(reply, CacheValueReceived) and reply.value == b"v"


async def test_ack_none_publish_and_timeouts_are_typed(client: Client) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    assert await client.publish(stream, b"fire-and-forget", ack=AckMode.NONE) is None
    assert issubclass(errors.RequestTimeout, FelixError)


async def test_untrusted_certificate_is_refused(broker: Broker) -> None:
    with anyio.fail_after(10), pytest.raises(FelixError):
        async with Client(broker.url, timeout=3.0):
            pass


def test_blocking_client(broker: Broker) -> None:
    with BlockingClient(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        stream = unique("s")
        c.admin("create", "stream", stream)
        c.publish(stream, b"hello")
        events = list(c.subscribe(stream, start="earliest", limit=1, timeout=5))
        assert [e.payload for e in events] == [b"hello"]
        cache = unique("c")
        c.admin("create", "cache", cache)
        c.cache(cache).put("k", "v")
        entry = c.cache(cache).get("k")
        assert entry is not None and entry.value == b"v"
