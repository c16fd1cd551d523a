"""Who a connection speaks for: the seam where a client's ``Hello`` is authenticated.

A session hands every ``Hello`` (and the current time) to an :data:`Authenticate` function
and accepts the handshake when it returns a :class:`~felix_core.access.Principal` (kept as
the session's ``principal``), or rejects it with the :class:`Refusal`'s code and message.
:func:`accept_anonymous` accepts every client as :data:`~felix_core.access.ANONYMOUS` (a broker
without authentication); :func:`bearer` turns a credential checker (the runtime's shared
secrets and Felix token verifier, :mod:`felix_runtime.credentials`) into an authenticator.
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
    "CheckCredential",
    "Exchange",
    "ExchangeRefusal",
    "Refusal",
    "TokenGranted",
    "accept_anonymous",
    "bearer",
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
