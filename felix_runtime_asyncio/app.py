"""The broker process: configuration, certificate, sockets, metrics, signals, shutdown.

``main(argv)`` is what ``felix broker``, ``felix-broker`` and ``python -m
felix_runtime_asyncio`` run. :class:`BrokerProcess` is the same broker as an object that
tests start in-process (``await BrokerProcess(config).start()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from felix_runtime_asyncio.logs import configure_logging, log_fields, logger
from felix_runtime_asyncio.metrics import MetricsServer, PrometheusObserver
from felix_runtime_asyncio.runtime import UdpRuntime
from felix_runtime_asyncio.tls import ensure_self_signed
from felix_server.config import ConfigError, ServerConfig, config_to_toml, load_config
from felix_server.server import FelixServer, make_quic_configuration

__all__ = ["BrokerProcess", "main", "run"]


class BrokerProcess:
    """One broker: the sans-IO server on a UDP socket plus the metrics endpoint.

    Args:
        config: the effective configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.observer = PrometheusObserver()
        self.server: FelixServer | None = None
        self.runtime: UdpRuntime | None = None
        self.metrics: MetricsServer | None = None
        self.cert_path: Path | None = None
        self.fingerprint = ""

    @property
    def address(self) -> tuple[str, int]:
        """The bound QUIC address."""
        assert self.runtime is not None
        return self.runtime.address

    async def start(self) -> BrokerProcess:
        """Make or load the certificate, bind QUIC and metrics; returns self."""
        config = self.config
        host, port = config.listen_address
        quic_config = make_quic_configuration(config)
        if config.tls_cert is None:
            files = ensure_self_signed(config.data_dir, host)
            cert, key = str(files.cert_path), str(files.key_path)
            self.cert_path, self.fingerprint = files.cert_path, files.fingerprint
        else:
            assert config.tls_key is not None
            cert, key = config.tls_cert, config.tls_key
            self.cert_path = Path(cert)
        quic_config.load_cert_chain(cert, key)
        self.server = FelixServer(config, quic_config, now=time.time(), observer=self.observer)
        self.observer.attach(self.server)
        self.runtime = UdpRuntime(self.server)
        bound = await self.runtime.start(host, port)
        if config.metrics_enabled:
            server = self.server
            self.metrics = MetricsServer(self.observer.registry, lambda: server.ready)
            await self.metrics.start(*config.metrics_address)
        logger.info(
            "felix broker listening",
            extra=log_fields(
                quic=f"{bound[0]}:{bound[1]}",
                metrics=(
                    f"http://{self.metrics.address[0]}:{self.metrics.address[1]}/metrics"
                    if self.metrics
                    else "off"
                ),
                server_id=config.server_id,
            ),
        )
        if config.dev_mode:
            logger.warning(
                "DEVELOPMENT MODE: self-signed certificate; clients must trust it explicitly",
                extra=log_fields(cert=self.cert_path, sha256=self.fingerprint),
            )
            if config.broker.create_defaults:
                logger.info(
                    "default tenant and namespace created",
                    extra=log_fields(
                        tenant=config.broker.default_tenant,
                        namespace=config.broker.default_namespace,
                    ),
                )
        return self

    async def shutdown(self) -> None:
        """Graceful shutdown: not ready, GoAway, bounded drain, then close everything."""
        server, runtime = self.server, self.runtime
        if server is not None and runtime is not None:
            server.begin_shutdown(time.time())
            runtime.wake()
            logger.info(
                "draining", extra=log_fields(connections=len(server.sessions),
                                             grace_s=self.config.shutdown_grace_s)
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.shutdown_drain_s + 1.0):
                    await runtime.wait_finished()
            runtime.close()
        if self.metrics is not None:
            await self.metrics.close()
        logger.info("felix broker stopped")

    async def close(self) -> None:
        """Stop at once (tests): no drain."""
        if self.runtime is not None:
            self.runtime.close()
        if self.metrics is not None:
            await self.metrics.close()


async def run(config: ServerConfig) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the exit code."""
    broker = await BrokerProcess(config).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("signal received, shutting down")
        await broker.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker. Returns the process exit code (0 after a graceful shutdown, 2 for a
    configuration error, 1 when the broker cannot start)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config, namespace = load_config(args, os.environ, lambda p: Path(p).read_bytes())
    except ConfigError as exc:
        print(f"felix-broker: {exc}", file=sys.stderr)
        return 2
    if getattr(namespace, "print_config", False):
        sys.stdout.write(config_to_toml(config))
        return 0
    configure_logging(config.log_format, config.log_level)
    try:
        return asyncio.run(run(config))
    except OSError as exc:
        logger.error("cannot start the broker: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
