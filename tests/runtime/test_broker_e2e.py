"""Every runtime's broker over real QUIC on 127.0.0.1, driven by a raw aioquic + felix_proto
client."""

from __future__ import annotations

import pytest

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_server.config import ServerConfig, TransportConfig

from .conftest import Connect
from .harness import N, T, create, payloads

pytestmark = pytest.mark.anyio


async def test_handshake_welcome_carries_limits(connect: Connect) -> None:
    client = await connect()
    welcome = client.of(fe.Welcomed)[0]
    assert welcome.version == 2
    assert welcome.server_id == ServerConfig().server_id  # the brokers run with defaults
    assert welcome.limits["max_frame_size"] == TransportConfig().max_frame_size
    assert "max_batch_records" in welcome.limits


async def test_publish_subscribe_fanout_in_order(connect: Connect, name: str) -> None:
    pub = await connect()
    await create(pub, "stream", name)
    subs = [await connect() for _ in range(3)]
    for s in subs:
        rid = s.call(s.felix.subscribe, T, N, name, start=m.StartKind.EARLIEST)
        assert isinstance(await s.reply(rid), fe.SubscriptionStarted)
    for i in range(200):
        pub.call(pub.felix.publish, T, N, name, b"msg-%d" % i, ack=m.AckMode.NONE)
    rid = pub.call(pub.felix.publish, T, N, name, b"last")
    ack = await pub.reply(rid)
    assert isinstance(ack, fe.PublishAcked) and ack.first_offset == 200

    for s in subs:
        await s.until(lambda s=s: len(payloads(s)) == 201)
        assert payloads(s) == [b"msg-%d" % i for i in range(200)] + [b"last"]
        offsets = [e.batch.base_offset for e in s.of(fe.EventsReceived)]
        assert offsets == sorted(offsets)


async def test_unknown_stream_is_not_found(connect: Connect, name: str) -> None:
    client = await connect()
    rid = client.call(client.felix.publish, T, N, f"{name}-missing", b"x")
    reply = await client.reply(rid)
    assert isinstance(reply, fe.RequestFailed)
    assert reply.code == ErrorCode.NOT_FOUND and not reply.retryable
    rid = client.call(client.felix.subscribe, T, N, f"{name}-missing")
    reply = await client.reply(rid)
    assert isinstance(reply, fe.RequestFailed) and reply.code == ErrorCode.NOT_FOUND
