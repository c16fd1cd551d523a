"""Error codes on the wire, ALPN, graceful shutdown, back-pressure and the metrics endpoint."""

from __future__ import annotations

import asyncio
import time

import pytest
from aioquic.quic import events as qe

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import ErrorCode
from felix_runtime_asyncio.app import BrokerProcess

from .conftest import Connect, StartBroker
from .harness import N, RawClient, T, create, payloads

pytestmark = pytest.mark.anyio


async def failed(client: RawClient, rid: int) -> fe.RequestFailed:
    reply = await client.reply(rid)
    assert isinstance(reply, fe.RequestFailed), reply
    return reply


async def test_engine_errors_map_to_codes(start_broker: StartBroker, connect: Connect) -> None:
    proc = await start_broker(broker={"max_payload_bytes": 1024})
    c = await connect(proc)
    await create(c, "stream", "s")
    rid = c.call(c.felix.admin, m.AdminCreate, kind="stream", tenant=T, namespace=N, name="s")
    assert (await failed(c, rid)).code == ErrorCode.ALREADY_EXISTS
    rid = c.call(c.felix.admin, m.AdminCreate, kind="stream", tenant=T, namespace=N, name="-x")
    assert (await failed(c, rid)).code == ErrorCode.INVALID_ARGUMENT
    big = await failed(c, c.call(c.felix.publish, T, N, "s", b"x" * 2000))
    assert big.code == ErrorCode.TOO_LARGE and not big.retryable and big.details
    rid = c.call(c.felix.subscribe, T, N, "s", start=m.StartKind.OFFSET, start_value=99)
    assert (await failed(c, rid)).code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.CURSOR_TOO_OLD)
    rid = c.call(c.felix.cache_get, T, N, "missing", "k")
    assert (await failed(c, rid)).code == ErrorCode.NOT_FOUND


async def test_request_before_hello_is_unexpected_and_connection_survives(
    connect: Connect,
) -> None:
    c = await connect(raw=True)
    publish = m.Publish(request_id=7, tenant=T, namespace=N, stream="s", payload=b"x")
    c.quic.send_stream_data(0, b"")  # open the control stream first (QUIC stream order)
    c.quic.send_stream_data(4, encode(publish))
    c.transmit()
    await c.until(lambda: c.stream_bytes(4) != b"")
    decoder = MessageDecoder()
    decoder.feed(c.stream_bytes(4))
    error = decoder.next_message()
    assert isinstance(error, m.Error)
    assert (error.code, error.request_id) == (ErrorCode.UNEXPECTED_MESSAGE, 7)
    c.quic.send_stream_data(0, encode(m.Hello(versions=[2])))  # the connection still works
    c.transmit()
    await c.until(lambda: c.stream_bytes(0) != b"")
    decoder = MessageDecoder()
    decoder.feed(c.stream_bytes(0))
    assert isinstance(decoder.next_message(), m.Welcome)


async def test_garbage_on_control_stream_closes_with_bad_frame(connect: Connect) -> None:
    c = await connect(raw=True)
    c.quic.send_stream_data(0, b"GARBAGE-NOT-A-FELIX-FRAME")
    c.transmit()
    closed = await c.wait_quic(qe.ConnectionTerminated)
    assert isinstance(closed, qe.ConnectionTerminated)
    assert closed.error_code == ErrorCode.BAD_FRAME


async def test_wrong_alpn_fails_the_handshake(broker: BrokerProcess) -> None:
    c = RawClient(str(broker.cert_path), alpn=["h3"])
    with pytest.raises(TimeoutError):
        await c.connect(broker.address, timeout=0.3)  # never completes ...
    await c.wait_quic(qe.ConnectionTerminated, timeout=3)  # ... the broker refused it
    c.close()
    assert not any(isinstance(e, qe.HandshakeCompleted) for e in c.quic_events)


async def test_no_alpn_is_accepted_and_the_version_decides(connect: Connect) -> None:
    plain = await connect(alpn=[])  # offers no ALPN at all: accepted
    handshake = await plain.wait_quic(qe.HandshakeCompleted)
    assert isinstance(handshake, qe.HandshakeCompleted) and handshake.alpn_protocol is None
    assert plain.of(fe.Welcomed)  # and speaks Felix v2 in-band
    felix = await connect()
    handshake = await felix.wait_quic(qe.HandshakeCompleted)
    assert isinstance(handshake, qe.HandshakeCompleted) and handshake.alpn_protocol == "felix/2"


async def test_graceful_shutdown(connect: Connect, broker: BrokerProcess) -> None:
    c = await connect()
    await create(c, "stream", "s")
    rid = c.call(c.felix.subscribe, T, N, "s")
    sub = await c.reply(rid)
    assert isinstance(sub, fe.SubscriptionStarted)
    task = asyncio.create_task(broker.shutdown())
    goaway = await c.wait(fe.GoAwayReceived)
    assert goaway.code == ErrorCode.SHUTTING_DOWN and goaway.deadline_ms == 500
    ended = await c.wait(fe.SubscriptionEnded)
    assert ended.reason == "shutdown"
    assert broker.server is not None and not broker.server.ready
    await c.wait(fe.ConnectionTerminated, timeout=5)
    async with asyncio.timeout(5):
        await task
    assert broker.server.finished
    late = RawClient(str(broker.cert_path))
    with pytest.raises(TimeoutError):  # new connections are refused (Initials dropped)
        await late.connect(broker.address, hello=False, timeout=0.5)
    late.close()


async def test_backpressure_pauses_a_stalled_connection(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(
        transport={"connection_buffer_limit": 20_000, "connection_buffer_resume": 5_000}
    )
    pub = await connect(proc)
    await create(pub, "stream", "bp", retention_max_records=100_000)
    frozen = await connect(proc)
    rid = frozen.call(frozen.felix.subscribe, T, N, "bp", credit_bytes=1 << 30,
                      credit_messages=1 << 20)  # fmt: skip
    assert isinstance(await frozen.reply(rid), fe.SubscriptionStarted)
    frozen.stalled = True  # stops reading: QUIC flow control and loss fill the broker's buffers
    for _ in range(40):
        pub.call(pub.felix.publish_batch, T, N, "bp", [b"x" * 1000] * 50, ack=m.AckMode.NONE)
        await asyncio.sleep(0.01)
    assert proc.server is not None
    session = next(s for s in proc.server.sessions if s.conn_id == 2)
    await pub.until(lambda: session.paused, timeout=5)
    assert session.buffered_bytes <= 20_000 + 3 * 64 * 1024  # bounded: one pass of batches
    frozen.stalled = False
    await frozen.until(lambda: not session.paused, timeout=10)
    await frozen.until(lambda: len(payloads(frozen)) == 2000, timeout=10)


async def test_metrics_endpoint(connect: Connect, broker: BrokerProcess) -> None:
    c = await connect()
    await create(c, "stream", "m")
    await c.reply(c.call(c.felix.publish, T, N, "m", b"hello"))
    await c.reply(c.call(c.felix.publish, T, N, "nope", b"x"))
    await create(c, "cache", "mc")
    await c.reply(c.call(c.felix.cache_get, T, N, "mc", "absent"))
    await create(c, "queue", "mq")
    await c.reply(c.call(c.felix.enqueue, T, N, "mq", [b"1", b"2"]))
    assert broker.metrics is not None
    host, port = broker.metrics.address

    async def get(path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    async with asyncio.timeout(5):
        status, body = await get("/metrics")
        assert status == 200
        for name in (
            "felix_publish_requests_total 1.0",
            "felix_publish_bytes_total 5.0",
            'felix_requests_total{code="200",kind="publish"} 1.0',
            "felix_request_duration_seconds_bucket",
            "felix_connections 1.0",
            "felix_quic_protocol_violation_total",
            "felix_subscribe_dropped_total",
            "felix_memory_used_bytes",
            "felix_queue_depth 2.0",
            f'felix_queue_depth_per_queue{{namespace="{N}",queue="mq",tenant="{T}"}} 2.0',
            "felix_queue_oldest_age_seconds",
            "felix_queue_in_flight 0.0",
            "felix_queue_dead_lettered_total",
            "felix_cache_misses_total 1.0",
            "felix_cache_hits_total 0.0",
            "felix_cache_evictions_total",
            "felix_cache_expirations_total",
            "felix_cache_bytes",
        ):
            assert name in body, name
        assert b"hello" not in body.encode()  # labels never carry message data
        assert (await get("/live"))[0] == 200
        assert (await get("/ready"))[0] == 200
        assert broker.server is not None
        broker.server.begin_shutdown(time.time())
        assert (await get("/ready"))[0] == 503
        assert (await get("/nope"))[0] == 404
