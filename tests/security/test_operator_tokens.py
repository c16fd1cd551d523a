"""Operator Felix tokens: the ``operator`` claim is honoured only for tokens of the issuer
trusted for operator tokens (``auth_operator_keys`` / ``auth_operator_issuer``), so a
deployment with tokens needs no bare shared secret for operator work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from brokers import FreshBroker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fake_issuers import NOW, FakeIssuer

from felix_client import Client, Forbidden, Unauthenticated
from felix_client.cli import main
from felix_core.access import AuthError, AuthReason, Permission
from felix_proto import messages as m
from felix_runtime.credentials import broker_authenticator
from felix_runtime.tokens import (
    DEFAULT_OPERATOR_ISSUER,
    TokenVerifier,
    issue_token,
    read_unverified,
)
from felix_server.config import ConfigError, ServerConfig, load_config

pytestmark = pytest.mark.anyio


def verifier(tenants: FakeIssuer, operators: FakeIssuer) -> TokenVerifier:
    return TokenVerifier(
        {
            tenants.name: {tenants.kid: tenants.public},
            operators.name: {operators.kid: operators.public},
        },
        operator_issuers=[operators.name],
    )


def test_the_operator_claim_is_honoured_from_the_operator_issuer_only() -> None:
    tenants, operators = FakeIssuer(), FakeIssuer(name=DEFAULT_OPERATOR_ISSUER)
    check = verifier(tenants, operators)
    principal = check.verify(operators.token(operator=True, permissions=[]), NOW)
    assert principal.operator and principal.acts_in("any-tenant")
    assert principal.allows("admin", "ns", "x")
    # the operator issuer's tokens without the claim are ordinary tenant tokens
    assert not check.verify(operators.token(), NOW).operator
    with pytest.raises(AuthError) as caught:
        check.verify(tenants.token(operator=True), NOW)
    assert caught.value.reason is AuthReason.OPERATOR_NOT_ALLOWED
    with pytest.raises(AuthError) as caught:  # no operator issuer at all
        tenants.verifier().verify(tenants.token(operator=True), NOW)
    assert caught.value.reason is AuthReason.OPERATOR_NOT_ALLOWED
    for odd in ("true", 1, None):
        token = operators.sign(operators.claims(operator=odd or 0))
        with pytest.raises(AuthError) as caught:
            check.verify(token, NOW)
        assert caught.value.reason is AuthReason.MALFORMED


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_the_broker_trusts_operator_keys_for_their_own_issuer(tmp_path: Path) -> None:
    tenant_key, operator_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    files = {"t.pem": pem(tenant_key), "o.pem": pem(operator_key)}
    config = ServerConfig(auth_issuer_keys="t.pem", auth_operator_keys="o.pem")
    authenticate = broker_authenticator(config, lambda p: files[p])
    assert authenticate is not None

    def token(key: Ed25519PrivateKey, issuer: str) -> str:
        claims = {"subject": "ops", "tenant": "default", "token_id": "j", "issuer": issuer}
        return issue_token(key, now=NOW, ttl=60, operator=True, **claims)

    def check(credential: str) -> Any:
        return authenticate(m.Hello(versions=[2], token=credential), NOW)

    assert check(token(operator_key, DEFAULT_OPERATOR_ISSUER)).operator
    # the tenant issuer's key cannot sign for the operator issuer, nor the claim for itself
    assert check(token(tenant_key, DEFAULT_OPERATOR_ISSUER)).details == {"reason": "unknown_key"}
    assert check(token(tenant_key, "felix")).details == {"reason": "operator_not_allowed"}


def load(*argv: str) -> ServerConfig:
    return load_config(argv, {}, lambda path: b"")[0]


def test_operator_settings() -> None:
    config = load("--auth-operator-key", "a.pem", "--auth-operator-keys", "b.pem")
    assert sorted(config.operator_key_files) == ["a.pem", "b.pem"] and config.auth_enabled
    assert load().auth_operator_issuer == DEFAULT_OPERATOR_ISSUER
    with pytest.raises(ConfigError, match="must differ from auth_issuer"):
        load("--auth-operator-keys", "a.pem", "--auth-operator-issuer", "felix")
    with pytest.raises(ConfigError, match="auth_operator_keys: no file named"):
        load("--auth-operator-keys", " , ")


class Keys:
    """A key pair on disk, as ``felix token keygen`` writes one."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.key = Ed25519PrivateKey.generate()
        self.public = directory / "public.pem"
        self.public.write_bytes(pem(self.key))
        self.private = directory / "private.pem"
        self.private.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


async def test_an_operator_token_over_the_network(
    fresh_broker: FreshBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenants, operators = Keys(tmp_path / "tenants"), Keys(tmp_path / "operators")
    broker = fresh_broker(
        "--auth-issuer-key", str(tenants.public), "--auth-operator-key", str(operators.public)
    )
    issue = ["token", "issue", "--key", str(operators.private), "--operator", "--ttl", "5m"]
    assert main(issue) == 0
    token = capsys.readouterr().out.strip()
    _, claims = read_unverified(token)
    assert (claims["operator"], claims["iss"], claims["tenant"]) == (
        True,
        DEFAULT_OPERATOR_ISSUER,
        "default",
    )
    async with Client(broker.url, token=token, **broker.client_kwargs()) as ops:
        await ops.admin.create("tenant", "acme")  # only an operator creates other tenants
        await ops.admin.create("namespace", "ns", tenant="acme")
        assert "acme" in [t["tenant"] for t in await ops.admin.list("tenant")]
        await ops.admin.create("role", "writer", {"permissions": ["publish"]}, tenant="acme")
    # the operator claim in a token of the tenant issuer is refused at the handshake
    forged = issue_token(
        tenants.key,
        subject="mallory",
        tenant="acme",
        now=time.time(),
        ttl=60,
        token_id="m",
        operator=True,
    )
    with pytest.raises(Unauthenticated) as caught:
        async with Client(broker.url, token=forged, **broker.client_kwargs()) as c:
            await c.admin.list("tenant")
    assert caught.value.details == {"reason": "operator_not_allowed"}
    plain = issue_token(
        tenants.key,
        subject="alice",
        tenant="acme",
        now=time.time(),
        ttl=60,
        token_id="a",
        permissions=[Permission.parse("admin")],
    )
    async with Client(broker.url, token=plain, **broker.client_kwargs()) as c:
        with pytest.raises(Forbidden, match="only an operator manages tenants"):
            await c.admin.list("tenant")
