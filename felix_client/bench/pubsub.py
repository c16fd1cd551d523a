"""``pubsub-latency`` and ``pubsub-throughput``: one publisher process, one subscriber
process holding ``fanout`` subscriptions (each on its own connection), a fresh stream per
figure with the broker's default settings (or ``--stream-set``).

Latency: the publisher sends one record at a time and waits for its ack
(``AckMode.ACCEPTED``, batch 1) before the next, noting when each offset was sent; each
subscriber notes when each offset arrived. Clocks are ``time.monotonic_ns`` (one clock for
every process of the machine), so publish-to-deliver is ``arrived - sent`` per delivery;
the percentiles come from an HDR histogram. The first ``LATENCY_WARMUP`` records are left
out.

Throughput: the publisher runs flat out through ``client.publisher(max_batch_records=
batch)`` for the figure's seconds; the rate is deliveries (all subscribers) per second
from the first publish to the last delivery, divided by raw aioquic one-way with messages
of the same size.

Loss: every subscription starts at the stream's first offset, so each must account for
every offset the publisher wrote: received, or skipped by the broker with a gap report
(``sub.missed``: the stream's ``drop_oldest`` policy at work). Drops are counted in the
figure; anything else missing (or received twice) marks the figure invalid.
"""

from __future__ import annotations

import time
from array import array
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..types import Event
from . import raw_quic
from .hdr import distribution, summarize
from .report import Figure
from .runner import Runner
from .settings import BrokerTarget
from .workers import JobContext

__all__ = ["publish_job", "run_latency", "run_throughput", "subscribe_job"]

MODULE = "felix_client.bench.pubsub"
LATENCY_WARMUP = 50
"""Records published (one at a time) before the timed ones in the latency scenario."""
WATCH_EVERY = 0.005
"""Seconds between two checks of the parent's target by a subscriber process."""


@dataclass(slots=True)
class _SubStats:
    received: int = 0
    last_ns: int = 0
    offsets: array[int] = field(default_factory=lambda: array("q"))
    times: array[int] = field(default_factory=lambda: array("q"))


# ------------------------------------------------------------------ jobs (in a worker)


async def subscribe_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Create the stream, open ``fanout`` subscriptions from its start, say ready, read
    until every subscription has passed the parent's target offset (or ``timeout``)."""
    target: BrokerTarget = p["target"]
    record = bool(p["record"])
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(target.connect()) for _ in range(p["fanout"])]
        await clients[0].admin.create("stream", p["stream"], p["settings"])
        subs = []
        for client in clients:
            subs.append(
                await stack.enter_async_context(client.subscribe(p["stream"], start="earliest"))
            )
        stats = [_SubStats() for _ in subs]
        total = [0]
        timed_out = [False]
        ctx.ready()
        cpu = time.process_time()

        async def read(sub: Any, st: _SubStats) -> None:
            clock = time.monotonic_ns
            event: Event
            async for event in sub:
                now = clock()
                st.received += 1
                st.last_ns = now
                if record:
                    st.offsets.append(event.offset)
                    st.times.append(now)
                total[0] += 1
                if total[0] & 63 == 0:
                    ctx.report(total[0])

        async def watch(scope: anyio.CancelScope) -> None:
            deadline = time.monotonic() + p["timeout"]
            while True:
                await anyio.sleep(WATCH_EVERY)
                last = ctx.target()
                if last is not None and all((s.next_offset or 0) > last for s in subs):
                    break
                if time.monotonic() > deadline:
                    timed_out[0] = True
                    break
            scope.cancel()

        async with anyio.create_task_group() as tg:
            for sub, st in zip(subs, stats, strict=True):
                tg.start_soon(read, sub, st)
            tg.start_soon(watch, tg.cancel_scope)
        cpu = time.process_time() - cpu
        ctx.report(total[0])
        return {
            "subs": [
                {
                    "first_offset": sub.first_offset or 0,
                    "received": st.received,
                    "missed": sub.missed,
                    "last_ns": st.last_ns,
                    "offsets": st.offsets.tobytes(),
                    "times": st.times.tobytes(),
                }
                for sub, st in zip(subs, stats, strict=True)
            ],
            "timed_out": timed_out[0],
            "cpu_s": cpu,
        }


async def publish_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Publish for ``seconds``: one acked record at a time (``mode`` latency) or flat out
    through a batching publisher (``mode`` throughput)."""
    target: BrokerTarget = p["target"]
    payload = b"x" * int(p["payload"])
    clock = time.monotonic_ns
    async with target.connect() as client:
        if p["mode"] == "latency":
            for _ in range(LATENCY_WARMUP):
                await client.publish(p["stream"], payload)
            offsets, times = array("q"), array("q")
            cpu = time.process_time()
            started = clock()
            deadline = started + int(p["seconds"] * 1e9)
            last = -1
            while (t0 := clock()) < deadline:
                result = await client.publish(p["stream"], payload)
                assert result is not None
                offsets.append(result.first_offset)
                times.append(t0)
                last = result.last_offset
                ctx.report(len(offsets))
            return {
                "published": LATENCY_WARMUP + len(offsets),
                "last_offset": last,
                "start_ns": started,
                "end_ns": clock(),
                "offsets": offsets.tobytes(),
                "times": times.tobytes(),
                "cpu_s": time.process_time() - cpu,
            }
        batch = int(p["batch"])
        cpu = time.process_time()
        started = clock()
        deadline = started + int(p["seconds"] * 1e9)
        sent = 0
        async with client.publisher(p["stream"], max_batch_records=batch) as pub:
            publish = pub.publish
            while clock() < deadline:
                for _ in range(batch):
                    await publish(payload)
                sent += batch
                ctx.report(sent)
        return {
            "published": pub.acked_records,
            "last_offset": pub.acked_records - 1,
            "start_ns": started,
            "end_ns": clock(),
            "cpu_s": time.process_time() - cpu,
        }


# ------------------------------------------------------------------- the parent's side


def _run_pair(
    runner: Runner, label: str, unit: str, sub_params: dict[str, Any], pub_params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Subscriber job, then publisher job; returns (publisher, subscribers, broker CPU s)."""
    subscriber, publisher = runner.pool[0], runner.pool[1]
    subscriber.submit(f"{MODULE}:subscribe_job", sub_params)
    subscriber.ready(runner.wait)
    mark = runner.cpu_mark()
    runner.begin(label, runner.settings.seconds, lambda: subscriber.progress, unit)
    publisher.submit(f"{MODULE}:publish_job", pub_params)
    published = publisher.result(runner.wait, runner.progress.tick)
    subscriber.set_target(published["last_offset"])
    received = subscriber.result(runner.wait, runner.progress.tick)
    return published, received, runner.broker_cpu_since(mark)


def account(figure: Figure, published: dict[str, Any], received: dict[str, Any]) -> int:
    """Check that every subscription accounts for every published offset; count drops.

    Returns:
        Records delivered, all subscriptions together. Marks ``figure`` invalid on loss
        that no gap report explains, on duplicates, and when a subscriber ran out of time.
    """
    delivered = dropped = unexplained = 0
    for sub in received["subs"]:
        expected = published["last_offset"] + 1 - sub["first_offset"]
        delivered += sub["received"]
        dropped += sub["missed"]
        unexplained += expected - sub["received"] - sub["missed"]
    figure.metrics["published"] = published["published"]
    figure.metrics["delivered"] = delivered
    figure.metrics["dropped"] = dropped
    if dropped:
        figure.notes.append(
            f"{dropped} deliveries dropped by the broker and reported as gaps "
            "(the stream's slow_consumer policy)"
        )
    if unexplained > 0:
        figure.valid = False
        figure.notes.append(f"{unexplained} deliveries lost without a gap report")
    elif unexplained < 0:
        figure.valid = False
        figure.notes.append(f"{-unexplained} deliveries more than published (duplicates)")
    if received["timed_out"]:
        figure.valid = False
        figure.notes.append("the subscribers did not reach the last offset in time")
    return delivered


def _cpu(
    figure: Figure, units: int, publisher_s: float, subscriber_s: float, broker_s: float
) -> None:
    """CPU per delivered record: the clients (publisher and subscriber processes together,
    and each on its own) and the broker."""
    units = max(units, 1)
    figure.metrics["client_cpu_us"] = (publisher_s + subscriber_s) * 1e6 / units
    figure.metrics["publisher_cpu_us"] = publisher_s * 1e6 / units
    figure.metrics["subscriber_cpu_us"] = subscriber_s * 1e6 / units
    figure.metrics["broker_cpu_us"] = broker_s * 1e6 / units


def run_latency(runner: Runner) -> None:
    """Publish-to-deliver percentiles for each fanout and payload of the matrix."""
    m = runner.settings.matrix
    ping_pong = raw_quic.anchor(runner, "ping-pong", m.raw_ping)
    for fanout in m.latency_fanouts:
        for size in m.latency_payloads:
            label = runner.label(f"pub/sub latency {size} B fanout {fanout}")
            stream = runner.name("lat")
            common = {"target": runner.target, "stream": stream, "timeout": runner.job_timeout}
            published, received, broker_s = _run_pair(
                runner,
                label,
                "delivered",
                common
                | {"fanout": fanout, "record": True, "settings": runner.settings.stream_settings},
                common | {"mode": "latency", "payload": size, "seconds": runner.settings.seconds},
            )
            figure = Figure(
                id=runner.ident(f"pubsub-latency/payload={size}/fanout={fanout}"),
                scenario="pubsub-latency",
                label=label,
                params={
                    "payload": size,
                    "fanout": fanout,
                    "batch": 1,
                    "ack": "accepted",
                    "quic_engine": runner.engine,
                },
                anchor=ping_pong,
            )
            delivered = account(figure, published, received)
            sent_at = dict(
                zip(array("q", published["offsets"]), array("q", published["times"]), strict=True)
            )
            samples = array("q")
            for sub in received["subs"]:
                arrived = zip(array("q", sub["offsets"]), array("q", sub["times"]), strict=True)
                samples.extend(t - sent_at[o] for o, t in arrived if o in sent_at)
            figure.metrics.update(summarize([samples]))
            figure.distribution = distribution([samples])
            if not samples:
                figure.valid = False
                figure.notes.append("no timed delivery")
            _cpu(figure, delivered, published["cpu_s"], received["cpu_s"], broker_s)
            runner.add(figure)


def run_throughput(runner: Runner) -> None:
    """Delivered msg/s and MB/s for each payload, batch and fanout of the matrix."""
    m = runner.settings.matrix
    one_way = {size: raw_quic.anchor(runner, "one-way", size) for size in m.throughput_payloads}
    for size in m.throughput_payloads:
        for batch in m.throughput_batches:
            for fanout in m.throughput_fanouts:
                label = runner.label(f"pub/sub {size} B batch {batch} fanout {fanout}")
                stream = runner.name("tput")
                common = {"target": runner.target, "stream": stream, "timeout": runner.job_timeout}
                published, received, broker_s = _run_pair(
                    runner,
                    label,
                    "delivered",
                    common
                    | {
                        "fanout": fanout,
                        "record": False,
                        "settings": runner.settings.stream_settings,
                    },
                    common
                    | {
                        "mode": "throughput",
                        "payload": size,
                        "batch": batch,
                        "seconds": runner.settings.seconds,
                    },
                )
                figure = Figure(
                    id=runner.ident(
                        f"pubsub-throughput/payload={size}/batch={batch}/fanout={fanout}"
                    ),
                    scenario="pubsub-throughput",
                    label=label,
                    params={
                        "payload": size,
                        "batch": batch,
                        "fanout": fanout,
                        "ack": "accepted",
                        "quic_engine": runner.engine,
                    },
                    anchor=one_way[size],
                )
                delivered = account(figure, published, received)
                last = max((s["last_ns"] for s in received["subs"]), default=0)
                # From the first publish to the last delivery (or the publisher's end).
                seconds = max((last or published["end_ns"]) - published["start_ns"], 1) / 1e9
                figure.metrics.update(
                    {
                        "msg_per_s": delivered / seconds,
                        "mb_per_s": delivered * size / seconds / 1e6,
                        "publish_msg_per_s": published["published"]
                        / max((published["end_ns"] - published["start_ns"]) / 1e9, 1e-9),
                        "seconds": seconds,
                    }
                )
                if delivered == 0:
                    figure.valid = False
                    figure.notes.append("nothing was delivered")
                _cpu(figure, delivered, published["cpu_s"], received["cpu_s"], broker_s)
                runner.add(figure)
