"""Frames and datagrams per acked queue message, with 1 or more consumers.

What ``felix bench queue`` runs, counted: a broker in its own process, a producer process
enqueueing lists of 64 x 100 B (``--in-flight`` requests in flight, at most 1,024 messages
per consumer ahead of the acks), and here, in this process, ``--consumers`` consumers on a
connection each, in one group, running ``async for msg in consumer: await msg.ack()``.
After a warm-up it counts, over ``--seconds``: the ``DeliveryBatch`` / ``Delivery``
frames the consumers received (and the deliveries per batch), the ``Ack`` frames they
sent, the datagrams their connections (and the producer's) received and sent, and the
CPU of each process; then prints each per 1,000 acked messages. The counters wrap the
client's socket and machine methods (in this process and the producer's), so the figures
come from the code as it runs.

Usage::

    .venv/bin/python benchmarks/queue_frames.py [--consumers 4] [--seconds 3]
        [--quic-engine aioquic] [--in-flight 4] [--profile FILE]

``--profile FILE`` writes a cProfile (CPU clock, ``time.process_time``) of this process,
the consumers, over the measured seconds (``python -m pstats FILE``); it slows them, so
the rates of such a run are not figures.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import multiprocessing
import multiprocessing.sharedctypes
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from felix_client import _transport
from felix_client.bench.servers import LocalBroker, process_cpu_seconds
from felix_client.bench.settings import BrokerTarget
from felix_proto import client as proto_client

BATCH = 64
BACKLOG_PER_CONSUMER = 1024
WARM_UP_S = 1.5


def produce(
    target: BrokerTarget,
    consumers: int,
    in_flight: int,
    acked: Any,
    stop: Any,
    cpu: Any,
    datagrams: Any,
) -> None:
    """The producer process: enqueue lists until ``stop``, within the backlog; ``cpu`` and
    ``datagrams`` (received, sent) are its running totals."""
    counts: collections.Counter[str] = collections.Counter()
    count_frames(counts, [])

    async def main() -> None:
        items = [b"q" * 100] * BATCH
        async with target.connect() as client:
            sent = [0]
            gate = anyio.Lock()

            def ahead() -> bool:
                return bool(sent[0] - acked.value >= BACKLOG_PER_CONSUMER * consumers)

            async def one() -> None:
                while not stop.value:
                    if ahead():
                        async with gate:  # one task polls for room, the others wait for it
                            while ahead() and not stop.value:
                                await anyio.sleep(0.001)
                        continue
                    sent[0] += BATCH
                    await client.enqueue("frames", items)

            async with anyio.create_task_group() as tg:
                for _ in range(in_flight):
                    tg.start_soon(one)
                while not stop.value:
                    cpu.value = time.process_time()
                    datagrams[0] = counts["datagrams received"]
                    datagrams[1] = counts["datagrams sent"]
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

    anyio.run(main)


def count_frames(counts: collections.Counter[str], sizes: list[int]) -> None:
    """Wrap the client's socket and machine methods to count what passes (this process)."""
    sock = _transport._UdpSocket
    take, send_nowait = sock._take, sock.send_nowait
    deliver, ack = proto_client.ClientConnection._deliver, proto_client.ClientConnection.ack

    def counted_take(self: Any, limit: int) -> list[bytes]:
        out = take(self, limit)
        counts["datagrams received"] += len(out)
        return out

    def counted_send(self: Any, datagrams: list[tuple[bytes, object]]) -> int:
        sent = send_nowait(self, datagrams)
        counts["datagrams sent"] += sent
        return sent

    def counted_deliver(self: Any, feed: Any, msg: Any) -> None:
        counts[f"{type(msg).__name__} frames received"] += 1
        if type(msg).__name__ == "DeliveryBatch":
            sizes.append(len(msg.delivery_ids))
        deliver(self, feed, msg)

    def counted_ack(self: Any, *args: Any, **kw: Any) -> int | None:
        counts["Ack frames sent"] += 1
        return ack(self, *args, **kw)

    sock._take = counted_take  # type: ignore[method-assign]
    sock.send_nowait = counted_send  # type: ignore[method-assign]
    proto_client.ClientConnection._deliver = counted_deliver  # type: ignore[method-assign]
    proto_client.ClientConnection.ack = counted_ack  # type: ignore[method-assign]


async def consume(args: argparse.Namespace, broker: LocalBroker) -> None:
    """Run the consumers and the producer; print the counts."""
    counts: collections.Counter[str] = collections.Counter()
    sizes: list[int] = []
    count_frames(counts, sizes)
    target = BrokerTarget(url=broker.url, ca_file=broker.ca_file, quic_engine=args.quic_engine)
    ctx = multiprocessing.get_context("spawn")
    acked: Any = multiprocessing.sharedctypes.RawValue("q", 0)
    stop: Any = multiprocessing.sharedctypes.RawValue("b", 0)
    producer_cpu: Any = multiprocessing.sharedctypes.RawValue("d", 0.0)
    producer_datagrams: Any = multiprocessing.sharedctypes.RawArray("q", 2)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(target.connect()) for _ in range(args.consumers)]
        await clients[0].admin.create("queue", "frames", {})
        consumers = [
            await stack.enter_async_context(c.consume("frames", group="g")) for c in clients
        ]
        producer = ctx.Process(
            target=produce,
            args=(
                target,
                args.consumers,
                args.in_flight,
                acked,
                stop,
                producer_cpu,
                producer_datagrams,
            ),
        )
        producer.start()

        async def take(consumer: Any) -> None:
            async for msg in consumer:
                await msg.ack()
                acked.value += 1

        async with anyio.create_task_group() as tg:
            for consumer in consumers:
                tg.start_soon(take, consumer)
            await anyio.sleep(WARM_UP_S)
            profile = cProfile.Profile(time.process_time) if args.profile else None
            if profile is not None:
                profile.enable()
            counts.clear()
            sizes.clear()
            start = (
                acked.value,
                time.monotonic(),
                time.process_time(),
                producer_cpu.value,
                process_cpu_seconds(broker.pid),
                producer_datagrams[0],
                producer_datagrams[1],
            )
            await anyio.sleep(args.seconds)
            n = acked.value - start[0]
            seconds = time.monotonic() - start[1]
            cpu = (
                time.process_time() - start[2],
                producer_cpu.value - start[3],
                process_cpu_seconds(broker.pid) - start[4],
            )
            counts["producer: datagrams received"] = producer_datagrams[0] - start[5]
            counts["producer: datagrams sent"] = producer_datagrams[1] - start[6]
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            tg.cancel_scope.cancel()
        stop.value = 1
        producer.join()
    n = max(n, 1)
    print(
        f"{args.consumers} consumer(s), {args.quic_engine}, {args.in_flight} enqueue(s) in "
        f"flight: {n / seconds:,.0f} acked msg/s; CPU us per acked message: consumers "
        f"{cpu[0] * 1e6 / n:.1f}, producer {cpu[1] * 1e6 / n:.1f}, broker {cpu[2] * 1e6 / n:.1f}"
    )
    for key in sorted(counts):
        print(f"  {key} per 1,000 acked messages: {counts[key] * 1000 / n:.1f}")
    if sizes:
        print(f"  deliveries per DeliveryBatch: mean {statistics.mean(sizes):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quic-engine", default="aioquic")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--profile", help="write a cProfile of the consumers' process here")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalBroker("asyncio", Path(tmp), args.quic_engine) as broker,
    ):
        anyio.run(consume, args, broker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
