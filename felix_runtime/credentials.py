"""Bearer credentials in ``Hello.token``: shared secrets (``auth_tokens``) and the one
entry point that takes either a shared secret or a Felix token.

Each configured shared secret maps to one tenant and a set of permissions
(:func:`parse_shared_secrets`); :class:`SharedSecretAuthenticator` compares in constant
time, against every entry, keeping only SHA-256 digests. :class:`BearerAuthenticator` puts
shared secrets and :class:`~felix_runtime.tokens.TokenVerifier` behind one call, the shape
a session's ``authenticate`` seam wants. No clock: ``now`` is a parameter.
:func:`broker_authenticator` builds a broker's authenticator from its configuration; it is
the one function here that reads files (the trusted keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from felix_core.access import ANY_ACTION, AuthError, AuthReason, Permission, Principal
from felix_core.names import is_valid_name
from felix_runtime.exchange import signing_key
from felix_runtime.tokens import TokenVerifier, key_id, load_public_key, read_jwks
from felix_server.access import Authenticate, CheckCredential, bearer
from felix_server.config import ConfigError, ServerConfig

__all__ = [
    "LEGACY_TENANT",
    "SHARED_SECRET_ISSUER",
    "BearerAuthenticator",
    "SharedSecret",
    "SharedSecretAuthenticator",
    "broker_authenticator",
    "broker_credentials",
    "metrics_credentials",
    "parse_shared_secrets",
]


# -- shared secrets -------------------------------------------------------------------------

SHARED_SECRET_ISSUER = "auth_tokens"
"""``Principal.issuer`` of a principal authenticated by a shared secret."""
LEGACY_TENANT = "default"
"""The tenant of a bare secret (an ``auth_tokens`` entry without a mapping)."""

_MAPPED = re.compile(r"(?P<secret>.+)=(?P<tenant>[^=:\s]*):(?P<grants>[^=]*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """One ``auth_tokens`` entry: what its holder is. The secret itself is kept only as a
    SHA-256 digest, so neither a repr nor a log line can show it."""

    position: int
    """1-based position in ``auth_tokens`` (names the entry in errors and subjects)."""
    tenant: str
    """The tenant its holder acts in."""
    permissions: frozenset[Permission]
    """What its holder may do there."""
    digest: bytes = field(repr=False)
    """SHA-256 of the secret."""
    operator: bool = False
    """A bare secret (the older form): its holder is an operator, as before."""


def parse_shared_secrets(text: str) -> tuple[SharedSecret, ...]:
    """Read the ``auth_tokens`` setting.

    Entries are separated by commas or newlines. An entry is either

    * ``SECRET=TENANT:PERMISSION PERMISSION ...``: the holder acts in ``TENANT`` with those
      permissions (space-separated, each ``ACTION[:NAMESPACE/NAME]``, see
      :class:`Permission`); or
    * a bare ``SECRET`` (no ``:``), the form ``auth_tokens`` had before permissions: it
      keeps meaning what it meant, an operator credential (every tenant, every
      permission; its own tenant is ``default``). The broker logs a warning for each.

    An entry with a ``:`` is a mapped one; the mapping starts after its last ``=``, so a
    secret may contain ``=`` (base64 padding) but a bare secret may not contain ``:``.

    Raises:
        ValueError: a malformed entry, an unknown action, a bad pattern or tenant, or the
        same secret twice. Messages name the entry by position, never by its secret.
    """
    entries: list[SharedSecret] = []
    seen: set[bytes] = set()
    raw = [e.strip() for e in re.split(r"[,\n]", text)]
    for position, entry in enumerate((e for e in raw if e), start=1):
        secret, tenant, permissions = _read_entry(entry, position)
        digest = hashlib.sha256(secret.encode()).digest()
        if digest in seen:
            raise ValueError(f"auth_tokens entry {position}: the same secret appears twice")
        seen.add(digest)
        bare = ":" not in entry
        entries.append(SharedSecret(position, tenant, permissions, digest, operator=bare))
    return tuple(entries)


def _read_entry(entry: str, position: int) -> tuple[str, str, frozenset[Permission]]:
    where = f"auth_tokens entry {position}"
    if ":" not in entry:
        return entry, LEGACY_TENANT, frozenset({Permission(ANY_ACTION)})
    found = _MAPPED.fullmatch(entry)
    if found is None:
        raise ValueError(
            f"{where}: expected SECRET=TENANT:PERMISSION ... (bare secrets have no ':')"
        )
    secret, tenant, grants = found["secret"].rstrip(), found["tenant"], found["grants"].split()
    if not is_valid_name(tenant):
        raise ValueError(f"{where}: invalid tenant name {tenant!r}")
    if not grants:
        raise ValueError(f"{where}: no permissions after '{tenant}:'")
    try:
        return secret, tenant, frozenset(Permission.parse(g) for g in grants)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


class SharedSecretAuthenticator:
    """Checks a bearer credential against the configured shared secrets.

    The credential's SHA-256 digest is compared with every entry's, each comparison in
    constant time and none skipped, so timing tells nothing about which entry matched or
    how close a guess came (the digests also hide the secrets' lengths).
    """

    def __init__(self, secrets: Sequence[SharedSecret]) -> None:
        self._secrets = tuple(secrets)

    @classmethod
    def from_setting(cls, text: str) -> SharedSecretAuthenticator:
        """Build one from the ``auth_tokens`` text (:func:`parse_shared_secrets`)."""
        return cls(parse_shared_secrets(text))

    def authenticate(self, secret: str | None) -> Principal:
        """Return the principal of ``secret``.

        Raises:
            AuthError: ``MISSING`` (no credential) or ``BAD_SECRET`` (not configured).
        """
        if not secret:
            raise AuthError(AuthReason.MISSING, "no token")
        digest = hashlib.sha256(secret.encode()).digest()
        matches = [s for s in self._secrets if hmac.compare_digest(digest, s.digest)]
        if not matches:
            raise AuthError(AuthReason.BAD_SECRET, "not a configured shared secret")
        entry = matches[0]
        return Principal(
            subject=f"shared-secret:{entry.position}",
            tenant=entry.tenant,
            permissions=entry.permissions,
            issuer=SHARED_SECRET_ISSUER,
            operator=entry.operator,
        )


# -- both -----------------------------------------------------------------------------------


class BearerAuthenticator:
    """One entry point for ``Hello.token``: a configured shared secret first, then a Felix
    token. Either may be absent (at least one must be given).

    Raises:
        ValueError: neither a verifier nor shared secrets.
    """

    def __init__(
        self,
        *,
        verifier: TokenVerifier | None = None,
        secrets: SharedSecretAuthenticator | None = None,
    ) -> None:
        if verifier is None and secrets is None:
            raise ValueError("a bearer authenticator needs a token verifier or shared secrets")
        self._verifier = verifier
        self._secrets = secrets

    def authenticate(self, credential: str | None, now: float) -> Principal:
        """Return the principal of ``credential`` at time ``now``.

        A credential that matches a shared secret is that secret's principal. Otherwise a
        credential shaped like a JWT (three dot-separated parts) goes to the verifier, and
        its refusal is the verifier's; anything else is ``BAD_SECRET`` (or ``MALFORMED``
        when only tokens are configured).

        Raises:
            AuthError: refused; ``reason`` says why.
        """
        if not credential:
            raise AuthError(AuthReason.MISSING, "no token")
        if self._secrets is not None:
            try:
                return self._secrets.authenticate(credential)
            except AuthError:
                if self._verifier is None or credential.count(".") != 2:
                    raise
        assert self._verifier is not None
        return self._verifier.verify(credential, now)


# -- a broker's authenticator ---------------------------------------------------------------


def broker_authenticator(
    config: ServerConfig, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> Authenticate | None:
    """The authenticator a broker with ``config`` uses, or None without authentication:
    :func:`broker_credentials` as a ``Hello`` authenticator.

    Raises:
        ConfigError: as :func:`broker_credentials`.
    """
    check = broker_credentials(config, read_file)
    return None if check is None else bearer(check)


def broker_credentials(
    config: ServerConfig, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> CheckCredential | None:
    """The bearer credential check of a broker with ``config`` (shared secrets and Felix
    tokens), or None without authentication. The QUIC handshake and ``/metrics``
    (:class:`felix_runtime.prometheus.Responder`) use the same one.

    Reads the trusted keys (``auth_issuer_keys``, ``auth_jwks`` for ``auth_issuer``;
    ``auth_operator_keys`` for ``auth_operator_issuer``, whose tokens alone may carry the
    ``operator`` claim) and parses ``auth_tokens``.

    Raises:
        ConfigError: a key file that cannot be read or is not an Ed25519 public key (PEM)
        or a JWKS, two keys with one ``kid``, or a malformed ``auth_tokens`` entry; the
        message names the setting (never a secret).
    """
    if not config.auth_enabled:
        return None
    keys = _pem_keys("auth_issuer_keys", config.issuer_key_files, read_file)
    if config.auth_jwks is not None:
        try:
            found = read_jwks(read_file(config.auth_jwks))
        except OSError as exc:
            raise ConfigError(f"auth_jwks: {config.auth_jwks}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"auth_jwks: {config.auth_jwks}: {exc}") from None
        for kid, key in found.items():
            if kid in keys and key_id(keys[kid]) != key_id(key):
                raise ConfigError(f"auth_jwks: kid {kid!r} names another key as well")
            keys[kid] = key
    own = signing_key(config, read_file)  # the broker trusts the key it signs with
    if own is not None:
        keys[key_id(own.public_key())] = own.public_key()
    trusted = {config.auth_issuer: keys} if keys else {}
    operator_keys = _pem_keys("auth_operator_keys", config.operator_key_files, read_file)
    if operator_keys:
        trusted[config.auth_operator_issuer] = operator_keys
    verifier = None
    if trusted:
        verifier = TokenVerifier(
            trusted,
            audience=config.auth_audience,
            operator_issuers=[config.auth_operator_issuer] if operator_keys else [],
        )
    secrets = None
    if config.auth_tokens is not None:
        try:
            entries = parse_shared_secrets(config.auth_tokens)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        secrets = SharedSecretAuthenticator(entries)
    if verifier is None and secrets is None:
        raise ConfigError("authentication is on but no key or shared secret is configured")
    return BearerAuthenticator(verifier=verifier, secrets=secrets).authenticate


def metrics_credentials(
    config: ServerConfig, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> CheckCredential | None:
    """What ``/metrics`` checks a bearer credential with, or None when it is open (no
    authentication and no ``metrics_tokens``): first the scrape-only ``metrics_tokens``
    (an operator's view of the metrics, and nothing else: no connection accepts them), then
    a Felix connection's credentials (:func:`broker_credentials`).

    Raises:
        ConfigError: as :func:`broker_credentials`.
    """
    connections = broker_credentials(config, read_file)
    if config.metrics_tokens is None:
        return connections
    scrapers = SharedSecretAuthenticator(
        [
            SharedSecret(position, LEGACY_TENANT, frozenset(), _sha256(secret), operator=True)
            for position, secret in enumerate(config.metrics_token_list, start=1)
        ]
    )

    def check(credential: str | None, now: float) -> Principal:
        try:
            return scrapers.authenticate(credential)
        except AuthError:
            if connections is None:
                raise
        return connections(credential, now)

    return check


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _pem_keys(
    setting: str, paths: list[str], read_file: Callable[[str], bytes]
) -> dict[str, Ed25519PublicKey]:
    """The PEM public keys of ``paths`` by ``kid``.

    Raises:
        ConfigError: a file that cannot be read or is not an Ed25519 public key (named with
        ``setting``).
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = load_public_key(read_file(path))
        except OSError as exc:
            raise ConfigError(f"{setting}: {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{setting}: {path}: {exc}") from None
        keys[key_id(key)] = key
    return keys
