"""Mutual TLS: verifying client certificates, and mapping them to principals.

A broker with ``tls_client_ca`` asks every client for a certificate (``tls_client_auth``:
``required``, the default, or ``optional``) and verifies its chain against that CA file
with ``cryptography``'s X.509 path validation (:class:`ClientCA`), at the current time. The
QUIC glue calls it during the handshake (:class:`felix_server.quic.FelixQuicConnection`), so
a client with no certificate, one from another CA, or an expired one never reaches Felix.

``tls_client_rules`` then maps a verified certificate to a
:class:`~felix_core.access.Principal` (subject, tenant, permissions): the same principal a
token gives, checked by the same one authorization decision. One rule a line (or separated
by ``;``)::

    uri:spiffe://felix/tenant/{tenant}/sa/{subject} => publish:default/* subscribe:default/*
    cn:{subject} o:{tenant} => admin

Left of ``=>``, one or more conditions ``FIELD:TEMPLATE`` (all must match), ``FIELD`` one of
``uri``, ``dns``, ``email`` (subject alternative names), ``cn``, ``o``, ``ou`` (subject
attributes); ``{tenant}`` (required) and ``{subject}`` capture a run of name characters
(``A-Z a-z 0-9 . _ -``); the rest of a template is literal. A condition matches when one of
the certificate's values of that field matches its template whole. Right of ``=>``, the
permissions granted (the syntax tokens use, space-separated; none is allowed). The first
rule that matches decides; without ``{subject}`` the subject is the value the first
condition matched. The principal's rights end at the certificate's ``notAfter``.

Precedence with tokens (:func:`client_authenticator`):

* no ``tls_client_rules``: the certificate only gates the connection; the principal comes
  from the token (or the broker has no authentication), as without mutual TLS;
* a certificate and no token: the certificate's principal. A certificate that no rule maps
  is refused (``UNAUTHENTICATED``, reason ``certificate_unmapped``);
* a certificate and a token (the broker checks tokens): the token must be valid and name the
  same tenant and subject as the certificate (otherwise reason ``certificate_mismatch``); the
  token's principal is used (its permissions), its rights ending at the earlier of the
  token's ``exp`` and the certificate's ``notAfter``. A token given to a broker that checks
  no tokens is ignored, as a broker without authentication ignores it;
* no certificate (``optional``): the token decides, as without mutual TLS.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from felix_core.access import Permission, Principal
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_server.access import (
    Authenticate,
    CertificateRefused,
    ClientIdentity,
    PeerAuthenticator,
    Refusal,
)
from felix_server.config import ConfigError, ServerConfig

__all__ = [
    "ISSUER",
    "ClientCA",
    "IdentityRule",
    "check_client_tls",
    "client_authenticator",
    "identity_of",
    "map_identity",
    "parse_identity_rules",
]

ISSUER = "tls-client"
"""The ``issuer`` of a principal that a client certificate gives."""
FIELDS = ("uri", "dns", "email", "cn", "o", "ou")
"""The certificate fields a rule can test."""
_PLACEHOLDER = re.compile(r"\{(tenant|subject)\}")
_NAME = r"[A-Za-z0-9._-]+"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ClientCA:
    """The client CA: verifies a client's chain at the current time.

    Args:
        ca_pem: one or more PEM CA certificates (the trust anchors).
        clock: the current time (seconds since the epoch).

    Raises:
        ValueError: ``ca_pem`` holds no certificate, or one that cannot be parsed.
    """

    def __init__(self, ca_pem: bytes, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._store = _store(ca_pem)

    def replace(self, ca_pem: bytes) -> None:
        """Trust ``ca_pem`` from now on (certificate reload); on ``ValueError`` the
        current anchors stay."""
        self._store = _store(ca_pem)

    def verify(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate]
    ) -> ClientIdentity:
        """Verify ``leaf`` (with the ``intermediates`` the client sent) up to an anchor.

        Raises:
            CertificateRefused: ``expired`` or ``not_yet_valid`` (the leaf itself),
                ``untrusted`` (no valid path to the client CA).
        """
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        if leaf.not_valid_after_utc < now:
            raise CertificateRefused("expired", "the client certificate has expired")
        if leaf.not_valid_before_utc > now:
            raise CertificateRefused("not_yet_valid", "the client certificate is not valid yet")
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=_EE_POLICY,
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, intermediates)
        except verification.VerificationError as exc:
            raise CertificateRefused("untrusted", f"client certificate refused: {exc}") from None
        return identity_of(leaf)


# The client verifier's default requires a subject alternative name; a certificate that
# names its client by CN / O only is allowed too.
_EE_POLICY = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
)


def _store(ca_pem: bytes) -> verification.Store:
    certificates = x509.load_pem_x509_certificates(ca_pem)  # ValueError when none
    return verification.Store(certificates)


def identity_of(certificate: x509.Certificate) -> ClientIdentity:
    """The names a (verified) client certificate carries."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    subject = certificate.subject

    def attributes(oid: x509.ObjectIdentifier) -> tuple[str, ...]:
        return tuple(str(a.value) for a in subject.get_attributes_for_oid(oid))

    return ClientIdentity(
        uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
        dns_names=tuple(san.get_values_for_type(x509.DNSName)),
        emails=tuple(san.get_values_for_type(x509.RFC822Name)),
        common_names=attributes(NameOID.COMMON_NAME),
        organizations=attributes(NameOID.ORGANIZATION_NAME),
        organizational_units=attributes(NameOID.ORGANIZATIONAL_UNIT_NAME),
        not_after=certificate.not_valid_after_utc.timestamp(),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """One line of ``tls_client_rules``."""

    conditions: tuple[tuple[str, re.Pattern[str]], ...]
    """``(field, template as a regular expression)``, all of which must match."""
    permissions: frozenset[Permission]
    """What the principal may do in its tenant."""
    text: str
    """The rule as written (for messages)."""


def parse_identity_rules(text: str) -> list[IdentityRule]:
    """Parse ``tls_client_rules``.

    Raises:
        ValueError: a malformed rule (named by its position), an unknown field, a rule
            without ``{tenant}``, a placeholder used twice, or a bad permission.
    """
    rules: list[IdentityRule] = []
    lines = [line.strip() for line in re.split(r"[\n;]", text)]
    for position, line in enumerate((line for line in lines if line), start=1):
        left, arrow, right = line.partition("=>")
        if not arrow or not left.strip():
            raise ValueError(
                f"tls_client_rules: rule {position}: expected CONDITIONS => PERMISSIONS"
            )
        conditions: list[tuple[str, re.Pattern[str]]] = []
        seen: list[str] = []
        for condition in left.split():
            field, colon, template = condition.partition(":")
            if not colon or field not in FIELDS or not template:
                raise ValueError(
                    f"tls_client_rules: rule {position}: {condition!r} is not FIELD:TEMPLATE "
                    f"with FIELD one of {', '.join(FIELDS)}"
                )
            names = _PLACEHOLDER.findall(template)
            seen += names
            conditions.append((field, re.compile(_template_regex(template))))
        if "tenant" not in seen or len(seen) != len(set(seen)):
            raise ValueError(
                f"tls_client_rules: rule {position}: {{tenant}} must appear once "
                "(and {subject} at most once)"
            )
        try:
            permissions = frozenset(Permission.parse(p) for p in right.split())
        except ValueError as exc:
            raise ValueError(f"tls_client_rules: rule {position}: {exc}") from None
        rules.append(IdentityRule(tuple(conditions), permissions, line))
    return rules


def _template_regex(template: str) -> str:
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(f"(?P<{match.group(1)}>{_NAME})")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return "".join(parts)


def _values(identity: ClientIdentity, field: str) -> tuple[str, ...]:
    return {
        "uri": identity.uris,
        "dns": identity.dns_names,
        "email": identity.emails,
        "cn": identity.common_names,
        "o": identity.organizations,
        "ou": identity.organizational_units,
    }[field]


def map_identity(rules: Sequence[IdentityRule], identity: ClientIdentity) -> Principal | None:
    """The principal the first matching rule gives ``identity``, or None (no rule
    matches, or the captured tenant is not a valid tenant name)."""
    for rule in rules:
        captured: dict[str, str] = {}
        first = ""
        for field, pattern in rule.conditions:
            found = next(
                (hit for v in _values(identity, field) if (hit := pattern.fullmatch(v))), None
            )
            if found is None:
                break
            captured.update(found.groupdict())
            first = first or found.group(0)
        else:
            tenant = captured["tenant"]
            if not _TENANT.fullmatch(tenant):
                continue
            return Principal(
                subject=captured.get("subject", first),
                tenant=tenant,
                permissions=rule.permissions,
                expires_at=identity.not_after,
                issuer=ISSUER,
            )
    return None


def _refusal(reason: str, message: str) -> Refusal:
    return Refusal(
        code=ErrorCode.UNAUTHENTICATED,
        message=f"missing or invalid credential ({reason}): {message}",
        details={"reason": reason},
    )


def client_authenticator(
    rules: Sequence[IdentityRule], tokens: Authenticate | None
) -> Authenticate | None:
    """The broker's authenticator with mutual TLS (the precedence in the module docstring).

    Args:
        rules: ``tls_client_rules`` parsed; empty: certificates name no one.
        tokens: the authenticator of tokens and shared secrets (None: the broker checks
            none).

    Returns:
        ``tokens`` itself without rules, else a
        :class:`~felix_server.access.PeerAuthenticator`.
    """
    if not rules:
        return tokens
    rule_list = list(rules)

    def decide(hello: m.Hello, now: float, identity: ClientIdentity | None) -> Principal | Refusal:
        if identity is None:
            if tokens is None:
                return _refusal("missing", "a client certificate is required")
            return tokens(hello, now)
        from_certificate = map_identity(rule_list, identity)
        if from_certificate is None:
            return _refusal(
                "certificate_unmapped", "no tls_client_rules entry matches the certificate"
            )
        if tokens is None or hello.token is None:
            return from_certificate
        decision = tokens(hello, now)
        if not isinstance(decision, Principal):
            return decision
        if (decision.tenant, decision.subject) != (
            from_certificate.tenant,
            from_certificate.subject,
        ):
            return _refusal(
                "certificate_mismatch",
                "the token names another tenant or subject than the client certificate",
            )
        ends = [t for t in (decision.expires_at, from_certificate.expires_at) if t is not None]
        return replace(decision, expires_at=min(ends))

    return PeerAuthenticator(decide)


def check_client_tls(config: ServerConfig) -> None:
    """Check the mutual TLS settings a broker starts with: the client CA file reads and
    holds certificates, and ``tls_client_rules`` parse.

    Raises:
        ConfigError: naming the setting (and the file).
    """
    if config.tls_client_ca is not None:
        try:
            ClientCA(Path(config.tls_client_ca).read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"tls_client_ca: {config.tls_client_ca}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"tls_client_ca: {config.tls_client_ca}: {exc}") from None
    try:
        parse_identity_rules(config.tls_client_rules or "")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
