"""Who a connection speaks for: the seam where a client's ``Hello`` is authenticated.

A session hands every ``Hello`` to an :data:`Authenticate` function and accepts the
handshake when it returns a :class:`Principal` (kept as the session's ``principal``), or
rejects it with the :class:`Refusal`'s code and message. :func:`token_list` is the
authenticator of ``auth.tokens`` (a fixed set of bearer tokens, or none: every client is
accepted); an authenticator of signed, tenant-scoped tokens plugs in at the same place.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from felix_proto import messages as m
from felix_proto.errors import ErrorCode

__all__ = ["ANONYMOUS", "Authenticate", "Principal", "Refusal", "token_list"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who an accepted connection speaks for."""

    name: str
    """A name for logs (never the token itself)."""
    tenant: str | None = None
    """The one tenant the connection may use, or None for every tenant."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a handshake is rejected (the client gets an ``Error`` with these, then a close)."""

    code: ErrorCode
    """The error code, e.g. ``UNAUTHENTICATED``."""
    message: str
    """The explanation for the client."""


Authenticate = Callable[[m.Hello], Principal | Refusal]
"""Decides a client's ``Hello``: a :class:`Principal` accepts it, a :class:`Refusal` rejects
it. Pure (no I/O); called once per connection."""

ANONYMOUS = Principal(name="anonymous")
"""The principal of every connection while authentication is off."""


def token_list(tokens: Iterable[str] | None) -> Authenticate:
    """The authenticator of a fixed set of bearer tokens.

    Args:
        tokens: the accepted tokens, or None to accept every client as :data:`ANONYMOUS`.

    Returns:
        An :data:`Authenticate` comparing ``Hello.token`` with every accepted token in
        constant time each (so timing tells nothing about the accepted tokens).
    """
    if tokens is None:
        return lambda hello: ANONYMOUS
    accepted = [t.encode() for t in tokens]
    refusal = Refusal(code=ErrorCode.UNAUTHENTICATED, message="missing or invalid token")

    def authenticate(hello: m.Hello) -> Principal | Refusal:
        if not hello.token:
            return refusal
        offered = hello.token.encode()
        # a list, not a short-circuiting generator: every token is compared
        matches = [hmac.compare_digest(offered, t) for t in accepted]
        return Principal(name="token") if any(matches) else refusal

    return authenticate
