"""Who a connection speaks for: the seam where a client's ``Hello`` is authenticated.

A session hands every ``Hello`` (and the current time) to an :data:`Authenticate` function
and accepts the handshake when it returns a :class:`~felix_core.access.Principal` (kept as
the session's ``principal``), or rejects it with the :class:`Refusal`'s code and message.
:func:`accept_anonymous` accepts every client as :data:`~felix_core.access.ANONYMOUS` (a broker
without authentication); :func:`bearer` turns a credential checker (the runtime's shared
secrets and Felix token verifier, :mod:`felix_runtime.credentials`) into an authenticator.

With mutual TLS the QUIC connection holds the client's verified certificate
(:class:`ClientIdentity`). An authenticator that decides on it too is a
:class:`PeerAuthenticator`; :func:`for_connection` binds it to one connection's certificate,
so the session keeps calling an :data:`Authenticate` (:mod:`felix_runtime.tls_clients`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from felix_core.access import ANONYMOUS, AuthError, Principal
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

__all__ = [
    "ANONYMOUS",
    "Authenticate",
    "CertificateRefused",
    "CheckCredential",
    "ClientCertificates",
    "ClientIdentity",
    "Exchange",
    "ExchangeRefusal",
    "PeerAuthenticator",
    "Refusal",
    "TokenGranted",
    "accept_anonymous",
    "bearer",
    "for_connection",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a handshake is rejected (the client gets an ``Error`` with these, then a close)."""

    code: ErrorCode
    """The error code, e.g. ``UNAUTHENTICATED``."""
    message: str
    """The explanation for the client."""
    details: dict[str, Any] = field(default_factory=dict)
    """Machine-readable extras (``reason`` for a refused credential)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeRefusal(Refusal):
    """A refused ``TokenExchange``: the refusal, and who the identity token claimed to be
    (for the audit trail; unverified, None when it did not say)."""

    issuer: str | None = None
    """The external issuer the token names."""
    subject: str | None = None
    """The subject the token names."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenGranted:
    """An accepted ``TokenExchange``: the Felix token and what it vouches for."""

    token: str
    """The Felix token sent back in ``TokenIssued``."""
    principal: Principal
    """The connection's principal from now on."""
    issuer: str
    """The external issuer of the identity token."""
    subject: str
    """The identity token's subject."""


Exchange = Callable[[str, float], TokenGranted | ExchangeRefusal]
"""Exchanges an external identity token at time ``now`` (capability ``token-exchange``):
pure, no I/O (a runtime builds it with ``felix_runtime.exchange``)."""

Authenticate = Callable[[m.Hello, float], Principal | Refusal]
"""Decides a client's ``Hello`` at time ``now``: a principal accepts it, a :class:`Refusal`
rejects it. Pure (no I/O); called once per connection."""

CheckCredential = Callable[[str | None, float], Principal]
"""Checks a bearer credential at time ``now``: returns its principal or raises
:class:`~felix_core.access.AuthError`."""


def accept_anonymous(hello: m.Hello, now: float) -> Principal | Refusal:
    """The authenticator of a broker without authentication: every client is
    :data:`~felix_core.access.ANONYMOUS` (an operator)."""
    return ANONYMOUS


def bearer(check: CheckCredential) -> Authenticate:
    """The authenticator of bearer credentials in ``Hello.token``.

    Args:
        check: returns the principal of a credential or raises ``AuthError``.

    Returns:
        An :data:`Authenticate` answering a refused credential with ``UNAUTHENTICATED``,
        ``missing or invalid token (REASON)`` and ``details.reason`` (the reason reveals
        nothing about the trusted keys or secrets; the credential is never echoed).
    """

    def authenticate(hello: m.Hello, now: float) -> Principal | Refusal:
        try:
            return check(hello.token, now)
        except AuthError as exc:
            return Refusal(
                code=ErrorCode.UNAUTHENTICATED,
                message=f"missing or invalid token ({exc.reason})",
                details={"reason": str(exc.reason)},
            )

    return authenticate


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientIdentity:
    """A client certificate whose chain verified against the broker's client CA (mutual
    TLS): the names it carries, as text."""

    uris: tuple[str, ...] = ()
    """Subject alternative names of type URI (``spiffe://felix/tenant/T/sa/NAME``)."""
    dns_names: tuple[str, ...] = ()
    """Subject alternative names of type DNS."""
    emails: tuple[str, ...] = ()
    """Subject alternative names of type e-mail (RFC 822)."""
    common_names: tuple[str, ...] = ()
    """The subject's ``CN`` attributes."""
    organizations: tuple[str, ...] = ()
    """The subject's ``O`` attributes."""
    organizational_units: tuple[str, ...] = ()
    """The subject's ``OU`` attributes."""
    not_after: float
    """When the certificate expires, seconds since the epoch."""
    fingerprint: str
    """SHA-256 of the DER certificate, colon-separated upper-case hex."""


class CertificateRefused(Exception):
    """A client certificate the broker does not accept; the TLS handshake fails with the
    alert :attr:`reason` names."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        """``missing`` (none presented where one is required), ``expired``,
        ``not_yet_valid`` or ``untrusted`` (no chain to the client CA, or one the X.509
        path validation refuses)."""


VerifyCertificate = Callable[[Any, list[Any]], ClientIdentity]
"""Verifies a client's leaf certificate and the intermediates it sent (``cryptography``
``x509.Certificate`` objects): returns its identity or raises :class:`CertificateRefused`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCertificates:
    """Mutual TLS as a server connection applies it."""

    verify: VerifyCertificate
    """Checks the chain against the client CA at the current time."""
    required: bool
    """A client without a certificate fails the handshake (else it may go on and
    authenticate with a token)."""
    refused: Callable[[str], None] = lambda reason: None
    """Told the :attr:`CertificateRefused.reason` of each refused handshake (a metric)."""


PeerDecision = Callable[[m.Hello, float, ClientIdentity | None], Principal | Refusal]
"""Decides a client's ``Hello`` at ``now`` given its verified certificate (None: the client
presented none)."""


@dataclass(frozen=True, slots=True)
class PeerAuthenticator:
    """An authenticator that also looks at the connection's client certificate.

    Called as a plain :data:`Authenticate` it decides as if no certificate was presented;
    :func:`for_connection` gives it the connection's."""

    decide: PeerDecision

    def __call__(self, hello: m.Hello, now: float) -> Principal | Refusal:
        return self.decide(hello, now, None)


def for_connection(authenticate: Authenticate, quic: object) -> Authenticate:
    """``authenticate`` as one connection uses it: a :class:`PeerAuthenticator` is given
    ``quic``'s verified client certificate (its ``client_identity``, set during the TLS
    handshake) at each call; any other authenticator is returned unchanged."""
    if not isinstance(authenticate, PeerAuthenticator):
        return authenticate
    decide = authenticate.decide

    def bound(hello: m.Hello, now: float) -> Principal | Refusal:
        identity: ClientIdentity | None = getattr(quic, "client_identity", None)
        return decide(hello, now, identity)

    return bound
