"""TokenExchange in the broker's session, sans-IO over the in-memory network of
``tests/runtime/memory_net.py`` under a fake clock: login by exchange, refusals, the login
deadline, exchange on a live connection, the capability, and the audit hook."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from oidc_issuers import OidcIssuer

from felix_core.access import Permission, Principal
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.connection import TOKEN_EXCHANGE, TOKEN_REFRESH
from felix_proto.errors import ErrorCode, LocalProtocolError
from felix_runtime.credentials import BearerAuthenticator
from felix_runtime.exchange import ClaimRule, TokenExchanger, exchange_seam
from felix_runtime.tokens import TokenVerifier, key_id, read_unverified
from felix_server.access import bearer
from felix_server.config import TransportConfig
from felix_server.observer import ServerObserver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from memory_net import MemoryClient, MemoryNet

START = 1_000_000.0  # MemoryNet's clock
CAPS = [TOKEN_REFRESH, TOKEN_EXCHANGE]


class Recorder(ServerObserver):
    """Keeps the audit hooks' calls."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[Any, ...]] = []
        self.accepted: list[Principal] = []

    def token_exchanged(self, *args: Any) -> None:
        self.exchanges.append(args)

    def handshake_accepted(self, conn_id: int, principal: Principal) -> None:
        self.accepted.append(principal)


IDP = OidcIssuer(alg="ES256")


def id_token(subject: str = "alice", ttl: float = 3600.0, **overrides: Any) -> str:
    return IDP.token(sub=subject, iat=int(START), nbf=int(START), exp=int(START + ttl), **overrides)


def broker(tmp: Path, *, with_exchange: bool = True, **transport: Any) -> tuple[MemoryNet, Any]:
    key = Ed25519PrivateKey.generate()
    rules = [ClaimRule(tenant="default", permissions=(Permission.parse("*"),), group="eng*")]
    exchanger = TokenExchanger([IDP.issuer()], rules, key, ttl=600.0, new_id=lambda: "jti")
    public = key.public_key()
    verifier = TokenVerifier({"felix": {key_id(public): public}})
    observer = Recorder()
    net = MemoryNet(
        tmp,
        transport=TransportConfig(**transport),
        observer=observer,
        authenticate=bearer(BearerAuthenticator(verifier=verifier).authenticate),
        exchange=exchange_seam(exchanger) if with_exchange else None,
    )
    return net, observer


def answer(net: MemoryNet, client: MemoryClient, rid: int) -> fe.Event:
    found: list[fe.Event] = []

    def answered() -> bool:
        found[:] = [
            e
            for e in client.events
            if isinstance(e, fe.TokenReceived | fe.RequestSucceeded | fe.RequestFailed)
            and e.request_id == rid
        ]
        return bool(found)

    net.until(answered)
    return found[0]


def create(net: MemoryNet, client: MemoryClient) -> fe.Event:
    felix = client.felix
    assert felix is not None
    rid = felix.admin(
        m.AdminCreate, now=net.now, kind="stream", tenant="default", namespace="default", name="s"
    )
    found: list[fe.Event] = []

    def answered() -> bool:
        found[:] = [
            e
            for e in client.events
            if isinstance(e, fe.AdminReplied | fe.RequestFailed) and e.request_id == rid
        ]
        return bool(found)

    net.until(answered)
    return found[0]


def test_login_by_exchange(tmp_path: Path) -> None:
    net, observer = broker(tmp_path)
    client = net.client(capabilities=CAPS)
    felix = client.felix
    assert felix is not None and felix.capabilities == CAPS
    session = net.session(client)
    assert session.principal is None
    before = create(net, client)  # no credential yet: refused, the connection stays
    assert isinstance(before, fe.RequestFailed)
    assert (before.code, before.details) == (ErrorCode.UNAUTHENTICATED, {"reason": "missing"})
    renew = answer(net, client, felix.reauthenticate("anything", now=net.now))
    assert isinstance(renew, fe.RequestFailed)  # nothing to renew before the login
    assert (renew.code, renew.details) == (ErrorCode.UNAUTHENTICATED, {"reason": "missing"})
    issued = answer(net, client, felix.exchange_token(id_token(), now=net.now))
    assert isinstance(issued, fe.TokenReceived)
    assert 599_000 <= issued.expires_in_ms <= 600_000
    assert read_unverified(issued.token)[1]["sub"] == "alice"
    assert session.principal is not None and session.principal.subject == "alice"
    assert session.get_timer() is not None
    assert isinstance(create(net, client), fe.AdminReplied)  # logged in: served
    (call,) = observer.exchanges
    assert call[1:3] == (IDP.url, "alice") and call[4:] == (0, "")
    assert [p.subject for p in observer.accepted] == ["alice"]


def test_a_refused_login_closes_the_connection(tmp_path: Path) -> None:
    net, observer = broker(tmp_path)
    client = net.client(capabilities=CAPS)
    felix = client.felix
    assert felix is not None
    refused = answer(net, client, felix.exchange_token(id_token(aud="other"), now=net.now))
    assert isinstance(refused, fe.RequestFailed)
    assert refused.code == ErrorCode.UNAUTHENTICATED
    assert refused.details == {"reason": "wrong_audience"}
    net.until(lambda: client.terminated is not None)
    assert client.terminated is not None
    assert client.terminated.error_code == ErrorCode.UNAUTHENTICATED
    (call,) = observer.exchanges
    assert call[1:4] == (IDP.url, "alice", None)
    assert call[4:] == (int(ErrorCode.UNAUTHENTICATED), "wrong_audience")
    assert observer.accepted == []


def test_no_login_within_the_handshake_timeout(tmp_path: Path) -> None:
    net, _ = broker(tmp_path, handshake_timeout_s=2.0)
    client = net.client(capabilities=CAPS)
    net.until(lambda: client.terminated is not None)
    (error,) = client.of(fe.ErrorReceived)
    assert (error.stream_id, error.code, error.details) == (
        0,
        ErrorCode.UNAUTHENTICATED,
        {"reason": "missing"},
    )
    assert error.message == "no TokenExchange within 2 s"
    assert START + 2.0 <= net.now < START + 3.0


def test_a_hello_without_token_and_without_the_capability_is_refused(tmp_path: Path) -> None:
    net, _ = broker(tmp_path)
    client = net.client(capabilities=[TOKEN_REFRESH], hello=False)
    felix = client.felix
    assert felix is not None
    felix.connect(now=net.now)
    net.until(lambda: client.terminated is not None)
    assert client.terminated is not None
    assert client.terminated.error_code == ErrorCode.UNAUTHENTICATED
    assert not client.of(fe.Welcomed)


def test_exchange_on_a_live_connection(tmp_path: Path) -> None:
    net, observer = broker(tmp_path)
    client = net.client(capabilities=CAPS)
    felix = client.felix
    assert felix is not None
    first = answer(net, client, felix.exchange_token(id_token(), now=net.now))
    assert isinstance(first, fe.TokenReceived)
    session = net.session(client)
    assert session.principal is not None
    expires = session.principal.expires_at
    net.step(tick=5.0)
    again = answer(net, client, felix.exchange_token(id_token(), now=net.now))
    assert isinstance(again, fe.TokenReceived)
    assert session.principal.expires_at is not None and expires is not None
    assert session.principal.expires_at > expires  # renewed
    other = answer(net, client, felix.exchange_token(id_token("mallory"), now=net.now))
    assert isinstance(other, fe.RequestFailed) and other.code == ErrorCode.FORBIDDEN
    bad = answer(net, client, felix.exchange_token(id_token(groups=["sales"]), now=net.now))
    assert isinstance(bad, fe.RequestFailed)
    assert bad.details == {"reason": "no_matching_rule"}
    assert session.principal.subject == "alice"  # refusals keep the rights
    assert isinstance(create(net, client), fe.AdminReplied)
    # the Felix token works in the Hello of another connection
    second = net.client(token=first.token, capabilities=CAPS)
    assert net.session(second).principal is not None
    assert [c[4] for c in observer.exchanges] == [0, 0, int(ErrorCode.FORBIDDEN), 110]


def test_without_an_exchange_a_hello_without_token_is_refused(tmp_path: Path) -> None:
    net, _ = broker(tmp_path, with_exchange=False)
    client = net.client(capabilities=CAPS, hello=False)
    felix = client.felix
    assert felix is not None
    felix.connect(now=net.now)
    net.until(lambda: client.terminated is not None)  # no token, no exchange: refused
    assert client.terminated is not None
    assert client.terminated.error_code == ErrorCode.UNAUTHENTICATED


def test_the_client_refuses_locally_without_the_capability(tmp_path: Path) -> None:
    net, _ = broker(tmp_path)
    client = net.client(capabilities=[TOKEN_REFRESH, TOKEN_EXCHANGE])
    felix = client.felix
    assert felix is not None
    assert TOKEN_EXCHANGE in felix.capabilities
    plain = MemoryNet(tmp_path / "plain")
    other = plain.client(capabilities=CAPS)
    assert other.felix is not None and other.felix.capabilities == []
    with pytest.raises(LocalProtocolError, match="token-exchange"):
        other.felix.exchange_token(id_token(), now=plain.now)


def test_an_exchange_while_going_away_is_answered(tmp_path: Path) -> None:
    net, _ = broker(tmp_path)
    client = net.client(capabilities=CAPS)
    felix = client.felix
    assert felix is not None
    assert isinstance(
        answer(net, client, felix.exchange_token(id_token(), now=net.now)), fe.TokenReceived
    )
    net.server.begin_shutdown(net.now)
    net.until(lambda: bool(client.of(fe.GoAwayReceived)))
    renewed = answer(net, client, felix.exchange_token(id_token(), now=net.now))
    assert isinstance(renewed, fe.TokenReceived)  # renewing the rights is finishing work


def test_a_reauthenticate_while_going_away_is_answered(tmp_path: Path) -> None:
    """Renewing the rights by ``Reauthenticate`` is finishing work, like an exchange: a
    token that expires during the drain must not end the work the drain lets finish."""
    net, _ = broker(tmp_path)
    client = net.client(capabilities=CAPS)
    felix = client.felix
    assert felix is not None
    issued = answer(net, client, felix.exchange_token(id_token(), now=net.now))
    assert isinstance(issued, fe.TokenReceived)
    net.server.begin_shutdown(net.now)
    net.until(lambda: bool(client.of(fe.GoAwayReceived)))
    renewed = answer(net, client, felix.reauthenticate(issued.token, now=net.now))
    assert isinstance(renewed, fe.RequestSucceeded), renewed
