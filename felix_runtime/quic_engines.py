"""The QUIC engines a broker and a client run on, and every difference between them.

Two sans-IO engines with the same calls and events: **aioquic** (the default; what the
design names) and **qh3** (optional, ``pip install 'felix[qh3]'``: a fork of aioquic whose
packet engine, loss recovery and crypto are in Rust). The broker picks one with
``quic_engine`` (``--quic-engine``, ``FELIX_QUIC_ENGINE``), a client with
``quic_engine=`` (``FELIX_QUIC_ENGINE`` too). Either side works with either peer: they speak
QUIC v1 and Felix's ALPN.

:func:`load_engine` returns a :class:`QuicEngine`, which builds configurations and
connections for both sides. Where the engines differ, this module (and the connection
classes it names) decides:

* configuration: the same settings for both (datagram size, windows, idle timeout, ALPN);
  qh3's own defaults differ (15 / 6 MiB windows, 1280-byte datagrams, 30 s idle timeout,
  333 ms initial RTT), so every one Felix relies on is set. qh3 speaks QUIC v1 only;
* server connections: :class:`felix_server.quic.FelixQuicConnection` (aioquic) and
  :class:`felix_runtime.quic_qh3.FelixQh3Connection` (qh3), each with Felix's ALPN rule;
* client connections: aioquic's own, and
  :class:`felix_runtime.quic_qh3.FelixQh3ClientConnection` (qh3's, dropping a write after
  the peer closed as aioquic does, rather than raising);
* events: loading an engine registers its event classes with
  :data:`felix_server.quic_engine.EVENTS`, which the broker's session and the client test
  events against; back-pressure and credit: :mod:`felix_server.quic_engine`;
* certificates and keys: both load PEM files through ``load_cert_chain`` /
  ``load_verify_locations``; the development certificate suits both
  (:mod:`felix_runtime.tls`);
* mutual TLS: both servers ask for client certificates through Felix's connection
  classes, which verify the chain with the same function and answer a refusal with the
  same alerts (aioquic requests and checks the ``CertificateVerify`` itself and leaves the
  chain to the application; qh3 2.1's server has no client authentication at all, so
  :class:`~felix_runtime.quic_qh3.FelixQh3Connection` adds the whole exchange). Clients of
  both engines present a certificate (``cert_file``);
* addresses: qh3 takes IP literals only; both sides pass the socket's own addresses.

Nothing above this module (the runtimes, the server, the client) tests which engine runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from felix_proto import ALPN
from felix_server.config import ServerConfig, TransportConfig
from felix_server.quic_engine import QuicConnectionLike, register_events

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "ENV_VAR",
    "EngineMissing",
    "QuicEngine",
    "engine_from_env",
    "load_engine",
    "server_quic",
]

ENGINES = ("aioquic", "qh3")
"""The engines :func:`load_engine` knows."""
DEFAULT_ENGINE = "aioquic"
ENV_VAR = "FELIX_QUIC_ENGINE"
"""The environment variable a client reads when not given ``quic_engine=`` (the broker's
setting of the same name reads it too)."""


class EngineMissing(ImportError):
    """The engine's package is not installed."""


@dataclass(frozen=True, slots=True)
class QuicEngine:
    """One QUIC implementation, as Felix uses it."""

    name: str
    version: str
    configuration_class: Callable[..., Any]
    """``QuicConfiguration``."""
    server_connection: Callable[..., QuicConnectionLike]
    """Builds a server connection: ``(configuration=, original_destination_connection_id=)``."""
    client_connection: Callable[..., Any]
    """Builds a client connection: ``(configuration=)``."""
    supported_versions: tuple[int, ...]

    def server_configuration(self, transport: TransportConfig) -> Any:
        """A broker's configuration (the certificate chain is loaded by the caller)."""
        return self.configuration_class(
            is_client=False,
            alpn_protocols=[ALPN],
            max_datagram_size=transport.max_datagram_size,
            max_data=transport.max_data,
            max_stream_data=transport.max_stream_data,
            idle_timeout=transport.idle_timeout_s,
            supported_versions=list(self.supported_versions),
            **self._tuning(),
        )

    def client_configuration(
        self,
        *,
        server_name: str,
        max_datagram_size: int,
        idle_timeout: float,
        max_data: int,
        max_stream_data: int,
        ca_file: str | None = None,
        insecure: bool = False,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> Any:
        """A client's configuration: verify the server with ``ca_file`` (or the system's
        store), or not at all when ``insecure``; present the certificate ``cert_file``
        (with its key ``key_file``) when the broker asks for one (mutual TLS). Both engines
        answer a ``CertificateRequest`` with it (or with an empty ``Certificate`` when none
        is loaded)."""
        config = self.configuration_class(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name=server_name,
            max_datagram_size=max_datagram_size,
            idle_timeout=idle_timeout,
            max_data=max_data,
            max_stream_data=max_stream_data,
            **self._tuning(),
        )
        if insecure:
            config.verify_mode = ssl.CERT_NONE
        elif ca_file:
            config.load_verify_locations(cafile=ca_file)
        if cert_file:
            config.load_cert_chain(cert_file, key_file)
        return config

    def _tuning(self) -> dict[str, Any]:
        if self.name == "qh3":
            return {"initial_rtt": 0.1}  # aioquic's; qh3's 333 ms slows every first PTO
        return {}


def _check(name: str) -> None:
    if name not in ENGINES:
        raise ValueError(f"unknown QUIC engine {name!r} (known: {', '.join(ENGINES)})")


@functools.cache
def load_engine(name: str = DEFAULT_ENGINE) -> QuicEngine:
    """The engine called ``name``; registers its events with the session's registry.

    Raises:
        ValueError: an unknown name.
        EngineMissing: its package is not installed.
    """
    _check(name)
    try:
        configuration = importlib.import_module(f"{name}.quic.configuration")
        connection = importlib.import_module(f"{name}.quic.connection")
        events = importlib.import_module(f"{name}.quic.events")
        packet = importlib.import_module(f"{name}.quic.packet")
    except ImportError as exc:
        raise EngineMissing(
            f"QUIC engine {name} is not installed (pip install 'felix[{name}]')"
        ) from exc
    register_events(events)
    server: Callable[..., QuicConnectionLike]
    client: Callable[..., Any] = connection.QuicConnection
    if name == "qh3":
        from felix_runtime.quic_qh3 import FelixQh3ClientConnection, FelixQh3Connection

        server, client = FelixQh3Connection, FelixQh3ClientConnection
        versions: tuple[int, ...] = (packet.QuicProtocolVersion.VERSION_1,)
    else:
        from felix_server.quic import FelixQuicConnection

        server = FelixQuicConnection
        versions = tuple(configuration.QuicConfiguration(is_client=False).supported_versions)
    return QuicEngine(
        name=name,
        version=metadata.version(name),
        configuration_class=configuration.QuicConfiguration,
        server_connection=server,
        client_connection=client,
        supported_versions=versions,
    )


def engine_from_env(env: Mapping[str, str] | None = None) -> str:
    """The client's engine when none is given: ``FELIX_QUIC_ENGINE``, else aioquic.

    Raises:
        ValueError: the variable names an unknown engine.
    """
    value = (os.environ if env is None else env).get(ENV_VAR, "").strip() or DEFAULT_ENGINE
    _check(value)
    return value


def server_quic(config: ServerConfig) -> tuple[Any, Callable[..., QuicConnectionLike]]:
    """The broker's QUIC configuration (certificate not loaded yet) and connection factory,
    for ``config.quic_engine``: what :class:`~felix_server.server.FelixServer` takes.

    Raises:
        EngineMissing: the engine is not installed.
    """
    engine = load_engine(config.quic_engine)
    return engine.server_configuration(config.transport), engine.server_connection
