"""Fake external identity providers for the token-exchange tests: an OIDC issuer and a
Kubernetes service-account issuer, with RSA, EC P-256 or Ed25519 keys made in memory and
tokens signed by PyJWT (the JOSE library Felix uses). No network."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fake_issuers import NOW
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from felix_core.access import Permission
from felix_runtime.exchange import (
    ClaimRule,
    ExternalIssuer,
    StaticKeys,
    TokenExchanger,
    read_external_jwks,
)

K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Ed25519PrivateKey


def new_key(alg: str) -> PrivateKey:
    """A fresh private key for ``alg`` (RS256, ES256 or EdDSA)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return Ed25519PrivateKey.generate()


_KEYS: dict[str, PrivateKey] = {}


def shared_key(alg: str) -> PrivateKey:
    """One key per algorithm for the whole run (RSA key generation is slow)."""
    if alg not in _KEYS:
        _KEYS[alg] = new_key(alg)
    return _KEYS[alg]


@dataclass
class OidcIssuer:
    """An identity provider with one signing key."""

    url: str = "https://idp.example.com"
    alg: str = "RS256"
    kid: str = "idp-1"
    given_key: PrivateKey | None = None

    def __post_init__(self) -> None:
        self.key = self.given_key or shared_key(self.alg)

    def jwk(self) -> dict[str, Any]:
        """The public JWK of the key."""
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def jwks(self) -> bytes:
        """The issuer's JWKS document."""
        return json.dumps({"keys": [self.jwk()]}).encode()

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """ID-token claims valid at ``NOW`` for one hour; None removes a claim."""
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "alice",
            "aud": "felix",
            "iat": int(NOW),
            "nbf": int(NOW),
            "exp": int(NOW) + 3600,
            "groups": ["engineering"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, headers: Mapping[str, Any] | None = None, **overrides: Any) -> str:
        """A signed ID token (``kid`` set unless ``headers`` say otherwise)."""
        header = {"kid": self.kid, **(headers or {})}
        return jwt.encode(self.claims(**overrides), self.key, algorithm=self.alg, headers=header)

    def issuer(self, **kwargs: Any) -> ExternalIssuer:
        """This provider as a trusted external issuer (keys from its JWKS)."""
        keys = StaticKeys(read_external_jwks(self.jwks()))
        return ExternalIssuer(issuer=self.url, audience="felix", keys=keys, **kwargs)


def service_account_token(
    issuer: OidcIssuer, namespace: str = "ci", name: str = "builder", **overrides: Any
) -> str:
    """A Kubernetes projected service-account token (the shape the kubelet mounts)."""
    claims = {
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "groups": None,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": f"{name}-7d9f", "uid": "0b1c2d3e"},
            "serviceaccount": {"name": name, "uid": "4f5a6b7c"},
        },
        **overrides,
    }
    return issuer.token(**claims)


def exchanger(*issuers: OidcIssuer, rules: list[ClaimRule] | None = None, **kwargs: Any) -> Any:
    """A token exchanger trusting ``issuers`` (and the key it signs with, returned too)."""
    signing = Ed25519PrivateKey.generate()
    default_rules = [
        ClaimRule(
            tenant="acme",
            roles=("ci",),
            permissions=(Permission.parse("publish:default/*"),),
            namespace="ci",
            service_account="builder",
        ),
        ClaimRule(
            tenant="acme",
            permissions=(Permission.parse("subscribe:default/*"),),
            group="engineering",
        ),
    ]
    ids = iter(range(1, 1_000_000))
    made = TokenExchanger(
        [i.issuer() for i in issuers],
        default_rules if rules is None else rules,
        signing,
        new_id=lambda: f"x-{next(ids)}",
        **kwargs,
    )
    return made, signing
