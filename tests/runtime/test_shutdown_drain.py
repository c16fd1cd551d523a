"""SIGTERM drains: records acked before the signal reach a lagging subscriber before its
connection closes, within the grace period; what cannot be delivered in time is reported;
new requests during the drain are answered ``SHUTTING_DOWN`` on the wire. Against every
runtime, the broker a subprocess (``scripts/shutdown_drain.py`` measures the same with
30,000 records)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest
from aioquic.quic import events as qe
from brokers import Broker

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import ErrorCode

from .conftest import Connect, StartBroker
from .harness import N, RawClient, T, create, payloads

pytestmark = pytest.mark.anyio

RECORDS = 3000
CREDIT = 100


def record(i: int) -> bytes:
    return b"record-%06d" % i


async def publish_all(pub: RawClient, stream: str, records: int = RECORDS) -> None:
    """Publish ``records`` records, 100 per request, each acked before the next."""
    for base in range(0, records, 100):
        batch = [record(i) for i in range(base, min(base + 100, records))]
        reply = await pub.reply(pub.call(pub.felix.publish_batch, T, N, stream, batch))
        assert isinstance(reply, fe.PublishAcked), reply


async def lagging_subscriber(connect: Connect, proc: Broker, stream: str) -> tuple[RawClient, int]:
    """A subscriber from the start of ``stream`` that has used up its credit of
    :data:`CREDIT` records and returns none until told to (no automatic credit)."""
    sub = await connect(proc, auto_credit=None)
    rid = sub.call(
        sub.felix.subscribe, T, N, stream, start=m.StartKind.EARLIEST, credit_messages=CREDIT
    )
    started = await sub.reply(rid)
    assert isinstance(started, fe.SubscriptionStarted), started
    return sub, started.subscription_id


async def exited(proc: Broker) -> int:
    async with asyncio.timeout(15):
        while proc.process.poll() is None:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the log reader thread catches up
    return proc.process.returncode


def got_or_ended(sub: RawClient, count: int) -> bool:
    return len(payloads(sub)) == count or bool(sub.of(fe.SubscriptionEnded))


def logged(proc: Broker, msg: str) -> list[dict[str, Any]]:
    return [line for line in list(proc.log) if line.get("msg") == msg]


async def test_sigterm_delivers_what_was_acked_to_a_lagging_subscriber(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(shutdown_grace_s=10.0, shutdown_drain_s=15.0)
    pub = await connect(proc)
    await create(pub, "stream", "lag", retention_max_records=RECORDS)
    sub, sub_id = await lagging_subscriber(connect, proc, "lag")
    await publish_all(pub, "lag")
    await sub.until(lambda: len(payloads(sub)) == CREDIT)  # RECORDS - CREDIT acked, waiting
    proc.process.terminate()  # SIGTERM
    await sub.wait(fe.GoAwayReceived)
    granted = CREDIT
    for _ in range(RECORDS // CREDIT):  # it goes on reading, 100 records at a time
        await sub.until(partial(got_or_ended, sub, granted))
        if granted == RECORDS or sub.of(fe.SubscriptionEnded):
            break
        await asyncio.sleep(0.005)  # "processing"
        sub.felix.credit(sub_id, CREDIT, 1 << 20)
        sub.transmit()
        granted += CREDIT
    ended = await sub.wait(fe.SubscriptionEnded)
    assert payloads(sub) == [record(i) for i in range(RECORDS)]  # all of them, in order
    assert (ended.reason, ended.next_offset) == ("shutdown", RECORDS)
    closed = await sub.wait_quic(qe.ConnectionTerminated)
    assert isinstance(closed, qe.ConnectionTerminated)
    assert closed.error_code == ErrorCode.SHUTTING_DOWN
    assert await exited(proc) == 0
    assert logged(proc, "shutdown: every connection drained")  # before the grace ran out
    assert not logged(proc, "shutdown: undelivered records")


async def test_what_cannot_be_delivered_in_the_grace_is_reported(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker(shutdown_grace_s=0.5)
    pub = await connect(proc)
    await create(pub, "stream", "stuck", retention_max_records=RECORDS)
    await create(pub, "queue", "stuck-q")
    sub, _ = await lagging_subscriber(connect, proc, "stuck")
    await publish_all(pub, "stuck")
    reply = await pub.reply(pub.call(pub.felix.enqueue, T, N, "stuck-q", [b"job"] * 20))
    assert isinstance(reply, fe.PublishAcked)
    consumer = await connect(proc)
    started = await consumer.reply(
        consumer.call(consumer.felix.consume, T, N, "stuck-q", prefetch=5)
    )
    assert isinstance(started, fe.ConsumerStarted), started
    await consumer.until(lambda: len(consumer.of(fe.DeliveryReceived)) == 5)  # never acked
    await sub.until(lambda: len(payloads(sub)) == CREDIT)  # and it never returns credit
    proc.process.terminate()  # SIGTERM
    ended = await sub.wait(fe.SubscriptionEnded)  # at the end of the grace period
    assert (ended.reason, ended.next_offset) == ("shutdown", CREDIT)
    assert len(payloads(sub)) == CREDIT
    assert (await consumer.wait(fe.ConsumerEnded)).reason == "shutdown"
    assert await exited(proc) == 0
    report = {
        line["name"]: (line["kind"], line["undelivered"], line["unacked"])
        for line in logged(proc, "shutdown: undelivered records")
    }
    assert report == {"stuck": ("stream", RECORDS - CREDIT, 0), "stuck-q": ("queue", 15, 5)}
    (summary,) = logged(proc, "shutdown: grace period over")
    assert (summary["feeds_behind"], summary["undelivered"], summary["unacked"]) == (
        2,
        RECORDS - CREDIT + 15,
        5,
    )


def decoded(client: RawClient, stream_id: int) -> list[m.Message]:
    decoder = MessageDecoder()
    decoder.feed(client.stream_bytes(stream_id))
    out = []
    while (msg := decoder.next_message()) is not None:
        out.append(msg)
    return out


async def test_new_requests_during_the_drain_are_refused_shutting_down(
    start_broker: StartBroker, connect: Connect
) -> None:
    """On the wire, not through a client library: a client that ignores ``GoAway``."""
    proc = await start_broker(shutdown_grace_s=5.0, shutdown_drain_s=10.0)
    pub = await connect(proc)
    await create(pub, "stream", "w")
    await publish_all(pub, "w", 10)
    raw = await connect(proc, raw=True)
    raw.quic.send_stream_data(0, encode(m.Hello(versions=[2])))
    raw.transmit()
    await raw.until(lambda: any(isinstance(x, m.Welcome) for x in decoded(raw, 0)))
    subscribe = m.Subscribe(
        request_id=1,
        tenant=T,
        namespace=N,
        stream="w",
        start=m.StartKind.EARLIEST,
        credit_messages=1,
    )
    raw.quic.send_stream_data(4, encode(subscribe))  # one record of ten: it lags
    raw.transmit()
    await raw.until(lambda: any(isinstance(x, m.Subscribed) for x in decoded(raw, 4)))
    proc.process.terminate()  # SIGTERM
    await raw.until(lambda: any(isinstance(x, m.GoAway) for x in decoded(raw, 0)))
    requests = {
        8: m.Publish(request_id=2, tenant=T, namespace=N, stream="w", payload=b"late"),
        12: m.AdminCreate(request_id=3, kind="stream", tenant=T, namespace=N, name="new"),
        16: m.Subscribe(request_id=4, tenant=T, namespace=N, stream="w"),
    }
    for stream_id, request in requests.items():
        raw.quic.send_stream_data(stream_id, encode(request), end_stream=True)
    raw.transmit()
    for stream_id, request in requests.items():
        await raw.until(lambda s=stream_id: bool(decoded(raw, s)))
        (error,) = decoded(raw, stream_id)
        assert isinstance(error, m.Error), error
        assert (error.code, error.request_id, error.retryable) == (
            ErrorCode.SHUTTING_DOWN,
            request.request_id,
            True,
        )
    raw.hang_up()
    assert await exited(proc) == 0
