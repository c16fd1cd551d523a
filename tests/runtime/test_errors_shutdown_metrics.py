"""Error codes on the wire, ALPN, graceful shutdown, back-pressure and the metrics endpoint,
against every runtime: the broker is a subprocess, seen only through QUIC, its exit code and
the metrics endpoint (back-pressure through ``felix_connections_paused`` and
``felix_connection_buffered_bytes``)."""

from __future__ import annotations

import asyncio

import pytest
from aioquic.quic import events as qe
from aioquic.quic.packet import QuicErrorCode
from brokers import Broker

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import ErrorCode

from .conftest import Connect, StartBroker
from .harness import N, RawClient, T, create, http_get, metric, payloads, sample

pytestmark = pytest.mark.anyio


async def failed(client: RawClient, rid: int) -> fe.RequestFailed:
    reply = await client.reply(rid)
    assert isinstance(reply, fe.RequestFailed), reply
    return reply


async def test_engine_errors_map_to_codes(start_broker: StartBroker, connect: Connect) -> None:
    proc = await start_broker(broker={"max_payload_bytes": 1024})  # its own: a small limit
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


async def test_wrong_alpn_fails_the_handshake(broker: Broker) -> None:
    c = RawClient(broker.ca_file, alpn=["h3"])
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


async def test_graceful_shutdown(start_broker: StartBroker, connect: Connect) -> None:
    proc = await start_broker(shutdown_grace_s=1.0)  # its own: it is stopped
    c = await connect(proc)
    await create(c, "stream", "s")
    rid = c.call(c.felix.subscribe, T, N, "s")
    sub = await c.reply(rid)
    assert isinstance(sub, fe.SubscriptionStarted)
    # A subscriber that never returns credit keeps the broker in its grace period.
    stalled = await connect(proc, auto_credit=None)
    await create(stalled, "stream", "busy")
    acked = await c.reply(c.call(c.felix.publish_batch, T, N, "busy", [b"x"] * 10))
    assert isinstance(acked, fe.PublishAcked)
    rid = stalled.call(
        stalled.felix.subscribe, T, N, "busy", start=m.StartKind.EARLIEST, credit_messages=1
    )
    assert isinstance(await stalled.reply(rid), fe.SubscriptionStarted)
    await stalled.until(lambda: len(payloads(stalled)) == 1)
    proc.process.terminate()  # SIGTERM
    goaway = await c.wait(fe.GoAwayReceived)
    assert goaway.code == ErrorCode.SHUTTING_DOWN and goaway.deadline_ms == 1000
    ended = await c.wait(fe.SubscriptionEnded)  # caught up at once: ended, then closed
    assert (ended.reason, ended.next_offset) == ("shutdown", 0)
    closed = await c.wait_quic(qe.ConnectionTerminated)
    assert isinstance(closed, qe.ConnectionTerminated)
    assert closed.error_code == ErrorCode.SHUTTING_DOWN
    assert not stalled.terminated  # ... while the lagging one still has its grace period
    assert (await http_get(proc.metrics_address, "/ready"))[0] == 503
    late = RawClient(proc.ca_file)
    with pytest.raises(TimeoutError):  # new connections are refused (no handshake) ...
        await late.connect(proc.address, hello=False, timeout=0.3)
    refused = await late.wait_quic(qe.ConnectionTerminated, timeout=3)
    assert isinstance(refused, qe.ConnectionTerminated)
    assert refused.error_code == QuicErrorCode.CONNECTION_REFUSED
    assert refused.reason_phrase == "broker shutting down"
    late.close()
    _, body = await http_get(proc.metrics_address, "/metrics")  # ... and counted
    assert sample(body, 'felix_connections_refused_total{reason="shutting_down"}') >= 1
    assert sample(body, 'felix_connections_refused_total{reason="max_connections"}') == 0
    assert not stalled.terminated  # all of this within the 1 s grace period
    stalled_end = await stalled.wait(fe.SubscriptionEnded, timeout=5)  # at the grace deadline
    assert (stalled_end.reason, stalled_end.next_offset) == ("shutdown", 1)
    await stalled.wait(fe.ConnectionTerminated, timeout=5)
    async with asyncio.timeout(5):
        while proc.process.poll() is None:
            await asyncio.sleep(0.02)
    assert proc.process.returncode == 0
    report = [line for line in list(proc.log) if line.get("msg") == "shutdown: undelivered records"]
    assert [(r["name"], r["undelivered"]) for r in report] == [("busy", 9)]
    assert "felix broker stopped" in proc.log_messages()


async def test_refused_connections_are_exported(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(transport={"max_connections": 1})  # its own: exact counts
    await connect(proc)
    assert (
        await metric(
            proc.metrics_address, 'felix_connections_refused_total{reason="max_connections"}'
        )
        == 0
    )
    late = RawClient(proc.ca_file)
    with pytest.raises(TimeoutError):
        await late.connect(proc.address, hello=False, timeout=0.3)
    refused = await late.wait_quic(qe.ConnectionTerminated, timeout=3)
    assert isinstance(refused, qe.ConnectionTerminated)
    assert refused.reason_phrase == "broker at max_connections"
    late.close()
    _, body = await http_get(proc.metrics_address, "/metrics")
    assert sample(body, 'felix_connections_refused_total{reason="max_connections"}') >= 1
    assert sample(body, 'felix_connections_refused_total{reason="shutting_down"}') == 0


async def test_backpressure_pauses_a_stalled_connection(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(  # its own: small buffer limits, and exact gauges
        transport={"connection_buffer_limit": 20_000, "connection_buffer_resume": 5_000}
    )
    pub = await connect(proc)
    await create(pub, "stream", "bp", retention_max_records=100_000)
    frozen = await connect(proc)
    rid = frozen.call(
        frozen.felix.subscribe, T, N, "bp", credit_bytes=1 << 30, credit_messages=1 << 20
    )
    assert isinstance(await frozen.reply(rid), fe.SubscriptionStarted)
    frozen.stalled = True  # stops reading: QUIC flow control and loss fill the broker's buffers
    for _ in range(40):
        pub.call(pub.felix.publish_batch, T, N, "bp", [b"x" * 1000] * 50, ack=m.AckMode.NONE)
        await asyncio.sleep(0.01)

    async def until_paused(paused: float, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while True:
                status, body = await http_get(proc.metrics_address, "/metrics")
                assert status == 200
                if sample(body, "felix_connections_paused") == paused:
                    return body
                await asyncio.sleep(0.02)

    body = await until_paused(1.0, timeout=5)  # the frozen connection (only it subscribes)
    # bounded: one pass of batches over the limit
    assert sample(body, "felix_connection_buffered_bytes") <= 20_000 + 3 * 64 * 1024
    assert sample(body, "felix_backpressure_pauses_total") >= 1
    frozen.stalled = False
    await until_paused(0.0, timeout=10)
    await frozen.until(lambda: len(payloads(frozen)) == 2000, timeout=10)


async def test_metrics_endpoint(start_broker: StartBroker, connect: Connect) -> None:
    proc = await start_broker()  # its own: exact counts
    c = await connect(proc)
    await create(c, "stream", "m")
    await c.reply(c.call(c.felix.publish, T, N, "m", b"hello"))
    await c.reply(c.call(c.felix.publish, T, N, "nope", b"x"))
    await create(c, "cache", "mc")
    await c.reply(c.call(c.felix.cache_get, T, N, "mc", "absent"))
    await create(c, "queue", "mq")
    await c.reply(c.call(c.felix.enqueue, T, N, "mq", [b"1", b"2"]))

    status, body = await http_get(proc.metrics_address, "/metrics")
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
    assert "hello" not in body  # labels never carry message data
    assert await metric(proc.metrics_address, "felix_ready") == 1.0
    assert (await http_get(proc.metrics_address, "/live"))[0] == 200
    assert (await http_get(proc.metrics_address, "/ready"))[0] == 200
    assert (await http_get(proc.metrics_address, "/nope"))[0] == 404
    proc.process.terminate()  # SIGTERM: not ready while it drains (c is still open)
    async with asyncio.timeout(5):
        while (await http_get(proc.metrics_address, "/ready"))[0] != 503:
            await asyncio.sleep(0.01)
