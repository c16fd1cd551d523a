"""The broker process on anyio: configuration, certificate, sockets, metrics, signals, shutdown.

``main(argv)`` is what ``felix broker --runtime anyio --backend asyncio|trio`` and ``python
-m felix_runtime_anyio`` run. It takes the same settings as the asyncio runtime (one loader,
:func:`felix_server.config.load_config`) plus ``--backend`` and, on asyncio, ``--loop
uvloop`` (anyio's ``use_uvloop``; the ``uvloop`` extra).

Shutdown: on SIGTERM or SIGINT the server stops being ready (``/ready`` answers 503), sends
``GoAway`` and drains for at most ``shutdown_drain_s`` (the server's own bound; the adapter
waits one second more), then everything closes and the exit code is 0.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from collections.abc import Sequence

import anyio

from felix_runtime.audit import broker_observer
from felix_runtime.credentials import broker_authenticator, metrics_credentials
from felix_runtime.exchange import broker_exchange
from felix_runtime.logs import log_fields, logger
from felix_runtime.process import broker_main, log_started
from felix_runtime.storage import build_server, open_storage
from felix_runtime.tls_clients import client_authenticator, parse_identity_rules
from felix_runtime.tls_server import ServerTls
from felix_runtime_anyio.http import AnyioMetricsServer
from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_server.config import ServerConfig

__all__ = ["BACKENDS", "LOOPS", "main", "run"]

BACKENDS = ("asyncio", "trio")
"""The anyio backends the broker runs on."""
LOOPS = ("asyncio", "uvloop")
"""The event loops the asyncio backend runs on (``--loop``)."""
PROG = "felix broker --runtime anyio [--backend {asyncio,trio}] [--loop {asyncio,uvloop}]"
"""The program name ``--help`` shows (``--backend`` and ``--loop`` are parsed before the
settings)."""


async def run(config: ServerConfig, stop: anyio.Event | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the exit code.
    SIGHUP reloads the TLS certificate, key and client CA (so does a change of those files).

    Runs under whichever anyio backend called it. When ``stop`` is given, setting it is
    what shuts the broker down, and no signal is received (a broker in a thread other than
    the main one: the pytest plugin's in-process broker).
    """
    tls = ServerTls(config)
    observer, close_audit = broker_observer(config)
    tls.on_refused = observer.tls_refused
    try:
        storage = open_storage(config, on_append=observer.storage_appended)
    except BaseException:
        close_audit()
        raise
    server, recovery_s = build_server(
        config,
        tls.configuration,
        storage,
        observer,
        connection_factory=tls.connection_factory,
        authenticate=client_authenticator(
            parse_identity_rules(config.tls_client_rules or ""), broker_authenticator(config)
        ),
        exchange=broker_exchange(config),
    )
    observer.attach(server)
    observer.attach_storage(storage.logs, recovery_s)
    runtime = AnyioUdpRuntime(server, job_timer=observer.storage_job_ran)
    bound = runtime.bind(*config.listen_address, receive_buffer=config.transport.receive_buffer)
    registry = observer.registry if config.metrics_enabled else None
    metrics = AnyioMetricsServer(  # health even without metrics; /metrics as connections
        registry, lambda: server.ready, metrics_credentials(config)
    )
    try:
        await metrics.bind(*config.metrics_address)  # before the task group: plain OSErrors
        async with anyio.create_task_group() as tg:
            tg.start_soon(metrics.serve)
            tg.start_soon(runtime.serve)
            if config.tls_reload_check_s > 0:
                tg.start_soon(_watch_tls, tls, server, config.tls_reload_check_s)
            started = (
                config,
                bound,
                metrics.address,
                tls.cert_path,
                tls.fingerprint,
                f"anyio/{_backend_name()}",
            )
            if stop is not None:
                log_started(*started)
                await stop.wait()
                logger.info("stop requested, shutting down")
            else:
                with anyio.open_signal_receiver(
                    signal.SIGTERM, signal.SIGINT, signal.SIGHUP
                ) as signals:
                    log_started(*started)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            tls.reload(server)
                            continue
                        logger.info(
                            "signal received, shutting down",
                            extra=log_fields(signal=signal.Signals(signum).name),
                        )
                        break
            server.begin_shutdown(time.time())
            runtime.wake()
            with anyio.move_on_after(config.shutdown_drain_s + 1.0):
                await runtime.finished.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runtime.close_storage()  # the logs' final syncs
        storage.close()
        close_audit()
        runtime.close()
        with anyio.CancelScope(shield=True):
            await metrics.aclose()
    logger.info("felix broker stopped")
    return 0


async def _watch_tls(tls: ServerTls, server: object, every: float) -> None:
    """Reload the TLS material when one of its files changes (checked every ``every`` s)."""
    while True:
        await anyio.sleep(every)
        if tls.changed():
            tls.reload(server)


def _backend_name() -> str:
    """The name of the running anyio backend (``asyncio`` or ``trio``), for the log."""
    import sniffio

    name = sniffio.current_async_library()
    if name == "asyncio":
        import asyncio

        if type(asyncio.get_running_loop()).__module__.split(".")[0] == "uvloop":
            return "asyncio/uvloop"
    return name


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker. Returns the process exit code (0 after a graceful shutdown, 2 for a
    configuration error, 1 when the broker cannot start)."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", choices=BACKENDS, default="asyncio")
    pre.add_argument("--loop", choices=LOOPS, default="asyncio")
    known, rest = pre.parse_known_args(args)
    options: dict[str, object] = {}
    if known.loop == "uvloop":
        if known.backend != "asyncio":
            print("felix-broker: --loop uvloop needs --backend asyncio", file=sys.stderr)
            return 2
        try:
            importlib.import_module("uvloop")
        except ImportError:
            print(
                "felix-broker: --loop uvloop needs uvloop: pip install 'felix[uvloop]'",
                file=sys.stderr,
            )
            return 2
        options["use_uvloop"] = True
    return broker_main(
        rest,
        lambda config: anyio.run(
            run, config, backend=known.backend, backend_options=options or None
        ),
        prog=PROG,
    )
