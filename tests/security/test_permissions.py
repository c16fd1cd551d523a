"""Permissions: ``ACTION[:NAMESPACE/NAME]`` with ``*`` wildcards, and Principal.allows.

Hypothesis checks the matcher against a regular-expression model and allows() against the
definition (some permission with that action, or ``*``, whose two patterns match)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix_core.access import ANY_ACTION, Action, Permission, Principal, match_pattern

NAME_CHARS = "ab._-"
PATTERN_CHARS = NAME_CHARS + "*"


def model_match(pattern: str, value: str) -> bool:
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def names() -> st.SearchStrategy[str]:
    return st.text(NAME_CHARS, min_size=0, max_size=6)


def patterns() -> st.SearchStrategy[str]:
    return st.text(PATTERN_CHARS, min_size=1, max_size=6).filter(lambda p: p[0] not in ".-")


def permissions() -> st.SearchStrategy[Permission]:
    actions = st.sampled_from([*Action, ANY_ACTION])
    return st.builds(Permission, actions, patterns(), patterns())


@given(st.text("ab*?[]", max_size=8), st.text("ab?[]", max_size=8))
def test_match_pattern_is_the_glob_with_only_star(pattern: str, value: str) -> None:
    assert match_pattern(pattern, value) == model_match(pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("*", "", True),
        ("*", "orders", True),
        ("orders", "orders", True),
        ("orders", "orders2", False),
        ("orders-*", "orders-eu", True),
        ("orders-*", "orders", False),
        ("*-eu", "orders-eu", True),
        ("o*s*u", "orders-eu", True),
        ("a*a", "a", False),  # one "a" cannot be both the prefix and the suffix
        ("a*a", "aa", True),
        ("*b*b*", "ab", False),
        ("?", "x", False),  # not fnmatch: ? and [] are literal characters
        ("[ab]", "a", False),
    ],
)
def test_match_pattern_examples(pattern: str, value: str, expected: bool) -> None:
    assert match_pattern(pattern, value) is expected


@given(permissions())
def test_text_form_round_trips(permission: Permission) -> None:
    assert Permission.parse(str(permission)) == permission


@given(
    st.frozensets(permissions(), max_size=4),
    st.sampled_from(list(Action)),
    names(),
    names(),
)
def test_allows_is_some_permission_matching_action_and_both_parts(
    grants: frozenset[Permission], action: Action, namespace: str, name: str
) -> None:
    principal = Principal(subject="s", tenant="t", issuer="i", permissions=grants)
    expected = any(
        p.action in (ANY_ACTION, action)
        and model_match(p.namespace, namespace)
        and model_match(p.name, name)
        for p in grants
    )
    assert principal.allows(action, namespace, name) is expected
    assert principal.allows(action.value, namespace, name) is expected


def test_every_action_against_every_other() -> None:
    for granted in Action:
        principal = Principal(
            subject="s", tenant="t", issuer="i", permissions=frozenset({Permission(granted)})
        )
        for asked in Action:
            assert principal.allows(asked, "ns", "x") is (asked is granted)


def test_star_action_allows_everything_on_its_resources() -> None:
    principal = Principal(
        subject="s", tenant="t", issuer="i", permissions=frozenset({Permission.parse("*:ops/*")})
    )
    assert all(principal.allows(action, "ops", "anything") for action in Action)
    assert not any(principal.allows(action, "default", "anything") for action in Action)


def test_admin_does_not_imply_data_access() -> None:
    principal = Principal(
        subject="s", tenant="t", issuer="i", permissions=frozenset({Permission.parse("admin")})
    )
    assert principal.allows("admin", "default", "orders")
    assert not principal.allows("publish", "default", "orders")


def test_namespace_and_name_are_matched_separately() -> None:
    grant = Permission.parse("subscribe:team-*/orders")
    assert grant.allows(Action.SUBSCRIBE, "team-a", "orders")
    assert not grant.allows(Action.SUBSCRIBE, "team-a", "orders-old")
    assert not grant.allows(Action.SUBSCRIBE, "other", "orders")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("publish", Permission(Action.PUBLISH, "*", "*")),
        ("cache.write:default/sessions", Permission(Action.CACHE_WRITE, "default", "sessions")),
        ("*", Permission(ANY_ACTION)),
        ("  consume:jobs/*  ", Permission(Action.CONSUME, "jobs", "*")),
    ],
)
def test_parse(text: str, expected: Permission) -> None:
    assert Permission.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "steal",
        "PUBLISH",
        "publish:",
        "publish:orders",
        "publish:/orders",
        "publish:default/",
        "publish:a/b/c",
        "publish:.hidden/x",
        "publish:-x/y",
        "publish:a b/c",
        "publish:ns/" + "x" * 129,
        "publish:ns/na?me",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid permission"):
        Permission.parse(text)


def test_constructor_checks_and_coerces() -> None:
    assert Permission("publish").action is Action.PUBLISH  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Permission("steal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace pattern"):
        Permission(Action.PUBLISH, "a/b", "c")


def test_allows_refuses_an_unknown_action() -> None:
    principal = Principal(subject="s", tenant="t", issuer="i")
    with pytest.raises(ValueError):
        principal.allows("steal", "default", "orders")
