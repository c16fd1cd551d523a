"""After the broker's GoAway, new requests fail with ShuttingDown (501, retryable), as
docs/broker.md says, not with ConnectionLost. Runs against every runtime."""

from __future__ import annotations

import os
import signal

import anyio
import pytest
from brokers import FreshBroker

from felix_client import Client, ShuttingDown

pytestmark = pytest.mark.anyio


async def test_requests_after_goaway_fail_with_shutting_down(fresh_broker: FreshBroker) -> None:
    broker = await anyio.to_thread.run_sync(
        lambda: fresh_broker("--shutdown-grace-s", "5", "--shutdown-drain-s", "6")
    )
    async with Client(broker.url, ca_file=broker.ca_file, timeout=3.0) as client:
        await client.admin.create("stream", "bye")
        await client.publish("bye", b"before")
        os.kill(broker.process.pid, signal.SIGTERM)
        with anyio.fail_after(5):
            while True:  # until the GoAway has arrived (bounded by fail_after)
                try:
                    await client.publish("bye", b"during")
                except ShuttingDown as exc:
                    assert exc.retryable
                    break
                await anyio.sleep(0.02)
        with pytest.raises(ShuttingDown):
            await client.publish("bye", b"again")


async def test_a_subscriber_keeps_granting_credit_during_the_drain(
    fresh_broker: FreshBroker,
) -> None:
    """The broker drains acked records to subscribers during its grace period (spec §5.5:
    credit, acks and unsubscribes are still allowed after GoAway); a client that stopped
    granting credit at GoAway got only what its window held."""
    broker = await anyio.to_thread.run_sync(
        lambda: fresh_broker("--shutdown-grace-s", "8", "--shutdown-drain-s", "9")
    )
    total = 1000  # ten windows of credit after the GoAway
    async with Client(broker.url, ca_file=broker.ca_file, timeout=3.0) as client:
        await client.admin.create("stream", "drain")
        for start in range(0, total, 500):
            await client.publish_batch("drain", [b"r%d" % i for i in range(start, start + 500)])
        got: list[bytes] = []
        with anyio.fail_after(15):
            async with client.subscribe(
                "drain", start="earliest", credit_messages=100, credit_bytes=1 << 20
            ) as sub:
                with pytest.raises(ShuttingDown):
                    async for event in sub:
                        got.append(event.payload)
                        if len(got) == 50:
                            os.kill(broker.process.pid, signal.SIGTERM)
                        await anyio.sleep(0.0005 if len(got) % 50 else 0.01)
        assert got == [b"r%d" % i for i in range(total)]
