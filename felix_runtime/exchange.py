"""Token exchange: an external identity token (OIDC ID token, Kubernetes projected
service-account token) in, a short-lived Felix token out.

Theory of operation
-------------------
A :class:`TokenExchanger` knows the external issuers it trusts (:class:`ExternalIssuer`:
the ``iss`` URL, the audience its tokens must name, the algorithms accepted and where the
keys come from) and an ordered list of :class:`ClaimRule`. :meth:`TokenExchanger.exchange`
checks an identity token at time ``now`` in this order: present and at most
:data:`MAX_ID_TOKEN_BYTES`; a JWS whose ``alg`` is one of the issuer's accepted algorithms
(never ``none``, never HMAC: :data:`ALLOWED_ALGORITHMS` is the ceiling); ``iss`` a
configured issuer; ``kid`` one of that issuer's keys, of the key type the algorithm needs;
the signature (PyJWT on ``cryptography``, nothing home-made); ``aud``; the claim shapes;
``exp``, ``nbf`` and ``iat`` against ``now`` with a leeway. The first failure raises
:class:`ExchangeRefused` (an :class:`~felix_core.access.AuthError` carrying the issuer and
subject the token *claims*, for the audit trail).

A verified token becomes an :class:`ExternalIdentity` (issuer, subject, groups, and for a
Kubernetes service-account token its namespace and name from the ``kubernetes.io`` claim).
The rules are tried in order and the first that matches decides the tenant, roles and
permissions (:func:`match_rule`); none matching is ``no_matching_rule``. The Felix token
(:func:`~felix_runtime.tokens.issue_token`, EdDSA with the broker's signing key) carries the
external subject, expires after the configured TTL (900 s by default) or with the identity
token, whichever is first, and is read back by a verifier that trusts the signing key, so
the principal returned is exactly what the token says.

No I/O and no clock in the exchange itself: keys come from a :class:`KeySource` (a fixed
set read from a JWKS file, or :class:`felix_runtime.jwks_fetch.JwksCache` for keys fetched
over HTTPS) and ids from an injected function. :func:`load_exchange_config` reads the
issuers and rules from a TOML document; the files it names are read through the
``read_file`` it is given.
:func:`broker_exchange` builds a broker's exchange from its configuration (it reads the
files, and starts fetching keys of a ``jwks_url``) as the session's
:data:`~felix_server.access.Exchange` seam (:func:`exchange_seam`).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from felix_core.access import AuthError, AuthReason, Permission, Principal, match_pattern
from felix_core.names import is_valid_name
from felix_core.rbac import MAX_MEMBER_CHARS
from felix_proto.errors import ErrorCode
from felix_runtime.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    TokenVerifier,
    issue_token,
    jwks_entries,
    key_id,
    load_private_key,
)
from felix_server.access import Exchange, ExchangeRefusal, TokenGranted
from felix_server.config import ConfigError, ServerConfig

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_EXCHANGE_TTL",
    "MAX_ID_TOKEN_BYTES",
    "MAX_SUBJECT_CHARS",
    "ClaimRule",
    "ExchangeRefused",
    "Exchanged",
    "ExternalIdentity",
    "ExternalIssuer",
    "ExternalKey",
    "KeySource",
    "StaticKeys",
    "TokenExchanger",
    "broker_exchange",
    "exchange_seam",
    "load_exchange_config",
    "match_rule",
    "read_external_jwks",
    "signing_key",
]

logger = logging.getLogger("felix.exchange")

ALLOWED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
"""Every algorithm an external issuer may be trusted with; ``none`` and HMAC never."""
DEFAULT_EXCHANGE_TTL = 900.0
"""Seconds a Felix token made by an exchange lives, unless configured otherwise."""
MAX_ID_TOKEN_BYTES = 16384
"""A longer identity token is refused as malformed before any decoding."""
_MIN_RSA_BITS = 2048
MAX_SUBJECT_CHARS = 1024
"""A longer ``sub`` is refused as malformed (the Felix token carries it)."""

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | Ed25519PublicKey


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalKey:
    """One trusted key of an external issuer and the one algorithm it verifies."""

    algorithm: str
    """``RS256``, ``ES256`` or ``EdDSA``."""
    key: PublicKey
    """The public key."""


class KeySource(Protocol):
    """Where an issuer's keys come from."""

    def key(self, kid: str | None, now: float) -> ExternalKey | None:
        """The key named ``kid`` (None: the token names none; the only key, if there is
        one), or None when there is no such key (a fetching source may go and look)."""


@dataclass(frozen=True, slots=True)
class StaticKeys:
    """A fixed set of keys by ``kid`` (a JWKS file)."""

    keys: Mapping[str, ExternalKey]

    def key(self, kid: str | None, now: float) -> ExternalKey | None:
        """See :meth:`KeySource.key`."""
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)


def _algorithm_of(entry: Mapping[str, Any]) -> str | None:
    """The one algorithm a JWK is trusted for, or None for a key Felix does not use."""
    kty, crv = entry.get("kty"), entry.get("crv")
    if kty == "RSA":
        implied = "RS256"
    elif kty == "EC" and crv == "P-256":
        implied = "ES256"
    elif kty == "OKP" and crv == "Ed25519":
        implied = "EdDSA"
    else:
        return None
    return implied if entry.get("alg", implied) == implied else None


def read_external_jwks(document: bytes | str) -> dict[str, ExternalKey]:
    """Read an external issuer's JWKS document: RSA (at least 2048 bits, RS256), EC P-256
    (ES256) and Ed25519 (EdDSA) public keys by ``kid``.

    Keys Felix does not verify with are skipped, as an identity provider may publish them
    beside the ones it signs ID tokens with: keys not for signatures (``use`` other than
    ``sig``) and keys for other algorithms (``RS384``, ``PS256``, EC P-384 ...). What is
    wrong refuses the whole document: a symmetric (``oct``) key or a private part (a secret
    published by mistake), a missing or repeated ``kid``, a key that does not load.

    Raises:
        ValueError: the message names the key's position and the problem.
    """
    keys: dict[str, ExternalKey] = {}
    for index, entry in enumerate(jwks_entries(document)):
        where = f"JWKS key {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: not a JSON object")
        if entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{where}: needs a kid")
        if kid in keys:
            raise ValueError(f"{where}: kid {kid!r} appears twice")
        if entry.get("kty") == "oct" or any(part in entry for part in ("d", "p", "q", "k")):
            raise ValueError(f"{where}: holds a private or symmetric key; publish public keys")
        alg = _algorithm_of(entry)
        if alg is None:
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"{where}: RSA key of {key.key_size} bits (at least 2048)")
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | Ed25519PublicKey):
            raise ValueError(f"{where}: not a public key")
        keys[kid] = ExternalKey(alg, key)
    return keys


def _fits(algorithm: str, key: PublicKey) -> bool:
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    return isinstance(key, Ed25519PublicKey)


# -- issuers, identities and rules ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalIssuer:
    """An identity provider whose tokens may be exchanged."""

    issuer: str
    """Its ``iss`` (for a Kubernetes cluster, its service-account issuer URL)."""
    audience: str
    """The ``aud`` its tokens must name to be exchanged here."""
    keys: KeySource
    """Its signing keys."""
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    """The algorithms accepted from it (a subset of :data:`ALLOWED_ALGORITHMS`)."""
    groups_claim: str = "groups"
    """The claim holding its group names (a list of strings)."""

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ValueError("an external issuer needs an issuer and an audience")
        unknown = [a for a in self.algorithms if a not in ALLOWED_ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(
                f"issuer {self.issuer}: algorithms must be among "
                f"{', '.join(ALLOWED_ALGORITHMS)}, not {unknown or 'none'}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalIdentity:
    """Who a verified identity token says its holder is."""

    issuer: str
    """``iss``."""
    subject: str
    """``sub``."""
    groups: tuple[str, ...] = ()
    """The issuer's groups claim."""
    namespace: str | None = None
    """A Kubernetes service account's namespace (``kubernetes.io.namespace``)."""
    service_account: str | None = None
    """A Kubernetes service account's name (``kubernetes.io.serviceaccount.name``)."""
    expires_at: float
    """``exp``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRule:
    """When it matches (every condition given must hold; patterns use ``*`` as in
    permissions), and what the holder becomes: a tenant, roles and permissions."""

    tenant: str
    """The tenant of the Felix token."""
    roles: tuple[str, ...] = ()
    """Role names carried by the token (resolved by RBAC)."""
    permissions: tuple[Permission, ...] = ()
    """Permissions carried by the token."""
    issuer: str | None = None
    """Only tokens of this issuer (exact)."""
    subject: str | None = None
    """Pattern the ``sub`` must match."""
    group: str | None = None
    """Pattern one of the groups must match."""
    namespace: str | None = None
    """Pattern a Kubernetes service account's namespace must match (only service-account
    tokens match a rule that names it)."""
    service_account: str | None = None
    """Pattern a Kubernetes service account's name must match (likewise)."""

    def __post_init__(self) -> None:
        if not is_valid_name(self.tenant):
            raise ValueError(f"invalid tenant name {self.tenant!r}")
        for role in self.roles:
            if not is_valid_name(role):
                raise ValueError(f"invalid role name {role!r}")
        if not (self.roles or self.permissions):
            raise ValueError(f"a rule for tenant {self.tenant} grants no role or permission")

    def matches(self, identity: ExternalIdentity) -> bool:
        """Say whether this rule applies to ``identity``."""
        if self.issuer is not None and identity.issuer != self.issuer:
            return False
        if self.subject is not None and not match_pattern(self.subject, identity.subject):
            return False
        if self.group is not None:
            group = self.group
            if not any(match_pattern(group, g) for g in identity.groups):
                return False
        for pattern, value in (
            (self.namespace, identity.namespace),
            (self.service_account, identity.service_account),
        ):
            if pattern is not None and (value is None or not match_pattern(pattern, value)):
                return False
        return True


def match_rule(rules: Sequence[ClaimRule], identity: ExternalIdentity) -> ClaimRule | None:
    """The first rule that matches ``identity``, or None."""
    return next((rule for rule in rules if rule.matches(identity)), None)


# -- the exchange ---------------------------------------------------------------------------


class ExchangeRefused(AuthError):
    """An identity token was refused. ``issuer`` and ``subject`` are what the token
    *claims* (unverified when the refusal came before the signature), for the audit trail;
    None when it does not say."""

    def __init__(
        self, reason: AuthReason, message: str, *, issuer: str | None, subject: str | None
    ) -> None:
        super().__init__(reason, message)
        self.issuer = issuer
        self.subject = subject


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchanged:
    """A successful exchange."""

    token: str
    """The Felix token."""
    principal: Principal
    """What it vouches for."""
    identity: ExternalIdentity
    """Who presented the identity token."""


def _claimed(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ExchangeRefused(
            AuthReason.MALFORMED, f"not a JWT: {exc}", issuer=None, subject=None
        ) from None
    return header, claims


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class TokenExchanger:
    """Exchanges identity tokens of trusted issuers for Felix tokens (module docstring).

    Args:
        issuers: the external issuers trusted.
        rules: the claim-mapping rules, in order (the first match wins).
        signing_key: the broker's Ed25519 key that signs Felix tokens.
        felix_issuer: ``iss`` of the Felix tokens (the broker's ``auth_issuer``).
        audience: ``aud`` of the Felix tokens (the broker's ``auth_audience``).
        ttl: seconds a Felix token lives (at most as long as the identity token).
        leeway: seconds of clock skew tolerated on the identity token's times.
        new_id: makes each Felix token's ``jti``.

    Raises:
        ValueError: no issuer, two issuers with one ``iss``, or a ttl that is not positive.
    """

    def __init__(
        self,
        issuers: Iterable[ExternalIssuer],
        rules: Sequence[ClaimRule],
        signing_key: Ed25519PrivateKey,
        *,
        felix_issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        ttl: float = DEFAULT_EXCHANGE_TTL,
        leeway: float = 5.0,
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        self._issuers: dict[str, ExternalIssuer] = {}
        for issuer in issuers:
            if issuer.issuer in self._issuers:
                raise ValueError(f"issuer {issuer.issuer} is configured twice")
            self._issuers[issuer.issuer] = issuer
        if not self._issuers:
            raise ValueError("a token exchanger needs at least one external issuer")
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl}")
        self.rules = tuple(rules)
        self._key = signing_key
        self.felix_issuer = felix_issuer
        self.audience = audience
        self.ttl = float(ttl)
        self.leeway = float(leeway)
        self._new_id = new_id
        public = signing_key.public_key()
        self._own = TokenVerifier(
            {felix_issuer: {key_id(public): public}}, audience=audience, leeway=0.0
        )

    @property
    def issuers(self) -> tuple[str, ...]:
        """The ``iss`` of every trusted external issuer."""
        return tuple(self._issuers)

    def exchange(self, id_token: str | None, now: float) -> Exchanged:
        """Check ``id_token`` at ``now``, map it by the rules and sign a Felix token.

        Raises:
            ExchangeRefused: the reason of the first check that failed (module docstring),
                or ``no_matching_rule``.
        """
        identity = self.verify(id_token, now)
        rule = match_rule(self.rules, identity)
        if rule is None:
            raise ExchangeRefused(
                AuthReason.NO_MATCHING_RULE,
                "no claim-mapping rule matches this identity",
                issuer=identity.issuer,
                subject=identity.subject,
            )
        lifetime = min(self.ttl, identity.expires_at - now)
        token = issue_token(
            self._key,
            subject=identity.subject,
            tenant=rule.tenant,
            now=now,
            ttl=max(1.0, lifetime),
            token_id=self._new_id(),
            permissions=rule.permissions,
            roles=rule.roles,
            groups=[
                g for g in identity.groups if 0 < len(g) <= MAX_MEMBER_CHARS and g.isprintable()
            ],
            issuer=self.felix_issuer,
            audience=self.audience,
        )
        try:
            principal = self._own.verify(token, now)
        except AuthError as exc:  # what it signed does not read back (too large ...)
            raise ExchangeRefused(
                exc.reason,
                f"the Felix token cannot be made: {exc}",
                issuer=identity.issuer,
                subject=identity.subject,
            ) from None
        return Exchanged(token=token, principal=principal, identity=identity)

    def verify(self, id_token: str | None, now: float) -> ExternalIdentity:
        """Check an identity token (everything but the rules).

        Raises:
            ExchangeRefused: why not.
        """
        if id_token is None or not id_token.strip():
            raise ExchangeRefused(
                AuthReason.MISSING, "no identity token", issuer=None, subject=None
            )
        if len(id_token) > MAX_ID_TOKEN_BYTES:
            raise ExchangeRefused(
                AuthReason.MALFORMED,
                f"identity token longer than {MAX_ID_TOKEN_BYTES} bytes",
                issuer=None,
                subject=None,
            )
        header, unverified = _claimed(id_token)
        claimed_iss, claimed_sub = _text(unverified.get("iss")), _text(unverified.get("sub"))

        def refuse(reason: AuthReason, message: str) -> ExchangeRefused:
            return ExchangeRefused(reason, message, issuer=claimed_iss, subject=claimed_sub)

        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise refuse(AuthReason.ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not allowed")
        if claimed_iss is None:
            raise refuse(AuthReason.MALFORMED, "missing or non-string claim 'iss'")
        issuer = self._issuers.get(claimed_iss)
        if issuer is None:
            raise refuse(AuthReason.WRONG_ISSUER, f"issuer {claimed_iss!r} is not trusted")
        if alg not in issuer.algorithms:
            raise refuse(
                AuthReason.ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not accepted from {claimed_iss}"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise refuse(AuthReason.MALFORMED, "header 'kid' is not a string")
        found = issuer.keys.key(kid, now)
        if found is None:
            raise refuse(AuthReason.UNKNOWN_KEY, f"issuer {claimed_iss!r} has no key {kid!r}")
        if found.algorithm != alg or not _fits(alg, found.key):
            raise refuse(
                AuthReason.ALGORITHM_NOT_ALLOWED, f"key {kid!r} is for {found.algorithm}, not {alg}"
            )
        try:
            claims = jwt.decode(
                id_token,
                found.key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.issuer,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["iss", "sub", "aud", "exp"],
                },
            )
        except jwt.InvalidSignatureError:
            raise refuse(AuthReason.BAD_SIGNATURE, "signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise refuse(
                AuthReason.WRONG_AUDIENCE, f"audience is not {issuer.audience!r}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise refuse(AuthReason.WRONG_AUDIENCE, "token has no audience") from None
            raise refuse(AuthReason.MALFORMED, f"missing claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise refuse(AuthReason.MALFORMED, str(exc)) from None
        try:
            identity = _identity(claims, issuer)
        except ValueError as exc:
            raise refuse(AuthReason.MALFORMED, str(exc)) from None
        if identity.expires_at <= now - self.leeway:
            raise refuse(AuthReason.EXPIRED, f"identity token expired at {identity.expires_at:g}")
        for name in ("nbf", "iat"):
            value = _number(claims, name)
            if value is not None and value > now + self.leeway:
                raise refuse(AuthReason.NOT_YET_VALID, f"identity token not valid before {value:g}")
        return identity


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"claim {name!r} is not a number")
    return float(value)


def _identity(claims: Mapping[str, Any], issuer: ExternalIssuer) -> ExternalIdentity:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise ValueError("claim 'sub' must be a non-empty string")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise ValueError(f"claim 'sub' is longer than {MAX_SUBJECT_CHARS} characters")
    groups = claims.get(issuer.groups_claim, [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"claim {issuer.groups_claim!r} must be a list of strings")
    namespace = account = None
    kube = claims.get("kubernetes.io")
    if kube is not None:
        sa = kube.get("serviceaccount") if isinstance(kube, dict) else None
        namespace = kube.get("namespace") if isinstance(kube, dict) else None
        account = sa.get("name") if isinstance(sa, dict) else None
        if not (isinstance(namespace, str) and isinstance(account, str)):
            raise ValueError("claim 'kubernetes.io' lacks a namespace and a serviceaccount name")
    expires_at = _number(claims, "exp")
    assert expires_at is not None  # required
    return ExternalIdentity(
        issuer=issuer.issuer,
        subject=subject,
        groups=tuple(groups),
        namespace=namespace,
        service_account=account,
        expires_at=expires_at,
    )


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    """What :func:`load_exchange_config` read."""

    issuers: tuple[ExternalIssuer, ...]
    rules: tuple[ClaimRule, ...]
    remote: tuple[KeySource, ...] = field(default=())
    """The key sources that fetch over HTTPS (to start and stop with the broker)."""


_ISSUER_KEYS = {"issuer", "audience", "jwks_file", "jwks_url", "algorithms", "groups_claim"}
_RULE_KEYS = {
    "tenant",
    "roles",
    "permissions",
    "issuer",
    "subject",
    "group",
    "namespace",
    "service_account",
}


def load_exchange_config(
    document: bytes | str,
    *,
    read_file: Callable[[str], bytes],
    remote_keys: Callable[[str], KeySource] | None = None,
) -> ExchangeConfig:
    """Read the issuers and rules of a token exchange from TOML (docs/security.md, "Token
    exchange"): ``[[issuer]]`` tables (``issuer``, ``audience``, ``jwks_file`` or
    ``jwks_url``, optional ``algorithms`` and ``groups_claim``) and ``[[rule]]`` tables
    (conditions ``issuer``, ``subject``, ``group``, ``namespace``, ``service_account``;
    results ``tenant``, ``roles``, ``permissions``).

    Args:
        document: the TOML text.
        read_file: reads a ``jwks_file``.
        remote_keys: makes the key source of a ``jwks_url`` (None: ``jwks_url`` is refused).

    Raises:
        ValueError: anything wrong, the message naming the table by position.
    """
    text = document.decode() if isinstance(document, bytes) else document
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None
    extra = set(data) - {"issuer", "rule"}
    if extra:
        raise ValueError(f"unknown table {sorted(extra)[0]!r} (use [[issuer]] and [[rule]])")
    issuers: list[ExternalIssuer] = []
    remote: list[KeySource] = []
    for index, table in enumerate(_tables(data, "issuer")):
        where = f"issuer {index + 1}"
        _only(table, _ISSUER_KEYS, where)
        source: KeySource
        if ("jwks_file" in table) == ("jwks_url" in table):
            raise ValueError(f"{where}: give exactly one of jwks_file and jwks_url")
        if "jwks_file" in table:
            path = _str(table, "jwks_file", where)
            try:
                source = StaticKeys(read_external_jwks(read_file(path)))
            except OSError as exc:
                raise ValueError(f"{where}: {path}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise ValueError(f"{where}: {path}: {exc}") from None
        else:
            url = _str(table, "jwks_url", where)
            if remote_keys is None:
                raise ValueError(f"{where}: jwks_url is not available here")
            source = remote_keys(url)
            remote.append(source)
        try:
            issuers.append(
                ExternalIssuer(
                    issuer=_str(table, "issuer", where),
                    audience=_str(table, "audience", where),
                    keys=source,
                    algorithms=tuple(_strs(table, "algorithms", where) or ALLOWED_ALGORITHMS),
                    groups_claim=str(table.get("groups_claim", "groups")),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not issuers:
        raise ValueError("no [[issuer]] configured")
    rules: list[ClaimRule] = []
    for index, table in enumerate(_tables(data, "rule")):
        where = f"rule {index + 1}"
        _only(table, _RULE_KEYS, where)
        try:
            conditions = {
                key: _str(table, key, where)
                for key in ("issuer", "subject", "group", "namespace", "service_account")
                if key in table
            }
            rules.append(
                ClaimRule(
                    tenant=_str(table, "tenant", where),
                    roles=tuple(_strs(table, "roles", where)),
                    permissions=tuple(
                        Permission.parse(p) for p in _strs(table, "permissions", where)
                    ),
                    **conditions,
                )
            )
        except ValueError as exc:
            message = str(exc)
            raise ValueError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None
    if not rules:
        raise ValueError("no [[rule]] configured: every exchange would be refused")
    return ExchangeConfig(tuple(issuers), tuple(rules), tuple(remote))


def _tables(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    tables = data.get(name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{name} must be an array of tables ([[{name}]])")
    return tables


def _only(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _str(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key} must be a non-empty string")
    return value


def _strs(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key} must be a list of strings")
    return value


# -- a broker's exchange --------------------------------------------------------------------


def signing_key(
    config: ServerConfig, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> Ed25519PrivateKey | None:
    """The broker's token-signing key (``auth_signing_key``), or None.

    Raises:
        ConfigError: the file cannot be read or is not an unencrypted Ed25519 private key.
    """
    path = config.auth_signing_key
    if path is None:
        return None
    try:
        return load_private_key(read_file(path))
    except OSError as exc:
        raise ConfigError(f"auth_signing_key: {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"auth_signing_key: {path}: {exc}") from None


def exchange_seam(exchanger: TokenExchanger) -> Exchange:
    """The session's :data:`~felix_server.access.Exchange` for ``exchanger``: a refusal
    becomes ``UNAUTHENTICATED``, ``missing or invalid token (REASON)``, ``details.reason``."""

    def exchange(id_token: str, now: float) -> TokenGranted | ExchangeRefusal:
        try:
            done = exchanger.exchange(id_token, now)
        except ExchangeRefused as exc:
            return ExchangeRefusal(
                code=ErrorCode.UNAUTHENTICATED,
                message=f"missing or invalid token ({exc.reason})",
                details={"reason": str(exc.reason)},
                issuer=exc.issuer,
                subject=exc.subject,
            )
        return TokenGranted(
            token=done.token,
            principal=done.principal,
            issuer=done.identity.issuer,
            subject=done.identity.subject,
        )

    return exchange


def broker_exchange(
    config: ServerConfig,
    read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes(),
    *,
    fetch_keys: bool = True,
) -> Exchange | None:
    """The token exchange a broker with ``config`` offers, or None (no ``auth_exchange``).

    Reads the exchange file and the JWKS files it names. Issuers with a ``jwks_url`` get a
    :class:`~felix_runtime.jwks_fetch.JwksCache`, whose first fetch starts at once in the
    background when ``fetch_keys`` (a configuration check passes False).

    Raises:
        ConfigError: the file cannot be read, or anything in it is wrong (the message names
        ``auth_exchange``, the file and the table).
    """
    from felix_runtime.jwks_fetch import JwksCache  # imports this module: not at the top

    path = config.auth_exchange
    if path is None:
        return None
    key = signing_key(config, read_file)
    assert key is not None  # validate() requires it

    def remote(url: str) -> KeySource:
        def failed(where: str, exc: Exception) -> None:
            logger.warning("token exchange: cannot fetch the keys of %s: %s", where, exc)

        return JwksCache(url, clock=time.time, on_error=failed)

    try:
        loaded = load_exchange_config(read_file(path), read_file=read_file, remote_keys=remote)
        exchanger = TokenExchanger(
            loaded.issuers,
            loaded.rules,
            key,
            felix_issuer=config.auth_issuer,
            audience=config.auth_audience,
            ttl=config.auth_exchange_ttl_s,
        )
    except OSError as exc:
        raise ConfigError(f"auth_exchange: {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"auth_exchange: {path}: {exc}") from None
    if fetch_keys:
        for source in loaded.remote:
            if isinstance(source, JwksCache):
                source.key(None, time.time())  # a miss: starts the first fetch
    return exchange_seam(exchanger)
