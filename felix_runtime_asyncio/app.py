"""The broker process: configuration, certificate, sockets, metrics, signals, shutdown.

``main(argv)`` is what ``felix broker``, ``felix-broker`` and ``python -m
felix_runtime_asyncio`` run. :class:`BrokerProcess` is the same broker as an object that
tests start in-process (``await BrokerProcess(config).start()``).

``--loop uvloop`` runs it on uvloop's event loop instead of asyncio's own (the ``uvloop``
extra, ``pip install 'felix[uvloop]'``): the same adapter with a cheaper loop, 3-4 us
less CPU per datagram (``benchmarks/adapter_pass.py``; docs/performance.md, "Publish ->
deliver (round 8)"). The log's ``felix broker listening`` line says ``runtime`` ``asyncio/uvloop``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from felix_runtime.audit import broker_observer
from felix_runtime.credentials import broker_authenticator, metrics_credentials
from felix_runtime.exchange import broker_exchange
from felix_runtime.logs import log_fields, logger
from felix_runtime.process import broker_main, log_started
from felix_runtime.prometheus import PrometheusObserver
from felix_runtime.storage import BrokerStorage, build_server, open_storage
from felix_runtime.tls_clients import client_authenticator, parse_identity_rules
from felix_runtime.tls_server import ServerTls
from felix_runtime_asyncio.http import MetricsServer
from felix_runtime_asyncio.runtime import UdpRuntime
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

LOOPS = ("asyncio", "uvloop")
"""The event loops the asyncio runtime runs on (``--loop``)."""
PROG = "felix-broker [--loop {asyncio,uvloop}]"
"""The program name ``--help`` shows (``--loop`` is parsed before the settings)."""

__all__ = ["BrokerProcess", "main", "run"]


class BrokerProcess:
    """One broker: the sans-IO server on a UDP socket plus the metrics endpoint.

    Args:
        config: the effective configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._observer: PrometheusObserver | None = None
        self._close_audit: Callable[[], None] = lambda: None
        self.server: FelixServer | None = None
        self.storage: BrokerStorage | None = None
        self.runtime: UdpRuntime | None = None
        self.metrics: MetricsServer | None = None
        self.cert_path: Path | None = None
        self.fingerprint = ""
        self.tls: ServerTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None

    @property
    def observer(self) -> PrometheusObserver:
        """Metrics and the audit hooks (with the audit trail when configured); made by
        :meth:`start`."""
        assert self._observer is not None, "the broker has not started"
        return self._observer

    @property
    def address(self) -> tuple[str, int]:
        """The bound QUIC address."""
        assert self.runtime is not None
        return self.runtime.address

    async def start(self) -> BrokerProcess:
        """Make or load the certificate, bind QUIC and metrics; returns self."""
        config = self.config
        self.tls = tls = ServerTls(config)
        self.cert_path, self.fingerprint = tls.cert_path, tls.fingerprint
        self._observer, self._close_audit = broker_observer(config)
        observer = self._observer
        tls.on_refused = observer.tls_refused
        self.storage = open_storage(config, on_append=observer.storage_appended)
        self.server, recovery_s = build_server(
            config,
            tls.configuration,
            self.storage,
            observer,
            connection_factory=tls.connection_factory,
            authenticate=client_authenticator(
                parse_identity_rules(config.tls_client_rules or ""), broker_authenticator(config)
            ),
            exchange=broker_exchange(config),
        )
        observer.attach(self.server)
        observer.attach_storage(self.storage.logs, recovery_s)
        self.runtime = UdpRuntime(self.server, job_timer=observer.storage_job_ran)
        bound = await self.runtime.start(
            *config.listen_address, receive_buffer=config.transport.receive_buffer
        )
        server = self.server
        registry = self.observer.registry if config.metrics_enabled else None
        self.metrics = MetricsServer(  # /live, /ready regardless; /metrics as connections
            registry, lambda: server.ready, metrics_credentials(config)
        )
        await self.metrics.start(*config.metrics_address)
        log_started(
            config, bound, self.metrics.address, self.cert_path, self.fingerprint, loop_name()
        )
        if config.tls_reload_check_s > 0:
            self._tls_watch = asyncio.create_task(self._watch_tls(config.tls_reload_check_s))
        return self

    def reload_tls(self) -> bool:
        """Reload the certificate, key and client CA for new connections (SIGHUP); a bad
        file is logged and the current material stays. Returns whether it was reloaded."""
        if self.tls is None or self.server is None:
            return False
        return self.tls.reload(self.server)

    async def _watch_tls(self, every: float) -> None:
        """Reload when a TLS file changes (checked every ``every`` seconds)."""
        while True:
            await asyncio.sleep(every)
            if self.tls is not None and self.tls.changed():
                self.reload_tls()

    def _stop_tls_watch(self) -> None:
        if self._tls_watch is not None:
            self._tls_watch.cancel()
            self._tls_watch = None

    async def shutdown(self) -> None:
        """Graceful shutdown: not ready, GoAway, bounded drain, then close everything."""
        self._stop_tls_watch()
        server, runtime = self.server, self.runtime
        if server is not None and runtime is not None:
            server.begin_shutdown(time.time())
            runtime.wake()
            logger.info(
                "draining",
                extra=log_fields(
                    connections=len(server.sessions), grace_s=self.config.shutdown_grace_s
                ),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.shutdown_drain_s + 1.0):
                    await runtime.wait_finished()
            runtime.close()
        await self._close_storage()
        if self.metrics is not None:
            await self.metrics.close()
        logger.info("felix broker stopped")

    async def _close_storage(self) -> None:
        """The logs' final syncs, then the data directory's descriptors and the audit
        trail (what it buffered is written)."""
        if self.runtime is not None:
            await self.runtime.close_storage()
        if self.storage is not None:
            self.storage.close()
            self.storage = None
        self._close_audit()
        self._close_audit = lambda: None

    async def close(self) -> None:
        """Stop at once (tests): no drain."""
        self._stop_tls_watch()
        if self.runtime is not None:
            self.runtime.close()
        await self._close_storage()
        if self.metrics is not None:
            await self.metrics.close()


async def run(config: ServerConfig, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the exit code.
    SIGHUP reloads the TLS certificate, key and client CA.

    The signal handlers are installed before the broker starts (and logs that it listens),
    so a signal sent as soon as the broker is seen listening is never lost.

    Args:
        config: the effective configuration.
        stop: when given, setting it is what shuts the broker down, and no signal handler
            is installed (a broker in a thread other than the main one: the pytest plugin's
            in-process broker).
    """
    loop = asyncio.get_running_loop()
    broker = BrokerProcess(config)
    cause = "stop requested" if stop is not None else "signal received"
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, AttributeError):  # Windows: no SIGHUP
            loop.add_signal_handler(signal.SIGHUP, broker.reload_tls)
    try:
        await broker.start()
    except BaseException:  # e.g. the metrics port is taken: release what was bound
        await broker.close()
        raise
    try:
        await stop.wait()
    finally:
        logger.info("%s, shutting down", cause)
        await broker.shutdown()
    return 0


def loop_name() -> str:
    """``asyncio``, or ``asyncio/uvloop`` when the running loop is uvloop's."""
    module = type(asyncio.get_running_loop()).__module__
    return "asyncio/uvloop" if module.split(".")[0] == "uvloop" else "asyncio"


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop named by ``--loop``: None for asyncio's own.

    Raises:
        ImportError: ``uvloop`` is not installed.
    """
    if loop == "asyncio":
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
        "uvloop"
    ).new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker. Returns the process exit code (0 after a graceful shutdown, 2 for a
    configuration error, 1 when the broker cannot start)."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--loop", choices=LOOPS, default="asyncio")
    known, rest = pre.parse_known_args(args)
    try:
        factory = loop_factory(known.loop)
    except ImportError:
        print(
            "felix-broker: --loop uvloop needs uvloop: pip install 'felix[uvloop]'",
            file=sys.stderr,
        )
        return 2

    def serve(config: ServerConfig) -> int:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(run(config))

    return broker_main(rest, serve, prog=PROG)
