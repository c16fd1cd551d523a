"""Reconnect: a subscription resumes from the last offset it handed out after its connection
was lost, on the same log only: a stream that is gone after a broker restart, or was
re-created (a new log), raises NotFound instead of resuming into it. Runs against every
runtime (``fresh_broker`` starts brokers of the test's runtime)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from brokers import FreshBroker

from felix_client import Client, ConnectionLost, NotFound

pytestmark = pytest.mark.anyio

FAST_SHUTDOWN = ("--shutdown-grace-s", "0.2", "--shutdown-drain-s", "1")


async def test_subscription_resumes_on_the_same_log_after_a_lost_connection(
    fresh_broker: FreshBroker,
) -> None:
    broker = await anyio.to_thread.run_sync(lambda: fresh_broker(*FAST_SHUTDOWN))
    async with Client(
        broker.url, ca_file=broker.ca_file, timeout=3.0, reconnect=True, idle_timeout=1.0
    ) as c:
        await c.admin.create("stream", "blip")
        await c.publish_batch("blip", [b"a0", b"a1", b"a2"])
        async with c.subscribe("blip", start="earliest") as sub:
            with anyio.fail_after(5):
                got = [(await anext(sub)).payload for _ in range(3)]
            assert got == [b"a0", b"a1", b"a2"] and sub.log_identity is not None

            # The broker is silent for longer than the client's idle timeout: the client's
            # connection dies while the broker (and the stream) stay.
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                await anyio.sleep(2.0)
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            with anyio.fail_after(10):
                await c.publish("blip", b"b3")  # on a new connection
                event = await anext(sub)
            assert (event.offset, event.payload) == (3, b"b3")
            assert sub.resumes == 1


async def test_no_resumption_into_a_gone_or_recreated_stream(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "restart"  # both brokers: the same certificate
    first = await anyio.to_thread.run_sync(lambda: fresh_broker(*FAST_SHUTDOWN, data_dir=data_dir))
    async with Client(first.url, ca_file=first.ca_file, timeout=3.0, reconnect=True) as c:
        await c.admin.create("stream", "resume")
        await c.publish_batch("resume", [b"a0", b"a1", b"a2"])
        async with (
            c.subscribe("resume", start="earliest") as gone,
            c.subscribe("resume", start="earliest") as recreated,
        ):
            with anyio.fail_after(5):
                for sub in (gone, recreated):
                    assert [(await anext(sub)).offset for _ in range(3)] == [0, 1, 2]

            # The broker restarts on the same port: the ephemeral stream's definition is
            # back with a new uid, its records are gone.
            assert await anyio.to_thread.run_sync(first.stop) == 0
            await anyio.to_thread.run_sync(
                lambda: fresh_broker(*FAST_SHUTDOWN, data_dir=data_dir, port=first.port)
            )
            with anyio.fail_after(15), pytest.raises(NotFound, match="its log is new"):
                await anext(gone)

            # Re-created with more records than were read: offset 3 exists, in a new log.
            with anyio.fail_after(5):
                while True:
                    try:
                        await c.admin.delete("stream", "resume")
                        await c.admin.create("stream", "resume")
                        break
                    except ConnectionLost:
                        await anyio.sleep(0.1)
            await c.publish_batch("resume", [b"b0", b"b1", b"b2", b"b3", b"b4"])
            with anyio.fail_after(10), pytest.raises(NotFound, match="re-created") as caught:
                await anext(recreated)
            assert caught.value.details["recreated"] is True
            assert recreated.resumes == 0
