"""The broker's TLS set-up for new connections, and its reload without a restart.

:class:`ServerTls` loads the broker's certificate and key (``tls_cert`` / ``tls_key``, or the
development certificate, :mod:`felix_runtime.tls`) into the QUIC engine's configuration,
and the client CA (``tls_client_ca``, mutual TLS: :mod:`felix_runtime.tls_clients`) into the
connection factory. Both runtimes build one and hand ``configuration`` and
``connection_factory`` to the server.

Reload: on SIGHUP, and when a check every ``tls_reload_check_s`` seconds finds that one of
the files changed (size, modification time or inode), :meth:`ServerTls.reload` reads them
again. Only when every file reads and parses, and the key belongs to the certificate, are
they put in use: the server's configuration is replaced (new connections use it; live ones
keep the keys they negotiated) and the client CA's anchors are swapped. A bad file is logged
(``TLS reload failed``, with the reason) and the material in use stays; a later change is
tried again.

Refused client certificates: every refusal the QUIC glue reports (``missing``,
``untrusted``, ``expired``, ``not_yet_valid``) reaches :attr:`ServerTls.on_refused` as a
:class:`TlsRefusal`: the reason, the peer's address, the certificate's subject, issuer and
SHA-256 fingerprint when one was presented, and the QUIC connection id (the connection has
no Felix connection number in the audit trail yet). The runtime hands it to its observer's
``tls_refused`` (a metric, and an audit entry when the trail is on).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from felix_runtime.logs import log_fields, logger
from felix_runtime.process import load_certificate
from felix_runtime.quic_engines import load_engine
from felix_runtime.tls import CERT_FILE, KEY_FILE, fingerprint
from felix_runtime.tls_clients import ClientCA
from felix_server.access import ClientCertificates, ClientIdentity
from felix_server.config import ServerConfig
from felix_server.quic_engine import QuicConnectionLike

__all__ = ["ServerTls", "TlsRefusal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRefusal:
    """A client certificate refused in the TLS handshake (mutual TLS)."""

    reason: str
    """``missing``, ``untrusted``, ``expired`` or ``not_yet_valid``."""
    peer: str | None
    """The client's address, ``HOST:PORT`` (None if the engine does not say)."""
    quic_cid: str
    """The QUIC connection id the client opened the connection with (hex)."""
    subject: str | None = None
    """The certificate's subject (RFC 4514), None when none was presented."""
    issuer: str | None = None
    """The certificate's issuer (RFC 4514)."""
    fingerprint: str | None = None
    """SHA-256 of the DER certificate, colon-separated upper-case hex."""


_Signature = tuple[tuple[int, int, int] | None, ...]


class ServerTls:
    """The broker's certificate, key and client CA, as new connections get them.

    Args:
        config: the broker's settings.

    Raises:
        OSError: a file cannot be read.
        ValueError: a file is not what it should be (PEM certificate, key, CA).
        EngineMissing: the QUIC engine is not installed.
    """

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._engine = load_engine(config.quic_engine)
        self.client_ca: ClientCA | None = None
        """The client CA (mutual TLS), None without ``tls_client_ca``."""
        self.on_refused: Callable[[TlsRefusal], None] = lambda refusal: None
        """Told every refused client certificate (the runtime sets it to its observer's
        ``tls_refused``: a metric and an audit entry)."""
        factory: Callable[..., QuicConnectionLike] = self._engine.server_connection
        if config.tls_client_ca is not None:
            self.client_ca = ClientCA(Path(config.tls_client_ca).read_bytes())
            factory = functools.partial(self._connection, factory)
        self.connection_factory = factory
        """Builds server connections (with the client certificate policy, if any)."""
        self.configuration: Any = None
        """The engine's server configuration with the certificate loaded."""
        self.cert_path = Path()
        self.fingerprint = ""
        """The development certificate's SHA-256 fingerprint ("" when configured)."""
        self.configuration, self.cert_path, self.fingerprint = self._load()
        self._signature = self._stat()

    def _connection(
        self, factory: Callable[..., QuicConnectionLike], **kwargs: Any
    ) -> QuicConnectionLike:
        """A server connection with the client certificate policy, whose refusals name
        this connection's peer and the certificate it presented."""
        assert self.client_ca is not None
        verify_chain = self.client_ca.verify
        seen: list[x509.Certificate] = []
        cid = bytes(kwargs.get("original_destination_connection_id", b"")).hex()

        def verify(leaf: x509.Certificate, chain: list[x509.Certificate]) -> ClientIdentity:
            seen[:] = [leaf]
            return verify_chain(leaf, chain)

        def refused(reason: str) -> None:
            presented = {} if not seen else _described(seen[0])
            refusal = TlsRefusal(
                reason=reason, peer=_peer_address(connection), quic_cid=cid, **presented
            )
            self.on_refused(refusal)  # looked up at each call: the runtime sets it later

        policy = ClientCertificates(
            verify=verify, required=self._config.tls_client_auth == "required", refused=refused
        )
        connection = factory(client_certificates=policy, **kwargs)
        return connection  # refused() reads it, once the handshake goes on

    def files(self) -> list[Path]:
        """The files the material comes from (certificate, key, client CA)."""
        config = self._config
        if config.tls_cert is not None and config.tls_key is not None:
            found = [Path(config.tls_cert), Path(config.tls_key)]
        else:
            found = [Path(config.data_dir) / CERT_FILE, Path(config.data_dir) / KEY_FILE]
        if config.tls_client_ca is not None:
            found.append(Path(config.tls_client_ca))
        return found

    def changed(self) -> bool:
        """Whether a file changed since the last load or reload attempt."""
        return self._stat() != self._signature

    def reload(self, server: Any) -> bool:
        """Read every file again and, if all are good, use them for ``server``'s new
        connections (its ``quic_configuration``). Logs the outcome.

        Returns:
            True when the new material is in use, False when the old one stays.
        """
        self._signature = self._stat()
        try:
            configuration, cert_path, generated = self._load()
            sha256 = fingerprint(cert_path.read_bytes())
            ca_pem = None
            if self._config.tls_client_ca is not None:
                ca_pem = Path(self._config.tls_client_ca).read_bytes()
                ClientCA(ca_pem)  # parse it before anything changes
        except Exception as exc:  # whatever the files hold, the broker goes on
            logger.error(
                "TLS reload failed; the current certificate stays in use",
                extra=log_fields(error=f"{type(exc).__name__}: {exc}"),
            )
            return False
        server.quic_configuration = configuration
        if self.client_ca is not None and ca_pem is not None:
            self.client_ca.replace(ca_pem)
        self.configuration, self.cert_path = configuration, cert_path
        self.fingerprint = generated
        logger.info(
            "TLS reloaded for new connections",
            extra=log_fields(cert=cert_path, sha256=sha256),
        )
        return True

    def _load(self) -> tuple[Any, Path, str]:
        configuration = self._engine.server_configuration(self._config.transport)
        cert_path, generated = load_certificate(self._config, configuration)
        key_path = self.files()[1]
        _check_pair(cert_path.read_bytes(), key_path.read_bytes())
        return configuration, cert_path, generated

    def _stat(self) -> _Signature:
        signature: list[tuple[int, int, int] | None] = []
        for path in self.files():
            try:
                st = os.stat(path)
            except OSError:
                signature.append(None)
            else:
                signature.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(signature)


def _described(certificate: x509.Certificate) -> dict[str, str]:
    """The :class:`TlsRefusal` fields that name a presented certificate."""
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "fingerprint": certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
    }


def _peer_address(connection: object) -> str | None:
    """``HOST:PORT`` of a server connection's peer: aioquic's ``get_peer_address()``, qh3's
    ``_remote_addr`` (it has no public accessor); None when neither says."""
    get = getattr(connection, "get_peer_address", None)
    address = get() if callable(get) else getattr(connection, "_remote_addr", None)
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host = str(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ``ValueError`` unless the key is the certificate's (the engines do not check;
    a wrong key would fail every handshake)."""
    certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("the key does not belong to the certificate")
