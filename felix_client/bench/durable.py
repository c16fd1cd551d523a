"""``durable``: what a durable stream costs, as users see it (issue 10's figures through a
broker process, the network and the codec).

Five figures, 100 B records in batches of ``durable_batch`` (64):

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
* the anchor of the committed figures: a plain loop of ``os.write`` (one batch's payload
  bytes) + ``os.fsync`` on the disk of the broker's data directory (the run's temporary
  directory; with ``--server``, only the local one), ``ops_per_s`` and the fsync latency
  as ``p50_us``. A committed publish cannot be faster than one fsync; the ratio says what
  the broker adds (a network round trip, the append, the fsync's hand-off to a worker).

The durable and ephemeral streams are created once; every figure is measured in
``ROUNDS`` alternating rounds (ephemeral, durable, plain loop, 1 publisher, 64 publishers,
then again), each a ``ROUNDS``-th of ``--seconds``, because the machine's load and the
disk's fsync latency drift: rates are the medians of the rounds, latency percentiles and
CPU per unit those of all rounds together.
"""

from __future__ import annotations

import math
import os
import statistics
import time
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

__all__ = ["committed_job", "create_job", "fsync_job", "run"]

MODULE = "felix_client.bench.durable"
ROUNDS = 3
"""Alternating rounds of every figure (see the module docstring)."""
DURABLE = {"durability": "durable", "fsync": "interval"}
"""The settings of the durable stream (``fsync=interval`` at its default period)."""


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


class _Rounds:
    """One figure's measurements, round after round."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.latencies: list[bytes] = []
        self.count = 0
        self.client_cpu_s = 0.0
        self.broker_cpu_s = 0.0

    def add(self, count: int, seconds: float, broker_s: float, result: dict[str, Any]) -> None:
        self.rates.append(count / max(seconds, 1e-9))
        self.count += count
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
) -> None:
    mark = runner.cpu_mark()
    runner.begin(label + suffix, params["seconds"], lambda: worker.progress, unit, profile_as=label)
    worker.submit(job, params)
    result = worker.result(runner.wait, runner.progress.tick)
    broker_s = runner.broker_cpu_since(mark)
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
    for n in m.durable_publishers:
        labels[f"c{n}"] = runner.label(
            f"committed {size} B batch {batch}, {n} publisher{'s' if n > 1 else ''}"
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
        for n in m.durable_publishers:
            _measure(
                runner,
                worker,
                labels[f"c{n}"],
                suffix,
                "publishes",
                f"{MODULE}:committed_job",
                base
                | {
                    "stream": streams["durable"],
                    "publishers": n,
                    "payload": size,
                    "batch": batch,
                    "seconds": span,
                },
                lambda r: int(r["publishes"]),
                rounds[f"c{n}"],
            )
    _add_figures(runner, labels, rounds)


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
    one = rounds.get("c1")
    for n in m.durable_publishers:
        figure = Figure(
            id=runner.ident(f"durable/committed/publishers={n}"),
            scenario="durable",
            label=labels[f"c{n}"],
            params=common
            | {
                "publishers": n,
                "durability": "durable",
                "fsync": "interval",
                "ack": "committed",
                "unit": "publish",
                "rounds": ROUNDS,
            },
            anchor=fsync_id,
        )
        figure.metrics = rounds[f"c{n}"].metrics("ops_per_s")
        if one is not None and n > 1:
            ratios = [a / b for a, b in zip(rounds[f"c{n}"].rates, one.rates, strict=True) if b]
            figure.metrics["vs_1_publisher"] = statistics.median(ratios) if ratios else 0.0
        _check(figure)
        runner.add(figure)


def _check(figure: Figure) -> None:
    if figure.metrics["count"] <= 0:
        figure.valid = False
        figure.notes.append("nothing was measured")
