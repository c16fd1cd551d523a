"""A request the client sends carries the ACK that QUIC holds for what the broker sent last
(its previous reply), instead of that ACK leaving alone after aioquic's 1 ms ack delay: one
record published at a time costs one datagram each way (against a real broker on
127.0.0.1, asyncio and trio)."""

from __future__ import annotations

import sys

import pytest
from aioquic import tls
from brokers import Broker, unique_name

from felix_client import Client
from felix_server.quic_engine import ACK_WITH_DATA_INTERVAL

pytestmark = pytest.mark.anyio


async def test_each_request_carries_the_pending_ack(broker: Broker) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        stream = unique_name("datagrams")
        await c.admin.create("stream", stream)
        await c.publish(stream, b"warm-up")
        conn = c._conns[0]
        assert conn is not None
        transport = conn.transport
        space = transport.quic._spaces[tls.Epoch.ONE_RTT]
        seen: list[tuple[float | None, float, float]] = []  # (ack_at, now, sent_at) in flush
        real = transport._transmit

        async def spy() -> None:
            if sys._getframe(1).f_code.co_name == "flush":
                seen.append((space.ack_at, transport.clock(), transport.acks.sent_at))
            await real()

        transport._transmit = spy  # type: ignore[method-assign]
        for i in range(20):
            await c.publish(stream, b"%d" % i)
    assert len(seen) >= 20
    pending = [(ack_at, now, sent_at) for ack_at, now, sent_at in seen if ack_at is not None]
    assert pending  # the replies left ACKs to send
    early = [now for ack_at, now, _ in pending if ack_at <= now]
    assert early  # ... which went with the requests
    for ack_at, now, sent_at in pending:  # ... each one, unless one went less than 1 ms ago
        assert ack_at <= now or now - sent_at < ACK_WITH_DATA_INTERVAL
