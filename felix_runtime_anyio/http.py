"""``/metrics``, ``/live`` and ``/ready`` over HTTP/1.1, served with anyio.

What a request gets is decided once, by :class:`felix_runtime.prometheus.Responder` (pure:
no event loop involved); this module only carries request heads and responses over an anyio
TCP listener on the broker's own event loop, so a scrape reads the engine without racing it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from prometheus_client import CollectorRegistry

from felix_runtime.logs import logger
from felix_runtime.prometheus import Responder
from felix_server.access import CheckCredential

__all__ = ["AnyioMetricsServer"]

MAX_REQUEST_HEAD = 8192
"""Most bytes of request line and headers read before giving up on a request."""
REQUEST_TIMEOUT = 5.0
"""Seconds one HTTP exchange may take."""


class AnyioMetricsServer:
    """The metrics and health endpoint.

    Args:
        registry: what ``/metrics`` exposes (None: metrics disabled, health only).
        is_ready: answers ``/ready`` (200 when true, 503 otherwise).
        check: the bearer credential check ``/metrics`` asks for (None: open; see
            :class:`~felix_runtime.prometheus.Responder`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        is_ready: Callable[[], bool],
        check: CheckCredential | None = None,
    ) -> None:
        self.responder = Responder(registry, is_ready, check=check)
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
        await stream.send(self.responder.response(head))
