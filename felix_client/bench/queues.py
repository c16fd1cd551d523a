"""``queue``: enqueue -> consume -> ack, with 1 and 4 consumers.

A producer process enqueues ``queue_payload``-byte messages in lists of
``queue_enqueue_batch`` (each list one acked request, ``ENQUEUES_IN_FLIGHT`` requests in
flight) for the figure's seconds, keeping at most ``BACKLOG_PER_CONSUMER`` messages per
consumer ahead of what the consumers acked (it reads their count from the shared progress
array), so the queue stays within its limits and the figure measures consumption. A
consumer process holds the consumers, each on its own connection in one group, running the
natural loop ``async for msg in consumer: await msg.ack()``. The rate is acks per second
from the first enqueue to the last ack; every enqueued message must be acked once, else
the figure is invalid.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import anyio

from ..client import DEFAULT_PREFETCH
from . import raw_quic
from .report import Figure
from .runner import Runner
from .settings import BrokerTarget
from .workers import JobContext

__all__ = ["consume_job", "enqueue_job", "run"]

MODULE = "felix_client.bench.queues"
BACKLOG_PER_CONSUMER = 4 * DEFAULT_PREFETCH
"""Most messages the producer keeps enqueued and not yet acked, per consumer: four times
the client's default prefetch, so a consumer never waits for the producer, while the
drain after the producer stops stays short."""
ENQUEUES_IN_FLIGHT = 4
"""Enqueue requests the producer keeps in flight (tasks each awaiting its own): one at a
time, the producer's round trip (a 64-message list per request-reply) bounded the figure
and the consumers waited for it, where the pub/sub figure's publisher keeps up to 8 MiB
in flight."""
GROUP = "bench"


async def consume_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Create the queue, join its group with ``consumers`` consumers, say ready, ack until
    the parent's target count is reached (or ``timeout``)."""
    target: BrokerTarget = p["target"]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(target.connect()) for _ in range(p["consumers"])]
        await clients[0].admin.create("queue", p["queue"], {})
        consumers = [
            await stack.enter_async_context(c.consume(p["queue"], group=GROUP)) for c in clients
        ]
        state = {"acked": 0, "redelivered": 0, "last_ns": 0}
        timed_out = [False]
        ctx.ready()
        cpu = time.process_time()

        async def take(consumer: Any) -> None:
            clock = time.monotonic_ns
            async for message in consumer:
                await message.ack()
                state["acked"] += 1
                state["last_ns"] = clock()
                if message.attempt > 1:
                    state["redelivered"] += 1
                ctx.report(state["acked"])

        async def watch(scope: anyio.CancelScope) -> None:
            deadline = time.monotonic() + p["timeout"]
            while True:
                await anyio.sleep(0.005)
                goal = ctx.target()
                if goal is not None and state["acked"] >= goal:
                    break
                if time.monotonic() > deadline:
                    timed_out[0] = True
                    break
            scope.cancel()

        async with anyio.create_task_group() as tg:
            for consumer in consumers:
                tg.start_soon(take, consumer)
            tg.start_soon(watch, tg.cancel_scope)
        return {**state, "timed_out": timed_out[0], "cpu_s": time.process_time() - cpu}


async def enqueue_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Enqueue lists of messages for ``seconds`` from ``in_flight`` tasks (each awaits its
    enqueue), at most ``backlog`` ahead of the acks counted by worker ``pace``."""
    target: BrokerTarget = p["target"]
    items = [b"q" * int(p["payload"])] * int(p["batch"])
    clock = time.monotonic_ns
    async with target.connect() as client:
        cpu = time.process_time()
        started = clock()
        deadline = started + int(p["seconds"] * 1e9)
        counts = {"sent": 0, "enqueued": 0}
        gate = anyio.Lock()
        backlog, pace = int(p["backlog"]), int(p["pace"])

        def ahead() -> bool:
            return counts["sent"] - ctx.progress_of(pace) >= backlog

        async def produce() -> None:
            while clock() < deadline:
                if ahead():
                    async with gate:  # one task polls for room, the others wait for it
                        while ahead() and clock() < deadline:
                            await anyio.sleep(0.001)
                    continue
                counts["sent"] += len(items)
                await client.enqueue(p["queue"], items)
                counts["enqueued"] += len(items)
                ctx.report(counts["enqueued"])

        async with anyio.create_task_group() as tg:
            for _ in range(p["in_flight"]):
                tg.start_soon(produce)
        return {
            "enqueued": counts["enqueued"],
            "start_ns": started,
            "end_ns": clock(),
            "cpu_s": time.process_time() - cpu,
        }


def run(runner: Runner) -> None:
    """One figure per consumer count of the matrix."""
    m = runner.settings.matrix
    consumer_worker, producer = runner.pool[0], runner.pool[1]
    one_way = raw_quic.anchor(runner, "one-way", m.queue_payload)
    for count in m.queue_consumers:
        label = runner.label(
            f"queue {m.queue_payload} B, {count} consumer{'s' if count > 1 else ''}"
        )
        common = {
            "target": runner.target,
            "queue": runner.name("queue"),
            "timeout": runner.job_timeout,
        }
        consumer_worker.submit(f"{MODULE}:consume_job", common | {"consumers": count})
        consumer_worker.ready(runner.wait)
        mark = runner.cpu_mark()
        runner.begin(label, runner.settings.seconds, lambda: consumer_worker.progress, "acked")
        producer.submit(
            f"{MODULE}:enqueue_job",
            common
            | {
                "payload": m.queue_payload,
                "batch": m.queue_enqueue_batch,
                "seconds": runner.settings.seconds,
                "pace": consumer_worker.index,
                "backlog": BACKLOG_PER_CONSUMER * count,
                "in_flight": ENQUEUES_IN_FLIGHT,
            },
        )
        made = producer.result(runner.wait, runner.progress.tick)
        consumer_worker.set_target(made["enqueued"])
        taken = consumer_worker.result(runner.wait, runner.progress.tick)
        broker_s = runner.broker_cpu_since(mark)
        figure = Figure(
            id=runner.ident(f"queue/consumers={count}"),
            scenario="queue",
            label=label,
            params={
                "payload": m.queue_payload,
                "consumers": count,
                "enqueue_batch": m.queue_enqueue_batch,
                "ack": "await per message",
                "quic_engine": runner.engine,
            },
            anchor=one_way,
        )
        acked = taken["acked"]
        seconds = max((taken["last_ns"] or made["end_ns"]) - made["start_ns"], 1) / 1e9
        units = max(acked, 1)
        figure.metrics = {
            "msg_per_s": acked / seconds,
            "enqueued": made["enqueued"],
            "acked": acked,
            "redelivered": taken["redelivered"],
            "seconds": seconds,
            "client_cpu_us": (made["cpu_s"] + taken["cpu_s"]) * 1e6 / units,
            "broker_cpu_us": broker_s * 1e6 / units,
        }
        if acked != made["enqueued"]:
            figure.valid = False
            figure.notes.append(f"{made['enqueued']} enqueued but {acked} acked")
        if taken["timed_out"]:
            figure.valid = False
            figure.notes.append("the consumers did not ack everything in time")
        runner.add(figure)
