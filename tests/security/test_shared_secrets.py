"""``auth_tokens`` shared secrets mapped to a tenant and permissions, and the bearer
authenticator that puts them in front of Felix tokens."""

from __future__ import annotations

import contextlib
import hmac

import pytest
from fake_issuers import NOW, FakeIssuer

from felix_core.access import ANY_ACTION, Action, AuthError, AuthReason, Permission, Principal
from felix_runtime import credentials as auth
from felix_runtime.credentials import (
    BearerAuthenticator,
    SharedSecretAuthenticator,
    parse_shared_secrets,
)

EVERYTHING = frozenset({Permission(ANY_ACTION)})


def reason(call: object, *args: object) -> AuthReason:
    assert callable(call)
    with pytest.raises(AuthError) as caught:
        call(*args)
    return caught.value.reason


def test_legacy_list_keeps_working_as_an_operator_credential() -> None:
    entries = parse_shared_secrets("tok1, tok2,,  ")
    assert [(e.position, e.tenant, e.permissions, e.operator) for e in entries] == [
        (1, "default", EVERYTHING, True),
        (2, "default", EVERYTHING, True),
    ]
    principal = SharedSecretAuthenticator(entries).authenticate("tok2")
    assert principal == Principal(
        subject="shared-secret:2",
        tenant="default",
        permissions=EVERYTHING,
        issuer="auth_tokens",
        operator=True,
    )
    assert principal.expires_at is None
    assert principal.acts_in("any-tenant")  # what a bare secret always meant


def test_a_mapped_secret_is_no_operator() -> None:
    (entry,) = parse_shared_secrets("s3cret=blue:*")
    principal = SharedSecretAuthenticator([entry]).authenticate("s3cret")
    assert not entry.operator and not principal.operator
    assert principal.acts_in("blue") and not principal.acts_in("default")


def test_bare_secret_may_contain_equals_signs() -> None:
    (entry,) = parse_shared_secrets("c2VjcmV0IQ==")
    assert entry.tenant == "default"
    assert SharedSecretAuthenticator([entry]).authenticate("c2VjcmV0IQ==").tenant == "default"


def test_mapped_entries() -> None:
    text = """
        ci-7f3a=acme:publish:default/orders subscribe:default/*
        ops-91c2=acme:admin, reader=beta:cache.read:sessions/*
    """
    ci, ops, reader = parse_shared_secrets(text)
    assert (ci.tenant, ci.permissions) == (
        "acme",
        frozenset(
            {
                Permission(Action.PUBLISH, "default", "orders"),
                Permission(Action.SUBSCRIBE, "default", "*"),
            }
        ),
    )
    assert (ops.tenant, ops.permissions) == ("acme", frozenset({Permission(Action.ADMIN)}))
    assert reader.tenant == "beta"
    authenticator = SharedSecretAuthenticator((ci, ops, reader))
    principal = authenticator.authenticate("ci-7f3a")
    assert principal.tenant == "acme"
    assert principal.allows("publish", "default", "orders")
    assert not principal.allows("publish", "default", "payments")
    assert authenticator.authenticate("reader").subject == "shared-secret:3"


def test_mapped_secret_may_contain_equals_signs() -> None:
    (entry,) = parse_shared_secrets("c2VjcmV0IQ===acme:consume")
    authenticator = SharedSecretAuthenticator([entry])
    assert authenticator.authenticate("c2VjcmV0IQ==").tenant == "acme"
    assert reason(authenticator.authenticate, "c2VjcmV0IQ") is AuthReason.BAD_SECRET


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s=:publish", "entry 1: invalid tenant name ''"),
        ("ok, s=bad tenant:publish", "entry 2: expected SECRET=TENANT"),
        ("s=.x:publish", "invalid tenant name"),
        ("=acme:publish", "expected SECRET=TENANT"),
        ("s=acme:", "no permissions"),
        ("s=acme:steal", "unknown action 'steal'"),
        ("s=acme:publish:orders", "NAMESPACE/NAME"),
        ("a:b", "bare secrets have no ':'"),
        ("dup-secret, dup-secret", "entry 2: the same secret appears twice"),
        ("dup-secret, dup-secret=acme:admin", "the same secret appears twice"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_shared_secrets(text)
    for secret in ("dup-secret", "s="):
        assert secret not in str(caught.value)


def test_secrets_are_kept_as_digests_only() -> None:
    (entry,) = parse_shared_secrets("hunter2=acme:admin")
    assert "hunter2" not in repr(entry)
    assert entry.digest not in repr(entry).encode()


@pytest.mark.parametrize("secret", [None, ""])
def test_missing_secret(secret: str | None) -> None:
    authenticator = SharedSecretAuthenticator.from_setting("tok")
    assert reason(authenticator.authenticate, secret) is AuthReason.MISSING


def test_unknown_secret_and_empty_setting() -> None:
    assert reason(SharedSecretAuthenticator.from_setting("tok").authenticate, "tok2") is (
        AuthReason.BAD_SECRET
    )
    assert reason(SharedSecretAuthenticator.from_setting("").authenticate, "tok") is (
        AuthReason.BAD_SECRET
    )


def test_every_entry_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    authenticator = SharedSecretAuthenticator.from_setting("first, x=acme:admin, third")
    for offered in ("first", "third", "wrong", "a-much-longer-guess-than-any-secret"):
        calls.clear()
        with contextlib.suppress(AuthError):
            authenticator.authenticate(offered)
        # No short cut on a match, and fixed-length digests: the length of a guess is
        # never compared against the length of a secret.
        assert calls == [(32, 32)] * 3


def test_bearer_authenticator_secret_then_token(issuer: FakeIssuer) -> None:
    secrets = SharedSecretAuthenticator.from_setting("tok=ops:admin")
    both = BearerAuthenticator(verifier=issuer.verifier(), secrets=secrets)
    assert both.authenticate("tok", NOW).tenant == "ops"
    assert both.authenticate(issuer.token(), NOW).subject == "alice"
    assert reason(both.authenticate, "nope", NOW) is AuthReason.BAD_SECRET
    expired = issuer.token(now=NOW - 10_000)
    assert reason(both.authenticate, expired, NOW) is AuthReason.EXPIRED
    assert reason(both.authenticate, None, NOW) is AuthReason.MISSING
    assert reason(both.authenticate, "", NOW) is AuthReason.MISSING


def test_bearer_authenticator_with_one_kind_only(issuer: FakeIssuer) -> None:
    only_secrets = BearerAuthenticator(secrets=SharedSecretAuthenticator.from_setting("a.b.c"))
    assert only_secrets.authenticate("a.b.c", NOW).tenant == "default"
    assert reason(only_secrets.authenticate, issuer.token(), NOW) is AuthReason.BAD_SECRET
    only_tokens = BearerAuthenticator(verifier=issuer.verifier())
    assert only_tokens.authenticate(issuer.token(), NOW).tenant == "acme"
    assert reason(only_tokens.authenticate, "tok", NOW) is AuthReason.MALFORMED
    with pytest.raises(ValueError):
        BearerAuthenticator()
