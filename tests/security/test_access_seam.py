"""felix_server.access: the authentication seam, and a broker's authenticator built from
its configuration (felix_runtime.credentials.broker_authenticator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fake_issuers import NOW, FakeIssuer

from felix_core.access import ANONYMOUS, AuthError, AuthReason, Principal
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_runtime.credentials import broker_authenticator
from felix_runtime.tokens import jwks_document
from felix_server.access import Refusal, accept_anonymous, bearer
from felix_server.config import ConfigError, ServerConfig


def hello(token: str | None) -> m.Hello:
    return m.Hello(versions=[2], token=token)


def test_without_authentication_everyone_is_the_anonymous_operator() -> None:
    assert accept_anonymous(hello(None), NOW) is ANONYMOUS
    assert accept_anonymous(hello("x"), NOW) is ANONYMOUS
    assert ANONYMOUS.operator and ANONYMOUS.acts_in("any") and ANONYMOUS.allows("admin", "a", "b")


def test_bearer_turns_a_refusal_into_unauthenticated_with_the_reason() -> None:
    seen: list[tuple[str | None, float]] = []

    def check(token: str | None, now: float) -> Principal:
        seen.append((token, now))
        raise AuthError(AuthReason.EXPIRED, "token expired at ...")

    refused = bearer(check)(hello("t0ken"), NOW)
    assert seen == [("t0ken", NOW)]  # the time goes through
    assert refused == Refusal(
        code=ErrorCode.UNAUTHENTICATED,
        message="missing or invalid token (expired)",
        details={"reason": "expired"},
    )
    assert "t0ken" not in refused.message


def config(**values: object) -> ServerConfig:
    return ServerConfig(**values)  # type: ignore[arg-type]


def test_no_authenticator_without_authentication() -> None:
    assert broker_authenticator(config()) is None


def pem(issuer: FakeIssuer) -> bytes:
    return issuer.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_issuer_keys_from_pem_files_and_jwks(tmp_path: Path) -> None:
    one, two, other = FakeIssuer(), FakeIssuer(), FakeIssuer()
    (tmp_path / "one.pem").write_bytes(pem(one))
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_document({two.kid: two.public})))
    authenticate = broker_authenticator(
        config(auth_issuer_keys=str(tmp_path / "one.pem"), auth_jwks=str(tmp_path / "jwks.json"))
    )
    assert authenticate is not None
    for issuer in (one, two):
        principal = authenticate(hello(issuer.token()), NOW)
        assert isinstance(principal, Principal) and principal.tenant == "acme"
    refused = authenticate(hello(other.token()), NOW)
    assert isinstance(refused, Refusal) and refused.details == {"reason": "unknown_key"}
    refused = authenticate(hello(one.token()), NOW + 3600)
    assert isinstance(refused, Refusal) and refused.details == {"reason": "expired"}


def test_issuer_and_audience_come_from_the_config(tmp_path: Path) -> None:
    issuer = FakeIssuer(name="corp")
    (tmp_path / "k.pem").write_bytes(pem(issuer))
    authenticate = broker_authenticator(
        config(auth_issuer_keys=str(tmp_path / "k.pem"), auth_issuer="corp", auth_audience="eu")
    )
    assert authenticate is not None
    assert isinstance(authenticate(hello(issuer.token(audience="eu")), NOW), Principal)
    refused = authenticate(hello(issuer.token()), NOW)  # audience felix
    assert isinstance(refused, Refusal) and refused.details == {"reason": "wrong_audience"}


def test_shared_secrets_and_tokens_together(tmp_path: Path) -> None:
    issuer = FakeIssuer()
    (tmp_path / "k.pem").write_bytes(pem(issuer))
    authenticate = broker_authenticator(
        config(auth_issuer_keys=str(tmp_path / "k.pem"), auth_tokens="s3cret=blue:publish")
    )
    assert authenticate is not None
    by_secret = authenticate(hello("s3cret"), NOW)
    assert isinstance(by_secret, Principal) and by_secret.tenant == "blue"
    assert isinstance(authenticate(hello(issuer.token()), NOW), Principal)
    for token in (None, "", "nope"):
        refused = authenticate(hello(token), NOW)
        assert isinstance(refused, Refusal) and refused.code == ErrorCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"auth_issuer_keys": "/nonexistent/k.pem"}, "auth_issuer_keys: /nonexistent/k.pem"),
        ({"auth_jwks": "/nonexistent/jwks.json"}, "auth_jwks: /nonexistent/jwks.json"),
        ({"auth_tokens": "s3cret=blue:fly"}, "auth_tokens entry 1: invalid permission"),
    ],
)
def test_bad_auth_settings_are_config_errors(values: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        broker_authenticator(config(**values))
    assert "s3cret" not in str(caught.value)


def test_a_key_file_that_is_no_ed25519_key(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"auth_issuer_keys: .*k\.pem"):
        broker_authenticator(config(auth_issuer_keys=str(tmp_path / "k.pem")))


def test_a_client_acts_in_its_tokens_tenant_unless_told(issuer: FakeIssuer) -> None:
    from felix_client import Client
    from felix_client.client import token_tenant

    token = issuer.token(tenant="acme")
    assert token_tenant(token) == "acme"
    for not_a_jwt in (None, "", "a-shared-secret", "a.b.c"):
        assert token_tenant(not_a_jwt) is None
    assert Client("quic://127.0.0.1:1", token=token).tenant == "acme"
    assert Client("quic://127.0.0.1:1", token=token, tenant="other").tenant == "other"
    assert Client("quic://127.0.0.1:1", token="s3cret").tenant == "default"
    assert Client("quic://127.0.0.1:1").tenant == "default"
