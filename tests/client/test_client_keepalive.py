"""Idle connections: the client's QUIC PINGs keep a live but idle client connected to a
broker with a short idle timeout, and a connection that does die ends a subscription with
``ConnectionLost`` (never ``INTERNAL``). Runs against every runtime (``fresh_broker``)."""

from __future__ import annotations

import os
import signal

import anyio
import pytest
from brokers import FreshBroker

from felix_client import Client, ConnectionLost

pytestmark = pytest.mark.anyio

BROKER_IDLE = 1.0
"""The broker's QUIC idle timeout in these tests (seconds)."""


async def _start(fresh_broker: FreshBroker, *flags: str) -> tuple[str, str, int]:
    broker = await anyio.to_thread.run_sync(lambda: fresh_broker(*flags))
    return broker.url, broker.ca_file, broker.process.pid


@pytest.mark.parametrize("keepalive", [0.25, None], ids=["keepalive", "no-keepalive"])
async def test_an_idle_client_stays_connected_only_with_keepalive(
    fresh_broker: FreshBroker, keepalive: float | None
) -> None:
    url, ca, _ = await _start(fresh_broker, "--transport-idle-timeout-s", str(BROKER_IDLE))
    async with Client(url, ca_file=ca, timeout=3.0, keepalive=keepalive) as c:
        await c.admin.create("stream", "idle")
        async with c.subscribe("idle", start="earliest") as sub:
            await anyio.sleep(BROKER_IDLE * 2)  # idle: no request, no record
            if keepalive is None:  # the control: without PINGs the broker drops us
                with anyio.fail_after(5), pytest.raises(ConnectionLost):
                    await c.publish("idle", b"late")
                return
            await c.publish("idle", b"after a long pause")
            with anyio.fail_after(5):
                event = await anext(sub)
        assert event.payload == b"after a long pause"
        conn = c._conns[0]
        assert conn is not None and conn.transport.pings_sent >= 3


async def test_a_lost_connection_ends_subscriptions_and_consumers_with_connection_lost(
    fresh_broker: FreshBroker,
) -> None:
    url, ca, pid = await _start(fresh_broker)
    async with Client(url, ca_file=ca, timeout=3.0, idle_timeout=1.0) as c:
        await c.admin.create("stream", "lost")
        await c.admin.create("queue", "lost")
        async with c.subscribe("lost", start="earliest") as sub, c.consume("lost") as consumer:
            os.kill(pid, signal.SIGSTOP)  # alive but silent: the client's idle timer ends it
            try:
                with anyio.fail_after(10), pytest.raises(ConnectionLost):
                    await anext(sub)
                with anyio.fail_after(10), pytest.raises(ConnectionLost):
                    await anext(consumer)
            finally:
                os.kill(pid, signal.SIGCONT)
