"""Roles and bindings, pure: their settings, how a principal's effective permissions are
resolved (felix_core.rbac.RoleBook), and where they live in the metadata tree."""

from __future__ import annotations

from typing import Any

import pytest

from felix_core.access import ANONYMOUS, Permission, Principal
from felix_core.errors import Conflict, InvalidArgument, NotFound
from felix_core.limits import BrokerConfig
from felix_core.metadata import Catalog, Kind, MetadataView, ResourceRecord
from felix_core.rbac import (
    MAX_BINDING_MEMBERS,
    MAX_ROLE_PERMISSIONS,
    RoleBook,
    binding_schema,
    role_schema,
)

PATH = ("acme", "", "readers")


def grants(*texts: str) -> frozenset[Permission]:
    return frozenset(Permission.parse(t) for t in texts)


def who(
    *own: str, subject: str = "alice", roles: tuple[str, ...] = (), groups: tuple[str, ...] = ()
) -> Principal:
    return Principal(
        subject=subject,
        tenant="acme",
        roles=roles,
        groups=groups,
        permissions=grants(*own),
        issuer="felix",
    )


def book_with(
    roles: dict[str, list[str]], bindings: dict[str, dict[str, Any]], tenant: str = "acme"
) -> RoleBook:
    book = RoleBook()
    for name, perms in roles.items():
        book.set_role(tenant, name, role_schema()((tenant, "", name), {"permissions": perms}, None))
    for name, settings in bindings.items():
        book.set_binding(tenant, name, binding_schema()((tenant, "", name), settings, None))
    return book


# -- settings -----------------------------------------------------------------------------------


def test_role_settings_are_parsed_sorted_and_deduplicated() -> None:
    schema = role_schema()
    full = schema(PATH, {"permissions": ["subscribe:default/*", "publish", "publish:*/*"]}, None)
    assert full == {"permissions": ["publish:*/*", "subscribe:default/*"], "description": ""}
    # one space-separated string is the shell's form of the same list
    assert schema(PATH, {"permissions": "publish subscribe:default/*"}, None) == full
    # an update changes only what it names
    updated = schema(PATH, {"description": "read the default namespace"}, full)
    assert updated["permissions"] == full["permissions"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"permissions": ["fly:*/*"]}, "permissions"),
        ({"permissions": ["publish:orders"]}, "permissions"),
        ({"permissions": [1]}, "permissions"),
        ({"permissions": {"publish": 1}}, "permissions"),
        ({"permissions": [f"publish:ns/s{i}" for i in range(MAX_ROLE_PERMISSIONS + 1)]}, None),
        ({"description": "x" * 1025}, "description"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_role_settings_are_invalid_argument(
    settings: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        role_schema()(PATH, settings, None)
    assert caught.value.details["field"] == (field or "permissions")


def test_binding_settings() -> None:
    schema = binding_schema()
    full = schema(PATH, {"role": "reader", "subjects": "bob alice alice", "groups": ["ops"]}, None)
    assert full == {
        "role": "reader",
        "subjects": ["alice", "bob"],
        "groups": ["ops"],
        "description": "",
    }
    assert schema(PATH, {"groups": []}, full)["groups"] == []  # subjects remain


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"subjects": ["alice"]}, "role"),  # no role
        ({"role": "bad name", "subjects": ["alice"]}, "role"),
        ({"role": "reader"}, "subjects"),  # nobody
        ({"role": "reader", "subjects": [""]}, "subjects"),
        ({"role": "reader", "groups": ["a\nb"]}, "groups"),
        ({"role": "reader", "groups": ["x" * 257]}, "groups"),
        ({"role": "reader", "subjects": [f"s{i}" for i in range(MAX_BINDING_MEMBERS + 1)]}, None),
        ({"role": "reader", "subjects": ["a"], "members": ["b"]}, "members"),
    ],
)
def test_bad_binding_settings_are_invalid_argument(
    settings: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        binding_schema()(PATH, settings, None)
    assert caught.value.details["field"] == (field or "subjects")


# -- resolution ---------------------------------------------------------------------------------


def test_without_roles_a_principal_is_its_credential() -> None:
    alice = who("publish:default/orders", roles=("reader",))
    assert RoleBook().resolve(alice) is alice
    # roles that add nothing leave it as it is too
    book = book_with({"reader": ["publish:default/orders"]}, {})
    assert book.resolve(alice) is alice


def test_roles_named_by_the_token_add_their_permissions() -> None:
    book = book_with({"reader": ["subscribe:default/*"], "writer": ["publish:default/*"]}, {})
    alice = book.resolve(who("cache.read:*/*", roles=("reader",)))
    assert alice.permissions == grants("cache.read:*/*", "subscribe:default/*")
    assert alice.allows("subscribe", "default", "orders")
    assert not alice.allows("publish", "default", "orders")


def test_roles_bound_to_the_subject_or_a_group_add_their_permissions() -> None:
    book = book_with(
        {"reader": ["subscribe:default/*"], "writer": ["publish:default/*"], "ops": ["admin"]},
        {
            "alice-reads": {"role": "reader", "subjects": ["alice"]},
            "team-writes": {"role": "writer", "groups": ["team"]},
            "oncall": {"role": "ops", "groups": ["oncall"], "subjects": ["carol"]},
        },
    )
    assert book.resolve(who()).permissions == grants("subscribe:default/*")
    assert book.resolve(who(groups=("team",))).permissions == grants(
        "subscribe:default/*", "publish:default/*"
    )
    assert book.resolve(who(subject="bob", groups=("team",))).permissions == grants(
        "publish:default/*"
    )
    assert book.resolve(who(subject="carol")).permissions == grants("admin")
    assert book.resolve(who(subject="dave", groups=("guests",))).permissions == frozenset()


def test_a_binding_to_a_missing_role_grants_nothing_until_the_role_exists() -> None:
    book = book_with({}, {"b": {"role": "later", "subjects": ["alice"]}})
    assert book.resolve(who()).permissions == frozenset()
    assert book.set_role("acme", "later", {"permissions": ["publish"]})
    assert book.resolve(who()).permissions == grants("publish")


def test_roles_and_bindings_apply_in_their_own_tenant_only() -> None:
    book = book_with(
        {"reader": ["subscribe"]}, {"all": {"role": "reader", "subjects": ["alice"]}}, "other"
    )
    alice = who(roles=("reader",))
    assert book.resolve(alice) is alice


def test_an_operator_is_not_resolved() -> None:
    book = book_with({"reader": ["subscribe"]}, {})
    assert book.resolve(ANONYMOUS) is ANONYMOUS


def test_changes_report_whether_what_they_grant_changed() -> None:
    book = RoleBook()
    assert book.set_role("acme", "r", {"permissions": ["publish"]})
    assert not book.set_role("acme", "r", {"permissions": ["publish"], "description": "d"})
    assert book.set_role("acme", "r", {"permissions": ["subscribe"]})
    assert book.set_role("acme", "r", None)
    assert not book.set_role("acme", "r", None)
    binding = {"role": "r", "subjects": ["alice"], "groups": []}
    assert book.set_binding("acme", "b", binding)
    assert not book.set_binding("acme", "b", {**binding, "description": "d"})
    assert book.set_binding("acme", "b", {**binding, "groups": ["g"]})
    assert book.set_binding("acme", "b", None)
    assert not book.set_binding("acme", "b", None)


def test_a_stored_record_that_does_not_parse_grants_what_parses() -> None:
    """Records reach the engine from a store (another writer, a file edited by hand): the
    engine never fails on them."""
    book = RoleBook()
    book.set_role("acme", "r", {"permissions": ["publish", "fly:*/*", 7]})
    book.set_binding("acme", "b", {"role": "r", "subjects": "alice", "groups": None})
    book.set_binding("acme", "c", {"role": None, "subjects": ["alice"]})
    assert book.resolve(who(roles=("r",))).permissions == grants("publish")
    assert book.resolve(who()).permissions == frozenset()  # "alice" as a string is no list


# -- in the metadata tree -----------------------------------------------------------------------


def catalog() -> Catalog:
    view = MetadataView()
    view.apply(Kind.TENANT, ("acme", "", ""), ResourceRecord(kind=Kind.TENANT, tenant="acme"))
    return Catalog(view, BrokerConfig())


@pytest.mark.parametrize("kind", [Kind.ROLE, Kind.BINDING])
def test_roles_and_bindings_live_in_a_tenant(kind: Kind) -> None:
    cat = catalog()
    settings = {"role": "r", "subjects": ["alice"]} if kind is Kind.BINDING else {}
    record = cat.create(kind, ("acme", "", "r"), settings, 1.0)
    assert record.path == ("acme", "", "r")
    with pytest.raises(InvalidArgument) as caught:
        cat.create(kind, ("acme", "default", "r"), settings, 1.0)
    assert caught.value.details["field"] == "namespace"
    with pytest.raises(NotFound) as missing:
        cat.create(kind, ("nobody", "", "r"), settings, 1.0)
    assert str(missing.value) == "tenant nobody not found"
    cat.view.apply(kind, record.path, record)
    assert [r.name for r in cat.list(kind, "acme")] == ["r"]
    with pytest.raises(Conflict, match=f"still has {kind.value}s"):
        cat.delete(Kind.TENANT, ("acme", "", ""))
