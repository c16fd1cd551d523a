"""The broker process on anyio: configuration, certificate, sockets, metrics, signals, shutdown.

``main(argv)`` is what ``felix broker --runtime anyio --backend asyncio|trio`` and ``python
-m felix_runtime_anyio`` run. It takes the same settings as the asyncio runtime (one loader,
:func:`felix_server.config.load_config`) plus ``--backend``.

Shutdown: on SIGTERM or SIGINT the server stops being ready (``/ready`` answers 503), sends
``GoAway`` and drains for at most ``shutdown_drain_s`` (the server's own bound; the adapter
waits one second more), then everything closes and the exit code is 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from aioquic.quic.configuration import QuicConfiguration

from felix_runtime_anyio.http import AnyioMetricsServer
from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_runtime_asyncio.logs import configure_logging, log_fields, logger
from felix_runtime_asyncio.metrics import PrometheusObserver
from felix_runtime_asyncio.tls import ensure_self_signed
from felix_server.config import ConfigError, ServerConfig, config_to_toml, load_config
from felix_server.server import FelixServer, make_quic_configuration

__all__ = ["BACKENDS", "load_certificate", "main", "run"]

BACKENDS = ("asyncio", "trio")
"""The anyio backends the broker runs on."""
PROG = "felix broker --runtime anyio [--backend {asyncio,trio}]"
"""The program name ``--help`` shows (``--backend`` is parsed before the settings)."""


def load_certificate(config: ServerConfig, quic_config: QuicConfiguration) -> tuple[Path, str]:
    """Load the configured certificate, or make/reuse the development one.

    Returns:
        The certificate's path and (development mode only) its SHA-256 fingerprint.
    """
    if config.tls_cert is None:
        files = ensure_self_signed(config.data_dir, config.listen_address[0])
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        return files.cert_path, files.fingerprint
    assert config.tls_key is not None  # validated by the loader
    quic_config.load_cert_chain(config.tls_cert, config.tls_key)
    return Path(config.tls_cert), ""


def _log_started(
    config: ServerConfig, quic: tuple[str, int], metrics: AnyioMetricsServer | None,
    cert: Path, fingerprint: str, backend: str,
) -> None:  # fmt: skip
    url = f"http://{metrics.address[0]}:{metrics.address[1]}/metrics" if metrics else "off"
    logger.info(
        "felix broker listening",
        extra=log_fields(quic=f"{quic[0]}:{quic[1]}", metrics=url,
                         server_id=config.server_id, runtime=f"anyio/{backend}"),
    )  # fmt: skip
    if config.dev_mode:
        logger.warning(
            "DEVELOPMENT MODE: self-signed certificate; clients must trust it explicitly",
            extra=log_fields(cert=cert, sha256=fingerprint),
        )


async def run(config: ServerConfig) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the exit code.

    Runs under whichever anyio backend called it.
    """
    quic_config = make_quic_configuration(config)
    cert, fingerprint = load_certificate(config, quic_config)
    observer = PrometheusObserver()
    server = FelixServer(config, quic_config, now=time.time(), observer=observer)
    observer.attach(server)
    runtime = AnyioUdpRuntime(server)
    bound = runtime.bind(*config.listen_address)
    metrics = None
    try:
        if config.metrics_enabled:  # bound before the task group: errors stay plain OSErrors
            metrics = AnyioMetricsServer(observer.registry, lambda: server.ready)
            await metrics.bind(*config.metrics_address)
        async with anyio.create_task_group() as tg:
            if metrics is not None:
                tg.start_soon(metrics.serve)
            tg.start_soon(runtime.serve)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                _log_started(config, bound, metrics, cert, fingerprint, _backend_name())
                async for signum in signals:
                    logger.info("signal received, shutting down",
                                extra=log_fields(signal=signal.Signals(signum).name))  # fmt: skip
                    break
            server.begin_shutdown(time.time())
            runtime.wake()
            with anyio.move_on_after(config.shutdown_drain_s + 1.0):
                await runtime.finished.wait()
            tg.cancel_scope.cancel()
    finally:
        runtime.close()
        if metrics is not None:
            with anyio.CancelScope(shield=True):
                await metrics.aclose()
    logger.info("felix broker stopped")
    return 0


def _backend_name() -> str:
    """The name of the running anyio backend (``asyncio`` or ``trio``), for the log."""
    import sniffio

    return sniffio.current_async_library()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker. Returns the process exit code (0 after a graceful shutdown, 2 for a
    configuration error, 1 when the broker cannot start)."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", choices=BACKENDS, default="asyncio")
    known, rest = pre.parse_known_args(args)
    try:
        config, namespace = load_config(rest, os.environ, lambda p: Path(p).read_bytes(), prog=PROG)
    except ConfigError as exc:
        print(f"felix-broker: {exc}", file=sys.stderr)
        return 2
    if getattr(namespace, "print_config", False):
        sys.stdout.write(config_to_toml(config))
        return 0
    configure_logging(config.log_format, config.log_level)
    try:
        return anyio.run(run, config, backend=known.backend)
    except OSError as exc:
        logger.error("cannot start the broker: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
