"""Roles and bindings: the permissions a principal gets besides its credential's own.

Theory of operation
-------------------
A *role* is a named set of :class:`~felix_core.access.Permission` grants in one tenant; a
*binding* attaches one role to subjects and groups of that tenant. Both are resources
stored in metadata like streams and queues (kinds ``role`` and ``binding``, path
``(tenant, "", name)``), so they survive a restart through the metadata store and reach
the engine the way every record does: fed, whoever wrote them. Their settings are checked
by :func:`role_schema` and :func:`binding_schema`; :class:`RoleBook` is what the engine
keeps of them.

The *effective* permissions of a principal (:meth:`RoleBook.resolve`) are, in its own
tenant:

* the permissions of its credential (``Principal.permissions``);
* those of the roles its credential names (``Principal.roles``, a token's ``roles`` claim);
* those of the roles bound to its subject or to one of its groups (``Principal.groups``).

A role that does not exist grants nothing (yet: a binding may name a role created later).
An operator is not resolved: it may do everything already.

Resolution costs a walk over the tenant's bindings, so it is done once per change, not per
request: the server keeps each connection's resolved principal and resolves again when
:meth:`RoleBook.set_role` or :meth:`RoleBook.set_binding` reports that a tenant's roles or
bindings changed (and when a connection's credential is replaced). Checking a request
against the resolved principal is :func:`~felix_core.access.authorize`, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from felix_core.access import Permission, Principal
from felix_core.errors import InvalidArgument
from felix_core.names import is_valid_name
from felix_core.settings import Path, SettingsSchema, check_known

__all__ = [
    "MAX_BINDING_MEMBERS",
    "MAX_MEMBER_CHARS",
    "MAX_ROLE_PERMISSIONS",
    "Binding",
    "RoleBook",
    "binding_schema",
    "role_schema",
]

MAX_ROLE_PERMISSIONS = 256
"""Most permissions one role may hold."""
MAX_BINDING_MEMBERS = 256
"""Most subjects and groups (together) one binding may name."""
MAX_MEMBER_CHARS = 256
"""Longest subject or group name a binding may hold."""
_MAX_DESCRIPTION = 1024


# -- settings ---------------------------------------------------------------------------------


def _strings(value: Any, field: str) -> list[str]:
    """A list of strings, or one string of space-separated words (the shell's form)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(
        f"setting {field} must be a list of strings (or one space-separated string)",
        details={"field": field},
    )


def _description(merged: Mapping[str, Any]) -> str:
    text = merged.get("description", "")
    if not isinstance(text, str) or len(text) > _MAX_DESCRIPTION:
        raise InvalidArgument(
            f"description must be a string of at most {_MAX_DESCRIPTION} characters",
            details={"field": "description"},
        )
    return text


def role_schema() -> SettingsSchema:
    """Settings of a role: ``permissions`` (``ACTION:NAMESPACE/NAME`` each, at most
    :data:`MAX_ROLE_PERMISSIONS`; stored sorted, without repeats) and ``description``."""

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known("role", new, ("permissions", "description"))
        merged = {"permissions": [], "description": "", **(current or {}), **new}
        texts = _strings(merged["permissions"], "permissions")
        try:
            grants = sorted({str(Permission.parse(t)) for t in texts})
        except ValueError as exc:
            raise InvalidArgument(str(exc), details={"field": "permissions"}) from None
        if len(grants) > MAX_ROLE_PERMISSIONS:
            raise InvalidArgument(
                f"a role holds at most {MAX_ROLE_PERMISSIONS} permissions",
                details={"field": "permissions"},
            )
        return {"permissions": grants, "description": _description(merged)}

    return schema


def _members(value: Any, field: str) -> list[str]:
    members = sorted(set(_strings(value, field)))
    for member in members:
        if not member or len(member) > MAX_MEMBER_CHARS or not member.isprintable():
            raise InvalidArgument(
                f"{field}: {member[:40]!r} is not a name of 1-{MAX_MEMBER_CHARS} printable "
                "characters",
                details={"field": field},
            )
    return members


def binding_schema() -> SettingsSchema:
    """Settings of a binding: ``role`` (a role name in the same tenant; it need not exist
    yet), ``subjects`` and ``groups`` (at least one name between them, at most
    :data:`MAX_BINDING_MEMBERS`) and ``description``."""

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known("binding", new, ("role", "subjects", "groups", "description"))
        merged = {"subjects": [], "groups": [], "description": "", **(current or {}), **new}
        role = merged.get("role")
        if not isinstance(role, str) or not is_valid_name(role):
            raise InvalidArgument(
                "setting role must name a role (1-128 name characters)", details={"field": "role"}
            )
        subjects = _members(merged["subjects"], "subjects")
        groups = _members(merged["groups"], "groups")
        if not subjects and not groups:
            raise InvalidArgument(
                "a binding needs at least one subject or group", details={"field": "subjects"}
            )
        if len(subjects) + len(groups) > MAX_BINDING_MEMBERS:
            raise InvalidArgument(
                f"a binding names at most {MAX_BINDING_MEMBERS} subjects and groups",
                details={"field": "subjects"},
            )
        return {
            "role": role,
            "subjects": subjects,
            "groups": groups,
            "description": _description(merged),
        }

    return schema


# -- the book ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    """One binding as the book keeps it."""

    role: str
    """The role it grants."""
    subjects: frozenset[str]
    """Subjects (``sub``) it applies to."""
    groups: frozenset[str]
    """Groups (a token's ``groups``) it applies to."""


def _grants(texts: Iterable[Any]) -> frozenset[Permission]:
    """The permissions of a stored role; an entry that does not parse (a record written by
    another tool) grants nothing rather than stopping the engine."""
    out = set()
    for text in texts:
        try:
            out.add(Permission.parse(str(text)))
        except ValueError:
            continue
    return frozenset(out)


def _names(value: Any) -> frozenset[str]:
    """The names of a stored binding's ``subjects`` or ``groups`` (nothing unless a list)."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


class RoleBook:
    """The roles and bindings of every tenant, as the engine was fed them."""

    def __init__(self) -> None:
        self._roles: dict[str, dict[str, frozenset[Permission]]] = {}
        self._bindings: dict[str, dict[str, Binding]] = {}

    def set_role(self, tenant: str, name: str, settings: Mapping[str, Any] | None) -> bool:
        """A role appeared, changed or went (``settings`` None). Returns whether what it
        grants changed (the tenant's principals must then be resolved again)."""
        roles = self._roles.setdefault(tenant, {})
        before = roles.get(name)
        if settings is None:
            roles.pop(name, None)
            after = None
        else:
            after = roles[name] = _grants(settings.get("permissions") or ())
        if not roles:
            del self._roles[tenant]
        return before != after

    def set_binding(self, tenant: str, name: str, settings: Mapping[str, Any] | None) -> bool:
        """A binding appeared, changed or went (``settings`` None). Returns whether it
        changed what it grants."""
        bindings = self._bindings.setdefault(tenant, {})
        before = bindings.get(name)
        after = None
        if settings is None:
            bindings.pop(name, None)
        else:
            role = settings.get("role")
            if isinstance(role, str):
                after = Binding(
                    role, _names(settings.get("subjects")), _names(settings.get("groups"))
                )
                bindings[name] = after
            else:
                bindings.pop(name, None)
        if not bindings:
            del self._bindings[tenant]
        return before != after

    def role_names(self, principal: Principal) -> frozenset[str]:
        """The roles that apply to ``principal`` in its tenant: named by its credential or
        bound to its subject or one of its groups (existing or not)."""
        names = set(principal.roles)
        groups = set(principal.groups)
        for binding in self._bindings.get(principal.tenant, {}).values():
            if principal.subject in binding.subjects or not groups.isdisjoint(binding.groups):
                names.add(binding.role)
        return frozenset(names)

    def resolve(self, principal: Principal) -> Principal:
        """``principal`` with its effective permissions (see the module docstring): the
        same object when roles add nothing, or when it is an operator."""
        if principal.operator:
            return principal
        roles = self._roles.get(principal.tenant)
        if not roles:
            return principal
        extra: set[Permission] = set()
        for name in self.role_names(principal):
            extra.update(roles.get(name, ()))
        if extra <= principal.permissions:
            return principal
        return replace(principal, permissions=principal.permissions | extra)
