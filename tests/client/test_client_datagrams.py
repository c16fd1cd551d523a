"""A request the client sends carries the ACK that QUIC holds for what the broker sent last
(its previous reply), instead of that ACK leaving alone after aioquic's 1 ms ack delay: one
record published at a time costs one datagram each way (against a real broker on
127.0.0.1, asyncio and trio)."""

from __future__ import annotations

from typing import Any

import pytest
from aioquic import tls
from brokers import Broker, unique_name

from felix_client import Client
from felix_server.quic_engine import ACK_WITH_DATA_INTERVAL, AckWithData, QuicConnectionLike

pytestmark = pytest.mark.anyio


class RecordingAcks(AckWithData):
    """The client's ACK policy, recording each decision with the ``now`` it was made at:
    (the ACK's due time before, now, the last early ACK before, the last early ACK after)."""

    __slots__ = ("decisions", "space")

    def __init__(self, space: Any) -> None:
        super().__init__()
        self.space = space
        self.decisions: list[tuple[float | None, float, float, float]] = []

    def data_written(self, quic: QuicConnectionLike, now: float) -> None:
        ack_at, before = self.space.ack_at, self.sent_at
        super().data_written(quic, now)
        self.decisions.append((ack_at, now, before, self.sent_at))


async def test_each_request_carries_the_pending_ack(broker: Broker) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        stream = unique_name("datagrams")
        await c.admin.create("stream", stream)
        await c.publish(stream, b"warm-up")
        conn = c._conns[0]
        assert conn is not None
        transport = conn.transport
        acks = RecordingAcks(transport.quic._spaces[tls.Epoch.ONE_RTT])
        acks.sent_at = transport.acks.sent_at
        transport.acks = acks
        for i in range(20):
            await c.publish(stream, b"%d" % i)
    assert len(acks.decisions) >= 20
    pending = [d for d in acks.decisions if d[0] is not None]
    assert pending  # the replies left ACKs to send
    assert any(after == now for _, now, _, after in pending)  # ... which went with requests
    for ack_at, now, before, after in pending:  # ... each one, unless one went < 1 ms before
        assert ack_at <= now or after == now or now - before < ACK_WITH_DATA_INTERVAL
