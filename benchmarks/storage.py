"""Durable storage benchmark (issue 10): the engine (``felix_core.Broker``) over a
``DiskLogStore`` on the real file system (``OsFileSystem``), storage jobs (fsyncs) run on a
pool of worker threads as the runtimes run them; no network, no codec (the broker would
only add the same per-request cost to both sides of each ratio).

Measures, in one run, with 100 B records in batches of 64:

* publish throughput (``accepted``) to a durable stream with ``fsync=interval`` next to the
  same on an ephemeral stream (records per second, and the ratio; target >= 0.8);
* committed publishes per second (one publish = one batch of 64, answered once fsynced)
  with 1 and with 64 concurrent publishers, next to a plain ``os.write`` + ``os.fsync``
  loop of the same batch size on the same disk (target: 64 publishers >= 20x one). The
  ratio depends on the disk: one publisher waits for an fsync per publish, 64 share one
  (group commit) and are bound by the CPU of their appends instead, so the ratio is about
  fsync latency / append cost and moves with the disk and the machine's load. Measured
  twice: with every answered publisher publishing again in the same loop pass (one fsync
  for all, none overlapping their appends), and with at most ``PASS_PUBLISHES`` (12) a
  pass, as many as a runtime's pass reads (64 datagrams), so the next fsync starts while
  the others append. These committed figures come from three alternating rounds (the
  fsync latency of a shared disk drifts): rates are medians, ratios the medians of each
  round's ratio. Beside them: ``worker_handoff_us``, an empty job's round trip through
  the worker pool (fsyncs never run on the loop thread, so a committed publish pays it);
  compare it with one publisher's cycle (``1 / committed_1_publisher_publishes_per_s``)
  minus the plain loop's (``1 / plain_write_fsync_per_s``). Group commit read directly:
  each committed figure's fsync rounds (sync jobs handed out) per second and publishes per
  fsync (``..._fsyncs_per_s``, ``..._publishes_per_fsync``): one publisher makes one fsync a
  publish, 64 share each. And the same committed figures at batch 1 (``committed_batch1_*``,
  one 100 B record a publish: little CPU per publish), beside the batch-64 ones (issue
  10's figure);
* restart: the time to open (recover) a durable log holding ``--restart-mib`` MiB of
  closed segments (64 MiB each; the last, active one is scanned) next to opening an empty
  one (the log's recovery is what a start does per durable resource; best of 3, page cache
  warm as after a process restart, not a reboot; target: under 1 s more for 1 GiB,
  ``--restart-mib 1024``);
* replay: the resident set size (RSS) of a broker started on that log while one subscriber
  reads all of it from the earliest offset (the broker runs in a fresh process, RSS sampled
  during the replay; the memory tail and the read cache are bounded, so it stays a few tens
  of MiB whatever the log's size), and the replay's records per second.

Usage: ``python benchmarks/storage.py [--json] [--seconds S] [--dir DIR]
[--restart-mib N]``. ``--dir`` is where the temporary data directory goes (default: the
system's temporary directory; it must be on the disk you want to measure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_core import Broker, BrokerConfig
from felix_core.disklog import (
    DiskLog,
    DiskLogConfig,
    DiskLogStore,
    LogCommitted,
    LogReadable,
    StorageJob,
    SyncJob,
)
from felix_core.events import Appended, RecordsDelivered, RequestCompleted, RequestRefused
from felix_core.metadata import Kind
from felix_core.streams import StartKind
from felix_runtime.filesystem import OsFileSystem
from felix_runtime.storage import STORAGE_THREADS, run_job
from felix_server.local_route import LocalRoute

BATCH = 64
PAYLOAD = b"x" * 100
T, NS = "default", "default"
SEGMENT_BYTES = 64 << 20
ROUNDS = 3
"""Alternating rounds of the committed measurements."""


class Engine:
    """A broker on a DiskLogStore whose jobs run on worker threads (the runtimes' loop,
    in one thread: publish, hand out jobs, take back finished ones)."""

    def __init__(self, root: str) -> None:
        self.fs = OsFileSystem(root, durable_removes=False, durable_mkdirs=False)
        self.store = DiskLogStore(self.fs, DiskLogConfig(segment_bytes=SEGMENT_BYTES), root="")
        config = BrokerConfig(memory_limit_bytes=1 << 34, stream_max_retention_bytes=1 << 40)
        self.broker = Broker(config, logs=self.store)
        self.route = LocalRoute(self.broker)
        self.pool = ThreadPoolExecutor(STORAGE_THREADS)
        self.running: dict[Future[object], StorageJob] = {}
        self.syncs = 0
        """Sync jobs handed out (one fsync round of a log each: group commit's unit)."""

    def create(self, name: str, settings: dict[str, object]) -> None:
        self.broker.create(0, 0, "stream", T, NS, name, settings, now=time.time())
        done = [e for e in self.route.take_events(time.time()) if isinstance(e, RequestCompleted)]
        assert len(done) == 1, done

    def pump(self, *, block: bool = False) -> None:
        """Start the jobs the store wants now; finish those done (waiting for one if
        ``block`` and some run)."""
        now = time.time()
        timer = self.store.get_timer()
        if timer is not None and timer <= now:
            self.store.handle_timer(now)
        for job in self.store.take_jobs(now):
            self.syncs += isinstance(job, SyncJob)
            self.running[self.pool.submit(run_job, job)] = job
        if not self.running:
            return
        done, _ = wait(list(self.running), timeout=1.0 if block else 0, return_when=FIRST_COMPLETED)
        now = time.time()
        for future in done:
            job = self.running.pop(future)
            for notice in job.finish(future.result(), now):
                if isinstance(notice, LogCommitted):
                    self.broker.log_committed(Kind(notice.kind), notice.path, notice.offset, now)
                elif isinstance(notice, LogReadable):
                    self.broker.log_readable(Kind(notice.kind), notice.path, now)

    def close(self) -> None:
        while self.running:
            self.pump(block=True)
        self.pool.shutdown()
        for log in self.store.logs():
            log.close()
        self.fs.close()


def bench_accepted(root: str, durability: str, seconds: float) -> float:
    """Records per second published (``accepted``) to one stream, jobs running."""
    engine = Engine(root)
    settings: dict[str, object] = {"durability": durability, "batch_max_events": BATCH}
    if durability == "durable":
        settings["fsync"] = "interval"
    engine.create("bench", settings)
    broker = engine.broker
    payloads = [PAYLOAD] * BATCH
    numbers = itertools.count(1)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        while True:
            for _ in range(20):
                broker.publish(0, next(numbers), T, NS, "bench", payloads, now=time.time())
                for out in broker.drain_events():
                    if type(out) is Appended:
                        done += BATCH
                    elif type(out) is RequestRefused:
                        raise RuntimeError(f"publish refused: {out.error}")
            engine.pump()
            if time.perf_counter() >= deadline:
                return done / (time.perf_counter() - start)
    finally:
        engine.close()


PASS_PUBLISHES = 12
"""Publishes of 64 x 100 B a runtime's loop pass takes in at most: a pass reads up to 64
datagrams (``felix_runtime.udp.READ_BATCH``) of at most 1452 bytes, and one such publish
(about 7 KB on the wire) fills five of them."""


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed measurement: publishes per second and the fsyncs they took."""

    publishes_per_s: float
    fsyncs_per_s: float

    @property
    def publishes_per_fsync(self) -> float:
        return self.publishes_per_s / self.fsyncs_per_s if self.fsyncs_per_s else math.nan


def bench_committed(
    root: str,
    publishers: int,
    seconds: float,
    *,
    per_pass: int | None = None,
    batch: int = BATCH,
) -> Committed:
    """Committed publishes (batches of ``batch``) per second with ``publishers`` each
    keeping one publish outstanding, and the sync jobs (fsync rounds) per second.

    Args:
        per_pass: how many publishes a loop pass takes before the jobs are handed out
            (None: every publish answered in a pass is made again in that same pass, so
            one fsync covers them all and none overlaps their appends; a number: the
            runtime's pass, :data:`PASS_PUBLISHES`, after which the next fsync starts
            while the rest of the publishes append).
        batch: records per publish.
    """
    engine = Engine(root)
    engine.create("bench", {"durability": "durable", "batch_max_events": BATCH})
    broker = engine.broker
    payloads = [PAYLOAD] * batch
    numbers = itertools.count(1)
    ready = publishers  # publishers whose next publish is due

    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        # At least one publish completes, whatever the disk: a short run (the suite's) on a
        # loaded machine can pass its deadline before the first fsync returns.
        while time.perf_counter() < deadline or done == 0:
            due = ready if per_pass is None else min(ready, per_pass)
            for _ in range(due):
                broker.publish(
                    0, next(numbers), T, NS, "bench", payloads, committed=True, now=time.time()
                )
            ready -= due
            engine.pump(block=ready == 0)
            for out in broker.drain_events():
                if type(out) is Appended:
                    done += 1
                    ready += 1  # that publisher's next one
                elif type(out) is RequestRefused:
                    raise RuntimeError(f"publish refused: {out.error}")
        elapsed = time.perf_counter() - start
        return Committed(done / elapsed, engine.syncs / elapsed)
    finally:
        engine.close()


def _nothing() -> None:
    pass


def bench_handoff(seconds: float) -> float:
    """Round trips per second of an empty job through the worker pool, handed out and
    waited for as :meth:`Engine.pump` does a sync job (what a committed publish pays on
    top of its fsync, since fsyncs never run on the loop thread)."""
    with ThreadPoolExecutor(STORAGE_THREADS) as pool:
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            wait([pool.submit(_nothing)], timeout=1.0, return_when=FIRST_COMPLETED)
            done += 1
        return done / (time.perf_counter() - start)


def bench_plain_fsync(root: str, seconds: float) -> float:
    """``os.write`` of one batch's bytes + ``os.fsync`` per iteration, per second."""
    path = os.path.join(root, "plain.dat")
    data = PAYLOAD * BATCH
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        while time.perf_counter() < deadline:
            os.write(fd, data)
            os.fsync(fd)
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        os.close(fd)
        os.remove(path)


class _Meter:
    def adjust(self, delta: int) -> None:
        pass


def _open_seconds(root: str, uid: int) -> tuple[float, int]:
    """Time to open (recover) the log of incarnation ``uid`` under ``root``; and its record
    count."""
    fs = OsFileSystem(root, durable_removes=False)
    store = DiskLogStore(fs, DiskLogConfig(segment_bytes=SEGMENT_BYTES), root="")
    started = time.perf_counter()
    log = store.open_log("stream", (T, NS, "bench"), {"durability": "durable"}, _Meter(), uid=uid)
    seconds = time.perf_counter() - started
    records = log.record_count
    log.close()
    fs.close()
    return seconds, records


def bench_restart(root: str, mib: int) -> dict[str, float]:
    """Open time of a log with ``mib`` MiB of closed segments vs an empty one. The log is
    the one a fresh :class:`Engine` creating the stream opens (same incarnation), so that
    :func:`bench_replay` serves it afterwards; its records are appended to the log
    directly (the engine's publish path is measured above)."""
    empty_root = os.path.join(root, "empty")
    full_root = os.path.join(root, "full")
    os.makedirs(empty_root)
    os.makedirs(full_root)
    engine = Engine(full_root)
    engine.create("bench", {"durability": "durable", "retention_max_bytes": 1 << 40})
    store = engine.store
    log = store.log("stream", (T, NS, "bench"))
    assert isinstance(log, DiskLog)
    uid = int(log.directory.rsplit("/", 1)[1])
    payloads = [PAYLOAD] * BATCH
    stamp = int(time.time() * 1000)
    target = mib << 20
    segments = log.segment_count
    while log.byte_size < target:
        log.append_batch(payloads, stamp)
        if log.segment_count != segments:  # rolled: the sync writes the closed one's index
            segments = log.segment_count
            _settle(store)
    _settle(store)
    written = log.byte_size
    engine.close()
    _open_seconds(empty_root, uid)  # creates the empty log's directory, as a restart finds it
    empty_s = min(_open_seconds(empty_root, uid)[0] for _ in range(3))
    full_s, records = min(_open_seconds(full_root, uid) for _ in range(3))
    return {
        "restart_log_bytes": float(written),
        "restart_log_records": float(records),
        "restart_log_segments": float(segments),
        "restart_empty_s": empty_s,
        "restart_full_s": full_s,
        "restart_extra_s": full_s - empty_s,
    }


def _settle(store: DiskLogStore) -> None:
    now = time.time()
    for _ in range(100):
        store.handle_timer(now + 3600)
        jobs = store.take_jobs(now + 3600)
        if not jobs:
            return
        for job in jobs:
            job.finish(run_job(job), now)


def _rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def bench_replay(root: str) -> dict[str, float]:
    """A broker started on ``root`` (the log :func:`bench_restart` wrote) and one subscriber
    reading every record from the earliest offset, granting credit as records arrive (a
    consumer reading flat out): the process's RSS sampled every 64 deliveries, before and
    during the replay. Run in a fresh process (:func:`_in_fresh_process`), so that RSS is
    the broker's, not what writing the log left in this one."""
    engine = Engine(root)
    broker = engine.broker
    engine.create("bench", {"durability": "durable", "retention_max_bytes": 1 << 40})
    log = engine.store.log("stream", (T, NS, "bench"))
    assert log is not None, "the replayed log is not open"
    total = log.record_count
    rss_open = _rss_bytes()
    now = time.time()
    broker.attach(1, now)
    broker.subscribe(1, 1, T, NS, "bench", start=StartKind.EARLIEST, now=now)
    received = 0
    nbytes = 0
    rss_max = rss_open
    deliveries = 0
    start = time.perf_counter()
    try:
        while received < total:
            engine.pump(block=True)
            now = time.time()
            for out in broker.drain_events():
                if type(out) is RecordsDelivered:
                    got = out.slice
                    received += len(got)
                    nbytes += got.byte_size
                    deliveries += 1
                    if deliveries % 64 == 0:
                        rss_max = max(rss_max, _rss_bytes())
                    broker.add_credit(1, out.subscription_id, len(got), got.byte_size, now=now)
                elif type(out) is RequestRefused:
                    raise RuntimeError(f"subscribe refused: {out.error}")
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    return {
        "replay_records": float(received),
        "replay_record_bytes": float(nbytes),
        "replay_records_per_s": received / seconds,
        "replay_rss_at_open_mib": rss_open / (1 << 20),
        "replay_rss_max_mib": max(rss_max, _rss_bytes()) / (1 << 20),
    }


def _in_fresh_process(measure: Callable[[str], dict[str, float]], root: str) -> dict[str, float]:
    """Run ``measure(root)`` in a new interpreter (``spawn``) and return its figures."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (root,))


def _scratch(base: str | None, name: str) -> Callable[[], str]:
    def make() -> str:
        return tempfile.mkdtemp(prefix=f"felix-bench-{name}-", dir=base)

    return make


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--dir", default=None, help="where the scratch data directories go")
    parser.add_argument(
        "--restart-mib", type=int, default=256, help="MiB of closed segments (1024: 1 GiB)"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.restart_mib < 1:
        parser.error("--seconds and --restart-mib must be positive")
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "level": "engine (felix_core.Broker over DiskLogStore on OsFileSystem, fsyncs on "
        f"{STORAGE_THREADS} worker threads; no network)",
        "batch": BATCH,
        "payload_bytes": len(PAYLOAD),
    }

    def run(name: str, measure: Callable[[str], Any]) -> Any:
        root = _scratch(args.dir, name)()
        try:
            return measure(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    results["dir"] = os.path.abspath(args.dir or tempfile.gettempdir())
    ephemeral = run("eph", lambda r: bench_accepted(r, "ephemeral", args.seconds))
    durable = run("dur", lambda r: bench_accepted(r, "durable", args.seconds))
    results["accepted_ephemeral_records_per_s"] = ephemeral
    results["accepted_durable_interval_records_per_s"] = durable
    results["durable_vs_ephemeral_ratio"] = durable / ephemeral
    # The fsync latency of a shared disk drifts from second to second: the committed
    # figures are measured in ROUNDS alternating rounds (c1, c64, c64 by passes, plain
    # loop, hand-off), each a ROUNDS-th of --seconds; rates are the rounds' medians and
    # ratios the medians of each round's ratio.
    span = args.seconds / ROUNDS
    rounds: dict[str, list[float]] = {}
    committed: dict[str, list[Committed]] = {}
    for _ in range(ROUNDS):
        for name, measure in (
            ("c1", lambda r: bench_committed(r, 1, span)),
            ("c64", lambda r: bench_committed(r, 64, span)),
            ("c64p", lambda r: bench_committed(r, 64, span, per_pass=PASS_PUBLISHES)),
            ("c1b1", lambda r: bench_committed(r, 1, span, batch=1)),
            ("c64b1", lambda r: bench_committed(r, 64, span, batch=1)),
        ):
            got: Committed = run(name, measure)
            committed.setdefault(name, []).append(got)
            rounds.setdefault(name, []).append(got.publishes_per_s)
        for name, anchor in (
            ("plain", lambda r: bench_plain_fsync(r, span)),
            ("handoff", lambda r: bench_handoff(span)),
        ):
            rounds.setdefault(name, []).append(run(name, anchor))

    def rate(name: str) -> float:
        return statistics.median(rounds[name])

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(rounds[top], rounds[bottom], strict=True))

    results["committed_rounds"] = ROUNDS
    results["committed_1_publisher_publishes_per_s"] = rate("c1")
    results["committed_64_publishers_publishes_per_s"] = rate("c64")
    results["committed_64_vs_1_ratio"] = ratio("c64", "c1")
    results["plain_write_fsync_per_s"] = rate("plain")
    results["committed_1_vs_plain_fsync_ratio"] = ratio("c1", "plain")
    results["committed_64_vs_plain_fsync_ratio"] = ratio("c64", "plain")
    results["committed_64_records_per_s"] = rate("c64") * BATCH
    by_pass = f"committed_64_publishers_{PASS_PUBLISHES}_per_pass"
    results[f"{by_pass}_publishes_per_s"] = rate("c64p")
    results[f"{by_pass}_vs_1_ratio"] = ratio("c64p", "c1")
    # Group commit read directly: the fsync rounds (sync jobs) per second and the
    # publishes each covered; and the same committed figures with one record a publish
    # (batch 1: little CPU per publish), beside the batch-64 ones above.
    for name, key in (
        ("c1", "committed_1_publisher"),
        ("c64", "committed_64_publishers"),
        ("c1b1", "committed_batch1_1_publisher"),
        ("c64b1", "committed_batch1_64_publishers"),
    ):
        results[f"{key}_fsyncs_per_s"] = statistics.median(c.fsyncs_per_s for c in committed[name])
        results[f"{key}_publishes_per_fsync"] = statistics.median(
            c.publishes_per_fsync for c in committed[name]
        )
    results["committed_batch1_1_publisher_publishes_per_s"] = rate("c1b1")
    results["committed_batch1_64_publishers_publishes_per_s"] = rate("c64b1")
    results["committed_batch1_64_vs_1_ratio"] = ratio("c64b1", "c1b1")
    results["worker_handoff_us"] = 1e6 / rate("handoff")

    def restart_and_replay(root: str) -> dict[str, float]:
        figures = bench_restart(root, args.restart_mib)
        figures.update(_in_fresh_process(bench_replay, os.path.join(root, "full")))
        return figures

    results.update(run("restart", restart_and_replay))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"felix durable storage benchmark (Python {results['python']}, {results['level']})")
    for name, value in results.items():
        if isinstance(value, float):
            print(f"  {name:42s} {value:>14,.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
