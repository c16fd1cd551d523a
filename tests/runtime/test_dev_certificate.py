"""The development certificate is accepted by both QUIC engines' verification (qh3's webpki
refuses a CA certificate presented as the server's own), and an older CA one is replaced."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from aioquic import tls as aioquic_tls
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from felix_runtime.tls import ensure_self_signed

qh3_tls = pytest.importorskip("qh3.tls")
qh3_hazmat = pytest.importorskip("qh3._hazmat")


def _verify_both(cert_pem: bytes, server_name: str) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    aioquic_tls.verify_certificate(cert, cadata=cert_pem, server_name=server_name)
    der = cert.public_bytes(serialization.Encoding.DER)
    qh3_tls.verify_certificate(
        qh3_hazmat.Certificate(der), cadata=cert_pem, server_name=server_name
    )


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_both_engines_accept_the_development_certificate(tmp_path: Path, server_name: str) -> None:
    files = ensure_self_signed(tmp_path)
    _verify_both(files.cert_path.read_bytes(), server_name)


def test_a_ca_certificate_left_by_an_older_broker_is_replaced(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "felix development broker")])
    now = datetime.datetime.now(datetime.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    old_pem = old.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(qh3_tls.AlertBadCertificate):  # why it must go
        _verify_both(old_pem, "localhost")
    (tmp_path / "cert.pem").write_bytes(old_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files = ensure_self_signed(tmp_path)
    assert files.generated
    _verify_both(files.cert_path.read_bytes(), "localhost")
    again = ensure_self_signed(tmp_path)  # and the new one is kept
    assert not again.generated and again.fingerprint == files.fingerprint
