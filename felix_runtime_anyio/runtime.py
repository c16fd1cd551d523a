"""The anyio adapter: one UDP socket, one timer, the shared sans-IO server.

It translates and decides nothing (STYLE.md habit 8). One task, :meth:`AnyioUdpRuntime.serve`,
runs the loop of the asyncio adapter under any anyio backend:

1. wait until the socket is readable, inside a cancel scope whose deadline is the server's
   earliest deadline (the *one* timer) and which :meth:`~AnyioUdpRuntime.wake` cancels
   (the one way in for API calls such as ``begin_shutdown``);
2. read a batch (up to :data:`~felix_runtime.udp.READ_BATCH` datagrams) and feed each with
   the same ``now`` (transmitting between two of them once
   :attr:`~felix_server.server.FelixServer.transmit_due`); fire the timer if it is due.
   A wait that said readable when nothing was left to read (asyncio reports a readiness
   again in the loop iteration that runs the reading task, and that report can end the
   next wait), with no timer due and no wake, makes no pass: back to step 1;
3. transmit *once*: everything ``datagrams_to_send(now)`` produces, each connection's
   datagrams written as soon as that connection has built them.

Storage jobs (fsyncs, cold reads of durable logs): after each transmit the server's new jobs
start as tasks of :meth:`~AnyioUdpRuntime.serve`'s task group, each running
:func:`felix_runtime.storage.run_job` in ``anyio.to_thread.run_sync`` under a
``CapacityLimiter`` of :data:`~felix_runtime.storage.STORAGE_THREADS`; the result is handed
back on the loop (:meth:`~felix_server.server.FelixServer.storage_job_done`) and the loop
woken. A job is shielded from cancellation: a stopped loop waits for its fsync and applies
it, so the final syncs (:meth:`~AnyioUdpRuntime.close_storage`) find no job half-done.

The wait of step 1 on the asyncio backend (:class:`_AsyncioSocketWait`): the loop watches
the socket for the adapter's whole life (``add_reader`` once) and a wait is a bare future
plus, for the deadline, one timer handle; ``anyio.wait_readable`` registers and unregisters
the socket with the selector on every wait (two ``epoll_ctl`` calls) and its cancel scope
costs as much again, about 20 us per pass (``benchmarks/adapter_pass.py``), on the path of
every datagram (the client's
socket does the same, ``felix_client._transport``). Under trio the wait is anyio's
(:class:`_SocketWait`).

Why not ``anyio.create_udp_socket``: its ``UDPSocket`` hands out one datagram per ``await``
(and under asyncio owns the socket through a datagram transport), so there is no way to
drain what is queued before transmitting. A non-blocking socket with ``anyio.wait_readable``
reads the same batches on asyncio and trio as ``loop.add_reader`` does in the asyncio
adapter; sends are non-blocking ``sendto`` calls (a full kernel buffer drops the rest of the
pass, which QUIC retransmits). Both adapters make these calls through
:mod:`felix_runtime.udp`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable
from functools import partial

import anyio
from anyio.abc import TaskGroup

from felix_core.disklog import StorageJob
from felix_runtime.storage import STORAGE_THREADS, JobTimer, run_job
from felix_runtime.timers import TIMER_SLACK, timer_delay
from felix_runtime.udp import RECEIVE_BUFFER, bind_udp, read_batch, send_all
from felix_server.server import FelixServer

__all__ = ["AnyioUdpRuntime"]


class _SocketWait:
    """Waits until a socket is readable or a deadline (on anyio's clock) passes, under any
    backend: ``anyio.wait_readable`` in a cancel scope, which :meth:`interrupt` cancels."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._scope: anyio.CancelScope | None = None

    async def wait(self, deadline: float) -> bool:
        """Whether the socket became readable (False: the deadline passed, or
        :meth:`interrupt`)."""
        with anyio.CancelScope(deadline=deadline) as scope:
            self._scope = scope
            try:
                await anyio.wait_readable(self.sock)
            finally:
                self._scope = None
            return True
        return False

    def interrupt(self) -> None:
        """End the wait in progress (if any) now."""
        if self._scope is not None:
            self._scope.cancel()

    def close(self) -> None:
        """Stop watching the socket (before it is closed)."""
        anyio.notify_closing(self.sock)


class _AsyncioSocketWait(_SocketWait):
    """The wait under asyncio: the socket is watched for good (``add_reader`` once), a wait
    is a future and, for the deadline, a timer handle (see the module docstring).

    Raises:
        NotImplementedError: the running loop has no ``add_reader`` (Windows' proactor).
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(sock)
        self._loop = loop
        self._waiting: asyncio.Future[bool] | None = None
        loop.add_reader(sock.fileno(), self._wake, True)

    def _wake(self, readable: bool) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(readable)

    async def wait(self, deadline: float) -> bool:
        loop = self._loop
        if deadline <= loop.time():
            return False
        waiting: asyncio.Future[bool] = loop.create_future()
        self._waiting = waiting
        timer = loop.call_at(deadline, self._wake, False) if deadline != math.inf else None
        try:
            readable: bool = await waiting
            return readable
        finally:
            self._waiting = None
            if timer is not None:
                timer.cancel()

    def interrupt(self) -> None:
        self._wake(False)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())


def _socket_wait(sock: socket.socket) -> _SocketWait:
    """The cheapest wait the running backend allows."""
    import sniffio  # how anyio itself tells the backends apart

    if sniffio.current_async_library() == "asyncio":
        try:
            return _AsyncioSocketWait(sock, asyncio.get_running_loop())
        except NotImplementedError:  # a loop without add_reader: the generic way
            pass
    return _SocketWait(sock)


class AnyioUdpRuntime:
    """Drives a :class:`FelixServer` from a UDP socket under anyio (asyncio or trio).

    Make it inside a running event loop (it holds an ``anyio.Event``).

    Args:
        server: the sans-IO server.
        clock: the wall clock (``time.time``); tests may pass another.
        job_timer: told each storage job's duration (on the worker thread).
    """

    def __init__(
        self,
        server: FelixServer,
        clock: Callable[[], float] = time.time,
        job_timer: JobTimer | None = None,
    ) -> None:
        self.server = server
        self._clock = clock
        self._sock: socket.socket | None = None
        self._waiter: _SocketWait | None = None
        self._woken = False
        self.finished = anyio.Event()
        """Set once the server has finished its graceful shutdown."""
        self.address: tuple[str, int] = ("", 0)
        self._job_timer = job_timer
        self._limiter = anyio.CapacityLimiter(STORAGE_THREADS)
        self._jobs_running = 0
        self._jobs_idle = anyio.Event()
        self._jobs_idle.set()
        self._job_group: TaskGroup | None = None

    def bind(self, host: str, port: int, receive_buffer: int = RECEIVE_BUFFER) -> tuple[str, int]:
        """Bind the socket, its kernel receive buffer ``receive_buffer`` bytes
        (``transport.receive_buffer``); no I/O wait: binding does not block.

        Returns:
            The bound ``(host, port)`` (port 0 is resolved).
        """
        sock = self._sock = bind_udp(host, port, receive_buffer)
        self.address = sock.getsockname()[:2]
        return self.address

    def wake(self) -> None:
        """Make the loop run one pass now (after an API call changed the server's state)."""
        self._woken = True
        if self._waiter is not None:
            self._waiter.interrupt()

    def close(self) -> None:
        """Close the socket (idempotent). Call after :meth:`serve` has returned."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ---------------------------------------------------------------------- the loop

    async def serve(self) -> None:
        """Run the loop until cancelled (the caller's task group owns this task); the
        storage jobs it starts are tasks of its own task group."""
        async with anyio.create_task_group() as jobs:
            self._job_group = jobs
            await self._serve()

    async def _serve(self) -> None:
        sock = self._sock
        assert sock is not None, "bind() first"
        server = self.server
        job_group = self._job_group
        assert job_group is not None
        self._waiter = waiter = _socket_wait(sock)
        send = partial(send_all, sock)

        latest = 0.0  # the time of the last transmit inside a batch (the pass goes on from it)

        def transmit_if_due(now: float) -> float:  # between two datagrams: see read_batch
            nonlocal latest
            if not server.transmit_due:
                return now
            now = latest = self._clock()
            server.datagrams_to_send(now, send=send)
            return now

        try:
            while True:
                deadline = server.get_timer()
                readable = False
                if not self._woken:
                    readable = await waiter.wait(self._to_loop_time(deadline))
                timed_out = not readable and not self._woken
                woken, self._woken = self._woken, False
                now = self._clock()
                due = deadline is not None and now >= deadline - TIMER_SLACK
                if readable:
                    fed = read_batch(sock, server.datagram_received, now, transmit_if_due)
                    # A transmit inside the batch read a later time: the rest of the pass
                    # must not hand QUIC an earlier one (aioquic would encode a negative
                    # ACK delay and raise).
                    now = max(now, latest)
                    if not fed and not woken and not due:
                        continue  # a stale readiness (already read): no pass to make
                elif timed_out and not due:
                    continue  # the timer fired early (felix_runtime.timers): wait for the rest
                if deadline is not None and due:
                    # Loop and wall clocks drift apart a little: never fire before the deadline.
                    now = max(now, deadline)
                    server.handle_timer(now)
                server.datagrams_to_send(now, send=send)
                if server.finished:
                    self.finished.set()
                for job in server.take_storage_jobs(now):
                    self._job_started()
                    job_group.start_soon(self._run_job, job)
        finally:
            self._waiter = None
            waiter.close()

    # ------------------------------------------------------------------ storage jobs

    def _job_started(self) -> None:
        if self._jobs_running == 0:
            self._jobs_idle = anyio.Event()
        self._jobs_running += 1

    async def _run_job(self, job: StorageJob) -> None:
        with anyio.CancelScope(shield=True):  # never leave a job half-applied
            try:
                outcome = await anyio.to_thread.run_sync(
                    run_job, job, self._job_timer, limiter=self._limiter
                )
                self.server.storage_job_done(job, outcome, self._clock())
            finally:
                self._jobs_running -= 1
                if self._jobs_running == 0:
                    self._jobs_idle.set()
        self.wake()

    async def close_storage(self) -> None:
        """At shutdown, once :meth:`serve` has returned: wait for the jobs in flight, run
        every log's final sync and close the logs."""
        storage = self.server.storage
        if storage is None:
            return
        await self._jobs_idle.wait()
        async with anyio.create_task_group() as tg:
            for job in storage.final_jobs(self._clock()):
                self._job_started()
                tg.start_soon(self._run_job, job)
        storage.close()

    def _to_loop_time(self, deadline: float | None) -> float:
        if deadline is None:
            return math.inf
        return anyio.current_time() + timer_delay(deadline, self._clock())
