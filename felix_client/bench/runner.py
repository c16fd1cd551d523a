"""What a scenario gets from the run: the worker pool, the broker, the settings, a place
for its figures, and the progress line.

The progress line: on a terminal, one line on stderr rewritten a few times a second while
a figure runs (what it is, the seconds gone, the count so far); then, on any stderr, one
line per finished figure. ``--quiet`` turns both off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .report import Figure
from .servers import LocalBroker, process_cpu_seconds
from .settings import BrokerTarget, RunSettings
from .spy import Profiler
from .workers import WorkerPool

__all__ = ["CpuMark", "Progress", "Runner"]


class Progress:
    """The live progress line and the per-figure lines (see the module docstring)."""

    def __init__(self, out: TextIO, *, live: bool, quiet: bool) -> None:
        self.out = out
        self.live = live and not quiet
        self.quiet = quiet
        self._label = ""
        self._started = 0.0
        self._seconds = 0.0
        self._count: Callable[[], int] | None = None
        self._unit = ""
        self._width = 0

    def begin(self, label: str, seconds: float, count: Callable[[], int], unit: str) -> None:
        """A figure starts: its label, planned seconds, and how to read its count."""
        self._label, self._seconds, self._count, self._unit = label, seconds, count, unit
        self._started = time.monotonic()
        self.tick()

    def tick(self) -> None:
        """Rewrite the live line (on a terminal)."""
        if not self.live or self._count is None:
            return
        gone = time.monotonic() - self._started
        text = f"{self._label}: {gone:4.1f}/{self._seconds:g} s, {self._count():,} {self._unit}"
        self._write(text)

    def _write(self, text: str) -> None:
        pad = max(self._width - len(text), 0)
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self._width = len(text)

    def end(self, figure: Figure) -> None:
        """A figure is done: clear the live line and print its one-line summary."""
        self._count = None
        if self.quiet:
            return
        if self.live:
            self._write("")
            self.out.write("\r")
        m = figure.metrics
        parts = []
        for key, unit in (("msg_per_s", "msg/s"), ("ops_per_s", "ops/s")):
            if key in m:
                parts.append(f"{m[key]:,.0f} {unit}")
        if "peak_rss_mib" in m:
            parts.append(
                f"peak RSS {m['peak_rss_mib']:,.0f} MiB, bound {m['bound_mib']:,.0f} MiB "
                f"(baseline {m['baseline_rss_mib']:,.0f} + limits {m['limits_mib']:,.0f} + 50 MB)"
            )
        if "p50_us" in m:
            parts.append(f"p50 {m['p50_us']:,.0f} us p99 {m['p99_us']:,.0f} us")
        if not figure.valid:
            parts.append("INVALID: " + "; ".join(figure.notes))
        self.out.write(f"{figure.label}: {', '.join(parts)}\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line of its own (a skipped comparison, say)."""
        if not self.quiet:
            if self.live:
                self._write("")
                self.out.write("\r")
            self.out.write(text + "\n")
            self.out.flush()


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds of the broker (NaN when it is not ours) at one moment."""

    broker: float


@dataclass(slots=True, kw_only=True)
class Runner:
    """Everything a scenario's ``run`` needs; it appends its figures to :attr:`figures`."""

    settings: RunSettings
    pool: WorkerPool
    target: BrokerTarget
    broker_pid: int | None
    cert: tuple[str, str]
    """Certificate and key for the raw QUIC server (the broker's own when it is ours)."""
    progress: Progress
    tmp: Path
    engine: str = "aioquic"
    """The QUIC engine of the broker and clients measured (``target.quic_engine``)."""
    figures: list[Figure] = field(default_factory=list)
    broker: LocalBroker | None = None
    """The broker this run started (None with ``--server``)."""
    profiler: Profiler | None = None
    """py-spy recordings of each figure (``--profile``), or None."""
    _names: int = 0
    _jobs: dict[int, int] = field(default_factory=dict)
    """Per worker, jobs submitted before the profiled figure began (-1: it was busy)."""

    @property
    def wait(self) -> float:
        """Seconds the parent waits for a job before it calls the worker hung."""
        return self.settings.seconds * 4 + 60.0

    @property
    def job_timeout(self) -> float:
        """Seconds a job may run before it stops itself and reports what it has."""
        return self.settings.seconds * 3 + 30.0

    def name(self, prefix: str) -> str:
        """A resource name no other figure of this run uses."""
        self._names += 1
        return f"bench-{prefix}-{self._names}-{time.time_ns() % 1_000_000}"

    def cpu_mark(self) -> CpuMark:
        """The broker's CPU so far (NaN with ``--server``)."""
        if self.broker_pid is None:
            return CpuMark(math.nan)
        return CpuMark(process_cpu_seconds(self.broker_pid))

    def broker_cpu_since(self, mark: CpuMark) -> float:
        """Broker CPU seconds since ``mark`` (NaN with ``--server``)."""
        return self.cpu_mark().broker - mark.broker

    def ident(self, base: str) -> str:
        """A Felix figure's id: ``base``, with ``/engine=NAME`` unless the engine is aioquic
        (so the ids of aioquic figures stay what they were)."""
        return base if self.engine == "aioquic" else f"{base}/engine={self.engine}"

    def label(self, base: str) -> str:
        """A Felix figure's label: ``base``, with ``[NAME]`` unless the engine is aioquic."""
        return base if self.engine == "aioquic" else f"{base} [{self.engine}]"

    def begin(
        self,
        label: str,
        seconds: float,
        count: Callable[[], int],
        unit: str,
        *,
        profile_as: str | None = None,
        broker: bool = True,
    ) -> None:
        """The measured part of a figure starts: the progress line and, with ``--profile``,
        py-spy on the broker (unless ``broker`` is False: a raw QUIC figure) and on every
        worker. ``profile_as`` is the label of the figure the samples belong to (default
        ``label``; a figure measured in rounds names its own)."""
        self.progress.begin(label, seconds, count, unit)
        if self.profiler is None:
            return
        targets = {}
        if broker and self.broker_pid is not None:
            targets["broker"] = self.broker_pid
        for worker in self.pool.workers:
            targets[f"worker {worker.index}"] = worker.pid
            self._jobs[worker.index] = -1 if worker.busy else worker.submitted
        self.profiler.start(profile_as or label, targets)

    def has(self, ident: str) -> bool:
        """Whether this run has measured the figure ``ident``."""
        return any(f.id == ident for f in self.figures)

    def add(self, figure: Figure) -> Figure:
        """Keep a figure (with its profiles, ``--profile``) and print its progress line."""
        if self.profiler is not None:
            for process, result in self.profiler.finish(figure.label).items():
                if not process.startswith("worker "):
                    figure.profile[process] = result
                    continue
                worker = self.pool[int(process.split()[1])]
                before = self._jobs.get(worker.index, worker.submitted)
                if before == -1 or worker.submitted > before:  # the figure's job ran there
                    figure.profile[f"{process} ({worker.job})"] = result
        self.figures.append(figure)
        self.progress.end(figure)
        return figure
