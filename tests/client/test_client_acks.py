"""Queue acks without a round trip each: coalesced per loop pass into one ``Ack`` frame,
failures still reported, ``ack_sync`` / ``ack_many`` / bulk nacks, the blocking client too
(against a real broker on 127.0.0.1, asyncio and trio)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import pytest
from brokers import Broker

from felix_client import AckMode, Client, InvalidArgument, NotFound
from felix_client._connection import Connection
from felix_client._streams import Consumer, QueueMessage
from felix_client.sync import BlockingClient
from felix_proto.client import ClientConnection

pytestmark = pytest.mark.anyio
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"acks-{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        yield c


def record_settlements(conn: Connection) -> list[tuple[str, list[int]]]:
    """Every Ack / Nack frame the connection's machine is asked to send, with its ids."""
    frames: list[tuple[str, list[int]]] = []
    machine: ClientConnection = conn.machine

    def spy(kind: str, real: Callable[..., int | None]) -> Callable[..., int | None]:
        def call(consumer_id: int, ids: Sequence[int], **kw: Any) -> int | None:
            frames.append((kind, list(ids)))
            return real(consumer_id, ids, **kw)

        return call

    machine.ack = spy("ack", machine.ack)  # type: ignore[method-assign]
    machine.nack = spy("nack", machine.nack)  # type: ignore[method-assign]
    return frames


async def take(consumer: Consumer, n: int) -> list[QueueMessage]:
    return [await anext(consumer) for _ in range(n)]


async def assert_queue_empty(client: Client, queue: str) -> None:
    """Nothing is left or redelivered: the next message is a fresh marker."""
    await client.enqueue(queue, b"marker")
    async with client.consume(queue) as consumer:
        msg = await anext(consumer)
        assert (msg.payload, msg.attempt) == (b"marker", 1)
        await msg.ack()


async def test_acks_of_one_pass_leave_in_one_frame(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"m%d" % i for i in range(6)])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=16) as consumer:
            msgs = await take(consumer, 6)
            assert isinstance(consumer._conn, Connection)
            frames = record_settlements(consumer._conn)
            for msg in msgs:
                await msg.ack()  # none waits for the broker
            assert frames == []  # buffered until the pass ends
            await consumer.flush_acks()
            assert frames == [("ack", [m.delivery_id for m in msgs])]
        await assert_queue_empty(client, queue)


async def test_half_the_prefetch_settled_is_sent_at_once(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"m%d" % i for i in range(4)])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=4) as consumer:
            msgs = await take(consumer, 4)
            assert isinstance(consumer._conn, Connection)
            frames = record_settlements(consumer._conn)
            await msgs[0].ack()
            assert frames == []
            await msgs[1].ack()  # 2 of a prefetch of 4: the broker can refill now
            assert frames == [("ack", [msgs[0].delivery_id, msgs[1].delivery_id])]
            await msgs[2].ack()
            await msgs[3].ack()
        await assert_queue_empty(client, queue)


async def test_the_natural_loop_acks_without_a_round_trip_each(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    count = 200
    await client.enqueue(queue, [b"m%d" % i for i in range(count)])
    seen = 0
    with anyio.fail_after(20):
        async with client.consume(queue, prefetch=64) as consumer:
            assert isinstance(consumer._conn, Connection)
            frames = record_settlements(consumer._conn)
            async for msg in consumer:
                await msg.ack()
                seen += 1
                if seen == count:
                    break
            await consumer.flush_acks()
        acked = [i for _, ids in frames for i in ids]
        await assert_queue_empty(client, queue)
    assert len(acked) == len(set(acked)) == count
    assert len(frames) < count // 4  # many ids per frame, not one frame per message


async def test_a_failure_the_broker_reports_later_is_raised_by_the_consumer(
    client: Client,
) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue, {"visibility_timeout_ms": 50})
    await client.enqueue(queue, [b"slow"])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=1) as consumer:
            late = await anext(consumer)
            again = await anext(consumer)  # redelivered once the first timed out
            assert again.attempt == 2
            await late.ack()  # does not wait: the broker's NotFound comes later
            with pytest.raises(NotFound):
                await consumer.flush_acks()
            await again.ack_sync()  # waits, and succeeds
            await late_failure_reaches_the_iterator(client, queue, consumer)


async def late_failure_reaches_the_iterator(client: Client, queue: str, consumer: Consumer) -> None:
    await client.enqueue(queue, [b"next"])
    stale = await anext(consumer)
    again = await anext(consumer)  # visibility timeout passed: handed out again
    await stale.ack()
    assert isinstance(consumer._conn, Connection)
    await consumer._conn.flush_acks()  # every answer is in, the error kept for the consumer
    with pytest.raises(NotFound):
        await anext(consumer)
    await again.ack()


async def test_ack_sync_raises_the_brokers_refusal(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue, {"visibility_timeout_ms": 50})
    await client.enqueue(queue, [b"slow"])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=1) as consumer:
            late = await anext(consumer)
            again = await anext(consumer)
            with pytest.raises(NotFound):
                await late.ack_sync()
            await again.ack()


async def test_ack_many_and_nack_many_send_one_frame_each(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"m%d" % i for i in range(6)])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=64) as consumer:
            msgs = await take(consumer, 6)
            assert isinstance(consumer._conn, Connection)
            frames = record_settlements(consumer._conn)
            await consumer.ack_many(msgs[:3], wait=True)
            assert frames == [("ack", [m.delivery_id for m in msgs[:3]])]
            await consumer.nack_many(msgs[3:])
            with pytest.raises(NotFound):  # settled already
                await consumer.ack_many(msgs[3:4])
            await consumer.flush_acks()
            assert frames[1] == ("nack", [m.delivery_id for m in msgs[3:]])
            back = await take(consumer, 3)
            assert sorted(m.payload for m in back) == [b"m3", b"m4", b"m5"]
            assert {m.attempt for m in back} == {2}
            await consumer.ack_many(back)
        await assert_queue_empty(client, queue)


async def test_committed_acks_leave_in_frames_of_their_own_with_mode_committed(
    client: Client,
) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)  # ephemeral: committed is answered at once
    await client.enqueue(queue, [b"m%d" % i for i in range(4)])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=64) as consumer:
            msgs = await take(consumer, 4)
            assert isinstance(consumer._conn, Connection)
            machine = consumer._conn.machine
            modes: list[tuple[list[int], AckMode]] = []
            real = machine.ack

            def spy(consumer_id: int, ids: Sequence[int], **kw: Any) -> int | None:
                modes.append((list(ids), kw["mode"]))
                return real(consumer_id, ids, **kw)

            machine.ack = spy  # type: ignore[method-assign]
            await msgs[0].ack()  # buffered with the next pass's ...
            await msgs[1].ack_sync(AckMode.COMMITTED)  # ... but not in the same frame
            await consumer.ack_many(msgs[2:], wait=True, mode=AckMode.COMMITTED)
            with pytest.raises(InvalidArgument):
                await consumer.ack_many([], mode=AckMode.NONE)
            await consumer.flush_acks()
            machine.ack = real  # type: ignore[method-assign]
        await assert_queue_empty(client, queue)
    ids = [m.delivery_id for m in msgs]
    assert sorted(modes) == sorted(
        [([ids[0]], AckMode.ACCEPTED), ([ids[1]], AckMode.COMMITTED), (ids[2:], AckMode.COMMITTED)]
    )


async def test_settling_twice_or_after_the_end_is_not_found(client: Client) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"a", b"b"])
    with anyio.fail_after(10):
        async with client.consume(queue, prefetch=4) as consumer:
            a, b = await take(consumer, 2)
            await a.ack()
            with pytest.raises(NotFound):
                await a.ack()
            with pytest.raises(NotFound):
                await a.nack_sync()
        with pytest.raises(NotFound):  # the consumer is closed
            await b.ack()


def test_the_blocking_client_acks_in_bulk_and_in_sync(broker: Broker) -> None:
    queue = unique("q")
    with BlockingClient(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        client.admin("create", "queue", queue)
        client.enqueue(queue, [b"m%d" % i for i in range(5)])
        got = list(client.consume(queue, limit=5, timeout=5.0))
        assert len(got) == 5
        # the iterator closed its consumer: unsettled ones come back
        again = list(client.consume(queue, limit=5, timeout=5.0))
        redelivered = {m.payload for m in again}
        assert redelivered == {b"m%d" % i for i in range(5)}
        client.enqueue(queue, [b"x"])
        it = client.consume(queue, limit=7, timeout=5.0)
        msgs = [next(it) for _ in range(6)]
        msgs[0].ack()
        msgs[1].ack_sync()
        msgs[2].nack()
        client.ack_many(msgs[3:])
        last = next(it)  # the nacked one, redelivered
        assert last.payload == msgs[2].payload
        last.ack_sync()
        it.close()
        client.enqueue(queue, [b"marker"])
        (marker,) = list(client.consume(queue, limit=1, timeout=5.0))
        assert marker.payload == b"marker" and marker.attempt == 1  # nothing came back
