"""A token's expiry ends a live connection's rights at that instant (the session's timer):
connection-level ``Error(UNAUTHENTICATED)``, reason ``expired``, then close. Sans-IO, over
the in-memory network of ``tests/runtime/memory_net.py`` under a fake clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from felix_core.access import Permission, Principal
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.connection import TOKEN_REFRESH
from felix_proto.errors import ErrorCode, LocalProtocolError
from felix_server.access import Refusal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from memory_net import MemoryNet


def expiring_at(deadline: float) -> object:
    def authenticate(hello: m.Hello, now: float) -> Principal | Refusal:
        return Principal(
            subject="alice",
            tenant="default",
            permissions=frozenset({Permission.parse("*")}),
            issuer="felix",
            expires_at=deadline,
        )

    return authenticate


def test_expiry_closes_a_live_subscription_at_that_instant(tmp_path: Path) -> None:
    start = 1_000_000.0  # MemoryNet's clock
    deadline = start + 10.0  # within the QUIC idle timeout (nothing else is sent)
    net = MemoryNet(tmp_path, authenticate=expiring_at(deadline))  # type: ignore[arg-type]
    client = net.client()
    felix = client.felix
    assert felix is not None
    felix.admin(
        m.AdminCreate, now=net.now, kind="stream", tenant="default", namespace="default", name="s"
    )
    felix.subscribe("default", "default", "s", now=net.now)
    net.until(lambda: bool(client.of(fe.SubscriptionStarted)))
    session = net.session(client)
    assert session.get_timer() is not None and session.get_timer() <= deadline  # type: ignore[operator]
    net.until(lambda: bool(client.of(fe.ConnectionTerminated)))
    (error,) = client.of(fe.ErrorReceived)  # on the control stream, before the close
    assert (error.stream_id, error.code, error.details) == (
        0,
        ErrorCode.UNAUTHENTICATED,
        {"reason": "expired"},
    )
    assert error.message == "missing or invalid token (expired)"
    net.until(lambda: client.terminated is not None)
    assert client.terminated is not None
    assert client.terminated.error_code == ErrorCode.UNAUTHENTICATED  # QUIC's close code
    assert deadline <= net.now < deadline + 1.0  # at that instant, not at some later check
    net.until(lambda: not net.server.sessions)


def test_a_principal_without_expiry_sets_no_timer(tmp_path: Path) -> None:
    net = MemoryNet(tmp_path)  # anonymous: never expires
    client = net.client()
    net.settle()
    session = net.session(client)
    timer = session.get_timer()
    assert timer is None or timer < net.now + 3600  # QUIC's idle timer at most


def renewable(start: float) -> object:
    """Tokens by name: ``t1`` (10 s), ``t2`` (1000 s) of alice in ``default``; ``eve`` of
    another subject; ``blue`` of another tenant; anything else refused."""
    grants = frozenset({Permission.parse("*")})

    def authenticate(hello: m.Hello, now: float) -> Principal | Refusal:
        subject, tenant, ttl = {
            "t1": ("alice", "default", 10.0),
            "t2": ("alice", "default", 1000.0),
            "eve": ("eve", "default", 1000.0),
            "blue": ("alice", "blue", 1000.0),
        }.get(hello.token or "", ("", "", 0.0))
        if not subject:
            return Refusal(
                code=ErrorCode.UNAUTHENTICATED,
                message="missing or invalid token (bad_signature)",
                details={"reason": "bad_signature"},
            )
        return Principal(
            subject=subject,
            tenant=tenant,
            permissions=grants,
            issuer="felix",
            expires_at=start + ttl,
        )

    return authenticate


def test_reauthenticate_moves_the_expiry_and_refusals_keep_the_old_rights(
    tmp_path: Path,
) -> None:
    start = 1_000_000.0
    net = MemoryNet(tmp_path, authenticate=renewable(start))  # type: ignore[arg-type]
    client = net.client(token="t1", capabilities=[TOKEN_REFRESH])
    felix = client.felix
    assert felix is not None and felix.capabilities == [TOKEN_REFRESH]
    session = net.session(client)
    assert session.principal is not None and session.principal.expires_at == start + 10.0

    def answer(token: str) -> fe.Event:
        rid = felix.reauthenticate(token, now=net.now)
        found: list[fe.Event] = []

        def answered() -> bool:
            found[:] = [
                e
                for e in client.events
                if isinstance(e, fe.RequestSucceeded | fe.RequestFailed) and e.request_id == rid
            ]
            return bool(found)

        net.until(answered)
        return found[0]

    for token, code, text in (
        ("forged", ErrorCode.UNAUTHENTICATED, "missing or invalid token (bad_signature)"),
        ("eve", ErrorCode.FORBIDDEN, "a refreshed token must name the connection's tenant"),
        ("blue", ErrorCode.FORBIDDEN, "a refreshed token must name the connection's tenant"),
    ):
        failed = answer(token)
        assert isinstance(failed, fe.RequestFailed), token
        assert failed.code == code and failed.message.startswith(text), failed
        assert session.principal.expires_at == start + 10.0  # the old rights stand
    assert isinstance(answer("t2"), fe.RequestSucceeded)
    assert session.principal is not None and session.principal.expires_at == start + 1000.0
    net.step(tick=10.5)  # past the first token's exp
    net.settle()
    assert not client.of(fe.ErrorReceived) and client.terminated is None
    felix.admin(m.AdminList, now=net.now, kind="stream", tenant="default", namespace="default")
    net.until(lambda: bool(client.of(fe.AdminReplied)))  # still served


def test_no_token_refresh_without_authentication(tmp_path: Path) -> None:
    net = MemoryNet(tmp_path)  # anonymous: nothing to renew, the capability is not offered
    client = net.client(capabilities=[TOKEN_REFRESH])
    felix = client.felix
    assert felix is not None and felix.capabilities == []
    with pytest.raises(LocalProtocolError, match="did not agree to 'token-refresh'"):
        felix.reauthenticate("t2", now=net.now)


def test_an_authenticator_that_raises_on_reauthenticate_is_answered_internal(
    tmp_path: Path,
) -> None:
    start = 1_000_000.0
    renew = renewable(start)

    def flaky(hello: m.Hello, now: float) -> Principal | Refusal:
        if hello.token == "boom":
            raise RuntimeError("a bug in the authenticator")
        return renew(hello, now)  # type: ignore[operator,no-any-return]

    net = MemoryNet(tmp_path, authenticate=flaky)
    client = net.client(token="t1", capabilities=[TOKEN_REFRESH])
    felix = client.felix
    assert felix is not None
    rid = felix.reauthenticate("boom", now=net.now)
    net.until(lambda: any(getattr(e, "request_id", None) == rid for e in client.events))
    (failed,) = [e for e in client.of(fe.RequestFailed) if e.request_id == rid]
    assert failed.code == ErrorCode.INTERNAL
    rid = felix.reauthenticate("t2", now=net.now)  # the connection goes on
    net.until(lambda: any(getattr(e, "request_id", None) == rid for e in client.events))
    assert [e for e in client.of(fe.RequestSucceeded) if e.request_id == rid]
