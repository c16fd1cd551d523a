"""The anyio adapter: one UDP socket, one timer, the shared sans-IO server.

It translates and decides nothing (STYLE.md habit 8). One task, :meth:`AnyioUdpRuntime.serve`,
runs the loop of the asyncio adapter under any anyio backend:

1. wait until the socket is readable, inside a cancel scope whose deadline is the server's
   earliest deadline (the *one* timer) and which :meth:`~AnyioUdpRuntime.wake` cancels
   (the one way in for API calls such as ``begin_shutdown``);
2. read a batch (up to :data:`~felix_runtime.udp.READ_BATCH` datagrams) and feed each with
   the same ``now``; fire the timer if it is due;
3. transmit *once*: everything ``datagrams_to_send(now)`` returns.

Why not ``anyio.create_udp_socket``: its ``UDPSocket`` hands out one datagram per ``await``
(and under asyncio owns the socket through a datagram transport), so there is no way to
drain what is queued before transmitting. A non-blocking socket with ``anyio.wait_readable``
reads the same batches on asyncio and trio as ``loop.add_reader`` does in the asyncio
adapter; sends are non-blocking ``sendto`` calls (a full kernel buffer drops the rest of the
pass, which QUIC retransmits). Both adapters make these calls through
:mod:`felix_runtime.udp`.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable

import anyio

from felix_runtime.udp import bind_udp, read_batch, send_all
from felix_server.server import FelixServer

__all__ = ["AnyioUdpRuntime"]


class AnyioUdpRuntime:
    """Drives a :class:`FelixServer` from a UDP socket under anyio (asyncio or trio).

    Make it inside a running event loop (it holds an ``anyio.Event``).

    Args:
        server: the sans-IO server.
        clock: the wall clock (``time.time``); tests may pass another.
    """

    def __init__(self, server: FelixServer, clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self._clock = clock
        self._sock: socket.socket | None = None
        self._wait_scope: anyio.CancelScope | None = None
        self._woken = False
        self.finished = anyio.Event()
        """Set once the server has finished its graceful shutdown."""
        self.address: tuple[str, int] = ("", 0)

    def bind(self, host: str, port: int) -> tuple[str, int]:
        """Bind the socket (no I/O wait: binding does not block).

        Returns:
            The bound ``(host, port)`` (port 0 is resolved).
        """
        sock = self._sock = bind_udp(host, port)
        self.address = sock.getsockname()[:2]
        return self.address

    def wake(self) -> None:
        """Make the loop run one pass now (after an API call changed the server's state)."""
        self._woken = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def close(self) -> None:
        """Close the socket (idempotent). Call after :meth:`serve` has returned."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ---------------------------------------------------------------------- the loop

    async def serve(self) -> None:
        """Run the loop until cancelled (the caller's task group owns this task)."""
        sock = self._sock
        assert sock is not None, "bind() first"
        server = self.server
        try:
            while True:
                deadline = server.get_timer()
                readable = False
                with anyio.CancelScope(deadline=self._to_loop_time(deadline)) as scope:
                    self._wait_scope = scope
                    if not self._woken:
                        await anyio.wait_readable(sock)
                        readable = True
                self._wait_scope = None
                timed_out = scope.cancelled_caught and not self._woken
                self._woken = False
                now = self._clock()
                if readable:
                    read_batch(sock, server.datagram_received, now)
                if deadline is not None and (timed_out or now >= deadline):
                    # Loop and wall clocks drift apart a little: never fire before the deadline.
                    now = max(now, deadline)
                    server.handle_timer(now)
                send_all(sock, server.datagrams_to_send(now))
                if server.finished:
                    self.finished.set()
        finally:
            self._wait_scope = None
            anyio.notify_closing(sock)

    def _to_loop_time(self, deadline: float | None) -> float:
        if deadline is None:
            return math.inf
        return anyio.current_time() + max(deadline - self._clock(), 0.0)
