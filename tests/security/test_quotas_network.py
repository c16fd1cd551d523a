"""Per-tenant quotas over the network, on every runtime: one tenant over its publish rate
is throttled (its connection muted, the publish delayed, not refused) while another tenant
is served; a wait longer than the throttle is refused OVERLOADED (retryable, the quota
named); a tenant setting changes the limit live, and the refusals are on /metrics;
connections are refused at the handshake; subscriptions, consumers and cache bytes are
refused LIMIT_EXCEEDED naming the quota and freed when they end."""

from __future__ import annotations

import anyio
import pytest
from brokers import Broker, FreshBroker

from felix_client import Client, LimitExceeded, Overloaded

pytestmark = pytest.mark.anyio

WAIT = 10.0


def client(broker: Broker, tenant: str) -> Client:
    return Client(broker.url, tenant=tenant, namespace="ns", **broker.client_kwargs())


async def metrics(broker: Broker, token: str | None = None) -> bytes:
    """GET /metrics (with ``token`` as a bearer credential: a broker with authentication
    asks for one)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with anyio.fail_after(WAIT):
        async with await anyio.connect_tcp(*broker.metrics_address) as stream:
            await stream.send(f"GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            data = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    return data.partition(b"\r\n\r\n")[2]


async def test_a_tenant_over_its_rate_is_throttled_while_another_is_served(
    fresh_broker: FreshBroker,
) -> None:
    # two messages per second, a bucket of two: a third within a second is over
    broker = fresh_broker("--broker-tenant-publish-messages-per-s", "2")
    async with client(broker, "default") as ops:
        for tenant in ("a", "b"):
            await ops.admin.create("tenant", tenant)
    async with client(broker, "a") as a, client(broker, "b") as b:
        for c in (a, b):
            await c.admin.create("namespace", "ns")
            await c.admin.create("stream", "s")
        await a.publish_batch("s", [b"first", b"second"])
        start = anyio.current_time()
        took: dict[str, float] = {}
        offsets: dict[str, int] = {}

        async def publish(c: Client, who: str, payload: bytes) -> None:
            result = await c.publish("s", payload)
            took[who] = anyio.current_time() - start
            assert result is not None
            offsets[who] = result.first_offset

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish, a, "a", b"over")  # not refused: delayed
                await anyio.sleep(0.05)  # a's connection is throttled now
                tg.start_soon(publish, a, "a2", b"behind")  # muted: waits behind it
                await publish(b, "b", b"served")  # another tenant, its own bucket
        # the bucket holds one token again after 0.5 s; b was served meanwhile
        assert took["b"] < took["a"] <= took["a2"], took
        assert took["a"] > 0.4, took
        assert offsets == {"a": 2, "a2": 3, "b": 0}  # in order, nothing lost
    body = await metrics(broker)
    assert b'felix_quota_refused_total{quota="publish_messages_per_s",tenant="a"}' in body, body
    assert b'tenant="b"' not in body.partition(b"felix_quota_refused_total")[2]


async def test_a_wait_longer_than_the_throttle_is_refused(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--broker-tenant-publish-messages-per-s", "1")
    async with client(broker, "default") as ops:
        await ops.admin.create("tenant", "a")
    async with client(broker, "a") as a:
        await a.admin.create("namespace", "ns")
        await a.admin.create("stream", "s")
        # a batch of 5 passes a full bucket of 1 and leaves it 4 s in debt: over 2 s
        await a.publish_batch("s", [b"%d" % i for i in range(5)])
        with pytest.raises(Overloaded) as caught:
            await a.publish("s", b"over")
        assert caught.value.retryable
        assert caught.value.details["tenant"] == "a"
        assert caught.value.details["quota"] == "publish_messages_per_s"
        assert caught.value.details["limit"] == 1
        assert 4000 < caught.value.details["retry_after_ms"] <= 5000
        # a tenant setting overrides the broker default at once, on the open connection
        await a.admin.update("tenant", "a", {"publish_messages_per_s": 1000})
        for i in range(10):
            await a.publish("s", b"%d" % i)
    body = await metrics(broker)
    assert b'felix_quota_refused_total{quota="publish_messages_per_s",tenant="a"} 1.0' in body, body


async def test_connections_per_tenant_are_refused_at_the_handshake(
    fresh_broker: FreshBroker,
) -> None:
    broker = fresh_broker(
        "--auth-tokens",
        "op-secret, a-secret=a:publish:ns/*, b-secret=b:publish:ns/*",
        "--broker-tenant-max-connections",
        "1",
    )

    def as_tenant(tenant: str) -> Client:
        return Client(
            broker.url,
            token=f"{tenant}-secret",
            tenant=tenant,
            namespace="ns",
            **broker.client_kwargs(),
        )

    async with as_tenant("op") as op, as_tenant("op"):  # an operator is not counted
        await op.admin.create("tenant", "a")
        async with as_tenant("a") as first:
            with pytest.raises(LimitExceeded) as caught:
                async with as_tenant("a"):
                    pass
            assert caught.value.details == {
                "tenant": "a",
                "quota": "max_connections",
                "limit": 1,
            }
            async with as_tenant("b"):  # another tenant is served
                pass
            await op.admin.update("tenant", "a", {"max_connections": 2})
            async with as_tenant("a"):  # the raised limit applies to the next handshake
                pass
            assert first  # still open
        with anyio.fail_after(WAIT):  # the closed connections are released
            while True:
                try:
                    async with as_tenant("a"), as_tenant("a"):
                        break
                except LimitExceeded:
                    await anyio.sleep(0.05)
    body = await metrics(broker, "op-secret")
    assert b'felix_quota_refused_total{quota="max_connections",tenant="a"}' in body


async def test_subscriptions_consumers_and_cache_bytes_per_tenant(
    fresh_broker: FreshBroker,
) -> None:
    broker = fresh_broker(
        "--broker-tenant-max-subscriptions",
        "1",
        "--broker-tenant-max-consumers",
        "1",
        "--broker-tenant-max-cache-bytes",
        "100",
    )
    async with client(broker, "default") as ops:
        for tenant in ("a", "b"):
            await ops.admin.create("tenant", tenant)
    async with client(broker, "a") as a, client(broker, "b") as b:
        for c in (a, b):
            await c.admin.create("namespace", "ns")
            for kind in ("stream", "queue", "cache"):
                await c.admin.create(kind, "r")
        async with a.subscribe("r"):
            with pytest.raises(LimitExceeded) as caught:
                async with a.subscribe("r", cache_feed=True):
                    pass
            assert caught.value.details == {
                "tenant": "a",
                "quota": "max_subscriptions",
                "limit": 1,
            }
            async with b.subscribe("r"):  # another tenant
                pass
        async with a.subscribe("r", cache_feed=True):  # the slot was freed
            pass

        async with a.consume("r"):
            with pytest.raises(LimitExceeded) as caught:
                async with a.consume("r", group="other"):
                    pass
            assert caught.value.details["quota"] == "max_consumers"
            await a.admin.update("tenant", "a", {"max_consumers": 2})  # live
            async with a.consume("r", group="other"):
                pass
        async with a.consume("r"), a.consume("r"):
            pass

        cache = a.cache("r")
        await cache.put("k", b"x" * 79)  # 80 bytes with the key
        with pytest.raises(LimitExceeded) as caught:
            await cache.put("j", b"x" * 20)
        assert not caught.value.retryable
        assert caught.value.details == {
            "tenant": "a",
            "quota": "max_cache_bytes",
            "limit": 100,
            "used": 80,
            "bytes": 21,
        }
        await b.cache("r").put("j", b"x" * 20)  # another tenant
        await cache.delete("k")
        await cache.put("j", b"x" * 20)
        body = await metrics(broker)
    for quota, count in (("max_subscriptions", 1), ("max_consumers", 1), ("max_cache_bytes", 1)):
        line = f'felix_quota_refused_total{{quota="{quota}",tenant="a"}} {count}.0'
        assert line.encode() in body, body
    assert b'felix_quota_used{quota="max_cache_bytes",tenant="a"} 21.0' in body, body


async def test_inflight_bytes_hold_deliveries_back_until_acked(
    fresh_broker: FreshBroker,
) -> None:
    broker = fresh_broker("--broker-tenant-max-inflight-bytes", "10")
    async with client(broker, "default") as ops:
        await ops.admin.create("tenant", "a")
    async with client(broker, "a") as a:
        await a.admin.create("namespace", "ns")
        await a.admin.create("queue", "q")
        await a.enqueue("q", [b"first-8b", b"second8b", b"third-8b"])
        async with a.consume("q", prefetch=10) as consumer:
            with anyio.fail_after(WAIT):
                first = await anext(consumer)
            body = await metrics(broker)  # the second does not fit beside the first
            assert b'felix_quota_used{quota="max_inflight_bytes",tenant="a"} 8.0' in body, body
            assert b'felix_quota_held_back_total{quota="max_inflight_bytes",tenant="a"}' in body
            await first.ack_sync()
            payloads = []
            for _ in range(2):  # each ack makes room for the next
                with anyio.fail_after(WAIT):
                    msg = await anext(consumer)
                payloads.append(msg.payload)
                await msg.ack_sync()
    assert (first.payload, *payloads) == (b"first-8b", b"second8b", b"third-8b")
