"""Felix tokens: issue -> verify, and every way a token is refused (issue 14, "Tokens").

Each refusal is an AuthError with its reason code, decided at the ``now`` the test passes
(NOW is in 2027, so a verifier that read the wall clock would refuse the valid tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fake_issuers import NOW, FakeIssuer
from hypothesis import given
from hypothesis import strategies as st

from felix_core.access import Action, AuthError, AuthReason, Permission, Principal
from felix_runtime.tokens import MAX_TOKEN_BYTES, TokenVerifier, issue_token, key_id


def refused(verifier: TokenVerifier, token: str | None, now: float = NOW) -> AuthReason:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token, now)
    if token:
        assert token not in str(caught.value), "a refusal must not echo the credential"
    return caught.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_issued_token_verifies_to_its_principal(issuer: FakeIssuer) -> None:
    token = issuer.token(
        permissions=[Permission.parse("publish:default/orders"), Permission.parse("cache.read")],
        roles=["reader", "ops"],
    )
    principal = issuer.verifier().verify(token, NOW)
    assert principal == Principal(
        subject="alice",
        tenant="acme",
        roles=("ops", "reader"),
        permissions=frozenset(
            {Permission(Action.PUBLISH, "default", "orders"), Permission(Action.CACHE_READ)}
        ),
        expires_at=NOW + 900,
        issuer="felix",
        token_id="jti-1",
    )
    assert principal.allows("publish", "default", "orders")
    assert not principal.allows("subscribe", "default", "orders")


def test_issued_token_header_and_claims(issuer: FakeIssuer) -> None:
    token = issuer.token()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": issuer.kid}
    claims = jwt.decode(
        token,
        issuer.public,
        algorithms=["EdDSA"],
        audience="felix",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims == {
        "iss": "felix",
        "sub": "alice",
        "aud": "felix",
        "tenant": "acme",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 900,
        "jti": "jti-1",
        "roles": ["reader"],
        "permissions": ["publish:default/orders"],
    }


def test_time_is_the_callers_not_the_wall_clock(issuer: FakeIssuer) -> None:
    token = issuer.token(now=1000.0, ttl=60.0)  # 1970: long expired by any real clock
    assert issuer.verifier().verify(token, 1010.0).expires_at == 1060.0


def test_token_without_roles_or_permissions_grants_nothing(issuer: FakeIssuer) -> None:
    principal = issuer.verifier().verify(issuer.token(permissions=[], roles=[]), NOW)
    assert principal.roles == ()
    assert principal.permissions == frozenset()
    assert not any(principal.allows(action, "default", "orders") for action in Action)


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing(issuer: FakeIssuer, token: str | None) -> None:
    assert refused(issuer.verifier(), token) is AuthReason.MISSING


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "!!!.@@@.###",
        b64(b'{"alg":"EdDSA"}') + "." + b64(b"not json") + ".sig",
        b64(b"[1]") + "." + b64(b"{}") + ".sig",
    ],
)
def test_malformed(issuer: FakeIssuer, token: str) -> None:
    assert refused(issuer.verifier(), token) is AuthReason.MALFORMED


def test_token_longer_than_the_cap_is_malformed_before_decoding(issuer: FakeIssuer) -> None:
    big = issuer.sign(issuer.claims(padding="x" * MAX_TOKEN_BYTES))
    assert refused(issuer.verifier(), big) is AuthReason.MALFORMED
    assert issuer.verifier().verify(issuer.sign(issuer.claims(padding="x" * 100)), NOW)


def test_payload_that_is_not_a_json_object_is_malformed(issuer: FakeIssuer) -> None:
    token = jwt.api_jws.encode(
        b"[1, 2]", issuer.key, algorithm="EdDSA", headers={"kid": issuer.kid}
    )
    assert refused(issuer.verifier(), token) is AuthReason.MALFORMED


def test_bad_signature_when_a_claim_is_changed(issuer: FakeIssuer) -> None:
    header, payload, signature = issuer.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "victim"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert refused(issuer.verifier(), forged) is AuthReason.BAD_SIGNATURE


def test_bad_signature_from_another_key_under_a_trusted_kid(issuer: FakeIssuer) -> None:
    impostor = FakeIssuer(key=Ed25519PrivateKey.generate())
    token = impostor.sign(issuer.claims(), headers={"kid": issuer.kid})
    assert refused(issuer.verifier(), token) is AuthReason.BAD_SIGNATURE


def test_bad_signature_when_the_signature_is_cut(issuer: FakeIssuer) -> None:
    header, payload, signature = issuer.token().split(".")
    assert refused(issuer.verifier(), f"{header}.{payload}.{signature[:-8]}") in {
        AuthReason.BAD_SIGNATURE,
        AuthReason.MALFORMED,
    }
    assert refused(issuer.verifier(), f"{header}.{payload}.") is AuthReason.BAD_SIGNATURE


def test_unknown_key(issuer: FakeIssuer) -> None:
    token = issuer.sign(issuer.claims(), headers={"kid": "retired-2025"})
    assert refused(issuer.verifier(), token) is AuthReason.UNKNOWN_KEY


def test_kid_that_is_not_a_string_is_malformed(issuer: FakeIssuer) -> None:
    token = issuer.sign_by_hand({"alg": "EdDSA", "kid": 7}, issuer.claims())
    assert refused(issuer.verifier(), token) is AuthReason.MALFORMED


def test_no_kid_is_accepted_only_from_an_issuer_with_one_key(issuer: FakeIssuer) -> None:
    token = jwt.encode(issuer.claims(), issuer.key, algorithm="EdDSA")
    assert "kid" not in jwt.get_unverified_header(token)
    assert issuer.verifier().verify(token, NOW).subject == "alice"
    other = Ed25519PrivateKey.generate().public_key()
    rotating = TokenVerifier({"felix": {issuer.kid: issuer.public, "next": other}})
    assert refused(rotating, token) is AuthReason.UNKNOWN_KEY


def test_rotation_two_keys_of_one_issuer_each_verify_their_tokens(issuer: FakeIssuer) -> None:
    new = FakeIssuer(name="felix")
    verifier = TokenVerifier({"felix": {issuer.kid: issuer.public, new.kid: new.public}})
    assert verifier.verify(issuer.token(), NOW).subject == "alice"
    assert verifier.verify(new.token(subject="bob"), NOW).subject == "bob"
    # After the old key is dropped from the trusted set, its tokens stop working.
    assert refused(TokenVerifier({"felix": {new.kid: new.public}}), issuer.token()) is (
        AuthReason.UNKNOWN_KEY
    )


def test_a_key_signs_for_its_own_issuer_only() -> None:
    a, b = FakeIssuer(name="region-a"), FakeIssuer(name="region-b")
    verifier = TokenVerifier({a.name: {a.kid: a.public}, b.name: {b.kid: b.public}})
    assert verifier.verify(a.token(), NOW).issuer == "region-a"
    # a's key, a's kid, but claiming to be b: b has no such key.
    assert refused(verifier, a.sign(a.claims(iss="region-b"))) is AuthReason.UNKNOWN_KEY


def test_expired(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier(leeway=5.0)
    token = issuer.token(now=NOW - 1000, ttl=900.0)  # exp = NOW - 100
    assert refused(verifier, token) is AuthReason.EXPIRED


def test_expiry_boundary_with_leeway(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier(leeway=5.0)
    token = issuer.token(ttl=60.0)  # exp = NOW + 60
    assert verifier.verify(token, NOW + 64.9).expires_at == NOW + 60
    assert refused(verifier, token, NOW + 65.0) is AuthReason.EXPIRED
    assert refused(issuer.verifier(leeway=0.0), token, NOW + 60.0) is AuthReason.EXPIRED


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid(issuer: FakeIssuer, claim: str) -> None:
    verifier = issuer.verifier(leeway=5.0)
    token = issuer.sign(issuer.claims(**{claim: int(NOW) + 60}))
    assert refused(verifier, token) is AuthReason.NOT_YET_VALID
    assert verifier.verify(token, NOW + 55).subject == "alice"  # within the leeway


def test_wrong_issuer(issuer: FakeIssuer) -> None:
    stranger = FakeIssuer(name="evil")
    assert refused(issuer.verifier(), stranger.token()) is AuthReason.WRONG_ISSUER


def test_missing_issuer_is_malformed(issuer: FakeIssuer) -> None:
    assert refused(issuer.verifier(), issuer.sign(issuer.claims(iss=None))) is (
        AuthReason.MALFORMED
    )


def test_wrong_audience(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier()
    assert refused(verifier, issuer.token(audience="billing")) is AuthReason.WRONG_AUDIENCE
    assert refused(verifier, issuer.sign(issuer.claims(aud=None))) is AuthReason.WRONG_AUDIENCE
    assert refused(issuer.verifier(audience="eu-broker"), issuer.token()) is (
        AuthReason.WRONG_AUDIENCE
    )
    listed = issuer.sign(issuer.claims(aud=["billing", "felix"]))
    assert verifier.verify(listed, NOW).subject == "alice"


def test_alg_none(issuer: FakeIssuer) -> None:
    token = jwt.encode(issuer.claims(), None, algorithm="none", headers={"kid": issuer.kid})
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert refused(issuer.verifier(), token) is AuthReason.ALGORITHM_NOT_ALLOWED
    header = b64(json.dumps({"alg": "none", "kid": issuer.kid}).encode())
    no_sig = f"{header}.{b64(json.dumps(issuer.claims()).encode())}."
    assert refused(issuer.verifier(), no_sig) is AuthReason.ALGORITHM_NOT_ALLOWED


def _hs256(secret: bytes, claims: dict[str, object], kid: str) -> str:
    """The classic forgery, built by hand: PyJWT itself refuses a PEM as an HMAC key."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def test_hs256_with_the_public_key_as_secret(issuer: FakeIssuer) -> None:
    """Anyone can read the public key; a verifier that let the token's ``alg`` pick the
    algorithm would check this HMAC with it and accept the forged tenant."""
    pem = issuer.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = issuer.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for secret in (pem, raw):
        forged = _hs256(secret, issuer.claims(tenant="victim"), issuer.kid)
        # The forgery carries a correct HMAC under that (public) secret ...
        header, payload, mac = forged.split(".")
        expected = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert mac == b64(expected)
        # ... and Felix refuses it on its algorithm alone.
        assert refused(issuer.verifier(), forged) is AuthReason.ALGORITHM_NOT_ALLOWED
    # A verifier that trusted the token's alg would have accepted it (PyJWT, raw key):
    naive = jwt.decode(
        _hs256(raw, issuer.claims(tenant="victim"), issuer.kid),
        raw,
        algorithms=["HS256"],
        audience="felix",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert naive["tenant"] == "victim"


def test_rsa_and_ecdsa_tokens_are_refused(issuer: FakeIssuer) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for alg, key in (("RS256", rsa_key), ("PS256", rsa_key), ("ES256", ec_key)):
        token = jwt.encode(issuer.claims(), key, algorithm=alg, headers={"kid": issuer.kid})
        assert refused(issuer.verifier(), token) is AuthReason.ALGORITHM_NOT_ALLOWED, alg


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"tenant": None},
        {"tenant": "no/slashes"},
        {"tenant": ""},
        {"roles": "reader"},
        {"roles": ["ok", "bad name"]},
        {"permissions": "publish"},
        {"permissions": ["publish:default"]},
        {"permissions": ["steal:*/*"]},
        {"permissions": [3]},
        {"exp": None},
        {"exp": "soon"},
        {"exp": True},
        {"nbf": "now"},
        {"iat": [1]},
        {"jti": 17},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_shape_are_malformed(issuer: FakeIssuer, overrides: dict) -> None:
    token = issuer.sign(issuer.claims(**overrides))
    assert refused(issuer.verifier(), token) is AuthReason.MALFORMED


def test_issue_token_refuses_bad_arguments(issuer: FakeIssuer) -> None:
    for overrides in (
        {"tenant": "a/b"},
        {"roles": ["a b"]},
        {"subject": ""},
        {"ttl": 0.0},
        {"ttl": float("inf")},
        {"issuer": ""},
        {"token_id": ""},
    ):
        with pytest.raises(ValueError):
            issuer.token(**overrides)


def test_issue_token_kid_defaults_to_the_thumbprint(issuer: FakeIssuer) -> None:
    assert jwt.get_unverified_header(issuer.token())["kid"] == key_id(issuer.public)
    named = issue_token(
        issuer.key, subject="s", tenant="t", now=NOW, ttl=1.0, token_id="j", kid="2026-02"
    )
    assert jwt.get_unverified_header(named)["kid"] == "2026-02"


def test_verifier_takes_pem_keys_and_refuses_other_key_types(issuer: FakeIssuer) -> None:
    pem = issuer.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for key in (pem, pem.decode()):
        verifier = TokenVerifier({"felix": {issuer.kid: key}})
        assert verifier.verify(issuer.token(), NOW).tenant == "acme"
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        TokenVerifier({"felix": {"k": rsa_pem}})
    with pytest.raises(ValueError):
        TokenVerifier({"felix": {"k": b"not pem"}})
    with pytest.raises(ValueError, match="at least one trusted issuer"):
        TokenVerifier({})


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_is_accepted_or_refused_with_a_reason(text: str) -> None:
    issuer = _FUZZ_ISSUER
    try:
        issuer.verifier().verify(text, NOW)
    except AuthError as exc:
        assert isinstance(exc.reason, AuthReason)


@given(st.data())
def test_a_changed_character_never_yields_another_principal(data: st.DataObject) -> None:
    issuer = _FUZZ_ISSUER
    token = issuer.token()
    where = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=")
    )
    changed = token[:where] + char + token[where + 1 :]
    try:
        principal = issuer.verifier().verify(changed, NOW)
    except AuthError as exc:
        assert isinstance(exc.reason, AuthReason)
    else:  # base64url's last character carries spare bits: the same bytes may decode
        assert principal == issuer.verifier().verify(token, NOW)


_FUZZ_ISSUER = FakeIssuer()
