"""Test certificate authorities and certificates for mutual TLS, made with ``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _new_key(kind: str) -> Key:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Issued:
    """A certificate and its key, written as PEM files."""

    certificate: x509.Certificate
    key: Key
    cert_file: Path
    key_file: Path


class TestCA:
    """A certificate authority (a self-signed root, optionally an intermediate below it)."""

    __test__ = False

    def __init__(
        self, directory: Path, name: str = "test-ca", parent: TestCA | None = None
    ) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        if parent is None:
            self.certificate = self._ca(subject, self.key, subject, self.key)
        else:
            self.certificate = self._ca(subject, self.key, parent.certificate.subject, parent.key)
        self.file = directory / f"{name}.pem"
        self.file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def intermediate(self, name: str) -> TestCA:
        """A CA signed by this one."""
        return TestCA(self.directory, name, parent=self)

    @staticmethod
    def _ca(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
            .sign(signer, hashes.SHA256())
        )

    def issue(
        self,
        file_name: str,
        *,
        uris: tuple[str, ...] = (),
        cn: str = "client",
        o: str | None = None,
        server: bool = False,
        not_before: datetime.timedelta = -DAY,
        not_after: datetime.timedelta = 10 * DAY,
        key_type: str = "ec",
    ) -> Issued:
        """An end-entity certificate signed by this CA (a client one, or with ``server`` a
        broker one for ``localhost`` / ``127.0.0.1``), valid from ``now + not_before`` to
        ``now + not_after``; its key is ECDSA P-256, or ``key_type`` ``ed25519`` or
        ``rsa``."""
        key = _new_key(key_type)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if o is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
        now = _now()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        if server:
            names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before)
            .not_valid_after(now + not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        cert_file = self.directory / f"{file_name}.pem"
        key_file = self.directory / f"{file_name}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return Issued(certificate, key, cert_file, key_file)
