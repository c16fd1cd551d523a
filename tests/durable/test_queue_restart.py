"""A durable queue's group state survives kill -9 (issue 10), on every runtime, with a real
broker subprocess: enqueue 10, consume all 10 and ack 4 with committed acks (answered once
their state records are fsynced; two one by one, two in one frame), SIGKILL the broker,
restart it on the same data directory, consume: exactly the 6 others come back, each
counted as a second attempt (they were in flight at the crash), once their visibility
deadline (2 s) passed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from brokers import Broker, selected_runtimes, start_broker

from felix_client import AckMode, Client, QueueMessage

QUEUE = "jobs"


async def _before_the_crash(broker: Broker) -> list[int]:
    async with Client(broker.url, **broker.client_kwargs()) as client:
        await client.admin.create(
            "queue", QUEUE, {"durability": "durable", "visibility_timeout_ms": 2000}
        )
        await client.enqueue(QUEUE, [f"job-{i}" for i in range(10)])
        got: list[QueueMessage] = []
        with anyio.fail_after(20):
            async with client.consume(QUEUE, prefetch=10) as consumer:
                async for message in consumer:
                    got.append(message)
                    if len(got) == 10:
                        break
                for message in got[:2]:
                    await message.ack_sync(AckMode.COMMITTED)  # its record is on disk
                await consumer.ack_many(got[2:4], wait=True, mode=AckMode.COMMITTED)
                # SIGKILL while the 6 others are in flight (no shutdown, no last fsync)
                broker.process.kill()
                broker.process.wait(timeout=10)
        return [m.offset for m in got]


async def _after_the_restart(broker: Broker) -> list[tuple[int, int, bytes]]:
    async with Client(broker.url, **broker.client_kwargs()) as client:
        got: list[tuple[int, int, bytes]] = []
        async with client.consume(QUEUE, prefetch=100) as consumer:
            with anyio.fail_after(20):  # the 6 come back once their deadline has passed
                while len(got) < 6:
                    message = await anext(consumer)
                    got.append((message.offset, message.attempt, message.payload))
                    await message.ack()
            with anyio.move_on_after(1):  # bounded: any (wrong) 7th message
                message = await anext(consumer)
                got.append((message.offset, message.attempt, message.payload))
        return got


@pytest.mark.parametrize("runtime", selected_runtimes())
def test_acked_messages_stay_acked_after_sigkill(runtime: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_broker(runtime, data)
    try:
        assert anyio.run(_before_the_crash, broker) == list(range(10))
    finally:
        broker.process.kill()  # (killed already unless the test failed before)
        broker.process.wait(timeout=10)
    broker = start_broker(runtime, data)
    try:
        got = anyio.run(_after_the_restart, broker)
    finally:
        broker.stop()
    assert sorted(got) == [(i, 2, f"job-{i}".encode()) for i in range(4, 10)]
