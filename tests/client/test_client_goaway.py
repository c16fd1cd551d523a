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
