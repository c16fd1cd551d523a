"""``memory``: the broker's resident memory while one subscriber is stalled.

One subscriber process creates a fresh stream (the broker's defaults, or ``--stream-set``),
subscribes from its start with the client's default credit (8192 records / 1 MiB) and then
reads nothing: its connection stays open and its client keeps acknowledging QUIC packets,
but it grants no more credit. A publisher process then publishes ``--memory-publishes``
records (default 1,000,000) of 100 B in batches of 64, as fast as the broker takes them.

The parent reads the broker's ``VmRSS`` from ``/proc/PID/status`` before (the baseline) and
every 20 ms during the figure, and resets the broker's ``VmHWM`` just before the publisher
starts (``/proc/PID/clear_refs``), so the peak is the kernel's high-water mark over the
figure, not a sample that may have missed it. The bound is::

    peak <= baseline + limits + 50 MB

where *limits* is what the broker's effective configuration (``felix broker
--print-config`` with the flags it runs with) lets grow under this load: the stream's
``retention_max_bytes`` (as the broker describes the stream), and for each of the two
connections ``transport.connection_buffer_cap`` (bytes queued to send) plus
``transport.max_data`` (its receive window). The figure lists each term.

What the stall does is reported too: once the publisher is done, the subscriber reads
again up to the last offset, and its records received, the records the broker skipped
(gap reports: ``drop_oldest``) or the end of its subscription (``disconnect``) show the
stream's ``slow_consumer`` policy at work; the publisher's rate while the log fills is
compared with its rate once retention trims records the subscriber has not read (with
``block`` the publisher is held back instead: it stops at its time limit, and says so).
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._streams import Publisher
from ..errors import FelixError
from .report import Figure
from .runner import Runner
from .servers import ServerFailed, process_memory, reset_peak_memory
from .settings import BrokerTarget
from .workers import JobContext

__all__ = [
    "SLACK_BYTES",
    "Limits",
    "RssSampler",
    "default_publishes",
    "limits_of",
    "publish_job",
    "run",
    "stalled_job",
]

MODULE = "felix_client.bench.memory"
SLACK_BYTES = 50 * 10**6
"""The 50 MB the bound allows over the baseline and the limits (interpreter, code, the
objects around each retained record, allocator slack)."""
SAMPLE_EVERY = 0.02
"""Seconds between two RSS samples of the broker."""
WATCH_EVERY = 0.02
"""Seconds between two checks of the parent's go-ahead by the stalled subscriber."""
MARKS = 20
"""The publisher notes the time at every 1/MARKS of its records."""
MIN_RATE = 10_000
"""Records per second below which a publisher is given up on (its time limit)."""
MiB = 1 << 20


def default_publishes(scenario: str, seconds: float) -> int:
    """The publish count: 1,000,000; in ``all`` with ``--seconds`` under 2 (the default),
    100,000 per second of ``--seconds`` (at least 10,000), so a short ``all`` stays short."""
    full = 1_000_000
    if scenario != "all" or seconds >= 2:
        return full
    return max(10_000, int(full * seconds / 10))


# ------------------------------------------------------------------ jobs (in a worker)


async def stalled_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Create the stream, subscribe from its start, say ready, read nothing until the
    parent's target (the count of records published) is set, then read up to it."""
    target: BrokerTarget = p["target"]
    async with target.connect() as client:
        described = await client.admin.create("stream", p["stream"], p["settings"])
        async with client.subscribe(p["stream"], start="earliest") as sub:
            ctx.ready(stream=described)
            deadline = time.monotonic() + p["timeout"]
            while (count := ctx.target()) is None:  # stalled: nothing is read
                if time.monotonic() > deadline:
                    return {"received": 0, "missed": 0, "error": "no go-ahead", "cpu_s": 0.0}
                await anyio.sleep(WATCH_EVERY)
            cpu = time.process_time()
            received, error = 0, None
            with anyio.move_on_after(max(deadline - time.monotonic(), 1.0)) as scope:
                try:
                    if count > 0:
                        async for event in sub:
                            received += 1
                            if received & 1023 == 0:
                                ctx.report(received)
                            if event.offset >= count - 1:
                                break
                except FelixError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            if scope.cancelled_caught:
                error = "did not reach the last offset in time"
            return {
                "received": received,
                "missed": sub.missed,
                "end_reason": None if sub.end_reason is None else str(sub.end_reason),
                "error": error,
                "cpu_s": time.process_time() - cpu,
            }


async def publish_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Publish ``count`` records of ``payload`` bytes in batches of ``batch``, flat out,
    noting the time at every 1/``MARKS`` of them; stop early at ``timeout`` or when the
    broker refuses (``OVERLOADED`` past ``overload_retries``, the ``block`` policy), and
    report the records acknowledged until then."""
    target: BrokerTarget = p["target"]
    payload = b"x" * int(p["payload"])
    count, batch = int(p["count"]), int(p["batch"])
    every = max(count // MARKS, 1)
    clock = time.monotonic_ns
    marks, times = array("q"), array("q")
    sent = 0
    error = None
    pub: Publisher | None = None
    async with target.connect() as client:
        cpu = time.process_time()
        started = clock()
        deadline = started + int(p["timeout"] * 1e9)
        try:
            async with client.publisher(
                p["stream"],
                max_batch_records=batch,
                overload_retries=int(p.get("overload_retries", 8)),
            ) as pub:
                publish = pub.publish
                next_mark = every
                while sent < count:
                    n = min(batch, count - sent)
                    for _ in range(n):
                        await publish(payload)
                    sent += n
                    ctx.report(sent)
                    if sent >= next_mark:
                        marks.append(sent)
                        times.append(clock())
                        next_mark += every
                    if clock() > deadline:
                        error = f"stopped at its time limit ({p['timeout']:.0f} s)"
                        break
        except FelixError as exc:  # with the block policy: refused once the log is full
            error = f"{type(exc).__name__}: {exc}"
        ended = clock()
        return {
            "sent": sent,
            "acked": 0 if pub is None else pub.acked_records,
            "start_ns": started,
            "end_ns": ended,
            "marks": marks.tobytes(),
            "times": times.tobytes(),
            "error": error,
            "cpu_s": time.process_time() - cpu,
        }


# ------------------------------------------------------------------- the parent's side


@dataclass(frozen=True, slots=True)
class Limits:
    """What the broker lets grow under this load, term by term (bytes)."""

    terms: dict[str, int]
    """``name -> bytes``, e.g. ``stream.retention_max_bytes``."""
    source: str
    """Where the terms were read."""

    @property
    def total(self) -> int:
        """Their sum."""
        return sum(self.terms.values())


def limits_of(config: dict[str, Any] | None, stream: dict[str, Any]) -> Limits:
    """The limits that apply to one stream with one publisher and one subscriber connection.

    Args:
        config: the broker's effective configuration (``--print-config`` as TOML data), or
            None when it is not known (``--server``): then only the stream's retention.
        stream: the stream as the broker describes it (its ``settings``).
    """
    settings = stream.get("settings") or {}
    retention = settings.get("retention_max_bytes")
    if retention is None and config is not None:
        retention = config.get("broker", {}).get("stream_retention_max_bytes")
    terms: dict[str, int] = {}
    if retention is not None:
        terms["stream.retention_max_bytes"] = int(retention)
    if config is None:
        return Limits(terms, "the stream's settings (the broker's configuration is unknown)")
    transport = config["transport"]
    for side in ("subscriber", "publisher"):
        terms[f"{side}.transport.connection_buffer_cap"] = int(transport["connection_buffer_cap"])
        terms[f"{side}.transport.max_data"] = int(transport["max_data"])
    return Limits(terms, "the broker's effective configuration and the stream's settings")


@dataclass(slots=True)
class RssSampler:
    """A thread that reads a process's RSS every ``SAMPLE_EVERY`` seconds (use ``with``)."""

    pid: int
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> int:
        """Read the RSS now (and keep the peak)."""
        rss, _ = process_memory(self.pid)
        self.peak = max(self.peak, rss)
        self.samples += 1
        return rss

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _rates(published: dict[str, Any], fill_records: int) -> tuple[float, float]:
    """Publish rates (records/s) while the log fills and after, from the publisher's marks;
    NaN for a phase with no mark in it."""
    marks = array("q", published["marks"])
    times = array("q", published["times"])
    t0 = published["start_ns"]
    split = next((i for i, m in enumerate(marks) if m >= fill_records), None)
    if split is None:
        seconds = (published["end_ns"] - t0) / 1e9
        return published["sent"] / max(seconds, 1e-9), float("nan")
    fill = marks[split] / max((times[split] - t0) / 1e9, 1e-9)
    rest = published["sent"] - marks[split]
    after = (published["end_ns"] - times[split]) / 1e9
    return fill, (rest / after if rest > 0 and after > 0 else float("nan"))


def _outcome(figure: Figure, published: dict[str, Any], received: dict[str, Any]) -> None:
    """What the stall did to the subscriber and to the publisher, as metrics and notes."""
    m = figure.metrics
    m["received"] = received["received"]
    m["dropped"] = received["missed"]
    if received["missed"]:
        figure.notes.append(
            f"the stalled subscriber: {received['missed']:,} records skipped by the broker "
            f"and reported as a gap, {received['received']:,} read after it resumed"
        )
    if received.get("error"):
        figure.notes.append(f"the stalled subscriber: {received['error']}")
    elif published["acked"] and received["received"] + received["missed"] != published["acked"]:
        figure.valid = False
        figure.notes.append(
            f"the subscriber accounts for {received['received'] + received['missed']:,} of "
            f"{published['acked']:,} records (received + reported gaps)"
        )
    if published.get("error"):
        figure.notes.append(f"the publisher: {published['error']}")
    fill, trim = m["publish_fill_msg_per_s"], m["publish_trim_msg_per_s"]
    if not math.isnan(trim):  # the log did fill
        after = (
            "once the log was full (publishes refused while the subscriber is behind: block)"
            if figure.params.get("slow_consumer") == "block"
            else "once retention trimmed what the subscriber had not read"
        )
        figure.notes.append(
            f"the publisher: {fill:,.0f} records/s while the log filled, {trim:,.0f} {after}"
        )


def run(runner: Runner) -> None:
    """One figure: the broker's peak RSS with a stalled subscriber, against the bound."""
    m = runner.settings.matrix
    count, size, batch = m.memory_publishes, m.memory_payload, m.memory_batch
    label = runner.label(f"memory, stalled subscriber, {count:,} x {size} B batch {batch}")
    stream = runner.name("mem")
    timeout = max(runner.job_timeout, count / MIN_RATE)
    subscriber, publisher = runner.pool[0], runner.pool[1]
    common = {"target": runner.target, "stream": stream, "timeout": timeout}
    subscriber.submit(
        f"{MODULE}:stalled_job", common | {"settings": runner.settings.stream_settings}
    )
    info = subscriber.ready(runner.wait)
    config, unknown = None, ""
    if runner.broker is not None:
        try:
            config = runner.broker.effective_config()
        except ServerFailed as exc:
            unknown = f"the broker's limits are unknown: {exc}"
    limits = limits_of(config, info["stream"])
    settings = info["stream"].get("settings") or {}
    figure = Figure(
        id=runner.ident(f"memory/stalled-subscriber/publishes={count}"),
        scenario="memory",
        label=label,
        params={
            "publishes": count,
            "payload": size,
            "batch": batch,
            "slow_consumer": settings.get("slow_consumer"),
            "limits": dict(limits.terms),
            "limits_source": limits.source,
            "quic_engine": runner.engine,
        },
    )
    if unknown:
        figure.notes.append(unknown)
    pid = runner.broker_pid
    wait = timeout + 60.0
    mark = runner.cpu_mark()
    baseline = process_memory(pid)[0] if pid is not None else 0
    exact_peak = pid is not None and reset_peak_memory(pid)
    runner.begin(label, count / 100_000, lambda: publisher.progress, "published")
    with RssSampler(pid or 0) as sampler:
        publisher.submit(
            f"{MODULE}:publish_job", common | {"count": count, "payload": size, "batch": batch}
        )
        published = publisher.result(wait, runner.progress.tick)
        after_publish = sampler.sample() if pid is not None else 0
        subscriber.set_target(published["acked"])
        received = subscriber.result(wait, runner.progress.tick)
    broker_s = runner.broker_cpu_since(mark)
    seconds = max((published["end_ns"] - published["start_ns"]) / 1e9, 1e-9)
    fill, trim = _rates(published, limits.terms.get("stream.retention_max_bytes", 0) // size)
    figure.metrics.update(
        {
            "published": published["acked"],
            "publish_msg_per_s": published["sent"] / seconds,
            "publish_fill_msg_per_s": fill,
            "publish_trim_msg_per_s": trim,
            "seconds": seconds,
            "client_cpu_us": published["cpu_s"] * 1e6 / max(published["sent"], 1),
            "broker_cpu_us": broker_s * 1e6 / max(published["sent"], 1),
            "limits_mib": limits.total / MiB,
        }
    )
    _outcome(figure, published, received)
    if pid is None:
        figure.notes.append("the broker's RSS is not measured: it is not ours (--server)")
        runner.add(figure)
        return
    peak = sampler.peak
    if exact_peak:
        peak = max(peak, process_memory(pid)[1])
    bound = baseline + limits.total + SLACK_BYTES
    figure.metrics.update(
        {
            "baseline_rss_mib": baseline / MiB,
            "peak_rss_mib": peak / MiB,
            "growth_mib": (peak - baseline) / MiB,
            "after_publish_rss_mib": after_publish / MiB,
            "bound_mib": bound / MiB,
            "within_bound": float(peak <= bound),
        }
    )
    verdict = "within" if peak <= bound else "OVER"
    figure.notes.append(
        f"peak RSS {peak / MiB:,.0f} MiB {verdict} the bound {bound / MiB:,.0f} MiB = baseline "
        f"{baseline / MiB:,.0f} + limits {limits.total / MiB:,.0f} + 50 MB "
        f"({'VmHWM' if exact_peak else f'{sampler.samples} samples of VmRSS'})"
    )
    runner.add(figure)
