"""The broker's configuration: one frozen, typed settings model and its loader.

Theory of operation
-------------------
:class:`ServerConfig` holds everything a broker process needs: where it listens (QUIC and
metrics HTTP), where its data directory is, the TLS certificate, logging, graceful-shutdown
timing, transport tuning (:class:`TransportConfig`) and every engine limit and policy
(``broker``, a :class:`felix_core.limits.BrokerConfig`).

Settings come from four layers. A later layer wins over an earlier one, key by key::

    embedded defaults  <  TOML file (--config / FELIX_CONFIG)  <  FELIX_* environment  <  flags

Every setting has a *key*: ``listen``, ``data_dir``, ``transport.max_datagram_size``,
``broker.memory_limit_bytes`` ... The same key is spelled

* in the TOML file as a top-level key or a key of the ``[transport]`` / ``[broker]`` table;
* in the environment as ``FELIX_`` + the key upper-cased with ``.`` -> ``_``
  (``FELIX_LISTEN``, ``FELIX_TRANSPORT_MAX_DATAGRAM_SIZE``, ``FELIX_BROKER_MEMORY_LIMIT_BYTES``);
* on the command line as ``--`` + the key with ``.`` and ``_`` -> ``-``
  (``--listen``, ``--transport-max-datagram-size``, ``--broker-memory-limit-bytes``), or
  generically as ``--set KEY=VALUE``.

Values from the environment and flags are strings and are converted to the setting's type:
integers accept ``_`` separators and, for byte sizes, a ``KiB``/``MiB``/``GiB`` suffix;
booleans accept ``1/0, true/false, yes/no, on/off``; an optional setting accepts ``none``.
Addresses are ``HOST:PORT`` (``[::1]:7447`` for IPv6).

The loader is pure: :func:`load_config` takes ``argv``, the environment mapping and a
``read_file`` callable, so the runtime passes ``sys.argv[1:]``, ``os.environ`` and
``Path.read_bytes`` and tests pass plain values. Bad input raises :class:`ConfigError` with
a message naming the setting and its source.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from felix_core.errors import EngineError
from felix_core.limits import BrokerConfig
from felix_proto.frames import MIN_MAX_FRAME_SIZE

__all__ = [
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_METRICS_PORT",
    "ConfigError",
    "ServerConfig",
    "TransportConfig",
    "build_parser",
    "config_keys",
    "config_to_toml",
    "is_loopback",
    "load_config",
    "parse_address",
]

DEFAULT_LISTEN_PORT = 7447
"""The broker's default QUIC (UDP) port."""
DEFAULT_METRICS_PORT = 8080
"""The default metrics / health HTTP port (the reference broker's)."""

_LOG_FORMATS = ("text", "json")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_QUIC_ENGINES = ("aioquic", "qh3")  # felix_runtime.quic_engines.ENGINES


class ConfigError(ValueError):
    """A setting is unknown, malformed or out of range; the message names it and its source."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """QUIC transport tuning. Figures behind the defaults: ``benchmarks/quic_baseline.py``."""

    max_datagram_size: int = 1452
    """Largest UDP payload sent. 1452 fits a 1500-byte Ethernet MTU under IPv6 and is what
    loopback paths allow; aioquic's own default is the RFC minimum 1200."""
    max_data: int = 16 * 1024 * 1024
    """Connection-level flow-control window the broker grants a client, bytes: a sliding
    window of this fixed size (credit = bytes received + window, never auto-tuned up)."""
    max_stream_data: int = 4 * 1024 * 1024
    """Per-stream flow-control window the broker grants a client, bytes (sliding, fixed
    size, as ``max_data``)."""
    idle_timeout_s: float = 15.0
    """A connection with no traffic for this long is closed (announced to clients as QUIC's
    ``max_idle_timeout``; clients keep alive with a Ping at least every third of it). 15 s
    finds a killed peer well within the default queue visibility timeout (30 s), so its
    deliveries return as a lost consumer's instead of timing out, and leaves a client whose
    keep-alives come every 5 s two lost Pings of slack."""
    max_connections: int = 10_000
    """New connections beyond this many are refused: answered with the QUIC transport error
    ``CONNECTION_REFUSED`` and reason ``broker at max_connections`` (rate-limited per loop
    pass; beyond the limit the Initial packet is dropped)."""
    handshake_timeout_s: float = 10.0
    """A connection that has not sent its ``Hello`` this long after it was accepted is
    closed with ``TIMEOUT`` (a peer that completes QUIC but never speaks Felix, or keeps
    QUIC alive with pings, holds no session slot for longer)."""
    connection_buffer_limit: int = 8 * 1024 * 1024
    """Bytes queued for one connection (unsent stream data) before the broker stops pulling
    deliveries for it (``Broker.pause``); the bound on memory per connection."""
    connection_buffer_resume: int = 2 * 1024 * 1024
    """Deliveries resume once the queued bytes of a paused connection fall to this."""
    connection_buffer_cap: int = 16 * 1024 * 1024
    """Hard cap on the bytes queued for one connection (every stream, replies included):
    over it the broker stops reading the connection's requests and holds back its QUIC
    flow-control credit, until the queued bytes are back at ``connection_buffer_limit``."""
    max_frame_size: int = 16 * 1024 * 1024
    """Largest frame payload accepted from a client (at least 4096, the protocol's
    ``MIN_MAX_FRAME_SIZE``)."""
    receive_buffer: int = 256 * 1024
    """Kernel receive buffer requested for the broker's UDP socket, bytes (``SO_RCVBUF``;
    the kernel caps it at ``net.core.rmem_max`` and counts about twice the datagram bytes
    against it). Every client's datagrams wait in this one queue before the broker reads
    them, so it bounds how long a client that sends flat out can delay the others' (their
    requests, acknowledgements and subscription credit). 256 KiB (the kernel counts twice
    that) holds about 220 full-size datagrams: some 20 ms of the broker's reading on
    aioquic. A larger queue absorbs longer bursts without loss (many clients connecting at
    once), and makes every other client wait that much longer behind one that floods
    (docs/broker.md, "The receive queue")."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range."""
        if not 1200 <= self.max_datagram_size <= 65527:
            raise ConfigError("transport.max_datagram_size must be within 1200..65527")
        for name in (
            "max_data",
            "max_stream_data",
            "max_connections",
            "max_frame_size",
            "receive_buffer",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"transport.{name} must be >= 1")
        if self.max_frame_size < MIN_MAX_FRAME_SIZE:
            raise ConfigError(f"transport.max_frame_size must be >= {MIN_MAX_FRAME_SIZE}")
        if self.idle_timeout_s <= 0:
            raise ConfigError("transport.idle_timeout_s must be > 0")
        if self.handshake_timeout_s <= 0:
            raise ConfigError("transport.handshake_timeout_s must be > 0")
        if not 0 <= self.connection_buffer_resume < self.connection_buffer_limit:
            raise ConfigError(
                "transport.connection_buffer_resume must be >= 0 and below "
                "transport.connection_buffer_limit"
            )
        if self.connection_buffer_cap < self.connection_buffer_limit:
            raise ConfigError(
                "transport.connection_buffer_cap must be >= transport.connection_buffer_limit"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Every setting of a broker process. See the module docstring for how it is loaded."""

    listen: str = f"127.0.0.1:{DEFAULT_LISTEN_PORT}"
    """QUIC listen address, ``HOST:PORT`` (port 0 picks a free port)."""
    metrics: str = f"127.0.0.1:{DEFAULT_METRICS_PORT}"
    """Metrics and health HTTP address, ``HOST:PORT``."""
    metrics_enabled: bool = True
    """Serve ``/metrics``, ``/live`` and ``/ready``."""
    metrics_resource_limit: int = 100
    """Per-queue and per-cache metric series (labels ``tenant``, ``namespace`` and the name)
    are exported while the broker holds at most this many queues (caches); above it only
    the totals are, which bounds label cardinality. 0: totals only."""
    metrics_tokens: str | None = None
    """Scrape-only bearer secrets, separated by commas or newlines: ``/metrics`` shows every
    tenant's series to them, and no Felix connection accepts them (what Prometheus scrapes
    with). With them, or with authentication on, ``/metrics`` needs a credential
    (docs/security.md, "Metrics")."""
    data_dir: str = "felix-data"
    """The broker's data: resource definitions (``metadata/``), durable resources' logs
    (``logs/``) and the generated certificate."""
    tls_cert: str | None = None
    """PEM certificate chain; absent: a self-signed certificate is made in ``data_dir``
    (development mode, logged loudly)."""
    tls_key: str | None = None
    """PEM private key for ``tls_cert``."""
    tls_client_ca: str | None = None
    """PEM CA certificates for mutual TLS: clients must present a certificate that chains
    to one of them (``tls_client_auth``). Absent: no client certificate is asked for."""
    tls_client_auth: str = "required"
    """With ``tls_client_ca``: ``required`` (no certificate, no connection) or ``optional``
    (a client without one authenticates with a token; one it presents must verify)."""
    tls_client_rules: str | None = None
    """How a client certificate names a principal: rules ``FIELD:TEMPLATE ... =>
    PERMISSION ...``, one a line (docs/security.md, "Mutual TLS"). Absent: the certificate
    only gates the connection."""
    tls_reload_check_s: float = 2.0
    """How often the broker checks its certificate, key and client CA files for a change
    (reloaded for new connections; SIGHUP reloads at once). 0: on SIGHUP only."""
    log_format: str = "text"
    """``text`` (human) or ``json`` (one object per line)."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``."""
    server_id: str = "felix-1"
    """Identifier sent in ``Welcome`` (stable for a broker process)."""
    region: str = "local"
    """The sovereign region this broker belongs to, sent in ``Welcome``."""
    quic_engine: str = "aioquic"
    """The QUIC implementation: ``aioquic`` (the default) or ``qh3`` (the optional extra
    ``felix[qh3]``: packet engine and crypto in Rust). Clients of either engine connect to
    either (docs/performance.md, "QUIC engines")."""
    auth_tokens: str | None = None
    """Shared secrets the broker accepts in ``Hello.token``, separated by commas or
    newlines, each ``SECRET=TENANT:PERMISSION ...`` (its holder acts in ``TENANT`` with those
    permissions, docs/security.md). A bare ``SECRET`` (the older form) still works: tenant
    ``default``, every permission. Prefer the ``FELIX_AUTH_TOKENS`` environment variable to
    a flag, which other users can see."""
    auth_issuer_keys: str | None = None
    """Comma-separated PEM files of Ed25519 public keys trusted to sign Felix tokens for
    ``auth_issuer`` (the flag ``--auth-issuer-key FILE`` is repeatable)."""
    auth_jwks: str | None = None
    """A JWKS file of Ed25519 public keys trusted to sign Felix tokens for ``auth_issuer``
    (what ``felix token keygen`` writes as ``jwks.json``)."""
    auth_issuer: str = "felix"
    """The ``iss`` the trusted keys sign for."""
    auth_operator_keys: str | None = None
    """Comma-separated PEM files of Ed25519 public keys trusted to sign *operator* Felix
    tokens (claim ``operator: true``: every tenant, every permission) for
    ``auth_operator_issuer`` (the flag ``--auth-operator-key FILE`` is repeatable). The
    ``operator`` claim of a token from any other issuer is refused."""
    auth_operator_issuer: str = "felix-operator"
    """The ``iss`` the operator keys sign for (must differ from ``auth_issuer``)."""
    auth_audience: str = "felix"
    """The ``aud`` a Felix token must name to be accepted here."""
    auth_signing_key: str | None = None
    """A PEM Ed25519 private key (``felix token keygen`` writes ``private.pem``) with which
    the broker signs the Felix tokens it issues in a token exchange, for ``auth_issuer`` and
    ``auth_audience``; the broker trusts its public key without being told."""
    auth_exchange: str | None = None
    """A TOML file of the external identity issuers and claim-mapping rules of the token
    exchange (docs/security.md, "Token exchange"); needs ``auth_signing_key``."""
    auth_exchange_ttl_s: float = 900.0
    """Seconds a Felix token issued in a token exchange lives (at most as long as the
    identity token it was exchanged for)."""
    insecure_no_auth: bool = False
    """Allow a broker without authentication to listen on an address other than loopback
    (everyone who can reach it may do everything)."""
    audit: bool = True
    """Write the audit trail of security events (docs/security.md, "Audit trail")."""
    audit_path: str | None = None
    """The audit trail's directory; absent: ``<data_dir>/audit``."""
    audit_rotate_bytes: int = 64 * 1024 * 1024
    """Start a new audit file once the current one holds this many bytes (the hash chain
    goes on across files)."""
    audit_retention_bytes: int = 1024 * 1024 * 1024
    """Delete the oldest audit files while the trail holds more than this many bytes (0: no
    limit); a ``retention`` entry records each cut, so the rest still verifies."""
    audit_retention_s: float = 0.0
    """Delete the oldest audit files whose last entry is older than this many seconds (0:
    no age limit)."""
    audit_anchor_log_s: float = 300.0
    """Log the trail's head (``audit head``: ``seq`` and hash, an anchor for ``felix audit
    verify --anchor``) at most this often while entries are written (0: only at shutdown)."""
    shutdown_grace_s: float = 5.0
    """On SIGTERM: how long clients have after ``GoAway`` before connections are closed."""
    shutdown_drain_s: float = 25.0
    """Upper bound on the whole graceful shutdown (the reference's drain timeout)."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """QUIC transport tuning."""
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    """Every engine limit and default policy."""

    @property
    def auth_enabled(self) -> bool:
        """Whether clients must authenticate (shared secrets or trusted issuer keys)."""
        return any(
            v is not None
            for v in (
                self.auth_tokens,
                self.auth_issuer_keys,
                self.auth_jwks,
                self.auth_operator_keys,
                self.auth_exchange,
            )
        )

    @property
    def metrics_token_list(self) -> list[str]:
        """``metrics_tokens`` as a list of secrets."""
        return [t.strip() for t in re.split(r"[,\n]", self.metrics_tokens or "") if t.strip()]

    @property
    def issuer_key_files(self) -> list[str]:
        """``auth_issuer_keys`` as a list of paths."""
        return [p.strip() for p in (self.auth_issuer_keys or "").split(",") if p.strip()]

    @property
    def operator_key_files(self) -> list[str]:
        """``auth_operator_keys`` as a list of paths."""
        return [p.strip() for p in (self.auth_operator_keys or "").split(",") if p.strip()]

    @property
    def listen_address(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return parse_address(self.listen, "listen")

    @property
    def metrics_address(self) -> tuple[str, int]:
        """``metrics`` split into host and port."""
        return parse_address(self.metrics, "metrics")

    @property
    def dev_mode(self) -> bool:
        """True when no certificate was configured (a self-signed one is generated)."""
        return self.tls_cert is None

    @property
    def audit_directory(self) -> str:
        """Where the audit trail is written: ``audit_path``, else ``<data_dir>/audit``."""
        return self.audit_path or f"{self.data_dir.rstrip('/')}/audit"

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range or inconsistent."""
        self.listen_address  # noqa: B018 - parse for the error
        if self.audit_rotate_bytes < 1024:
            raise ConfigError("audit_rotate_bytes must be at least 1024")
        if self.metrics_tokens is not None and not self.metrics_token_list:
            raise ConfigError("metrics_tokens: no secret given")
        if self.audit_retention_bytes < 0:
            raise ConfigError("audit_retention_bytes must be >= 0 (0: no limit)")
        if self.audit_retention_s < 0 or self.audit_anchor_log_s < 0:
            raise ConfigError("audit_retention_s and audit_anchor_log_s must be >= 0")
        self.metrics_address  # noqa: B018
        if self.log_format not in _LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(_LOG_FORMATS)}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.quic_engine not in _QUIC_ENGINES:
            raise ConfigError(f"quic_engine must be one of {', '.join(_QUIC_ENGINES)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        self._validate_client_tls()
        if self.shutdown_grace_s < 0 or self.shutdown_drain_s < self.shutdown_grace_s:
            raise ConfigError("need 0 <= shutdown_grace_s <= shutdown_drain_s")
        if not self.data_dir:
            raise ConfigError("data_dir must not be empty")
        if self.metrics_resource_limit < 0:
            raise ConfigError("metrics_resource_limit must be >= 0")
        self._validate_auth()
        self.transport.validate()

    def _validate_client_tls(self) -> None:
        if self.tls_client_auth not in ("required", "optional"):
            raise ConfigError("tls_client_auth must be required or optional")
        if self.tls_client_rules is not None and self.tls_client_ca is None:
            raise ConfigError("tls_client_rules needs tls_client_ca")
        if self.tls_reload_check_s < 0:
            raise ConfigError("tls_reload_check_s must be >= 0")

    def _validate_auth(self) -> None:
        if not (self.auth_issuer and self.auth_audience):
            raise ConfigError("auth_issuer and auth_audience must not be empty")
        if self.auth_issuer_keys is not None and not self.issuer_key_files:
            raise ConfigError("auth_issuer_keys: no file named")
        if self.auth_operator_keys is not None and not self.operator_key_files:
            raise ConfigError("auth_operator_keys: no file named")
        if self.auth_operator_issuer == self.auth_issuer:
            raise ConfigError(
                "auth_operator_issuer must differ from auth_issuer: operator tokens need "
                "keys of their own"
            )
        if self.auth_exchange is not None and self.auth_signing_key is None:
            raise ConfigError(
                "auth_exchange needs auth_signing_key (the key Felix tokens are signed with)"
            )
        if not self.auth_exchange_ttl_s > 0:
            raise ConfigError("auth_exchange_ttl_s must be positive")
        host = self.listen_address[0]
        certificates_name_clients = self.tls_client_rules is not None
        if not (
            self.auth_enabled
            or certificates_name_clients
            or self.insecure_no_auth
            or is_loopback(host)
        ):
            raise ConfigError(
                f"listen: {host} is not a loopback address and authentication is off: set "
                "auth_tokens (SECRET=TENANT:PERMISSION ...) or auth_issuer_keys / auth_jwks, "
                "or allow everyone in with insecure_no_auth (--insecure-no-auth)"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address's host) is a loopback address or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(value: str, what: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``[V6]:PORT``) into host and port.

    Raises:
        ConfigError: not of that shape, or the port is not within 0..65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what}: bad port in {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} out of range")
    return host, port


# ----------------------------------------------------------------------- the key table

_SECTIONS: dict[str, type[Any]] = {"transport": TransportConfig, "broker": BrokerConfig}


@dataclass(frozen=True, slots=True)
class _Key:
    key: str  # "listen", "transport.max_data"
    section: str | None
    name: str
    kind: type[Any]  # int, float, str or bool
    optional: bool


def _resolve_type(tp: Any) -> tuple[type[Any], bool]:
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported setting type {tp!r}")
        tp = args[0]
    if tp not in (int, float, str, bool):
        raise TypeError(f"unsupported setting type {tp!r}")
    return tp, optional


def _keys_of(cls: type[Any], section: str | None) -> list[_Key]:
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if section is None and f.name in _SECTIONS:
            continue
        kind, optional = _resolve_type(hints[f.name])
        key = f"{section}.{f.name}" if section else f.name
        keys.append(_Key(key, section, f.name, kind, optional))
    return keys


_KEYS: dict[str, _Key] = {
    k.key: k
    for k in [
        *_keys_of(ServerConfig, None),
        *(k for s, cls in _SECTIONS.items() for k in _keys_of(cls, s)),
    ]
}


def config_keys() -> list[str]:
    """Every setting key, in declaration order (``listen`` ... ``broker.durability``)."""
    return list(_KEYS)


def _env_name(key: str) -> str:
    return "FELIX_" + key.replace(".", "_").upper()


def _flag_name(key: str) -> str:
    return "--" + key.replace(".", "-").replace("_", "-")


_SIZE_SUFFIXES = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_text(spec: _Key, text: str, source: str) -> Any:
    raw = text.strip()
    if spec.optional and raw.lower() in {"none", "null", ""}:
        return None
    try:
        if spec.kind is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(raw)
        if spec.kind is int:
            lowered = raw.lower().replace("_", "")
            for suffix, factor in _SIZE_SUFFIXES.items():
                if lowered.endswith(suffix):
                    return int(lowered[: -len(suffix)].strip()) * factor
            return int(lowered)
        if spec.kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"{source}: {spec.key} expects {spec.kind.__name__}, got {text!r}"
        ) from None
    return raw


def _check_value(spec: _Key, value: Any, source: str) -> Any:
    """Type-check a value that came from TOML (already typed)."""
    if value is None and spec.optional:
        return None
    ok = (
        isinstance(value, bool)
        if spec.kind is bool
        else (isinstance(value, int) and not isinstance(value, bool))
        if spec.kind is int
        else (isinstance(value, int | float) and not isinstance(value, bool))
        if spec.kind is float
        else isinstance(value, str)
    )
    if spec.kind is int and isinstance(value, str):
        return _from_text(spec, value, source)  # "64MiB" in a TOML string
    if not ok:
        raise ConfigError(f"{source}: {spec.key} expects {spec.kind.__name__}, got {value!r}")
    return float(value) if spec.kind is float else value


# ------------------------------------------------------------------------------ layers


def _from_toml(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{name}] must be a table")
            for sub, subvalue in value.items():
                key = f"{name}.{sub}"
                if key not in _KEYS:
                    raise ConfigError(f"{source}: unknown setting {key!r}")
                out[key] = _check_value(_KEYS[key], subvalue, source)
            continue
        if name not in _KEYS:
            raise ConfigError(f"{source}: unknown setting {name!r}")
        out[name] = _check_value(_KEYS[name], value, source)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in _KEYS.items():
        name = _env_name(key)
        if name in env:
            out[key] = _from_text(spec, env[name], f"environment {name}")
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"command line: {message}")


def build_parser(prog: str = "felix-broker") -> argparse.ArgumentParser:
    """The broker's argument parser: ``--config``, ``--set`` and one flag per setting."""
    parser = _Parser(
        prog=prog,
        description="Run a Felix broker. Precedence: flags > FELIX_* environment > "
        "--config TOML file > embedded defaults.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        dest="set_values",
        help="set any key, e.g. --set broker.batch_max_events=128 (repeatable)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective configuration and exit"
    )
    for key, spec in _KEYS.items():
        metavar = "HOST:PORT" if key in ("listen", "metrics") else spec.kind.__name__.upper()
        if spec.kind is bool and key == "insecure_no_auth":
            parser.add_argument(
                _flag_name(key),
                dest=f"key:{key}",
                nargs="?",
                const="true",
                metavar="BOOL",
                help=f"({_env_name(key)})",
            )
            continue
        parser.add_argument(
            _flag_name(key), dest=f"key:{key}", metavar=metavar, help=f"({_env_name(key)})"
        )
    parser.add_argument(
        "--auth-issuer-key",
        metavar="FILE",
        action="append",
        dest="issuer_key_files",
        help="a PEM Ed25519 public key trusted to sign Felix tokens (repeatable; adds to "
        "--auth-issuer-keys)",
    )
    parser.add_argument(
        "--auth-operator-key",
        metavar="FILE",
        action="append",
        dest="operator_key_files",
        help="a PEM Ed25519 public key trusted to sign operator tokens (repeatable; adds to "
        "--auth-operator-keys)",
    )
    return parser


def _from_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, text in vars(namespace).items():
        if attr.startswith("key:"):
            key = attr[4:]
            out[key] = _from_text(_KEYS[key], text, f"flag {_flag_name(key)}")
    for item in getattr(namespace, "set_values", None) or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a known key")
        out[key] = _from_text(_KEYS[key], text, f"--set {key}")
    files = getattr(namespace, "issuer_key_files", None)
    if files:
        given = [out["auth_issuer_keys"]] if out.get("auth_issuer_keys") else []
        out["auth_issuer_keys"] = ",".join(given + files)
    files = getattr(namespace, "operator_key_files", None)
    if files:
        given = [out["auth_operator_keys"]] if out.get("auth_operator_keys") else []
        out["auth_operator_keys"] = ",".join(given + files)
    return out


def _assemble(values: Mapping[str, Any]) -> ServerConfig:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in values.items():
        spec = _KEYS[key]
        if spec.section is None:
            top[spec.name] = value
        else:
            sections[spec.section][spec.name] = value
    try:
        transport = TransportConfig(**sections["transport"])
        broker = BrokerConfig(**sections["broker"])
    except EngineError as exc:  # BrokerConfig validates itself
        raise ConfigError(exc.message) from None
    config = ServerConfig(transport=transport, broker=broker, **top)
    config.validate()
    return config


def load_config(
    argv: Sequence[str],
    env: Mapping[str, str],
    read_file: Callable[[str], bytes],
    *,
    prog: str = "felix-broker",
) -> tuple[ServerConfig, argparse.Namespace]:
    """Build the effective configuration from the four layers.

    Args:
        argv: command-line arguments (without the program name).
        env: the process environment (only ``FELIX_*`` names are read).
        read_file: reads a whole file by path (``Path(p).read_bytes`` in a runtime).
        prog: the program name for usage messages.

    Returns:
        The validated configuration, and the parsed flags (for ``--print-config``).

    Raises:
        ConfigError: any bad setting, naming it and where it came from.
        SystemExit: ``--help`` (argparse prints the usage).
    """
    namespace = build_parser(prog).parse_args(list(argv))
    path = getattr(namespace, "config", None) or env.get("FELIX_CONFIG")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # key -> where its value came from
    if path:
        try:
            data = tomllib.loads(read_file(path).decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        layer = _from_toml(data, f"config file {path}")
        values.update(layer)
        sources.update(dict.fromkeys(layer, f"config file {path}"))
    layer = _from_env(env)
    values.update(layer)
    sources.update({key: f"environment {_env_name(key)}" for key in layer})
    layer = _from_flags(namespace)
    values.update(layer)
    set_values = getattr(namespace, "set_values", None) or []
    set_keys = {item.partition("=")[0].strip() for item in set_values}
    sources.update(
        {key: f"--set {key}" if key in set_keys else f"flag {_flag_name(key)}" for key in layer}
    )
    try:
        return _assemble(values), namespace
    except ConfigError as exc:
        raise ConfigError(_with_sources(str(exc), sources)) from None


def _with_sources(message: str, sources: Mapping[str, str]) -> str:
    """Append where each setting a validation message names came from.

    Validation sees only the merged values, so its messages name settings but not their
    layer: ``listen: expected HOST:PORT, got 'nohost'`` becomes ``... (listen from flag
    --listen)``; a cross-field message names each field (``... (shutdown_grace_s from
    environment FELIX_SHUTDOWN_GRACE_S; shutdown_drain_s: default)``).
    """
    text = message.replace("BrokerConfig.", "broker.")  # the engine's own messages
    named = [key for key in _KEYS if _mentions(text, key)]
    if not named:
        return message
    where = "; ".join(
        f"{key} from {sources[key]}" if key in sources else f"{key}: default" for key in named
    )
    return f"{message} ({where})"


def _mentions(text: str, key: str) -> bool:
    """Whether ``text`` names ``key``, dotted or (when unambiguous) by its bare name."""
    if re.search(rf"(?<![\w.]){re.escape(key)}\b", text):
        return True
    name = _KEYS[key].name
    unique = sum(spec.name == name for spec in _KEYS.values()) == 1
    return unique and re.search(rf"(?<![\w.]){re.escape(name)}\b", text) is not None


def config_to_toml(config: ServerConfig) -> str:
    """Render a configuration as TOML (what ``--print-config`` shows)."""

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(value)

    lines: list[str] = []
    sections: dict[str, list[str]] = {name: [] for name in _SECTIONS}
    for spec in _KEYS.values():
        owner = config if spec.section is None else getattr(config, spec.section)
        value = getattr(owner, spec.name)
        line = f"{spec.name} = {render(value)}" if value is not None else f"# {spec.name} unset"
        (lines if spec.section is None else sections[spec.section]).append(line)
    for name, body in sections.items():
        lines += ["", f"[{name}]", *body]
    return "\n".join(lines) + "\n"
