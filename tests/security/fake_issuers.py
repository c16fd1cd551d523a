"""Fake token issuers for the security tests, built with the same JOSE library as Felix
(PyJWT on cryptography). No network, no files: keys are made in memory per test.
``conftest.py`` turns :class:`FakeIssuer` into the ``issuer`` fixture."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from felix_core.access import Permission
from felix_runtime.tokens import TokenVerifier, issue_token, key_id

NOW = 1_800_000_000.0
"""The fixed time every test verifies at (tokens carry times around it)."""


@dataclass
class FakeIssuer:
    """An issuer with one Ed25519 key, signing whatever claims a test wants."""

    name: str = "felix"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public)

    def token(self, **overrides: Any) -> str:
        """A valid Felix token at :data:`NOW` (15 minutes), made by :func:`issue_token`."""
        args: dict[str, Any] = {
            "subject": "alice",
            "tenant": "acme",
            "now": NOW,
            "ttl": 900.0,
            "token_id": "jti-1",
            "permissions": [Permission.parse("publish:default/orders")],
            "roles": ["reader"],
            "issuer": self.name,
            "audience": "felix",
        }
        args.update(overrides)
        return issue_token(self.key, **args)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """The claims of :meth:`token`, for tests that sign odd ones with :meth:`sign`."""
        claims: dict[str, Any] = {
            "iss": self.name,
            "sub": "alice",
            "aud": "felix",
            "tenant": "acme",
            "iat": int(NOW),
            "nbf": int(NOW),
            "exp": int(NOW) + 900,
            "jti": "jti-1",
            "permissions": ["publish:default/orders"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """Sign any claims with EdDSA and this key (``kid`` set unless ``headers`` say)."""
        header = {"kid": self.kid, **(headers or {})}
        return jwt.encode(dict(claims), self.key, algorithm="EdDSA", headers=header)

    def sign_by_hand(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """Sign a header PyJWT would refuse to write (a non-string kid ...) with this key."""
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{signing_input}.{_b64(self.key.sign(signing_input.encode()))}"

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        """A verifier that trusts this issuer only."""
        return TokenVerifier({self.name: {self.kid: self.public}}, **kwargs)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
