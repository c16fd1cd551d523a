"""``durable``: what a durable stream costs, as users see it (issue 10's figures through a
broker process, the network and the codec).

The figures, 100 B records in batches of ``durable_batch`` (64):

* ``accepted`` publish rate (records/s) to an ephemeral stream and to a durable one with
  ``fsync=interval`` (the broker's default policy): one publisher flat out through
  ``client.publisher(max_batch_records=64)``, acks ``ACCEPTED`` (in the broker's log, the
  page cache for a durable stream). The durable figure's anchor is the ephemeral one, so
  its ratio is issue 10's "durable at least 0.8x of ephemeral" read end to end.
* ``committed`` publishes/s (one publish = one batch, answered once fsynced) with each
  count of concurrent publishers (1 and 64): that many tasks on one connection, each
  awaiting ``publish_batch(..., ack=AckMode.COMMITTED)`` before its next. Concurrent
  publishes share one fsync (group commit), so 64 publishers should do many times what one
  does (issue 10's target: 20x); ``vs_1_publisher`` says how many. ``p50_us`` is a
  publish's latency.
* group commit, read directly: each committed figure also says how many fsyncs the broker
  made (``fsyncs_per_s``: its sync jobs, the ``_count`` of its
  ``felix_storage_sync_duration_seconds`` histogram scraped before and after the job,
  warm-up publish included) and ``publishes_per_fsync``. One publisher makes one fsync
  per publish; 64 share each fsync among many publishes. The ratio of the rates is
  bounded by the broker's CPU, not by group commit: one publisher's cycle is an fsync + a
  round trip + the publish's CPU, 64 publishers' is their CPU, so ``vs_1_publisher`` is
  about (fsync + round trip + CPU) / CPU;
* the same committed figures with ``batch 1`` (one 100 B record a publish; their ids end
  in ``/batch=1``), beside the batch-64 ones (issue 10's figure): with little CPU per
  publish, the same fsyncs let the ratio of 64 publishers to 1 show what group commit
  gives when the CPU is not the bound;
* the anchor of the committed figures: a plain loop of ``os.write`` (one batch's payload
  bytes) + ``os.fsync`` on the disk of the broker's data directory (the run's temporary
  directory; with ``--server``, only the local one), ``ops_per_s`` and the fsync latency
  as ``p50_us``. A committed publish cannot be faster than one fsync; the ratio says what
  the broker adds (a network round trip, the append, the fsync's hand-off to a worker).

The durable and ephemeral streams are created once; every figure is measured in
``ROUNDS`` alternating rounds (ephemeral, durable, plain loop, then 1 and 64 publishers at
batch 64, the same at batch 1, then again), each a ``ROUNDS``-th of ``--seconds``, because
the machine's load and the disk's fsync latency drift: rates are the medians of the
rounds, latency percentiles and CPU per unit those of all rounds together.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import urllib.request
from array import array
from collections.abc import Callable
from typing import Any

import anyio

from ..types import AckMode
from . import pubsub
from .hdr import summarize
from .report import Figure
from .runner import Runner
from .settings import BrokerTarget
from .workers import JobContext, Worker

__all__ = ["broker_fsyncs", "committed_job", "create_job", "fsync_job", "run"]

MODULE = "felix_client.bench.durable"
ROUNDS = 3
"""Alternating rounds of every figure (see the module docstring)."""
DURABLE = {"durability": "durable", "fsync": "interval"}
"""The settings of the durable stream (``fsync=interval`` at its default period)."""
SYNC_COUNT = "felix_storage_sync_duration_seconds_count"
"""The broker's sync jobs so far (one fsync round of a durable log each)."""
SMALL_BATCH = 1
"""The committed figures are measured at ``durable_batch`` and at this batch size too."""


# ------------------------------------------------------------------ jobs (in a worker)


async def create_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Create the streams ``p["streams"]`` (name -> settings)."""
    target: BrokerTarget = p["target"]
    async with target.connect() as client:
        for name, settings in p["streams"].items():
            await client.admin.create("stream", name, settings)
    return {}


async def committed_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """``publishers`` tasks on one connection, each publishing a batch with
    ``AckMode.COMMITTED`` and awaiting it before the next, for ``seconds``."""
    target: BrokerTarget = p["target"]
    payloads = [b"d" * int(p["payload"])] * int(p["batch"])
    clock = time.monotonic_ns
    async with target.connect() as client:
        await client.publish_batch(p["stream"], payloads, ack=AckMode.COMMITTED)  # warm-up
        latencies = array("q")
        cpu = time.process_time()
        started = clock()
        deadline = started + int(p["seconds"] * 1e9)

        async def publisher() -> None:
            while (t0 := clock()) < deadline:
                await client.publish_batch(p["stream"], payloads, ack=AckMode.COMMITTED)
                latencies.append(clock() - t0)
                ctx.report(len(latencies))

        async with anyio.create_task_group() as tg:
            for _ in range(int(p["publishers"])):
                tg.start_soon(publisher)
        ended = clock()
        return {
            "publishes": len(latencies),
            "seconds": (ended - started) / 1e9,
            "latencies": latencies.tobytes(),
            "cpu_s": time.process_time() - cpu,
        }


async def fsync_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """``os.write`` of ``size`` bytes + ``os.fsync`` in a loop for ``seconds``, in a new
    file of the directory ``dir`` (removed afterwards)."""
    path = os.path.join(p["dir"], f"fsync-{os.getpid()}-{time.monotonic_ns()}.dat")
    data = b"f" * int(p["size"])
    clock = time.monotonic_ns
    latencies = array("q")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    cpu = time.process_time()
    try:
        started = clock()
        deadline = started + int(p["seconds"] * 1e9)
        while (t0 := clock()) < deadline:
            os.write(fd, data)
            os.fsync(fd)
            latencies.append(clock() - t0)
            ctx.report(len(latencies))
        ended = clock()
        cpu = time.process_time() - cpu
    finally:
        os.close(fd)
        os.remove(path)
    return {
        "ops": len(latencies),
        "seconds": (ended - started) / 1e9,
        "latencies": latencies.tobytes(),
        "cpu_s": cpu,
    }


# ------------------------------------------------------------------- the parent's side


def broker_fsyncs(metrics_url: str) -> float:
    """The broker's sync jobs so far (:data:`SYNC_COUNT` in its ``/metrics``); NaN without
    a metrics URL (``--server``) or when the scrape fails."""
    if not metrics_url:
        return math.nan
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except (OSError, UnicodeDecodeError):
        return math.nan
    for line in text.splitlines():
        if line.startswith(SYNC_COUNT):
            name, _, value = line.rpartition(" ")
            if name.split("{", 1)[0] == SYNC_COUNT:
                return float(value)
    return math.nan


class _Rounds:
    """One figure's measurements, round after round."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.latencies: list[bytes] = []
        self.count = 0
        self.client_cpu_s = 0.0
        self.broker_cpu_s = 0.0
        self.seconds = 0.0
        self.fsyncs: float | None = None  # the broker's sync jobs (None: not counted)

    def add(self, count: int, seconds: float, broker_s: float, result: dict[str, Any]) -> None:
        self.rates.append(count / max(seconds, 1e-9))
        self.count += count
        self.seconds += seconds
        self.client_cpu_s += result.get("cpu_s", 0.0)
        self.broker_cpu_s += broker_s
        if "latencies" in result:
            self.latencies.append(result["latencies"])

    def metrics(self, rate_key: str) -> dict[str, float]:
        units = max(self.count, 1)
        out = {
            rate_key: statistics.median(self.rates) if self.rates else 0.0,
            "count": float(self.count),
            "client_cpu_us": self.client_cpu_s * 1e6 / units,
            "broker_cpu_us": self.broker_cpu_s * 1e6 / units,
        }
        if self.latencies:
            out.update(summarize(self.latencies))
        if self.fsyncs is not None:
            out["fsyncs_per_s"] = self.fsyncs / max(self.seconds, 1e-9)
            out["publishes_per_fsync"] = self.count / self.fsyncs if self.fsyncs else math.nan
        return out


def _measure(
    runner: Runner,
    worker: Worker,
    label: str,
    suffix: str,
    unit: str,
    job: str,
    params: dict[str, Any],
    count: Callable[[dict[str, Any]], int],
    into: _Rounds,
    *,
    fsyncs: bool = False,
) -> None:
    metrics_url = runner.broker.metrics_url if fsyncs and runner.broker is not None else ""
    synced = broker_fsyncs(metrics_url)  # scraped outside the CPU mark
    mark = runner.cpu_mark()
    runner.begin(label + suffix, params["seconds"], lambda: worker.progress, unit, profile_as=label)
    worker.submit(job, params)
    result = worker.result(runner.wait, runner.progress.tick)
    broker_s = runner.broker_cpu_since(mark)
    synced = broker_fsyncs(metrics_url) - synced
    if not math.isnan(synced):
        into.fsyncs = (into.fsyncs or 0.0) + synced
    if "start_ns" in result:  # pubsub.publish_job
        seconds = (result["end_ns"] - result["start_ns"]) / 1e9
    else:
        seconds = result["seconds"]
    into.add(count(result), seconds, broker_s, result)


def run(runner: Runner) -> None:
    """The accepted pair, the plain fsync loop and the committed figures, in alternating
    rounds (see the module docstring)."""
    m = runner.settings.matrix
    worker = runner.pool[0]
    size, batch = m.durable_payload, m.durable_batch
    span = runner.settings.seconds / ROUNDS
    streams = {
        "ephemeral": runner.name("ephemeral"),
        "durable": runner.name("durable"),
    }
    base = {"target": runner.target, "timeout": runner.job_timeout}
    worker.submit(
        f"{MODULE}:create_job",
        base
        | {
            "streams": {
                streams["ephemeral"]: {"durability": "ephemeral"},
                streams["durable"]: dict(DURABLE),
            }
        },
    )
    worker.result(runner.wait, runner.progress.tick)

    labels = {
        "ephemeral": runner.label(f"accepted {size} B batch {batch} to an ephemeral stream"),
        "durable": runner.label(f"accepted {size} B batch {batch} to a durable stream"),
        "fsync": runner.label(f"plain os.write {size * batch} B + os.fsync"),
    }
    batches = _committed_batches(batch)
    for n in m.durable_publishers:
        for b in batches:
            labels[_key(n, b, batch)] = runner.label(
                f"committed {size} B batch {b}, {n} publisher{'s' if n > 1 else ''}"
            )
    rounds = {key: _Rounds() for key in labels}
    for i in range(ROUNDS):
        suffix = f" (round {i + 1}/{ROUNDS})"
        for kind in ("ephemeral", "durable"):
            _measure(
                runner,
                worker,
                labels[kind],
                suffix,
                "published",
                f"{pubsub.MODULE}:publish_job",
                base
                | {
                    "stream": streams[kind],
                    "mode": "throughput",
                    "payload": size,
                    "batch": batch,
                    "seconds": span,
                },
                lambda r: int(r["published"]),
                rounds[kind],
            )
        _measure(
            runner,
            worker,
            labels["fsync"],
            suffix,
            "fsyncs",
            f"{MODULE}:fsync_job",
            {"dir": str(runner.tmp), "size": size * batch, "seconds": span},
            lambda r: int(r["ops"]),
            rounds["fsync"],
        )
        for b in batches:
            for n in m.durable_publishers:
                _measure(
                    runner,
                    worker,
                    labels[_key(n, b, batch)],
                    suffix,
                    "publishes",
                    f"{MODULE}:committed_job",
                    base
                    | {
                        "stream": streams["durable"],
                        "publishers": n,
                        "payload": size,
                        "batch": b,
                        "seconds": span,
                    },
                    lambda r: int(r["publishes"]),
                    rounds[_key(n, b, batch)],
                    fsyncs=True,
                )
    _add_figures(runner, labels, rounds)


def _committed_batches(batch: int) -> list[int]:
    """The batch sizes of the committed figures: the configured one, then
    :data:`SMALL_BATCH` (unless it is the same)."""
    return [batch] if batch == SMALL_BATCH else [batch, SMALL_BATCH]


def _key(publishers: int, batch: int, main_batch: int) -> str:
    """A committed figure's key in ``labels`` / ``rounds`` (``c64``: the main batch)."""
    return f"c{publishers}" if batch == main_batch else f"c{publishers}b{batch}"


def _add_figures(runner: Runner, labels: dict[str, str], rounds: dict[str, _Rounds]) -> None:
    m = runner.settings.matrix
    size, batch = m.durable_payload, m.durable_batch
    common = {"payload": size, "batch": batch, "quic_engine": runner.engine}
    ephemeral_id = runner.ident("durable/accepted/durability=ephemeral")
    for kind in ("ephemeral", "durable"):
        figure = Figure(
            id=runner.ident(f"durable/accepted/durability={kind}"),
            scenario="durable",
            label=labels[kind],
            params=common
            | {"durability": kind, "ack": "accepted", "unit": "record", "rounds": ROUNDS}
            | ({"fsync": "interval"} if kind == "durable" else {}),
            anchor=ephemeral_id if kind == "durable" else None,
        )
        figure.metrics = rounds[kind].metrics("msg_per_s")
        if kind == "durable":
            # The rate ratio moves with the machine's load; the broker's CPU per record
            # much less: the ephemeral stream's CPU / the durable one's is the rate ratio
            # the broker's own work allows (NaN without a broker of ours).
            ephemeral_cpu = rounds["ephemeral"].metrics("msg_per_s")["broker_cpu_us"]
            durable_cpu = figure.metrics["broker_cpu_us"]
            figure.metrics["broker_cpu_ratio"] = (
                ephemeral_cpu / durable_cpu if durable_cpu > 0 else math.nan
            )
        _check(figure)
        runner.add(figure)
    fsync_id = runner.ident("durable/plain-fsync")
    fsync = Figure(
        id=fsync_id,
        scenario="durable",
        label=labels["fsync"],
        params={"write_bytes": size * batch, "dir": "the run's temporary directory"}
        | ({"note": "not the --server broker's disk"} if runner.broker_pid is None else {}),
    )
    fsync.metrics = rounds["fsync"].metrics("ops_per_s")
    fsync.metrics.pop("broker_cpu_us")  # no broker: client_cpu_us is the loop's CPU
    _check(fsync)
    runner.add(fsync)
    for b in _committed_batches(batch):
        one = rounds.get(_key(1, b, batch))
        for n in m.durable_publishers:
            key = _key(n, b, batch)
            suffix = "" if b == batch else f"/batch={b}"
            figure = Figure(
                id=runner.ident(f"durable/committed/publishers={n}{suffix}"),
                scenario="durable",
                label=labels[key],
                params=common
                | {
                    "batch": b,
                    "publishers": n,
                    "durability": "durable",
                    "fsync": "interval",
                    "ack": "committed",
                    "unit": "publish",
                    "rounds": ROUNDS,
                },
                anchor=fsync_id,
            )
            figure.metrics = rounds[key].metrics("ops_per_s")
            if one is not None and n > 1:
                ratios = [x / y for x, y in zip(rounds[key].rates, one.rates, strict=True) if y]
                figure.metrics["vs_1_publisher"] = statistics.median(ratios) if ratios else 0.0
            _check(figure)
            runner.add(figure)


def _check(figure: Figure) -> None:
    if figure.metrics["count"] <= 0:
        figure.valid = False
        figure.notes.append("nothing was measured")
