"""``felix bench SCENARIO``: parse the command line, start what the run needs, run the
scenarios with their anchors, print the table or the JSON document.

Each scenario measures its anchors first, in the same run (the machine is shared and
noisy, so ratios across runs mean little): raw one-way with messages of each payload size
for ``pubsub-throughput`` and ``queue``, raw 64-byte ping-pong for ``pubsub-latency`` and
``cache``, on the QUIC engine the scenario runs on. ``all`` runs ``raw-quic`` (every
installed engine) and then every scenario; an anchor already measured in the run is not
measured again. ``--quic-engine aioquic,qh3`` runs the Felix scenarios once per engine
(a broker of that engine, clients of that engine), one after the other, in one run.

``--profile DIR`` samples the broker and the load generators with py-spy during each figure
(:mod:`.spy`) and prints the share of samples by layer after the summary
(:mod:`.profiles`).

Exit status: 0 when every figure is valid, 1 when one is not (unexplained loss, say), the
run failed or ``--profile`` cannot sample (py-spy missing or not allowed to attach), 2 on
bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Any

from . import cache, durable, memory, pubsub, queues, raw_quic
from .parser import build_parser
from .report import Figure, attach_ratios, document, print_profiles, print_table
from .runner import Progress, Runner
from .servers import LocalBroker, ServerFailed
from .settings import ENGINES, BrokerTarget, Matrix, RunSettings
from .spy import Profiler, ProfileUnavailable, check_attach, find_py_spy
from .workers import WorkerFailed, WorkerPool

__all__ = ["build_parser", "main", "plan"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
POOL_SIZE = 2
"""Worker processes: every figure runs at most two jobs at once (server and client,
subscriber and publisher, consumers and producer)."""

Step = Callable[[Runner], None]


def plan(scenario: str) -> list[Step]:
    """The steps of a scenario (each measures the anchors it needs first)."""
    steps: dict[str, list[Step]] = {
        "raw-quic": [raw_quic.run],
        "pubsub-latency": [pubsub.run_latency],
        "pubsub-throughput": [pubsub.run_throughput],
        "queue": [queues.run],
        "cache": [cache.run],
        "durable": [durable.run],
        "memory": [memory.run],
        "all": [
            raw_quic.run,
            pubsub.run_latency,
            pubsub.run_throughput,
            queues.run,
            cache.run,
            durable.run,
            memory.run,
        ],
    }
    return steps[scenario]


def _settings(args: argparse.Namespace) -> RunSettings:
    d = Matrix()
    matrix = Matrix(
        latency_payloads=args.payload or d.latency_payloads,
        throughput_payloads=tuple(p for p in args.payload or () if p > 0) or d.throughput_payloads,
        latency_fanouts=args.fanout or d.latency_fanouts,
        throughput_fanouts=args.fanout or d.throughput_fanouts,
        throughput_batches=args.batch or d.throughput_batches,
        queue_consumers=args.consumers or d.queue_consumers,
        cache_concurrency=args.concurrency or d.cache_concurrency,
        durable_publishers=args.publishers or d.durable_publishers,
        memory_publishes=args.memory_publishes
        or memory.default_publishes(args.scenario, args.seconds),
    )
    unknown = (set(args.engine) | set(args.quic_engine)) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown QUIC engine(s) {sorted(unknown)} (known: {ENGINES})")
    return RunSettings(
        seconds=args.seconds,
        loop=args.loop,
        matrix=matrix,
        stream_settings=dict(args.stream_set),
        engines=args.engine,
        quic_engines=args.quic_engine,
        redis=not args.no_redis,
    )


def machine() -> str:
    """``N CPUs, M GiB RAM, OS``: where the figures were measured."""
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{memory}, {platform.system()} {platform.machine()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``felix bench`` (``felix bench plot`` is :func:`.plot.main`).
    Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plot"]:
        from .plot import main as plot_main

        return plot_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        settings = _settings(args)
        if args.server and not (args.ca or args.insecure):
            raise ValueError("--server needs --ca FILE (the broker's certificate) or --insecure")
        if args.ca and not os.path.isfile(args.ca):
            raise ValueError(f"CA file {args.ca!r} does not exist")
    except ValueError as exc:
        print(f"felix bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress(sys.stderr, live=sys.stderr.isatty(), quiet=args.quiet)
    try:
        py_spy = find_py_spy() if args.profile else None
        figures, run = _run(args, settings, progress, py_spy)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (WorkerFailed, ServerFailed, ProfileUnavailable, OSError) as exc:
        print(f"felix bench: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    attach_ratios(figures)
    doc = document(figures, run)
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print_table(figures, run, sys.stdout)
        print_profiles(figures, sys.stdout)
    return EXIT_OK if all(f.valid for f in figures) else EXIT_ERROR


def _run(
    args: argparse.Namespace, settings: RunSettings, progress: Progress, py_spy: str | None
) -> tuple[list[Figure], dict[str, Any]]:
    started = datetime.datetime.now(datetime.UTC)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="felix-bench-") as tmp, ExitStack() as pools:
        pool = pools.enter_context(WorkerPool(POOL_SIZE, settings.loop))
        profiler: Profiler | None = None
        if py_spy is not None:
            check_attach(py_spy, pool[0].pid)  # before anything is measured
            profiler = Profiler(py_spy, Path(args.profile), args.profile_rate)
            pools.callback(profiler.close)
        for engine in settings.quic_engines:
            with ExitStack() as stack:
                broker: LocalBroker | None = None
                if args.server:
                    from felix_runtime.tls import ensure_self_signed

                    files = ensure_self_signed(Path(tmp) / "raw")
                    cert = (str(files.cert_path), str(files.key_path))
                    target = BrokerTarget(
                        url=args.server, ca_file=args.ca, insecure=args.insecure, quic_engine=engine
                    )
                    broker_pid = None
                    broker_text = f"at {args.server} (not started by felix bench)"
                else:
                    broker = stack.enter_context(
                        LocalBroker(args.runtime, Path(tmp) / f"broker-{engine}", engine)
                    )
                    cert = (broker.ca_file, broker.key_file)
                    target = BrokerTarget(
                        url=broker.url, ca_file=broker.ca_file, quic_engine=engine
                    )
                    broker_pid, broker_text = broker.pid, f"{args.runtime} runtime, own process"
                runner = Runner(
                    settings=settings,
                    pool=pool,
                    target=target,
                    broker_pid=broker_pid,
                    cert=cert,
                    progress=progress,
                    tmp=Path(tmp) / engine,
                    engine=engine,
                    figures=figures,
                    broker=broker,
                    profiler=profiler,
                )
                runner.tmp.mkdir(exist_ok=True)
                for step in plan(args.scenario):
                    step(runner)
    run = {
        "scenario": args.scenario,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": settings.seconds,
        "broker": broker_text,
        "runtime": None if args.server else args.runtime,
        "engine": ", ".join(f"{e} {metadata.version(e)}" for e in settings.quic_engines),
        "loop": settings.loop,
        "machine": machine(),
        "python": platform.python_version(),
        "felix": metadata.version("felix"),
        "stream_settings": settings.stream_settings,
        **({"profile": {"dir": args.profile, "rate": args.profile_rate}} if py_spy else {}),
    }
    return figures, run
