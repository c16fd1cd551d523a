"""The UDP sockets of Felix, as the broker's adapters and the client use them: non-blocking
with large kernel buffers (:func:`udp_socket`), the broker's bound (:func:`bind_udp`) and
drained a batch at a time, written without ever waiting.

Plain socket calls, no event loop: each adapter waits for readability its own way
(``loop.add_reader`` or ``anyio.wait_readable``) and then calls :func:`read_batch` and
:func:`send_all`; the client connects its socket and waits with anyio.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable

from aioquic.quic.connection import NetworkAddress

from felix_runtime.logs import log_fields, logger
from felix_server.config import TransportConfig

__all__ = [
    "READ_BATCH",
    "RECEIVE_BUFFER",
    "SOCKET_BUFFER",
    "bind_udp",
    "read_batch",
    "send_all",
    "udp_socket",
]

READ_BATCH = 64
"""Most datagrams read from the socket before one transmit."""
SOCKET_BUFFER = 4 * 1024 * 1024
"""Requested kernel send and receive buffer sizes (the client's socket, the broker's send
side)."""
RECEIVE_BUFFER = TransportConfig().receive_buffer
"""Requested kernel receive buffer of the broker's socket: ``transport.receive_buffer``'s
default."""


def udp_socket(family: int, receive_buffer: int = SOCKET_BUFFER) -> socket.socket:
    """A non-blocking UDP socket of ``family`` whose kernel buffers are requested at
    ``receive_buffer`` and :data:`SOCKET_BUFFER` bytes (the kernel grants less when it
    allows less)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option, size in ((socket.SO_RCVBUF, receive_buffer), (socket.SO_SNDBUF, SOCKET_BUFFER)):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)
    sock.setblocking(False)
    return sock


def bind_udp(host: str, port: int, receive_buffer: int = RECEIVE_BUFFER) -> socket.socket:
    """A :func:`udp_socket` bound to ``(host, port)`` (closed again if binding fails), whose
    kernel receive buffer is ``receive_buffer`` bytes rather than the client's
    :data:`SOCKET_BUFFER`: every client's datagrams wait in that one queue, so its size
    bounds how long one client's flood can delay the others' (``transport.receive_buffer``,
    docs/broker.md).

    Raises:
        OSError: the address cannot be bound.
    """
    sock = udp_socket(socket.AF_INET6 if ":" in host else socket.AF_INET, receive_buffer)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def read_batch(
    sock: socket.socket,
    feed: Callable[[bytes, NetworkAddress, float], None],
    now: float,
    between: Callable[[float], float] | None = None,
) -> int:
    """Feed up to :data:`READ_BATCH` queued datagrams to ``feed``, each with the same ``now``.

    ``between``, when given, is called with ``now`` after each datagram (an adapter's early
    transmit, :attr:`~felix_server.server.FelixServer.transmit_due`) and returns the time
    for the next ones: a later one when it transmitted, since a QUIC engine must never see
    time go back (qh3's closes the connection).

    Returns:
        How many were fed (0: nothing was queued, or the read failed).
    """
    fed = 0
    for _ in range(READ_BATCH):
        try:
            data, addr = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
            logger.debug("recvfrom failed", extra=log_fields(error=exc))
            break
        feed(data, addr, now)
        fed += 1
        if between is not None:
            now = between(now)
    return fed


def send_all(sock: socket.socket, datagrams: Iterable[tuple[bytes, NetworkAddress]]) -> None:
    """Send each datagram with a non-blocking ``sendto``; a full kernel buffer drops the rest
    of them (QUIC retransmits)."""
    sendto = sock.sendto
    for data, addr in datagrams:
        try:
            sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            break  # the kernel buffer is full: QUIC will retransmit
        except OSError as exc:
            logger.debug("sendto failed", extra=log_fields(error=exc))
