"""The end-to-end suite, run against every runtime (``broker`` is parametrised over them).

The client is felix_client; tests marked with ``CLIENT_BACKENDS`` also run it under trio.
Every wait is bounded (``anyio.fail_after``), and everything listens on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from brokers import ENTRY, RUNTIMES, Broker, FreshBroker, child_env

from felix_client import (
    Client,
    Conflict,
    ConnectionLost,
    NotFound,
    QueueMessage,
    ShuttingDown,
    Subscription,
)
from felix_client.cli import error_line
from felix_client.types import Event

from .conftest import CLIENT_BACKENDS

pytestmark = pytest.mark.anyio

WAIT = 5.0
"""Seconds any single step may take."""


def client(broker: Broker) -> Client:
    return Client(broker.url, **broker.client_kwargs())


async def take(sub: Subscription, count: int) -> list[Event]:
    """The next ``count`` events of a subscription (bounded)."""
    out: list[Event] = []
    with anyio.fail_after(WAIT):
        async for event in sub:
            out.append(event)
            if len(out) == count:
                break
    return out


async def next_message(consumer: object) -> QueueMessage:
    with anyio.fail_after(WAIT):
        msg = await anext(consumer)  # type: ignore[call-overload]
    assert isinstance(msg, QueueMessage)
    return msg


@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)
async def test_handshake(broker: Broker) -> None:
    async with client(broker) as c:
        assert c.server_id == "felix-1"


@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)
async def test_pubsub_order_and_fanout(broker: Broker, name: str) -> None:
    async with client(broker) as pub, client(broker) as sub_client:
        await pub.admin.create("stream", name)
        subs = [sub_client.subscribe(name, start="earliest") for _ in range(3)]
        for sub in subs:
            await sub.open()
        for i in range(150):
            await pub.publish(name, b"m%d" % i)
        for sub in subs:
            events = await take(sub, 150)
            assert [e.payload for e in events] == [b"m%d" % i for i in range(150)]
            assert [e.offset for e in events] == list(range(150))
            await sub.close()


async def test_resume_from_offset(broker: Broker, name: str) -> None:
    async with client(broker) as c:
        await c.admin.create("stream", name)
        await c.publish_batch(name, [b"r%d" % i for i in range(10)])
        async with c.subscribe(name, start="earliest") as sub:
            first = await take(sub, 4)
        resume_at = first[-1].offset + 1
        async with c.subscribe(name, start=resume_at) as sub:
            rest = await take(sub, 10 - resume_at)
        assert [e.offset for e in first + rest] == list(range(10))
        assert [e.payload for e in rest] == [b"r%d" % i for i in range(resume_at, 10)]


@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)
async def test_queue_ack_nack_and_consumer_loss(broker: Broker, name: str) -> None:
    async with client(broker) as producer:
        await producer.admin.create("queue", name)
        await producer.enqueue(name, [b"ack-me", b"nack-me", b"lose-me"])

        async with client(broker) as a:
            consumer = a.consume(name, prefetch=3)
            await consumer.open()
            got = {m.payload: m for m in [await next_message(consumer) for _ in range(3)]}
            assert {m.attempt for m in got.values()} == {1}
            await got[b"ack-me"].ack()
            nacked_at = anyio.current_time()
            await got[b"nack-me"].nack(delay=0.2)  # redelivered by the broker's timer
            again = await next_message(consumer)
            assert anyio.current_time() - nacked_at >= 0.15
            assert (again.payload, again.attempt) == (b"nack-me", 2)
            await again.ack()
            await a.aclose()  # the consumer's connection is gone; b"lose-me" is unsettled

        async with client(broker) as b, b.consume(name) as consumer_b:
            redelivered = await next_message(consumer_b)
            assert (redelivered.payload, redelivered.attempt) == (b"lose-me", 2)
            await redelivered.ack()


async def test_cache_ttl_cas_delete(broker: Broker, name: str) -> None:
    async with client(broker) as c:
        await c.admin.create("cache", name)
        cache = c.cache(name)
        assert await cache.get("k") is None
        v1 = await cache.put("k", b"one", ttl=0)
        with pytest.raises(Conflict):
            await cache.compare_and_set("k", b"two", version=v1 + 100)
        v2 = await cache.compare_and_set("k", b"two", version=v1)
        entry = await cache.get("k")
        assert entry is not None and (entry.value, entry.version) == (b"two", v2)
        assert not await cache.delete("k", if_version=v1)
        assert await cache.delete("k", if_version=v2)
        assert await cache.get("k") is None

        await cache.put("short", b"lived", ttl=0.2)
        entry = await cache.get("short")
        assert entry is not None and entry.ttl_remaining is not None
        assert 0 < entry.ttl_remaining <= 0.2
        await anyio.sleep(0.3)
        assert await cache.get("short") is None


async def test_unknown_stream_is_not_found(broker: Broker, name: str) -> None:
    async with client(broker) as c:
        with pytest.raises(NotFound):
            await c.publish(f"{name}-missing", b"x")
        with pytest.raises(NotFound):
            async with c.subscribe(f"{name}-missing"):
                pass


async def http_get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET (status, body)."""
    with anyio.fail_after(WAIT):
        async with await anyio.connect_tcp(*address) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_metrics_and_health(broker: Broker, name: str) -> None:
    async with client(broker) as c:
        await c.admin.create("stream", name)
        await c.publish(name, b"counted")
    assert await http_get(broker.metrics_address, "/live") == (200, b"ok\n")
    assert await http_get(broker.metrics_address, "/ready") == (200, b"ready\n")
    status, body = await http_get(broker.metrics_address, "/metrics")
    assert status == 200
    assert b"felix_ready 1.0" in body
    assert b"felix_publish_records_total" in body


@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)
async def test_graceful_shutdown_exits_zero(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker()
    async with client(broker) as c:
        await c.admin.create("stream", "s")
        async with c.subscribe("s", start="earliest") as sub:
            await c.publish("s", b"before")
            assert [e.payload for e in await take(sub, 1)] == [b"before"]
            broker.process.terminate()  # SIGTERM
            with anyio.fail_after(WAIT):
                while (await http_get(broker.metrics_address, "/ready"))[0] != 503:
                    await anyio.sleep(0.01)
            with pytest.raises((ShuttingDown, ConnectionLost)):  # GoAway: refused
                await c.publish("s", b"after")
            with anyio.fail_after(WAIT), pytest.raises(ShuttingDown):  # ended: shutdown
                async for _ in sub:
                    pass
    with anyio.fail_after(WAIT):
        while broker.process.poll() is None:
            await anyio.sleep(0.02)
    assert broker.process.returncode == 0
    assert "felix broker stopped" in broker.log_messages()


@pytest.mark.parametrize("anyio_backend", CLIENT_BACKENDS)
async def test_a_full_broker_refuses_promptly_with_a_reason(fresh_broker: FreshBroker) -> None:
    """Over ``max_connections`` the broker answers CONNECTION_REFUSED: the client fails
    within aioquic's draining period (about 1 s), not at its 5 s connect timeout."""
    broker = fresh_broker("--transport-max-connections", "1")
    async with client(broker) as first:
        await first.admin.create("stream", "s")  # holds the only slot
        started = anyio.current_time()
        with pytest.raises(ConnectionLost) as refused:
            async with client(broker) as second:
                await second.publish("s", b"x")
        assert anyio.current_time() - started < 3.0
        line = error_line(refused.value)
        assert line.endswith("broker refused the connection: broker at max_connections"), line
        assert "\n" not in line
        await first.publish("s", b"still served")


def test_port_in_use_exits_one(broker: Broker, tmp_path: Path) -> None:
    """A broker that cannot bind its metrics port says so and exits 1 (no traceback)."""
    metrics = (
        f"{broker.metrics_address[0]}:{broker.metrics_address[1]}"  # taken by the shared broker
    )
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        *RUNTIMES[broker.runtime],
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        metrics,
        "--data-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=20, env=child_env()
    )
    assert result.returncode == 1, result.stderr
    assert "cannot start the broker" in result.stderr
    assert "Traceback" not in result.stderr
