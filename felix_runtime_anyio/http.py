"""``/metrics``, ``/live`` and ``/ready`` over HTTP/1.1, served with anyio.

What each path answers is decided once, by
:meth:`felix_runtime_asyncio.metrics.MetricsServer.respond` (a pure method: no event loop
involved); this module only carries requests and responses over an anyio TCP listener on the
broker's own event loop, so a scrape reads the engine without racing it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from prometheus_client import CollectorRegistry

from felix_runtime_asyncio.logs import logger
from felix_runtime_asyncio.metrics import MetricsServer

__all__ = ["AnyioMetricsServer"]

MAX_REQUEST_HEAD = 8192
"""Most bytes of request line and headers read before giving up on a request."""
REQUEST_TIMEOUT = 5.0
"""Seconds one HTTP exchange may take."""
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class AnyioMetricsServer:
    """The metrics and health endpoint.

    Args:
        registry: what ``/metrics`` exposes.
        is_ready: answers ``/ready`` (200 when true, 503 otherwise).
    """

    def __init__(self, registry: CollectorRegistry, is_ready: Callable[[], bool]) -> None:
        self._responder = MetricsServer(registry, is_ready)  # only its respond() is used
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self.address: tuple[str, int] = ("", 0)

    async def bind(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 is resolved)."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self._listener = listener
        sock = listener.listeners[0].extra(SocketAttribute.raw_socket)
        self.address = sock.getsockname()[:2]
        return self.address

    async def serve(self) -> None:
        """Answer requests until cancelled."""
        assert self._listener is not None, "bind() first"
        await self._listener.serve(self._handle)

    async def aclose(self) -> None:
        """Stop listening (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    await self._exchange(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            except Exception:  # a bug here must not take the broker down
                logger.exception("metrics request failed")

    async def _exchange(self, stream: anyio.abc.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
            if len(head) > MAX_REQUEST_HEAD:
                return
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        else:
            status, ctype, body = self._responder.respond(path)
        response = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        await stream.send(response + (body if method == b"GET" else b""))
