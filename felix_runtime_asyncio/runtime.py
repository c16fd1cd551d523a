"""The asyncio adapter: one UDP socket, one timer, the shared sans-IO server.

It translates and decides nothing (STYLE.md habit 8): datagrams that arrive in one loop
pass are fed to :class:`~felix_server.server.FelixServer` with the time, then whatever the
server wants to send goes out in *one* transmit (each connection's datagrams written as soon
as that connection has built them, so the first reader's leave first), and *one* timer is
re-armed at the server's earliest deadline (in whole milliseconds, rounded up, and never
handled early: :mod:`felix_runtime.timers`). Reading drains the socket (up to
:data:`~felix_runtime.udp.READ_BATCH` datagrams) before transmitting (and transmits inside
the batch too, once the server has served enough requests for that:
:attr:`~felix_server.server.FelixServer.transmit_due`);
``benchmarks/quic_baseline.py`` measures what that buys over aioquic.asyncio's
transmit-per-datagram. The socket calls themselves are :mod:`felix_runtime.udp`'s, shared
with the anyio adapter.

Storage jobs (fsyncs, cold reads of durable logs): after each transmit the server's new jobs
go to a bounded :class:`~concurrent.futures.ThreadPoolExecutor` (``loop.run_in_executor``,
:func:`felix_runtime.storage.run_job`); each result comes back on the loop
(:meth:`~felix_server.server.FelixServer.storage_job_done`) and a transmit follows, which
sends the acks it completed. :meth:`UdpRuntime.close_storage` waits for the jobs in flight
and runs the final syncs at shutdown.

The socket is read with ``loop.add_reader`` when the event loop supports it (selector
loops, uvloop), else through ``loop.create_datagram_endpoint`` with a transmit scheduled
once per pass.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aioquic.quic.connection import NetworkAddress

from felix_core.disklog import StorageJob
from felix_runtime.storage import STORAGE_THREADS, JobTimer, run_job
from felix_runtime.timers import TIMER_SLACK, timer_delay
from felix_runtime.udp import RECEIVE_BUFFER, bind_udp, read_batch, send_all
from felix_server.server import FelixServer

__all__ = ["UdpRuntime"]


class UdpRuntime:
    """Drives a :class:`FelixServer` from a UDP socket under asyncio.

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
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._scheduled = False
        self._finished = asyncio.Event()
        self.address: tuple[str, int] = ("", 0)
        self._job_timer = job_timer
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: set[asyncio.Future[object]] = set()
        self._closed = False

    async def start(
        self, host: str, port: int, receive_buffer: int = RECEIVE_BUFFER
    ) -> tuple[str, int]:
        """Bind the socket (its kernel receive buffer ``receive_buffer`` bytes,
        ``transport.receive_buffer``) and start serving.

        Returns:
            The bound ``(host, port)`` (port 0 is resolved).
        """
        sock = bind_udp(host, port, receive_buffer)
        try:
            self._loop.add_reader(sock.fileno(), self._readable)
            self._sock = sock
        except NotImplementedError:  # proactor loops: fall back to a datagram endpoint
            runtime = self

            class _Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
                    runtime.server.datagram_received(data, addr, runtime._clock())
                    runtime.wake()

            self._transport, _ = await self._loop.create_datagram_endpoint(_Protocol, sock=sock)
        self.address = sock.getsockname()[:2]
        return self.address

    def close(self) -> None:
        """Stop reading, cancel the timer and close the socket (idempotent). Storage jobs
        in flight finish (:meth:`close_storage` waits for them) but start no transmit."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def wake(self) -> None:
        """Schedule one transmit in this loop pass (after an API call changed state)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.transmit)

    async def wait_finished(self) -> None:
        """Wait until the server finished its graceful shutdown."""
        await self._finished.wait()

    # ---------------------------------------------------------------------- the loop

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        read_batch(sock, self.server.datagram_received, self._clock(), self._transmit_if_due)
        self.transmit()

    def _transmit_if_due(self, now: float) -> float:
        """Between two datagrams of a batch: transmit once the server asks to
        (:attr:`~felix_server.server.FelixServer.transmit_due`); the time for the next."""
        if not self.server.transmit_due:
            return now
        self.transmit()
        return self._clock()

    def transmit(self) -> None:
        """Send what the server wants to send and re-arm the one timer."""
        self._scheduled = False
        now = self._clock()
        self.server.datagrams_to_send(now, send=self._send)  # each connection's at once
        if self.server.finished:
            self._finished.set()
        for job in self.server.take_storage_jobs(now):
            self._start_job(job)
        self._arm(self.server.get_timer(), now)

    def _send(self, datagrams: list[tuple[bytes, NetworkAddress]]) -> None:
        if self._sock is not None:
            send_all(self._sock, datagrams)
        elif self._transport is not None:
            for data, addr in datagrams:
                self._transport.sendto(data, addr)

    # ------------------------------------------------------------------ storage jobs

    def _start_job(self, job: StorageJob) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="felix-io")
        future = self._loop.run_in_executor(self._executor, run_job, job, self._job_timer)
        self._jobs.add(future)
        future.add_done_callback(lambda f: self._job_done(job, f))

    def _job_done(self, job: StorageJob, future: asyncio.Future[object]) -> None:
        self._jobs.discard(future)
        self.server.storage_job_done(job, future.result(), self._clock())
        if not self._closed:
            self.wake()

    async def close_storage(self) -> None:
        """At shutdown, after the drain: wait for the jobs in flight, run every log's final
        sync, close the logs and stop the worker threads."""
        if self.server.storage is None:
            return
        while self._jobs:
            await asyncio.wait(set(self._jobs))
        for job in self.server.storage.final_jobs(self._clock()):
            self._start_job(job)
        while self._jobs:
            await asyncio.wait(set(self._jobs))
        self.server.storage.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _arm(self, deadline: float | None, now: float) -> None:
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = timer_delay(deadline, now)
            self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        now = self._clock()
        self._timer = None
        self._timer_at = None
        if deadline is not None and now < deadline - TIMER_SLACK:
            self._arm(deadline, now)  # fired early (felix_runtime.timers): wait for the rest
            return
        # Within the slack (the clocks' drift): never fire before the deadline we armed for.
        self.server.handle_timer(max(now, deadline or 0.0))
        self.transmit()
