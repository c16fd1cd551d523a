"""Load-generator processes: a small pool of long-lived workers that run one job at a time.

Theory of operation. ``felix bench`` keeps its load generators out of its own process (and
out of the broker's), as users run clients: :class:`WorkerPool` spawns a few processes
once per run (``multiprocessing``'s spawn context: no state inherited, same on every
platform), and each figure hands jobs to them. A job is an async function named by
``"module:function"`` and called as ``await function(ctx, params)`` on the run's event
loop (``anyio.run``, asyncio or trio) or on the loop the job asks for; it returns a
picklable dict. Through its :class:`JobContext` a job says it is ready (connected,
subscribed) so the parent can start the next one, publishes a progress count, and reads the
target the parent sets once it is known (the last offset a publisher wrote, say).

Messages on each worker's pipe, child to parent: ``("up", None)`` once started, then per
job ``("ready", info)`` (optional) and ``("result", dict)`` or ``("error", traceback)``.
Progress counts and targets live in shared arrays (one slot per worker), so reading them
costs no message and a job can see another worker's count (a producer pacing itself on its
consumers' progress).

Garbage collection: before each job the worker collects and then freezes every object it
holds (``gc.freeze``: the modules it imported, what earlier jobs left), so the collector's
full (generation 2) passes during the timed part scan only what the job itself allocates.
Without it the first full pass came 1.2-1.7 s into a figure and took 77-150 ms in a
process with ten subscriber connections: every subscription received the same offsets that
much late (the fanout-10 stalls of docs/performance.md).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import anyio

__all__ = ["JobContext", "JobFunction", "Worker", "WorkerFailed", "WorkerPool"]

JobFunction = Callable[["JobContext", dict[str, Any]], Awaitable[dict[str, Any]]]
"""What a job is: ``async def job(ctx, params) -> dict``."""

PRELOAD = (
    "felix_client.bench.raw_quic",
    "felix_client.bench.pubsub",
    "felix_client.bench.queues",
    "felix_client.bench.cache",
)
"""Modules a worker imports before it reports ``up``, so that no figure pays for imports."""
START_TIMEOUT = 60.0
"""Seconds a worker may take to start and import :data:`PRELOAD`."""
TICK = 0.2
"""Seconds between two calls of a wait's ``tick`` (the progress line)."""


class WorkerFailed(RuntimeError):
    """A job raised (the message holds its traceback), or its worker died or hung."""


class JobContext:
    """A job's view of its worker: readiness, progress and the parent's target."""

    def __init__(self, index: int, conn: Connection, progress: Any, targets: Any) -> None:
        self.index = index
        self._conn = conn
        self._progress = progress
        self._targets = targets

    def ready(self, **info: Any) -> None:
        """Tell the parent the job is set up (the next job may start)."""
        self._conn.send(("ready", info))

    def report(self, count: int) -> None:
        """Publish this job's progress count (messages sent, received, ops done)."""
        self._progress[self.index] = count

    def target(self) -> int | None:
        """The target the parent set for this job, or None while it is not known."""
        value = int(self._targets[self.index])
        return None if value < 0 else value

    def progress_of(self, index: int) -> int:
        """Another worker's progress count."""
        return int(self._progress[index])


def _child_main(index: int, conn: Connection, progress: Any, targets: Any, loop: str) -> None:
    """A worker process: run jobs until the parent sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for name in PRELOAD:
        importlib.import_module(name)
    conn.send(("up", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        target, params, backend = message
        module, _, attribute = str(target).partition(":")
        function: JobFunction = getattr(importlib.import_module(module), attribute)
        progress[index] = 0
        ctx = JobContext(index, conn, progress, targets)
        prepare_heap()
        try:
            result = anyio.run(function, ctx, params, backend=backend or loop)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("result", result))


def prepare_heap() -> None:
    """Collect, then move every surviving object to the permanent generation, so that full
    collections during the job do not scan them (see the module docstring)."""
    gc.unfreeze()  # what the previous job froze may be garbage by now
    gc.collect()
    gc.freeze()


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, pool: WorkerPool, index: int, process: Any, conn: Connection) -> None:
        self._pool = pool
        self.index = index
        self.process = process
        self._conn = conn
        self.busy = False
        self.job = ""
        """The function of the last job submitted (``subscribe_job``)."""
        self.submitted = 0
        """Jobs submitted so far."""

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return int(self.process.pid)

    @property
    def progress(self) -> int:
        """The running job's progress count."""
        return int(self._pool.progress[self.index])

    def set_target(self, value: int | None) -> None:
        """Set (or, with None, clear) the target the running job reads."""
        self._pool.targets[self.index] = -1 if value is None else value

    def submit(self, target: str, params: dict[str, Any], *, backend: str | None = None) -> None:
        """Start a job (``"module:function"``) with ``params``; ``backend`` overrides the
        run's event loop (raw QUIC and redis-py jobs run on asyncio)."""
        if self.busy:
            raise RuntimeError(f"worker {self.index} is busy")
        self._pool.progress[self.index] = 0
        self.set_target(None)
        self.busy = True
        self.job = target.rpartition(":")[2]
        self.submitted += 1
        self._conn.send((target, params, backend))

    def ready(self, timeout: float, tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """Wait for the running job's ``ready``.

        Raises:
            WorkerFailed: the job failed or finished without saying it was ready, the
                worker died, or ``timeout`` passed.
        """
        kind, value = self._wait(timeout, tick)
        if kind != "ready":
            raise WorkerFailed(f"worker {self.index}: expected ready, got {kind}")
        result: dict[str, Any] = value
        return result

    def result(self, timeout: float, tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """Wait for the running job's result.

        Raises:
            WorkerFailed: as for :meth:`ready`.
        """
        kind, value = self._wait(timeout, tick)
        if kind != "result":
            raise WorkerFailed(f"worker {self.index}: expected a result, got {kind}")
        result: dict[str, Any] = value
        return result

    def _wait(self, timeout: float, tick: Callable[[], None] | None) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if self._conn.poll(TICK):
                try:
                    kind, value = self._conn.recv()
                except (EOFError, OSError):
                    raise WorkerFailed(f"worker {self.index} died") from None
                if kind in ("result", "error"):
                    self.busy = False
                if kind == "error":
                    raise WorkerFailed(f"worker {self.index} job failed:\n{value}")
                return str(kind), value
            if tick is not None:
                tick()
            if not self.process.is_alive():
                raise WorkerFailed(f"worker {self.index} died (exit {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker {self.index}: no answer within {timeout:.0f} s")


class WorkerPool:
    """``size`` worker processes for one bench run (use it with ``with``).

    Args:
        size: how many processes.
        loop: the event loop jobs run on unless they ask for another (``asyncio``/``trio``).
    """

    def __init__(self, size: int, loop: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.progress = ctx.Array("q", size, lock=False)
        self.targets = ctx.Array("q", size, lock=False)
        self.workers: list[Worker] = []
        for index in range(size):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_child_main,
                args=(index, child, self.progress, self.targets, loop),
                name=f"felix-bench-{index}",
                daemon=True,
            )
            process.start()
            child.close()
            self.workers.append(Worker(self, index, process, parent))

    def __enter__(self) -> WorkerPool:
        try:
            for worker in self.workers:
                kind, _ = worker._wait(START_TIMEOUT, None)
                if kind != "up":
                    raise WorkerFailed(f"worker {worker.index} did not start: {kind}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, index: int) -> Worker:
        return self.workers[index]

    def close(self) -> None:
        """Stop every worker: ask, then terminate what is still running (a busy one)."""
        for worker in self.workers:
            if not worker.busy:
                with contextlib.suppress(OSError):
                    worker._conn.send(None)
        for worker in self.workers:
            worker.process.join(timeout=5 if not worker.busy else 0.1)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker._conn.close()
