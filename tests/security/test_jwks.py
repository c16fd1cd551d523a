"""Issuer keys: the RFC 7638 thumbprint as kid, JWKS documents, PEM loading."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fake_issuers import NOW, FakeIssuer
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from felix_runtime.tokens import (
    TokenVerifier,
    jwks_document,
    key_id,
    load_private_key,
    load_public_key,
    public_jwk,
    read_jwks,
)

# RFC 8037 appendix A.1 (the key) and A.3 (its RFC 7638 thumbprint).
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def rfc8037_key() -> Ed25519PublicKey:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "rfc"}
    return read_jwks(json.dumps({"keys": [jwk]}))["rfc"]


def test_key_id_is_the_rfc7638_thumbprint() -> None:
    assert key_id(rfc8037_key()) == RFC8037_THUMBPRINT


def test_public_jwk() -> None:
    assert public_jwk(rfc8037_key()) == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC8037_X,
        "kid": RFC8037_THUMBPRINT,
        "use": "sig",
        "alg": "EdDSA",
    }
    assert public_jwk(rfc8037_key(), kid="2026-02")["kid"] == "2026-02"


def test_jwks_round_trip_and_verification(issuer: FakeIssuer) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    document = json.dumps(jwks_document({issuer.kid: issuer.public, "next": other}))
    keys = read_jwks(document)
    assert set(keys) == {issuer.kid, "next"}
    assert key_id(keys[issuer.kid]) == issuer.kid
    assert TokenVerifier({"felix": keys}).verify(issuer.token(), NOW).tenant == "acme"
    assert read_jwks(document.encode()).keys() == keys.keys()


def test_empty_jwks_is_read_as_no_keys() -> None:
    assert read_jwks('{"keys": []}') == {}


def _ok() -> dict[str, Any]:
    return {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a"}


def _rsa_jwk() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {**RSAAlgorithm.to_jwk(key, as_dict=True), "kid": "r"}


def _ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**ECAlgorithm.to_jwk(key, as_dict=True), "kid": "e"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        ("[]", '"keys" list'),
        ('{"keys": {}}', '"keys" list'),
        ('{"nokeys": []}', '"keys" list'),
        (json.dumps({"keys": ["x"]}), "key 0: not a JSON object"),
        (json.dumps({"keys": [_ok(), _rsa_jwk()]}), "key 1: only Ed25519"),
        (json.dumps({"keys": [_ec_jwk()]}), "key 0: only Ed25519"),
        (json.dumps({"keys": [{**_ok(), "crv": "Ed448"}]}), "only Ed25519"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}), "only Ed25519"),
        (
            json.dumps({"keys": [{**_ok(), "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}),
            "private key",
        ),
        (json.dumps({"keys": [{k: v for k, v in _ok().items() if k != "kid"}]}), "needs a kid"),
        (json.dumps({"keys": [{**_ok(), "kid": ""}]}), "needs a kid"),
        (json.dumps({"keys": [_ok(), _ok()]}), "appears twice"),
        (json.dumps({"keys": [{**_ok(), "use": "enc"}]}), "for signatures"),
        (json.dumps({"keys": [{**_ok(), "alg": "RS256"}]}), "for signatures"),
        (json.dumps({"keys": [{**_ok(), "x": "AAAA"}]}), "key 0"),
        (json.dumps({"keys": [{**_ok(), "x": 5}]}), "key 0"),
    ],
)
def test_read_jwks_refuses(document: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_jwks(document)


def test_load_public_key_refuses_other_types() -> None:
    ed448_pem = (
        ed448.Ed448PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(ed448_pem)
    with pytest.raises(ValueError):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_load_private_key() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert key_id(load_private_key(pem).public_key()) == key_id(key.public_key())
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_private_key(rsa_pem)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(TypeError):
        load_private_key(encrypted)
