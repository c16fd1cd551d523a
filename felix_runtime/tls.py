"""The broker's TLS material: a configured certificate, or a self-signed one for development.

With no ``tls_cert`` configured the broker runs in development mode: it creates (once) an
ECDSA P-256 certificate for ``localhost``, ``127.0.0.1`` and ``::1`` (plus the listen host),
valid for a year, and writes ``cert.pem`` and ``key.pem`` into the data directory. An
existing pair is reused while it is valid for at least another day, so a client that trusts
it (``felix --ca felix-data/cert.pem``) keeps working across restarts. The broker logs the
path and the certificate's SHA-256 fingerprint.

The certificate is an end-entity certificate (``BasicConstraints: CA:FALSE``), trusted
directly as its own anchor (``felix --ca cert.pem``). Both QUIC engines accept it: aioquic
and qh3. qh3 verifies with webpki, which refuses a certificate marked as a CA when it is
presented as the server's own ("the server certificate is unacceptable"); the certificates
made before this rule were CA certificates, so an existing one is replaced (a new key and
fingerprint) even when it is still valid.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertificateFiles", "ensure_self_signed", "fingerprint"]

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where the certificate and key are, and what the certificate is."""

    cert_path: Path
    key_path: Path
    fingerprint: str
    """SHA-256 of the DER certificate, colon-separated upper-case hex."""
    generated: bool
    """True when this call created the files."""


def fingerprint(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate as ``AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _reusable(cert_pem: bytes, now: datetime.datetime) -> bool:
    """Valid for at least another day and an end-entity certificate (not a CA: qh3 refuses
    those, see the module docstring)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return not constraints.ca and cert.not_valid_after_utc - now > datetime.timedelta(days=1)


def ensure_self_signed(data_dir: str | Path, host: str = "127.0.0.1") -> CertificateFiles:
    """Return the development certificate in ``data_dir``, creating it when needed.

    Args:
        data_dir: the broker's data directory (created if missing).
        host: the listen host, added to the subject alternative names.

    Returns:
        The paths and fingerprint.
    """
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    now = datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and key_path.exists():
        existing = cert_path.read_bytes()
        if _reusable(existing, now):
            return CertificateFiles(cert_path, key_path, fingerprint(existing), generated=False)

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = {"127.0.0.1", "::1"}
    try:
        ipaddress.ip_address(host)
        addresses.add(host)
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "felix development broker")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key is written readable by the owner only.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    cert_path.write_bytes(cert_pem)
    return CertificateFiles(cert_path, key_path, fingerprint(cert_pem), generated=True)
