"""Token exchange without a broker: identity tokens of fake issuers (RSA, EC, Ed25519)
checked, mapped by the rules and turned into Felix tokens; every refusal reason."""

from __future__ import annotations

import base64
import hmac
import json
from hashlib import sha256
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fake_issuers import NOW
from oidc_issuers import (
    K8S_ISSUER,
    OidcIssuer,
    exchanger,
    new_key,
    service_account_token,
)

from felix_core.access import AuthReason, Permission
from felix_runtime.exchange import (
    ClaimRule,
    ExchangeRefused,
    ExternalIdentity,
    TokenExchanger,
    load_exchange_config,
    match_rule,
    read_external_jwks,
)
from felix_runtime.tokens import TokenVerifier, key_id, read_unverified


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusal(exchange: Any, token: str | None, now: float = NOW) -> ExchangeRefused:
    with pytest.raises(ExchangeRefused) as caught:
        exchange.exchange(token, now)
    return caught.value


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_an_oidc_token_becomes_a_felix_token(alg: str) -> None:
    idp = OidcIssuer(alg=alg)
    exchange, signing = exchanger(idp)
    done = exchange.exchange(idp.token(), NOW)
    header, claims = read_unverified(done.token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == key_id(signing.public_key())
    assert claims["sub"] == "alice"
    assert claims["tenant"] == "acme"
    assert claims["permissions"] == ["subscribe:default/*"]
    assert claims["exp"] == int(NOW) + 900  # the default TTL, shorter than the ID token
    assert done.principal.subject == "alice"
    assert done.principal.allows("subscribe", "default", "orders")
    assert not done.principal.allows("publish", "default", "orders")
    assert done.identity.groups == ("engineering",)
    assert done.principal.groups == ("engineering",)  # for RBAC bindings to groups
    assert claims["groups"] == ["engineering"]
    # the Felix token verifies with the broker's public key, as any broker would check it
    public = signing.public_key()
    verifier = TokenVerifier({"felix": {key_id(public): public}})
    assert verifier.verify(done.token, NOW + 60).tenant == "acme"


def test_a_kubernetes_service_account_token() -> None:
    k8s = OidcIssuer(url=K8S_ISSUER, kid="k8s")
    exchange, _ = exchanger(k8s)
    done = exchange.exchange(service_account_token(k8s), NOW)
    assert done.identity.namespace == "ci"
    assert done.identity.service_account == "builder"
    assert done.principal.subject == "system:serviceaccount:ci:builder"
    assert set(done.principal.roles) == {"ci"}
    assert done.principal.allows("publish", "default", "x")
    other = _refusal(exchange, service_account_token(k8s, namespace="prod"))
    assert other.reason is AuthReason.NO_MATCHING_RULE
    assert other.subject == "system:serviceaccount:prod:builder"
    assert other.issuer == K8S_ISSUER


def test_the_felix_token_ends_with_the_identity_token() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp, ttl=900)
    claims = read_unverified(exchange.exchange(idp.token(exp=int(NOW) + 120), NOW).token)[1]
    assert claims["exp"] == int(NOW) + 120
    longer, _ = exchanger(idp, ttl=60)
    assert read_unverified(longer.exchange(idp.token(), NOW).token)[1]["exp"] == int(NOW) + 60


def test_first_matching_rule_wins() -> None:
    rules = [
        ClaimRule(tenant="one", permissions=(Permission.parse("*"),), subject="bob"),
        ClaimRule(tenant="two", roles=("r",), group="eng*"),
        ClaimRule(tenant="three", roles=("r",)),
    ]
    who = ExternalIdentity(issuer="i", subject="alice", groups=("engineering",), expires_at=NOW)
    assert match_rule(rules, who) is rules[1]
    bob = ExternalIdentity(issuer="i", subject="bob", expires_at=NOW)
    assert match_rule(rules, bob) is rules[0]
    eve = ExternalIdentity(issuer="i", subject="eve", expires_at=NOW)
    assert match_rule(rules, eve) is rules[2]
    # a Kubernetes condition never matches a token without the kubernetes.io claim
    k8s_only = [ClaimRule(tenant="t", roles=("r",), namespace="*")]
    assert match_rule(k8s_only, who) is None
    by_issuer = [ClaimRule(tenant="t", roles=("r",), issuer="other")]
    assert match_rule(by_issuer, who) is None


# -- refusals -------------------------------------------------------------------------------


def test_bad_signature() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    head, _body, _sig = idp.token().split(".")
    forged_body = _b64(json.dumps(idp.claims(sub="root")).encode())
    assert _refusal(exchange, f"{head}.{forged_body}.{_sig}").reason is AuthReason.BAD_SIGNATURE
    impostor = OidcIssuer(given_key=new_key("RS256"))  # same kid, another key
    refused = _refusal(exchange, impostor.token())
    assert refused.reason is AuthReason.BAD_SIGNATURE
    assert (refused.issuer, refused.subject) == (idp.url, "alice")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://evil.example.com"}, AuthReason.WRONG_ISSUER),
        ({"aud": "another-service"}, AuthReason.WRONG_AUDIENCE),
        ({"aud": None}, AuthReason.WRONG_AUDIENCE),
        ({"exp": int(NOW) - 60}, AuthReason.EXPIRED),
        ({"nbf": int(NOW) + 60}, AuthReason.NOT_YET_VALID),
        ({"iat": int(NOW) + 60}, AuthReason.NOT_YET_VALID),
        ({"sub": None}, AuthReason.MALFORMED),
        ({"sub": "x" * 1025}, AuthReason.MALFORMED),
        ({"exp": None}, AuthReason.MALFORMED),
        ({"groups": "engineering"}, AuthReason.MALFORMED),
        ({"kubernetes.io": {"namespace": "ci"}}, AuthReason.MALFORMED),
        ({"groups": ["sales"]}, AuthReason.NO_MATCHING_RULE),
    ],
)
def test_claim_refusals(overrides: dict[str, Any], reason: AuthReason) -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    assert _refusal(exchange, idp.token(**overrides)).reason is reason


def test_leeway_tolerates_small_skew() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    assert exchange.exchange(idp.token(exp=int(NOW) - 2, nbf=int(NOW) + 2), NOW)


def test_alg_none_is_refused() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": idp.kid}).encode())
    token = f"{header}.{_b64(json.dumps(idp.claims()).encode())}."
    refused = _refusal(exchange, token)
    assert refused.reason is AuthReason.ALGORITHM_NOT_ALLOWED
    assert refused.subject == "alice"


def test_hs256_with_the_public_key_as_secret_is_refused() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    pem = idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(idp.claims()).encode())}"
    mac = hmac.new(pem, signing_input.encode(), sha256).digest()
    token = f"{signing_input}.{_b64(mac)}"
    assert _refusal(exchange, token).reason is AuthReason.ALGORITHM_NOT_ALLOWED


def test_an_algorithm_the_issuer_is_not_trusted_with() -> None:
    rsa_idp = OidcIssuer()
    exchange, _ = exchanger(rsa_idp)
    # an ES256 token under the RSA key's kid: the key does not fit the algorithm
    ec_token = jwt.encode(
        rsa_idp.claims(), new_key("ES256"), algorithm="ES256", headers={"kid": rsa_idp.kid}
    )
    assert _refusal(exchange, ec_token).reason is AuthReason.ALGORITHM_NOT_ALLOWED
    # PS256 is an RSA algorithm, but not one Felix accepts
    ps = jwt.encode(rsa_idp.claims(), rsa_idp.key, algorithm="PS256", headers={"kid": "idp-1"})
    assert _refusal(exchange, ps).reason is AuthReason.ALGORITHM_NOT_ALLOWED


def test_issuer_restricted_to_one_algorithm() -> None:
    idp = OidcIssuer(alg="EdDSA")
    rules = [ClaimRule(tenant="acme", roles=("r",))]
    exchange = TokenExchanger(
        [idp.issuer(algorithms=("RS256",))], rules, Ed25519PrivateKey.generate()
    )
    assert _refusal(exchange, idp.token()).reason is AuthReason.ALGORITHM_NOT_ALLOWED


def test_unknown_kid_and_missing_token() -> None:
    idp = OidcIssuer()
    exchange, _ = exchanger(idp)
    assert _refusal(exchange, idp.token(headers={"kid": "nope"})).reason is AuthReason.UNKNOWN_KEY
    assert _refusal(exchange, None).reason is AuthReason.MISSING
    assert _refusal(exchange, "  ").reason is AuthReason.MISSING
    assert _refusal(exchange, "not-a-jwt").reason is AuthReason.MALFORMED
    assert _refusal(exchange, "a" * 20000).reason is AuthReason.MALFORMED


# -- JWKS and configuration -----------------------------------------------------------------


def test_external_jwks_reads_rsa_ec_and_ed25519() -> None:
    keys = [OidcIssuer(alg=a, kid=a).jwk() for a in ("RS256", "ES256", "EdDSA")]
    encryption = {**OidcIssuer(alg="RS256", kid="enc").jwk(), "use": "enc"}
    read = read_external_jwks(json.dumps({"keys": [*keys, encryption]}))
    assert {kid: k.algorithm for kid, k in read.items()} == {
        "RS256": "RS256",
        "ES256": "ES256",
        "EdDSA": "EdDSA",
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, "private or symmetric"),
        ("nope", "not a JSON object"),
    ],
)
def test_external_jwks_refusals(entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_external_jwks(json.dumps({"keys": [entry]}))


def test_external_jwks_skips_keys_for_other_algorithms() -> None:
    jwk = OidcIssuer().jwk()
    p384 = {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}
    others = [{**jwk, "kid": "rs384", "alg": "RS384"}, {**jwk, "kid": "ps", "alg": "PS256"}, p384]
    read = read_external_jwks(json.dumps({"keys": [*others, jwk]}))
    assert list(read) == [jwk["kid"]]


def test_external_jwks_refuses_private_keys() -> None:
    jwk = OidcIssuer().jwk()
    with pytest.raises(ValueError, match="private"):
        read_external_jwks(json.dumps({"keys": [{**jwk, "d": "AAAA"}]}))
    with pytest.raises(ValueError, match="twice"):
        read_external_jwks(json.dumps({"keys": [jwk, jwk]}))


CONFIG = """
[[issuer]]
issuer = "https://kubernetes.default.svc.cluster.local"
audience = "felix"
jwks_file = "k8s-jwks.json"
algorithms = ["RS256"]

[[rule]]
namespace = "ci"
service_account = "builder"
tenant = "acme"
roles = ["ci"]
permissions = ["publish:default/*"]
"""


def test_load_exchange_config() -> None:
    k8s = OidcIssuer(url=K8S_ISSUER)
    config = load_exchange_config(CONFIG, read_file=lambda p: k8s.jwks())
    assert [i.issuer for i in config.issuers] == [K8S_ISSUER]
    assert config.issuers[0].algorithms == ("RS256",)
    assert config.rules[0].tenant == "acme"
    assert config.rules[0].permissions == (Permission.parse("publish:default/*"),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('jwks_file = "k8s-jwks.json"', ""), "exactly one of"),
        (lambda t: t.replace('"RS256"', '"HS256"'), "algorithms must be among"),
        (lambda t: t.replace('tenant = "acme"', 'tenant = "no good"'), "rule 1: invalid tenant"),
        (lambda t: t.replace("roles", "rolez"), "rule 1: unknown key 'rolez'"),
        (lambda t: t.replace('"publish:default/*"', '"fly:*/*"'), "rule 1: invalid permission"),
        (lambda t: t.split("[[rule]]")[0], "no \\[\\[rule\\]\\]"),
        (lambda t: t + "\n[extra]\n", "unknown table"),
        (lambda t: t.replace("jwks_file", "jwks_url"), "jwks_url is not available"),
    ],
)
def test_load_exchange_config_refusals(change: Any, message: str) -> None:
    k8s = OidcIssuer(url=K8S_ISSUER)
    with pytest.raises(ValueError, match=message):
        load_exchange_config(change(CONFIG), read_file=lambda p: k8s.jwks())


def test_load_exchange_config_names_an_unreadable_jwks_file() -> None:
    def missing(path: str) -> bytes:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ValueError, match=r"issuer 1: k8s-jwks\.json: No such file"):
        load_exchange_config(CONFIG, read_file=missing)


def test_a_felix_token_that_does_not_read_back_is_a_refusal() -> None:
    """Rules with so many permissions that the Felix token passes the verifier's size limit:
    a typed refusal, never an exception of another kind."""
    idp = OidcIssuer()
    grants = tuple(Permission.parse(f"publish:default/stream-{i:04d}") for i in range(400))
    exchange, _ = exchanger(idp, rules=[ClaimRule(tenant="acme", permissions=grants)])
    assert _refusal(exchange, idp.token()).reason is AuthReason.MALFORMED
