"""A consumer reads a ``DeliveryBatch`` as rows of its columns (the machine's
``DeliveriesReceived``): each row is what the lone ``Delivery`` of ``unbatch`` holds, with
the optional columns (timestamps, keys, headers) absent or present; against a real broker
on 127.0.0.1, a batch that arrives with the consumer's reply (before its inbox exists) is
read in full, from its columns."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import anyio
import pytest
from brokers import Broker

from felix_client import Client
from felix_client._streams import _row, _rows
from felix_proto import messages as m
from felix_proto.client import unbatch

FULL = m.DeliveryBatch(
    delivery_ids=[5, 6, 7],
    attempts=[1, 2, 1],
    offsets=[10, 3, 11],
    payloads=[b"a", b"b", b"c"],
    timestamps_ms=[100, 90, 101],
    keys=[None, b"k", None],
    headers=[None, None, {"h": b"v"}],
)
BARE = m.DeliveryBatch(
    delivery_ids=[8, 9], attempts=[1, 3], offsets=[12, 13], payloads=[b"d", b"e"]
)


def test_rows_are_the_lone_deliveries_with_every_column() -> None:
    assert list(_rows(FULL)) == [_row(d) for d in unbatch(FULL)]
    assert list(_rows(FULL))[2] == (7, 1, 11, b"c", 101, None, {"h": b"v"})


def test_rows_fill_absent_columns_as_a_lone_delivery_does() -> None:
    assert list(_rows(BARE)) == [_row(d) for d in unbatch(BARE)]
    assert list(_rows(BARE)) == [(8, 1, 12, b"d", 0, None, None), (9, 3, 13, b"e", 0, None, None)]


_names = itertools.count()


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        yield c


@pytest.mark.anyio
async def test_a_batch_is_read_from_its_columns_even_when_it_came_with_the_reply(
    client: Client,
) -> None:
    queue = f"rows-{os.getpid()}-{next(_names)}"
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"m%d" % i for i in range(5)])  # waiting before the consumer
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=16) as consumer:
            msgs = [await anext(consumer)]
            assert consumer._rows is not None  # the other four come from the same frame
            msgs += [await anext(consumer) for _ in range(4)]
            assert [m.payload for m in msgs] == [b"m%d" % i for i in range(5)]
            assert [m.offset for m in msgs] == list(range(msgs[0].offset, msgs[0].offset + 5))
            assert {m.attempt for m in msgs} == {1}
            assert all(m.timestamp_ms > 0 and m.key is None for m in msgs)
            for m in msgs:
                await m.ack()
