"""Mutual TLS without a network: client chain verification (``ClientCA``), the identity
rules, and how a certificate and a token decide a ``Hello`` together."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from certs import DAY, TestCA
from fake_issuers import FakeIssuer

from felix_core.access import Permission, Principal
from felix_proto import messages as m
from felix_runtime.credentials import BearerAuthenticator
from felix_runtime.tls_clients import (
    ClientCA,
    client_authenticator,
    identity_of,
    map_identity,
    parse_identity_rules,
)
from felix_server.access import (
    CertificateRefused,
    PeerAuthenticator,
    Refusal,
    bearer,
    for_connection,
)

SPIFFE = "uri:spiffe://felix/tenant/{tenant}/sa/{subject} => publish:default/*"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "clients")


def test_a_certificate_of_the_client_ca_verifies(ca: TestCA) -> None:
    issued = ca.issue("alice", uris=("spiffe://felix/tenant/acme/sa/alice",), o="acme")
    identity = ClientCA(ca.file.read_bytes()).verify(issued.certificate, [])
    assert identity.uris == ("spiffe://felix/tenant/acme/sa/alice",)
    assert identity.organizations == ("acme",) and identity.common_names == ("client",)
    assert identity.not_after == pytest.approx(issued.certificate.not_valid_after_utc.timestamp())


def test_a_chain_through_an_intermediate_verifies_only_with_it(ca: TestCA) -> None:
    intermediate = ca.intermediate("issuing")
    issued = intermediate.issue("leaf", uris=("spiffe://felix/tenant/acme/sa/leaf",))
    anchors = ClientCA(ca.file.read_bytes())
    identity = anchors.verify(issued.certificate, [intermediate.certificate])
    assert identity.uris == ("spiffe://felix/tenant/acme/sa/leaf",)
    with pytest.raises(CertificateRefused, match="refused"):
        anchors.verify(issued.certificate, [])  # the client left its intermediate out


def test_a_certificate_without_subject_alternative_names_verifies(ca: TestCA) -> None:
    issued = ca.issue("plain", cn="bob", o="acme")
    identity = ClientCA(ca.file.read_bytes()).verify(issued.certificate, [])
    assert identity.uris == () and identity.common_names == ("bob",)


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [(-10 * DAY, -DAY, "expired"), (DAY, 10 * DAY, "not_yet_valid")],
)
def test_a_certificate_outside_its_validity_is_refused(
    ca: TestCA, not_before: datetime.timedelta, not_after: datetime.timedelta, reason: str
) -> None:
    issued = ca.issue("c", cn="c", not_before=not_before, not_after=not_after)
    with pytest.raises(CertificateRefused) as refused:
        ClientCA(ca.file.read_bytes()).verify(issued.certificate, [])
    assert refused.value.reason == reason


def test_validity_is_checked_at_the_clock_of_the_call(ca: TestCA) -> None:
    issued = ca.issue("c", cn="c", not_after=DAY)
    later = time.time() + 2 * DAY.total_seconds()
    with pytest.raises(CertificateRefused, match="expired"):
        ClientCA(ca.file.read_bytes(), clock=lambda: later).verify(issued.certificate, [])


def test_another_ca_and_a_ca_certificate_itself_are_untrusted(ca: TestCA, tmp_path: Path) -> None:
    other = TestCA(tmp_path, "other")
    anchors = ClientCA(ca.file.read_bytes())
    for leaf in (other.issue("m", cn="m").certificate, other.certificate):
        with pytest.raises(CertificateRefused) as refused:
            anchors.verify(leaf, [])
        assert refused.value.reason == "untrusted"


def test_replace_swaps_the_anchors_and_a_bad_file_keeps_them(ca: TestCA, tmp_path: Path) -> None:
    other = TestCA(tmp_path, "other")
    anchors = ClientCA(ca.file.read_bytes())
    mine = ca.issue("mine", cn="mine").certificate
    with pytest.raises(ValueError):
        anchors.replace(b"not a certificate")
    anchors.verify(mine, [])  # still the old anchors
    anchors.replace(other.file.read_bytes())
    with pytest.raises(CertificateRefused):
        anchors.verify(mine, [])
    anchors.verify(other.issue("theirs", cn="t").certificate, [])


# ------------------------------------------------------------------------- the rules


def test_rules_capture_tenant_and_subject(ca: TestCA) -> None:
    rules = parse_identity_rules(f"{SPIFFE}\ncn:{{subject}} o:{{tenant}} => admin")
    spiffe = identity_of(ca.issue("a", uris=("spiffe://felix/tenant/acme/sa/alice",)).certificate)
    principal = map_identity(rules, spiffe)
    assert principal is not None
    assert (principal.tenant, principal.subject, principal.issuer) == (
        "acme",
        "alice",
        "tls-client",
    )
    assert principal.allows("publish", "default", "orders")
    assert not principal.allows("subscribe", "default", "orders")
    assert principal.expires_at == spiffe.not_after
    by_name = map_identity(rules, identity_of(ca.issue("b", cn="bob", o="globex").certificate))
    assert by_name is not None and (by_name.tenant, by_name.subject) == ("globex", "bob")
    assert by_name.allows("admin", "x", "y")


def test_the_first_matching_rule_decides_and_no_match_is_none(ca: TestCA) -> None:
    rules = parse_identity_rules("o:{tenant} => admin; cn:{subject} o:{tenant} => publish")
    identity = identity_of(ca.issue("b", cn="bob", o="globex").certificate)
    principal = map_identity(rules, identity)
    assert principal is not None and principal.subject == "globex"  # the value matched
    assert principal.allows("admin", "a", "b")
    stranger = identity_of(ca.issue("s", uris=("spiffe://other/x",)).certificate)
    assert map_identity(rules, stranger) is None


def test_a_captured_tenant_must_be_a_tenant_name(ca: TestCA) -> None:
    rules = parse_identity_rules("cn:{subject} o:{tenant} => admin")
    for bad in (".hidden", "-dash", "x" * 129):
        identity = identity_of(ca.issue("b", cn="bob", o=bad).certificate)
        assert map_identity(rules, identity) is None


def test_a_template_matches_whole_values_and_name_characters_only(ca: TestCA) -> None:
    rules = parse_identity_rules(SPIFFE)
    for uri in (
        "spiffe://felix/tenant/acme/sa/alice/extra",  # more than the template
        "spiffe://felix/tenant/a/b/sa/alice",  # a '/' inside a placeholder
        "xspiffe://felix/tenant/acme/sa/alice",
    ):
        assert map_identity(rules, identity_of(ca.issue("u", uris=(uri,)).certificate)) is None


@pytest.mark.parametrize(
    "text",
    [
        "uri:spiffe://x/{tenant}",  # no =>
        "=> admin",
        "uri:spiffe://x/{subject} => admin",  # no {tenant}
        "uri:{tenant} cn:{tenant} => admin",  # twice
        "serial:{tenant} => admin",  # unknown field
        "cn:{tenant} => fly:a/b",  # unknown action
    ],
)
def test_malformed_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="tls_client_rules: rule 1"):
        parse_identity_rules(text)


# ----------------------------------------------------- certificate and token together


def hello(token: str | None = None) -> m.Hello:
    return m.Hello(versions=[2], client_name="test", token=token)


def tokens_of(issuer: FakeIssuer) -> object:
    return bearer(BearerAuthenticator(verifier=issuer.verifier(), secrets=None).authenticate)


def test_without_rules_the_token_authenticator_is_unchanged(issuer: FakeIssuer) -> None:
    tokens = tokens_of(issuer)
    assert client_authenticator([], tokens) is tokens  # type: ignore[arg-type]
    assert client_authenticator([], None) is None


def test_certificate_and_token_precedence(ca: TestCA, issuer: FakeIssuer) -> None:
    now = time.time()
    rules = parse_identity_rules(SPIFFE)
    auth = client_authenticator(rules, tokens_of(issuer))  # type: ignore[arg-type]
    assert isinstance(auth, PeerAuthenticator)
    alice = identity_of(ca.issue("a", uris=("spiffe://felix/tenant/acme/sa/alice",)).certificate)
    # the certificate alone
    decision = auth.decide(hello(), now, alice)
    assert isinstance(decision, Principal) and decision.issuer == "tls-client"
    # with a token that agrees: the token's principal, ending at the earlier expiry
    token = issuer.token(
        subject="alice", tenant="acme", permissions=[Permission.parse("subscribe")], now=now, ttl=60
    )
    decision = auth.decide(hello(token), now, alice)
    assert isinstance(decision, Principal) and decision.issuer == "felix"
    assert decision.allows("subscribe", "a", "b") and not decision.allows("publish", "a", "b")
    assert decision.expires_at is not None and decision.expires_at <= now + 61
    # a token of another tenant or subject
    for other in (
        issuer.token(subject="alice", tenant="globex", now=now),
        issuer.token(subject="bob", tenant="acme", now=now),
    ):
        refused = auth.decide(hello(other), now, alice)
        assert isinstance(refused, Refusal) and refused.details == {
            "reason": "certificate_mismatch"
        }
    # a bad token is refused, not ignored
    refused = auth.decide(hello("not-a-token"), now, alice)
    assert isinstance(refused, Refusal)
    # no certificate: the token decides (optional mode); a call without a connection too
    assert isinstance(auth(hello(token), now), Principal)
    # a certificate that no rule maps
    stranger = identity_of(ca.issue("s", cn="stranger").certificate)
    refused = auth.decide(hello(token), now, stranger)
    assert isinstance(refused, Refusal) and refused.details["reason"] == "certificate_unmapped"


def test_certificates_only(ca: TestCA) -> None:
    auth = client_authenticator(parse_identity_rules(SPIFFE), None)
    assert isinstance(auth, PeerAuthenticator)
    alice = identity_of(ca.issue("a", uris=("spiffe://felix/tenant/acme/sa/alice",)).certificate)
    decision = auth.decide(hello("ignored-token"), time.time(), alice)
    assert isinstance(decision, Principal) and decision.subject == "alice"
    refused = auth.decide(hello(), time.time(), None)
    assert isinstance(refused, Refusal) and refused.details["reason"] == "missing"


def test_for_connection_hands_the_connection_s_certificate(ca: TestCA) -> None:
    auth = client_authenticator(parse_identity_rules(SPIFFE), None)
    assert auth is not None

    class Quic:
        client_identity = identity_of(
            ca.issue("a", uris=("spiffe://felix/tenant/acme/sa/alice",)).certificate
        )

    decision = for_connection(auth, Quic())(hello(), time.time())
    assert isinstance(decision, Principal) and decision.tenant == "acme"
    assert isinstance(for_connection(auth, object())(hello(), time.time()), Refusal)
    plain = bearer(lambda token, now: Principal(subject="s", tenant="t", issuer="i"))
    assert for_connection(plain, Quic()) is plain
