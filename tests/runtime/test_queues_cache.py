"""Queues (at-least-once, a killed consumer, dead letters) and the cache over QUIC, against
every runtime."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from felix_proto import events as fe
from felix_proto import messages as m

from .conftest import Connect, StartBroker
from .harness import N, RawClient, T, create

pytestmark = pytest.mark.anyio


async def consume(client: RawClient, queue: str, prefetch: int = 1) -> int:
    rid = client.call(client.felix.consume, T, N, queue, prefetch=prefetch)
    started = await client.reply(rid)
    assert isinstance(started, fe.ConsumerStarted), started
    return started.consumer_id


async def test_killed_consumer_message_goes_to_another_with_attempt_2(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(transport={"idle_timeout_s": 1.0})  # its own: a short idle timeout
    producer = await connect(proc)
    await create(producer, "queue", "jobs", visibility_timeout_ms=60_000)
    doomed = await connect(proc)
    await consume(doomed, "jobs")
    rid = producer.call(producer.felix.enqueue, T, N, "jobs", [b"job-1"])
    assert isinstance(await producer.reply(rid), fe.PublishAcked)
    first = await doomed.wait(fe.DeliveryReceived)
    assert first.delivery.attempt == 1 and first.delivery.payload == b"job-1"

    survivor = await connect(proc)
    await consume(survivor, "jobs")
    doomed.kill()  # no CONNECTION_CLOSE: the broker finds out by the idle timeout
    # aioquic's idle timeout is max(1 s, 3 PTO): usually ~1 s, longer on a loaded machine.
    # The survivor keeps its own connection alive meanwhile (as felix_client does): silent,
    # it could idle out as well and leave no live consumer to redeliver to.
    again = None
    for _ in range(60):  # at most 15 s
        survivor.call(survivor.felix.ping)
        with contextlib.suppress(TimeoutError):
            again = await survivor.wait(fe.DeliveryReceived, timeout=0.25)
            break
    assert again is not None, "no redelivery to the live consumer within 15 s"
    assert again.delivery.payload == b"job-1" and again.delivery.attempt == 2
    rid = survivor.call(survivor.felix.ack, again.consumer_id, [again.delivery.delivery_id])
    assert isinstance(await survivor.reply(rid), fe.RequestSucceeded)


async def test_closed_consumer_connection_redelivers_at_once(connect: Connect, name: str) -> None:
    producer = await connect()
    await create(producer, "queue", name, visibility_timeout_ms=60_000)
    first = await connect()
    await consume(first, name)
    second = await connect()
    producer.call(producer.felix.enqueue, T, N, name, [b"a"])
    got = await first.wait(fe.DeliveryReceived)
    await consume(second, name)
    await first.graceful_close()
    again = await second.wait(fe.DeliveryReceived)
    assert (again.delivery.offset, again.delivery.attempt) == (got.delivery.offset, 2)


async def test_nack_past_max_attempts_dead_letters(connect: Connect, name: str) -> None:
    client = await connect()
    await create(client, "queue", f"{name}-dlq")
    await create(client, "queue", name, max_attempts=1, dead_letter_queue=f"{name}-dlq")
    work = await consume(client, name)
    client.call(client.felix.enqueue, T, N, name, [b"poison"])
    delivery = await client.wait(fe.DeliveryReceived, lambda e: e.consumer_id == work)
    rid = client.call(client.felix.nack, work, [delivery.delivery.delivery_id])
    assert isinstance(await client.reply(rid), fe.RequestSucceeded)
    dlq = await consume(client, f"{name}-dlq")
    dead = await client.wait(fe.DeliveryReceived, lambda e: e.consumer_id == dlq)
    assert dead.delivery.payload == b"poison"


async def test_cache_ttl_cas_delete(connect: Connect, name: str) -> None:
    c = await connect()
    await create(c, "cache", name)

    async def put(key: str, value: bytes, **kw: object) -> fe.CachePutCompleted:
        reply = await c.reply(c.call(c.felix.cache_put, T, N, name, key, value, **kw))
        assert isinstance(reply, fe.CachePutCompleted), reply
        return reply

    async def get(key: str) -> fe.CacheValueReceived:
        reply = await c.reply(c.call(c.felix.cache_get, T, N, name, key))
        assert isinstance(reply, fe.CacheValueReceived), reply
        return reply

    first = await put("k", b"v1")
    assert first.stored and first.version is not None
    assert (await put("k", b"x", if_absent=True)).stored is False
    second = await put("k", b"v2", if_version=first.version)
    assert second.stored
    stale = await put("k", b"v3", if_version=first.version)
    assert stale.stored is False and stale.version == second.version
    hit = await get("k")
    assert (hit.found, hit.value, hit.version) == (True, b"v2", second.version)

    reply = await c.reply(c.call(c.felix.cache_delete, T, N, name, "k", if_version=first.version))
    assert isinstance(reply, fe.CacheDeleteCompleted) and reply.deleted is False
    reply = await c.reply(c.call(c.felix.cache_delete, T, N, name, "k"))
    assert isinstance(reply, fe.CacheDeleteCompleted) and reply.deleted is True
    assert (await get("k")).found is False

    await put("t", b"short", ttl_ms=150)
    live = await get("t")
    assert live.found and live.ttl_remaining_ms is not None and live.ttl_remaining_ms <= 150
    await asyncio.sleep(0.25)
    assert (await get("t")).found is False


async def test_cache_change_feed_subscription(connect: Connect, name: str) -> None:
    c = await connect()
    await create(c, "cache", name)
    rid = c.call(c.felix.subscribe, T, N, name, source=m.SourceKind.CACHE)
    assert isinstance(await c.reply(rid), fe.SubscriptionStarted)
    await c.reply(c.call(c.felix.cache_put, T, N, name, "k", b"v"))
    batch = await c.wait(fe.EventsReceived)
    assert len(batch.batch.payloads) == 1
