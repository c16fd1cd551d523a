"""Per-tenant publish-rate quotas over the network, on every runtime: one tenant over its
rate is refused OVERLOADED (retryable, the quota named) while another tenant is served, a
tenant setting changes the limit live, and the refusals are on /metrics."""

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


async def test_one_tenant_over_its_rate_is_refused_while_another_is_served(
    fresh_broker: FreshBroker,
) -> None:
    # one message per second, a bucket of one: the second publish within a second is over
    broker = fresh_broker("--broker-tenant-publish-messages-per-s", "1")
    async with client(broker, "default") as ops:
        for tenant in ("a", "b"):
            await ops.admin.create("tenant", tenant)
    async with client(broker, "a") as a, client(broker, "b") as b:
        for c in (a, b):
            await c.admin.create("namespace", "ns")
            await c.admin.create("stream", "s")
        await a.publish("s", b"first")
        with pytest.raises(Overloaded) as caught:
            await a.publish("s", b"over")
        assert caught.value.retryable
        assert caught.value.details["tenant"] == "a"
        assert caught.value.details["quota"] == "publish_messages_per_s"
        assert caught.value.details["limit"] == 1
        assert 0 < caught.value.details["retry_after_ms"] <= 1000
        await b.publish("s", b"served")  # another tenant, its own bucket
        # a tenant setting overrides the broker default at once, on the open connection
        await a.admin.update("tenant", "a", {"publish_messages_per_s": 1000})
        for i in range(10):
            await a.publish("s", b"%d" % i)
    body = await metrics(broker)
    assert b'felix_quota_refused_total{quota="publish_messages_per_s",tenant="a"} 1.0' in body, body
    assert b'tenant="b"' not in body.partition(b"felix_quota_refused_total")[2]


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
