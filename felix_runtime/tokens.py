"""Felix tokens: EdDSA (Ed25519) JWTs, their keys, JWKS documents and the verifier.

Theory of operation
-------------------
A Felix token is a JWT signed with EdDSA over Ed25519 (RFC 8037), made and checked with
PyJWT on top of ``cryptography``; this module never parses a JWS or computes a signature
itself. :func:`issue_token` makes one; :class:`TokenVerifier` checks one and returns the
:class:`~felix_core.access.Principal` it vouches for, or raises
:class:`~felix_core.access.AuthError` with the reason. The verifier trusts a fixed set of
keys per issuer (:func:`read_jwks` reads them from a JWKS document) and accepts
``alg: EdDSA`` only: ``none``, every HMAC algorithm (and so the classic forgery that uses
the public key as an HMAC secret), RSA and ECDSA are refused before any key is touched. A
token names its key with ``kid`` (the RFC 7638 thumbprint by default, :func:`key_id`),
which is what makes key rotation possible.

It decides and nothing else: no file or network I/O, no clock (time enters as ``now``; PyJWT
reads the wall clock internally, but its time checks are switched off and every time check
here uses ``now``), no randomness (token ids are passed in). It lives in ``felix_runtime``,
not in the pure packages, because PyJWT imports ``urllib.request`` and ``http.client`` (for
its JWKS client, which is not used).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from jwt.utils import base64url_encode

from felix_core.access import AuthError, AuthReason, Permission, Principal
from felix_core.names import is_valid_name
from felix_core.rbac import MAX_MEMBER_CHARS

__all__ = [
    "ALGORITHM",
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "DEFAULT_OPERATOR_ISSUER",
    "MAX_TOKEN_BYTES",
    "PublicKeyInput",
    "TokenVerifier",
    "issue_token",
    "jwks_document",
    "jwks_entries",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_jwk",
    "read_jwks",
    "read_unverified",
]

ALGORITHM = "EdDSA"
"""The one JWS algorithm Felix tokens use and the verifier accepts (Ed25519, RFC 8037)."""
DEFAULT_ISSUER = "felix"
"""``iss`` of tokens made by ``felix token issue`` unless told otherwise."""
DEFAULT_AUDIENCE = "felix"
"""``aud`` of tokens made by ``felix token issue`` unless told otherwise."""
DEFAULT_OPERATOR_ISSUER = "felix-operator"
"""``iss`` of operator tokens (``felix token issue --operator``), and the broker's default
``auth_operator_issuer``."""
MAX_TOKEN_BYTES = 8192
"""A longer bearer credential is refused as malformed before any decoding."""


# -- keys -----------------------------------------------------------------------------------

PublicKeyInput = Ed25519PublicKey | bytes | str
"""A trusted key: loaded, or as PEM text / bytes (SubjectPublicKeyInfo)."""


def load_public_key(key: PublicKeyInput) -> Ed25519PublicKey:
    """Return an Ed25519 public key from a loaded key or PEM.

    Raises:
        ValueError: not PEM, or a key of another type (RSA, EC, Ed448 ...).
    """
    if isinstance(key, Ed25519PublicKey):
        return key
    data = key.encode() if isinstance(key, str) else key
    loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key ({type(loaded).__name__})")
    return loaded


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Return the Ed25519 private key of an unencrypted PKCS#8 PEM document.

    Raises:
        ValueError: not PEM, encrypted, or a key of another type.
        TypeError: the PEM is encrypted (``cryptography`` says so with TypeError).
    """
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key ({type(loaded).__name__})")
    return loaded


def public_jwk(public_key: Ed25519PublicKey, kid: str | None = None) -> dict[str, str]:
    """The public JWK of a key (``kty`` OKP, ``crv`` Ed25519), with ``kid`` (default: the
    RFC 7638 thumbprint, :func:`key_id`), ``use: sig`` and ``alg: EdDSA``."""
    jwk: dict[str, str] = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return {
        "kty": jwk["kty"],
        "crv": jwk["crv"],
        "x": jwk["x"],
        "kid": key_id(public_key) if kid is None else kid,
        "use": "sig",
        "alg": ALGORITHM,
    }


def key_id(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key: a ``kid`` that
    any party can recompute from the key alone."""
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    required = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def jwks_document(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    """A JWKS document (``{"keys": [...]}``) of public keys by ``kid``."""
    return {"keys": [public_jwk(key, kid) for kid, key in keys.items()]}


def jwks_entries(document: bytes | str) -> list[Any]:
    """The ``keys`` list of a JWKS document, each entry still to be checked.

    Raises:
        ValueError: not JSON, or not an object with a ``keys`` list.
    """
    try:
        data = json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"JWKS is not JSON: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError('JWKS must be a JSON object with a "keys" list')
    return entries


def read_jwks(document: bytes | str) -> dict[str, Ed25519PublicKey]:
    """Read the Ed25519 public keys of a JWKS document, by ``kid``.

    Every key must be ``kty: OKP`` with ``crv: Ed25519``, carry a unique ``kid``, hold no
    private part (``d``), and, when present, say ``use: sig`` and ``alg: EdDSA``. Anything
    else refuses the whole document: a trust anchor is read exactly or not at all.

    Raises:
        ValueError: not JSON, not a JWKS, or a key that breaks a rule above (the message
        names its position).
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for index, entry in enumerate(jwks_entries(document)):
        kid, key = _read_jwk(entry, f"JWKS key {index}")
        if kid in keys:
            raise ValueError(f"JWKS key {index}: kid {kid!r} appears twice")
        keys[kid] = key
    return keys


def _read_jwk(entry: object, where: str) -> tuple[str, Ed25519PublicKey]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a JSON object")
    if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        kind = f"kty {entry.get('kty')!r}, crv {entry.get('crv')!r}"
        raise ValueError(f"{where}: only Ed25519 keys (kty OKP, crv Ed25519), not {kind}")
    if "d" in entry:
        raise ValueError(f"{where}: holds a private key ('d'); publish public keys only")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError(f"{where}: needs a kid")
    if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError(f"{where}: must be for signatures with {ALGORITHM} (use sig)")
    try:
        key = jwt.PyJWK(entry, algorithm=ALGORITHM).key
    except jwt.PyJWTError as exc:  # PyJWKError, InvalidKeyError (a bad x) ...
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{where}: not an Ed25519 public key")
    return kid, key


# -- issuing --------------------------------------------------------------------------------


def issue_token(
    private_key: Ed25519PrivateKey,
    *,
    subject: str,
    tenant: str,
    now: float,
    ttl: float,
    token_id: str,
    permissions: Iterable[Permission] = (),
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    kid: str | None = None,
    operator: bool = False,
) -> str:
    """Sign a Felix token.

    Claims: ``iss``, ``sub``, ``aud``, ``tenant``, ``roles``, ``groups`` and
    ``permissions`` (when given; permissions in their text form), ``iat`` = ``nbf`` =
    ``now``, ``exp`` = ``now`` + ``ttl``, ``jti``. Header: ``alg: EdDSA``, ``typ: JWT``,
    ``kid`` (default: the key's thumbprint). With ``operator``, the claim ``operator:
    true`` (honoured only by brokers that trust ``issuer`` for operator tokens). Ed25519
    signatures are deterministic, so this is a pure function.

    Raises:
        ValueError: an invalid tenant or role name, an empty subject, issuer, audience or
        token id, or a ttl that is not a positive finite number.
    """
    if not is_valid_name(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}")
    role_names = sorted(set(roles))
    for role in role_names:
        if not is_valid_name(role):
            raise ValueError(f"invalid role name {role!r}")
    group_names = sorted(set(groups))
    for group in group_names:
        if not _is_member_name(group):
            raise ValueError(f"invalid group name {group!r}")
    texts = {"subject": subject, "issuer": issuer, "audience": audience, "token id": token_id}
    for what, text in texts.items():
        if not text:
            raise ValueError(f"the {what} must not be empty")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl}")
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "tenant": tenant,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl),
        "jti": token_id,
    }
    if role_names:
        claims["roles"] = role_names
    if group_names:
        claims["groups"] = group_names
    if operator:
        claims["operator"] = True
    grants = sorted({str(p) for p in permissions})
    if grants:
        claims["permissions"] = grants
    header = {"kid": key_id(private_key.public_key()) if kid is None else kid}
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers=header)


# -- verifying ------------------------------------------------------------------------------


_UNVERIFIED: jwt.types.Options = {
    "verify_signature": False,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}
"""PyJWT options for reading the claims that choose the key: no check at all."""


def read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a token's header and claims WITHOUT checking anything: for choosing a key and
    for showing a token (``felix token inspect``), never for trusting it.

    Raises:
        AuthError: ``MALFORMED``, not a JWS in compact form with a JSON object payload.
    """
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options=_UNVERIFIED)
    except jwt.InvalidTokenError as exc:
        raise AuthError(AuthReason.MALFORMED, f"not a JWT: {exc}") from None
    return header, claims


class TokenVerifier:
    """Checks Felix tokens against trusted issuer keys.

    Args:
        issuer_keys: for each trusted issuer (``iss``), its public keys by ``kid`` (what
            :func:`read_jwks` returns), each loaded or as PEM. A key signs for its issuer
            only. A token without ``kid`` is accepted only from an issuer with one key.
        audience: the ``aud`` this broker answers to.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        operator_issuers: the issuers whose tokens may carry ``operator: true`` (an
            operator principal: every tenant, every permission); that claim from any other
            issuer refuses the token (``operator_not_allowed``).

    Raises:
        ValueError: a key that is not an Ed25519 public key, or no issuer at all.
    """

    def __init__(
        self,
        issuer_keys: Mapping[str, Mapping[str, PublicKeyInput]],
        *,
        audience: str = DEFAULT_AUDIENCE,
        leeway: float = 5.0,
        operator_issuers: Iterable[str] = (),
    ) -> None:
        if not issuer_keys:
            raise ValueError("a token verifier needs at least one trusted issuer")
        self._keys = {
            issuer: {kid: load_public_key(key) for kid, key in keys.items()}
            for issuer, keys in issuer_keys.items()
        }
        self.audience = audience
        self.leeway = float(leeway)
        self.operator_issuers = frozenset(operator_issuers)

    def verify(self, token: str | None, now: float) -> Principal:
        """Check ``token`` at time ``now`` (seconds since the epoch).

        The order of the checks: present, size, header, ``alg``, issuer, key, signature,
        audience, claim shapes, then time. Only EdDSA is ever handed to PyJWT as allowed.

        Returns:
            The principal the token vouches for.

        Raises:
            AuthError: with the reason of the first check that failed.
        """
        if token is None or not token.strip():
            raise AuthError(AuthReason.MISSING, "no token")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(AuthReason.MALFORMED, f"token longer than {MAX_TOKEN_BYTES} bytes")
        # Read only to choose the key; nothing of it is trusted before the signature.
        header, unverified = read_unverified(token)
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise AuthError(
                AuthReason.ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not allowed (only {ALGORITHM})"
            )
        key = self._key_for(header, unverified)
        try:
            # PyJWT's time checks are off: they compare with the wall clock (which PyJWT
            # still reads, to no effect). Every time decision here is made against ``now``.
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=unverified["iss"],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["iss", "sub", "aud", "exp", "tenant"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError(AuthReason.BAD_SIGNATURE, "signature does not verify") from None
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(AuthReason.ALGORITHM_NOT_ALLOWED, str(exc)) from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                AuthReason.WRONG_AUDIENCE, f"audience is not {self.audience!r}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise AuthError(AuthReason.WRONG_AUDIENCE, "token has no audience") from None
            raise AuthError(AuthReason.MALFORMED, f"missing claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:  # InvalidTokenError and the rest: never escapes
            raise AuthError(AuthReason.MALFORMED, str(exc)) from None
        principal = _principal(claims, self.operator_issuers)
        self._check_time(claims, now)
        return principal

    def _key_for(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> Ed25519PublicKey:
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            raise AuthError(AuthReason.MALFORMED, "missing or non-string claim 'iss'")
        keys = self._keys.get(issuer)
        if keys is None:
            raise AuthError(AuthReason.WRONG_ISSUER, f"issuer {issuer!r} is not trusted")
        kid = header.get("kid")
        if kid is None:
            if len(keys) == 1:
                return next(iter(keys.values()))
            raise AuthError(
                AuthReason.UNKNOWN_KEY,
                f"token has no kid and issuer {issuer!r} has {len(keys)} keys",
            )
        key = keys.get(kid)
        if key is None:
            raise AuthError(AuthReason.UNKNOWN_KEY, f"issuer {issuer!r} has no key {kid!r}")
        return key

    def _check_time(self, claims: Mapping[str, Any], now: float) -> None:
        exp = _number(claims, "exp")
        assert exp is not None  # required above
        if exp <= now - self.leeway:
            raise AuthError(AuthReason.EXPIRED, f"token expired at {exp:g} (now {now:.0f})")
        for claim in ("nbf", "iat"):
            value = _number(claims, claim)
            if value is not None and value > now + self.leeway:
                raise AuthError(
                    AuthReason.NOT_YET_VALID,
                    f"token not valid before {value:g} ({claim}; now {now:.0f})",
                )


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(AuthReason.MALFORMED, f"claim {name!r} is not a number")
    return float(value)


def _principal(claims: Mapping[str, Any], operator_issuers: frozenset[str]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise AuthError(AuthReason.MALFORMED, "claim 'sub' must be a non-empty string")
    tenant = claims["tenant"]
    if not is_valid_name(tenant):
        raise AuthError(AuthReason.MALFORMED, "claim 'tenant' is not a valid tenant name")
    roles = _strings(claims, "roles")
    if not all(is_valid_name(role) for role in roles):
        raise AuthError(AuthReason.MALFORMED, "claim 'roles' holds an invalid role name")
    groups = _strings(claims, "groups")
    if not all(_is_member_name(group) for group in groups):
        raise AuthError(AuthReason.MALFORMED, "claim 'groups' holds an invalid group name")
    try:
        permissions = frozenset(Permission.parse(p) for p in _strings(claims, "permissions"))
    except ValueError as exc:
        raise AuthError(AuthReason.MALFORMED, f"claim 'permissions': {exc}") from None
    token_id = claims.get("jti")
    if token_id is not None and not isinstance(token_id, str):
        raise AuthError(AuthReason.MALFORMED, "claim 'jti' must be a string")
    operator = claims.get("operator", False)
    if not isinstance(operator, bool):
        raise AuthError(AuthReason.MALFORMED, "claim 'operator' must be true or false")
    if operator and claims["iss"] not in operator_issuers:
        raise AuthError(
            AuthReason.OPERATOR_NOT_ALLOWED,
            f"issuer {claims['iss']!r} is not trusted for operator tokens",
        )
    return Principal(
        subject=subject,
        tenant=tenant,
        roles=tuple(sorted(set(roles))),
        groups=tuple(sorted(set(groups))),
        permissions=permissions,
        expires_at=_number(claims, "exp"),
        issuer=claims["iss"],
        token_id=token_id,
        operator=operator,
    )


def _is_member_name(name: str) -> bool:
    """A group name a binding can name (:data:`~felix_core.rbac.MAX_MEMBER_CHARS`)."""
    return 0 < len(name) <= MAX_MEMBER_CHARS and name.isprintable()


def _strings(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(AuthReason.MALFORMED, f"claim {name!r} must be a list of strings")
    return value
