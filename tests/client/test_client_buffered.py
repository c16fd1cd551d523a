"""``Subscription.buffered``: records received and not read yet (``felix sub`` flushes its
output only before a read that may wait)."""

from __future__ import annotations

import itertools
import os

import anyio
import pytest
from brokers import Broker

from felix_client import Client

pytestmark = pytest.mark.anyio
_names = itertools.count()


async def test_buffered_counts_what_arrived_and_was_not_read(broker: Broker) -> None:
    stream = f"buffered-{os.getpid()}-{next(_names)}"
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        await client.admin.create("stream", stream)
        await client.publish_batch(stream, [b"a", b"b", b"c"])  # one batch on the wire
        with anyio.fail_after(10):
            async with client.subscribe(stream, start="earliest") as sub:
                assert sub.buffered == 0
                first = await anext(sub)
                assert (first.payload, sub.buffered) == (b"a", 2)
                await anext(sub)
                assert sub.buffered == 1
                await anext(sub)
                assert sub.buffered == 0
