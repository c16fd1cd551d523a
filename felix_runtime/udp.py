"""The broker's UDP socket as both adapters use it: bound with large kernel buffers and
non-blocking, drained a batch at a time, written without ever waiting.

Plain socket calls, no event loop: each adapter waits for readability its own way
(``loop.add_reader`` or ``anyio.wait_readable``) and then calls :func:`read_batch` and
:func:`send_all`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable

from aioquic.quic.connection import NetworkAddress

from felix_runtime.logs import log_fields, logger

__all__ = ["READ_BATCH", "SOCKET_BUFFER", "bind_udp", "read_batch", "send_all"]

READ_BATCH = 64
"""Most datagrams read from the socket before one transmit."""
SOCKET_BUFFER = 4 * 1024 * 1024
"""Requested kernel send and receive buffer sizes."""


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` (closed again if binding fails).

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def read_batch(
    sock: socket.socket, feed: Callable[[bytes, NetworkAddress, float], None], now: float
) -> None:
    """Feed up to :data:`READ_BATCH` queued datagrams to ``feed``, each with the same ``now``."""
    for _ in range(READ_BATCH):
        try:
            data, addr = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
            logger.debug("recvfrom failed", extra=log_fields(error=exc))
            break
        feed(data, addr, now)


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
