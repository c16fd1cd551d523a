"""Reconnect: a subscription resumes from the last offset it handed out after the broker
restarts, and requests after the restart use a fresh connection. Runs against every
runtime (``fresh_broker`` starts brokers of the test's runtime)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from brokers import FreshBroker

from felix_client import Client, ConnectionLost

pytestmark = pytest.mark.anyio

FAST_SHUTDOWN = ("--shutdown-grace-s", "0.2", "--shutdown-drain-s", "1")


async def test_subscription_resumes_after_broker_restart(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "restart"  # both brokers: the same certificate
    first = await anyio.to_thread.run_sync(lambda: fresh_broker(*FAST_SHUTDOWN, data_dir=data_dir))
    async with Client(first.url, ca_file=first.ca_file, timeout=3.0, reconnect=True) as c:
        await c.admin.create("stream", "resume")
        await c.publish_batch("resume", [b"a0", b"a1", b"a2"])
        async with c.subscribe("resume", start="earliest") as sub:
            with anyio.fail_after(5):
                got = [(await anext(sub)).payload for _ in range(3)]
            assert got == [b"a0", b"a1", b"a2"] and sub.next_offset == 3

            # The broker goes away; an in-memory broker comes back on the same port
            # and gets records 0..4; the subscription must continue at offset 3.
            assert await anyio.to_thread.run_sync(first.terminate) == 0
            await anyio.to_thread.run_sync(
                lambda: fresh_broker(*FAST_SHUTDOWN, data_dir=data_dir, port=first.port)
            )
            with anyio.fail_after(5):
                while True:
                    try:
                        await c.admin.create("stream", "resume")
                        break
                    except ConnectionLost:
                        await anyio.sleep(0.1)
            await c.publish_batch("resume", [b"b0", b"b1", b"b2", b"b3", b"b4"])
            with anyio.fail_after(10):
                event = await anext(sub)
            assert (event.offset, event.payload) == (3, b"b3")
            assert sub.resumes >= 1
