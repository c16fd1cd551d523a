"""Who a client is and what it may do, as the engine sees it: principals and permissions.

Theory of operation
-------------------
Authentication (turning a credential into a :class:`Principal`) happens outside the pure
layers: Felix tokens in :mod:`felix_runtime.tokens`, shared secrets in
:mod:`felix_runtime.credentials`. What they produce, and what a refusal looks like, lives
here, because authorization is decided in the pure core: a :class:`Principal` carries its
subject, its one tenant, role names and its own :class:`Permission` grants, and
:meth:`Principal.allows` answers whether an action on a resource is covered.

A :class:`Permission` is an action (``publish``, ``subscribe``, ``enqueue``, ``consume``,
``cache.read``, ``cache.write``, ``admin``, or ``*`` for all of them) on a resource
pattern ``namespace/name`` in which ``*`` stands for any run of name characters, inside
the principal's one tenant. Roles and groups are carried as names, for the RBAC layer
(:mod:`felix_core.rbac`) to resolve into more permissions.

Authorization of one request is :func:`authorize`: the server glue names what a request
does (an :class:`Access`: the action, the kind of resource and its path) and gets back
None (allowed) or the engine error to answer with. Two rules, in this order:

1. Tenant isolation. A principal acts in its own tenant only (an operator, the principal of
   a broker without authentication, in every tenant). A request that names another tenant
   gets exactly the ``NOT_FOUND`` the engine gives when that tenant does not exist, so
   another tenant's resources cannot be told from absent ones.
2. Permissions. In its own tenant, the principal's permissions must cover the action on the
   resource; otherwise ``FORBIDDEN``, naming the missing permission.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal

from felix_core.errors import EngineError, NotFound
from felix_core.names import is_valid_name
from felix_proto.errors import ErrorCode

__all__ = [
    "ANONYMOUS",
    "ANY_ACTION",
    "Access",
    "Action",
    "AuthError",
    "AuthReason",
    "Permission",
    "Principal",
    "authorize",
    "match_pattern",
]


# -- errors ---------------------------------------------------------------------------------


class AuthReason(enum.StrEnum):
    """Why a credential was refused (``AuthError.reason``)."""

    MISSING = "missing"
    """No credential at all."""
    MALFORMED = "malformed"
    """Not a well-formed token, or a claim missing or of the wrong shape."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not verify with the key the token names."""
    UNKNOWN_KEY = "unknown_key"
    """The token's ``kid`` is not among its issuer's trusted keys."""
    EXPIRED = "expired"
    """``exp`` has passed (beyond the leeway)."""
    NOT_YET_VALID = "not_yet_valid"
    """``nbf`` or ``iat`` lies in the future (beyond the leeway)."""
    WRONG_ISSUER = "wrong_issuer"
    """``iss`` is not a trusted issuer."""
    WRONG_AUDIENCE = "wrong_audience"
    """``aud`` does not name this broker's audience."""
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    """``alg`` is anything but EdDSA (``none``, HS256, RS256 ...)."""
    BAD_SECRET = "bad_secret"
    """A shared secret that is not configured."""
    OPERATOR_NOT_ALLOWED = "operator_not_allowed"
    """An ``operator`` claim from an issuer not trusted for operator tokens."""
    NO_MATCHING_RULE = "no_matching_rule"
    """A token exchange: the identity token is valid but no claim-mapping rule matches."""


class AuthError(Exception):
    """A credential was refused. ``reason`` says why; the message is for logs and never
    contains the credential itself.

    The session answers it with ``Error(UNAUTHENTICATED)``; telling the client the reason
    code is safe (it reveals nothing about the trusted keys or secrets).
    """

    def __init__(self, reason: AuthReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- permissions ----------------------------------------------------------------------------


class Action(enum.StrEnum):
    """What a permission allows."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ENQUEUE = "enqueue"
    CONSUME = "consume"
    CACHE_READ = "cache.read"
    CACHE_WRITE = "cache.write"
    ADMIN = "admin"


ANY_ACTION: Literal["*"] = "*"
"""The action of a permission that allows every action."""
_PATTERN = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9._*-]{0,127}")


def match_pattern(pattern: str, value: str) -> bool:
    """Say whether ``value`` matches ``pattern``, where ``*`` stands for any run of
    characters (empty included) and every other character for itself.

    ``?`` and ``[...]`` mean nothing special (unlike :mod:`fnmatch`); a resource path is
    matched part by part, so ``*`` never crosses the ``/`` between namespace and name.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == value
    first, last = pieces[0], pieces[-1]
    if len(value) < len(first) + len(last):
        return False
    if not (value.startswith(first) and value.endswith(last)):
        return False
    pos, end = len(first), len(value) - len(last)
    for piece in pieces[1:-1]:
        found = value.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


@dataclass(frozen=True, slots=True)
class Permission:
    """One grant: an action on the resources whose ``namespace/name`` match the patterns,
    inside the principal's tenant. Written ``ACTION:NAMESPACE/NAME`` (``ACTION`` alone means
    ``ACTION:*/*``), e.g. ``publish:default/orders``, ``subscribe:billing/invoices-*``,
    ``cache.read:*/*``, ``*`` (every action everywhere)."""

    action: Action | Literal["*"]
    """The action allowed, or ``*`` for every action."""
    namespace: str = "*"
    """Pattern for the namespace (``*`` wildcards)."""
    name: str = "*"
    """Pattern for the stream, queue or cache name (``*`` wildcards)."""

    def __post_init__(self) -> None:
        if self.action != ANY_ACTION:
            object.__setattr__(self, "action", Action(self.action))  # "publish" -> Action
        for what, pattern in (("namespace", self.namespace), ("name", self.name)):
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
                raise ValueError(
                    f"invalid {what} pattern {pattern!r}: use 1-128 characters of "
                    "A-Z a-z 0-9 . _ - and *, not starting with '.' or '-'"
                )

    @classmethod
    def parse(cls, text: str) -> Permission:
        """Read ``ACTION[:NAMESPACE/NAME]``.

        Raises:
            ValueError: an unknown action or a bad pattern (the message says which).
        """
        action_text, sep, resource = text.strip().partition(":")
        action: Action | Literal["*"]
        if action_text == ANY_ACTION:
            action = ANY_ACTION
        else:
            try:
                action = Action(action_text)
            except ValueError:
                known = ", ".join([a.value for a in Action] + ["*"])
                raise ValueError(
                    f"invalid permission {text!r}: unknown action {action_text!r} (one of {known})"
                ) from None
        if not sep:
            return cls(action)
        namespace, slash, name = resource.partition("/")
        if not slash:
            raise ValueError(
                f"invalid permission {text!r}: the resource is NAMESPACE/NAME "
                "(use */* for every resource)"
            )
        try:
            return cls(action, namespace, name)
        except ValueError as exc:
            raise ValueError(f"invalid permission {text!r}: {exc}") from None

    def __str__(self) -> str:
        return f"{self.action}:{self.namespace}/{self.name}"

    def allows(self, action: Action, namespace: str, name: str) -> bool:
        """Say whether this grant covers ``action`` on ``namespace/name``."""
        return (
            self.action in (ANY_ACTION, action)
            and match_pattern(self.namespace, namespace)
            and match_pattern(self.name, name)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated client: who it is, its one tenant, and what it may do there."""

    subject: str
    """Who (``sub``; for a shared secret, ``shared-secret:N`` with N its position)."""
    tenant: str
    """The one tenant this principal acts in."""
    roles: tuple[str, ...] = ()
    """Role names (a token's ``roles`` claim), resolved to permissions by
    :class:`~felix_core.rbac.RoleBook`, not here."""
    groups: tuple[str, ...] = ()
    """Group names (a token's ``groups`` claim): roles bound to a group apply to its
    members (:class:`~felix_core.rbac.RoleBook`)."""
    permissions: frozenset[Permission] = frozenset()
    """The grants carried by the credential itself (with those of its roles once
    resolved by :meth:`~felix_core.rbac.RoleBook.resolve`)."""
    expires_at: float | None = None
    """When the rights end (``exp``, seconds since the epoch); None: never."""
    issuer: str
    """Who vouched for it (``iss``; ``auth_tokens`` for a shared secret)."""
    token_id: str | None = None
    """``jti``, for audit and revocation lists."""
    operator: bool = False
    """Acts in every tenant with every permission (a broker without authentication)."""

    def allows(self, action: Action | str, namespace: str, name: str) -> bool:
        """Say whether one of the principal's own permissions covers ``action`` on the
        resource ``namespace/name`` of its tenant. Pure; checking that the resource is in
        :attr:`tenant` is the caller's business.

        Raises:
            ValueError: ``action`` is not an :class:`Action` (a local programming error).
        """
        wanted = Action(action)
        if self.operator:
            return True
        return any(p.allows(wanted, namespace, name) for p in self.permissions)

    def acts_in(self, tenant: str) -> bool:
        """Say whether the principal may act in ``tenant`` (its own, or any for an
        operator)."""
        return self.operator or tenant == self.tenant


ANONYMOUS = Principal(subject="anonymous", tenant="", issuer="none", operator=True)
"""The principal of every connection of a broker without authentication: an operator."""


# -- authorization --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """What one request does, as authorization sees it."""

    action: Action
    """The permission it needs."""
    kind: str
    """The kind of resource it names: ``stream``, ``queue``, ``cache``, ``namespace``,
    ``tenant``, ``role`` or ``binding``."""
    tenant: str
    """The tenant it names (empty: every tenant, listing tenants)."""
    namespace: str = ""
    """The namespace it names (empty for a tenant)."""
    name: str = ""
    """The resource name (empty for tenants and namespaces; ``*`` for a listing)."""
    parent: bool = False
    """The engine looks the parent up first (create, list): an absent tenant is answered
    as an absent parent."""


def authorize(principal: Principal, access: Access) -> EngineError | None:
    """Decide one request (see the module docstring).

    Returns:
        None when it is allowed, else the error to answer it with: ``NOT_FOUND`` (another
        tenant, answered as if it did not exist) or ``FORBIDDEN`` (a missing permission).
    """
    tenant = access.tenant
    if not principal.acts_in(tenant):
        if access.kind == "tenant" and (access.parent or not tenant):
            # creating or listing tenants: an operator's business (whether it exists or not)
            return EngineError(
                ErrorCode.FORBIDDEN,
                "only an operator manages tenants",
                details={"action": str(Action.ADMIN)},
            )
        if is_valid_name(tenant):
            return _absent(access)
        # an invalid name cannot exist: the engine refuses it without looking anything up
        return None
    if principal.allows(access.action, access.namespace, access.name):
        return None
    permission = f"{access.action}:{access.namespace}/{access.name}"
    return EngineError(
        ErrorCode.FORBIDDEN,
        f"missing permission {permission}",
        details={"action": str(access.action), "permission": permission},
    )


def _absent(access: Access) -> NotFound:
    """The engine's answer to ``access`` when its tenant does not exist."""
    tenant, namespace, kind = access.tenant, access.namespace, access.kind
    if access.parent and kind in ("namespace", "stream", "queue", "cache", "role", "binding"):
        if kind in ("namespace", "role", "binding") or access.name != "*":
            # a create, or listing namespaces, roles or bindings: the tenant is looked up
            return NotFound(f"tenant {tenant} not found", details={"kind": "tenant"})
        return NotFound(f"namespace {tenant}/{namespace} not found", details={"kind": "namespace"})
    path = "/".join(p for p in (tenant, namespace, access.name) if p)
    return NotFound(f"{kind} {path} not found", details={"kind": kind})
