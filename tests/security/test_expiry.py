"""A token's expiry ends a live connection's rights at that instant (the session's timer):
connection-level ``Error(UNAUTHENTICATED)``, reason ``expired``, then close. Sans-IO, over
the in-memory network of ``tests/runtime/memory_net.py`` under a fake clock."""

from __future__ import annotations

import sys
from pathlib import Path

from felix_core.access import Permission, Principal
from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
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
