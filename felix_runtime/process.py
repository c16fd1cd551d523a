"""The broker process around an adapter: settings, logging, certificate, startup lines.

Both runtimes' ``main(argv)`` are :func:`broker_main` with a different ``run``: the
preamble (load the four layers of settings, answer ``--print-config``, configure logging)
and the exit codes (2 for a bad setting, 1 when the broker cannot start, 0 after a graceful
shutdown or Ctrl-C) are decided here once. :func:`load_certificate` and
:func:`log_started` are the other two steps every adapter takes the same way.
:func:`load_broker_config` and :func:`run_broker` are the preamble's two halves for a broker
started in a thread of another program (the pytest plugin's in-process broker): the same
settings and exit codes, with that program's logging left alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from felix_runtime.credentials import broker_authenticator, parse_shared_secrets
from felix_runtime.exchange import broker_exchange
from felix_runtime.logs import configure_logging, log_fields, logger
from felix_runtime.quic_engines import EngineMissing, load_engine
from felix_runtime.tls import ensure_self_signed
from felix_runtime.tls_clients import check_client_tls
from felix_server.config import (
    ConfigError,
    ServerConfig,
    config_to_toml,
    is_loopback,
    load_config,
)

__all__ = ["broker_main", "load_broker_config", "load_certificate", "log_started", "run_broker"]


def broker_main(
    args: Sequence[str], run: Callable[[ServerConfig], int], *, prog: str = "felix-broker"
) -> int:
    """Load the settings, then run the broker with them.

    Args:
        args: the command-line arguments (without the program name).
        run: runs the broker until it stops and returns the exit code (an adapter's event
            loop entry point, e.g. ``lambda c: asyncio.run(serve(c))``).
        prog: the program name ``--help`` shows.

    Returns:
        The process exit code: ``run``'s, 0 for ``--print-config`` or Ctrl-C, 2 for a
        configuration error, 1 when the broker cannot start (an ``OSError``, e.g. a port
        that is taken, or a ``quic_engine`` that is not installed).
    """
    try:
        config, namespace = load_broker_config(args, os.environ, prog=prog)
    except ConfigError as exc:
        print(f"felix-broker: {exc}", file=sys.stderr)
        return 2
    if getattr(namespace, "print_config", False):
        sys.stdout.write(config_to_toml(config))
        return 0
    configure_logging(config.log_format, config.log_level)
    return run_broker(config, run)


def load_broker_config(
    args: Sequence[str], env: Mapping[str, str], *, prog: str = "felix-broker"
) -> tuple[ServerConfig, argparse.Namespace]:
    """The settings of ``args`` and ``env`` (:func:`felix_server.config.load_config`),
    with the files they name (keys, secrets, exchange rules, client TLS rules) read once
    to check them.

    Raises:
        ConfigError: any bad setting.
    """
    config, namespace = load_config(list(args), env, lambda p: Path(p).read_bytes(), prog=prog)
    broker_authenticator(config)  # the key files and secrets, read once to check them
    broker_exchange(config, fetch_keys=False)  # the exchange's issuers and rules
    check_client_tls(config)
    return config, namespace


def run_broker(config: ServerConfig, run: Callable[[ServerConfig], int]) -> int:
    """``run(config)``, its exceptions mapped to exit codes: 1 when the broker cannot start
    (an ``OSError``, e.g. a port that is taken, or a ``quic_engine`` that is not
    installed; logged), 0 for Ctrl-C."""
    try:
        return run(config)
    except (OSError, EngineMissing) as exc:
        logger.error("cannot start the broker: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0


def load_certificate(config: ServerConfig, quic_config: Any) -> tuple[Path, str]:
    """Load the configured certificate into ``quic_config``, or make/reuse the development one.

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


def log_started(
    config: ServerConfig,
    quic: tuple[str, int],
    metrics: tuple[str, int],
    cert: Path,
    fingerprint: str,
    runtime: str,
) -> None:
    """Log the start-up warnings (operator secrets, no authentication), in development
    mode the certificate to trust and the default tenant and namespace, and last
    ``felix broker listening`` (tests and operators parse its fields; a reader that waits
    for it has seen every line before it).

    Args:
        config: the effective configuration.
        quic: the bound QUIC address.
        metrics: the bound HTTP address (``/live`` and ``/ready``, and ``/metrics`` unless
            metrics are disabled).
        cert: the certificate's path.
        fingerprint: its SHA-256 fingerprint ("" when configured rather than generated).
        runtime: ``asyncio``, ``anyio/asyncio`` or ``anyio/trio``.
    """
    bare = [e.position for e in parse_shared_secrets(config.auth_tokens or "") if e.operator]
    if bare:
        logger.warning(
            "auth_tokens: a bare secret is an operator credential (every tenant, every "
            "permission); confine it with SECRET=TENANT:PERMISSION ...",
            extra=log_fields(entries=",".join(map(str, bare))),
        )
    if not (config.auth_enabled or config.tls_client_rules is not None):
        logger.warning(
            "authentication is off: every client may do everything"
            + ("" if is_loopback(quic[0]) else " (--insecure-no-auth)")
            + ("; listening on loopback only" if is_loopback(quic[0]) else ""),
            extra=log_fields(listen=f"{quic[0]}:{quic[1]}"),
        )
    if config.dev_mode:
        logger.warning(
            "DEVELOPMENT MODE: self-signed certificate; clients must trust it explicitly",
            extra=log_fields(cert=cert, sha256=fingerprint),
        )
        if config.broker.create_defaults:
            logger.info(
                "default tenant and namespace created",
                extra=log_fields(
                    tenant=config.broker.default_tenant,
                    namespace=config.broker.default_namespace,
                ),
            )
    # Last: whoever waits for this line has every start-up line before it.
    logger.info(
        "felix broker listening",
        extra=log_fields(
            quic=f"{quic[0]}:{quic[1]}",
            metrics=f"http://{metrics[0]}:{metrics[1]}/metrics"
            if config.metrics_enabled
            else "off",
            health=f"http://{metrics[0]}:{metrics[1]}/ready",
            server_id=config.server_id,
            runtime=runtime,
            quic_engine=f"{config.quic_engine} {load_engine(config.quic_engine).version}",
        ),
    )
