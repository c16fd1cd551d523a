"""``/metrics``, ``/live`` and ``/ready`` over HTTP/1.1, served with asyncio.

What a request gets is decided once, by :class:`felix_runtime.prometheus.Responder` (pure:
no event loop involved); this module only carries request heads and responses over an
asyncio TCP server on the broker's own event loop, so a scrape reads the engine without
racing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from felix_runtime.logs import logger
from felix_runtime.prometheus import Responder
from felix_server.access import CheckCredential

__all__ = ["MetricsServer"]

REQUEST_TIMEOUT = 5.0
"""Seconds one HTTP exchange may take."""


class MetricsServer:
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
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 is resolved)."""
        self._server = await asyncio.start_server(self._handle, host, port)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self.address

    async def close(self) -> None:
        """Stop listening and close open connections (idempotent)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self.responder.response(head))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:  # a bug here must not take the broker down
            logger.exception("metrics request failed")
        finally:
            writer.close()
