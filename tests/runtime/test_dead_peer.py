"""Dead-peer detection: the broker's QUIC idle timeout (issue 8, item 3)."""

from __future__ import annotations

import asyncio

import pytest

from felix_core.queues import QueueConfig
from felix_proto import events as fe
from felix_proto import messages as m
from felix_server.config import TransportConfig

from .conftest import Connect
from .harness import N, T, create

pytestmark = pytest.mark.anyio


async def test_broker_announces_an_idle_timeout_below_the_visibility_timeout(
    connect: Connect,
) -> None:
    """A killed client is dropped after the idle timeout, which the broker announces in
    QUIC's max_idle_timeout transport parameter. With the defaults it must be found (and
    its deliveries returned to live consumers) before the deliveries' visibility timeout
    runs out; it was 60 s against a 30 s visibility timeout."""
    client = await connect()
    announced = client.quic._remote_max_idle_timeout
    assert announced == TransportConfig().idle_timeout_s == 15.0
    assert announced < QueueConfig().visibility_timeout_s


async def test_killed_consumer_costs_no_dead_letters_while_a_live_one_waits(
    connect: Connect, name: str
) -> None:
    """The black-box repro of issue 8, item 3 on the wire: visibility timeout 3 s, max
    attempts 3, ten messages held by a consumer whose process is killed (no
    CONNECTION_CLOSE), one live consumer waiting. 3 of 10 were dead-lettered; now the
    redeliveries go to the live consumer, none to the silent one, and none is lost."""
    producer = await connect()
    await create(producer, "queue", f"{name}-dlq")
    await create(
        producer,
        "queue",
        name,
        visibility_timeout_ms=3000,
        max_attempts=3,
        dead_letter_queue=f"{name}-dlq",
    )
    doomed = await connect()
    rid = doomed.call(doomed.felix.consume, T, N, name, prefetch=64)
    assert isinstance(await doomed.reply(rid), fe.ConsumerStarted)
    rid = producer.call(producer.felix.enqueue, T, N, name, [b"%d" % i for i in range(10)])
    assert isinstance(await producer.reply(rid), fe.PublishAcked)
    await doomed.until(lambda: len(doomed.of(fe.DeliveryReceived)) == 10)

    live = await connect()
    rid = live.call(live.felix.consume, T, N, name, prefetch=1)
    assert isinstance(await live.reply(rid), fe.ConsumerStarted)
    doomed.kill()  # vanishes without a word, like a SIGKILLed process
    acked: dict[int, int] = {}  # offset -> attempt
    settled: set[int] = set()

    def fresh() -> list[fe.DeliveryReceived]:
        return [e for e in live.of(fe.DeliveryReceived) if e.delivery.delivery_id not in settled]

    async with asyncio.timeout(30):
        while len(acked) < 10:
            await live.until(lambda: bool(fresh()), timeout=30)
            for ev in fresh():
                settled.add(ev.delivery.delivery_id)
                acked[ev.delivery.offset] = ev.delivery.attempt
                live.call(live.felix.ack, ev.consumer_id, [ev.delivery.delivery_id])
    assert sorted(acked) == list(range(10))
    assert max(acked.values()) <= 2  # only the message the killed consumer worked on is charged
    rid = producer.call(
        producer.felix.admin, m.AdminDescribe, kind="queue", tenant=T, namespace=N, name=name
    )
    described = await producer.reply(rid)
    assert isinstance(described, fe.AdminReplied) and described.resource is not None
    assert described.resource["stats"]["dead_lettered"] == 0
