"""An in-process broker on 127.0.0.1 (port 0) for the conformance self-tests, with hooks
for fault injection: a wrapper around the engine's outputs and a QUIC connection factory.

It assembles the same parts as ``felix_runtime_asyncio.app.BrokerProcess`` (the sans-IO
FelixServer on the asyncio UdpRuntime) so that a test can slip a fault in between.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioquic.quic.connection import QuicConnection

from conformance.context import Hooks, Options
from conformance.wire import Endpoint
from felix_core.events import EngineEvent
from felix_core.limits import BrokerConfig
from felix_runtime.credentials import broker_authenticator
from felix_runtime.quic_engines import server_quic
from felix_runtime.storage import open_storage
from felix_runtime.tls import ensure_self_signed
from felix_runtime_asyncio.runtime import UdpRuntime
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

OutputFilter = Callable[[list[EngineEvent]], list[EngineEvent]]


@dataclass
class Running:
    """A started broker."""

    server: FelixServer
    runtime: UdpRuntime
    cert: Path

    def options(self, quic_engine: str = "aioquic", **hooks: Any) -> Options:
        """Suite options pointing at this broker, the suite's client on ``quic_engine``
        (hooks: see conformance.context.Hooks)."""
        host, port = self.runtime.address
        return Options(
            endpoint=Endpoint(
                host=host,
                port=port,
                cafile=str(self.cert),
                server_name="localhost",
                wait=3.0,
                quic_engine=quic_engine,
            ),
            hooks=Hooks(**hooks),
        )

    async def goaway(self) -> None:
        """The GoAway hook: begin the graceful shutdown."""
        self.server.begin_shutdown(time.time())
        self.runtime.wake()


@asynccontextmanager
async def broker(
    tmp: Path,
    *,
    outputs: OutputFilter | None = None,
    engine: Callable[[Any], None] | None = None,
    connection_factory: Callable[..., QuicConnection] | None = None,
    quic_engine: str = "aioquic",
    auth_tokens: str | None = None,
    durable: bool = False,
) -> AsyncIterator[Running]:
    """Start a broker.

    Args:
        tmp: a directory for its data (certificate).
        outputs: rewrites the engine's outputs before they reach the sessions.
        engine: called with the engine (``felix_core.broker.Broker``) to patch it.
        connection_factory: the QUIC connection class (default: the engine's).
        quic_engine: the broker's QUIC engine (``aioquic`` or ``qh3``).
        auth_tokens: shared secrets the broker accepts (``ServerConfig.auth_tokens``);
            default: no authentication.
        durable: the broker's data directory holds its definitions and durable logs (as
            ``felix broker`` opens it), and resources are ``durable`` unless their
            settings say otherwise (``broker.durability``).
    """
    config = ServerConfig(
        listen="127.0.0.1:0",
        metrics_enabled=False,
        data_dir=str(tmp / "data"),
        shutdown_grace_s=0.5,
        shutdown_drain_s=2.0,
        quic_engine=quic_engine,
        auth_tokens=auth_tokens,
        broker=BrokerConfig(durability="durable") if durable else BrokerConfig(),
    )
    quic_config, engine_factory = server_quic(config)
    files = ensure_self_signed(config.data_dir, "127.0.0.1")
    quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
    storage = open_storage(config) if durable else None
    server = FelixServer(
        config,
        quic_config,
        now=time.time(),
        connection_factory=connection_factory or engine_factory,
        authenticate=broker_authenticator(config),
        logs=storage.logs if storage is not None else None,
        metadata=storage.metadata if storage is not None else None,
    )
    if outputs is not None:
        drain = server.broker.drain_events
        server.broker.drain_events = lambda: outputs(drain())  # type: ignore[method-assign]
    if engine is not None:
        engine(server.broker)
    runtime = UdpRuntime(server)
    await runtime.start("127.0.0.1", 0)
    try:
        yield Running(server, runtime, files.cert_path)
    finally:
        if storage is not None:
            await runtime.close_storage()
            storage.close()
        runtime.close()
