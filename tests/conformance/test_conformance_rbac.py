"""The ``rbac.*`` checks (§5.6 inside one tenant, ``--restricted-token``) and
``auth.other-tenant-feeds`` against our broker in process with shared secrets (two of one
tenant, one of another): they pass; they skip, saying why,
without the option; and they fail against brokers with an authorization fault (a grant
that spills to another action, FORBIDDEN without its details, an answer that tells another
connection's feed from an absent one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from conformance_broker import Running, broker
from test_conformance_faults import rewriting

from conformance.checks import all_checks
from conformance.registry import select
from conformance.runner import Outcome, Result, run_checks, summary_line
from conformance.wire import open_conn
from felix_core.access import Access, Action, Principal, authorize
from felix_core.errors import EngineError
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

pytestmark = pytest.mark.anyio

SECRETS = "full=alpha:*, ro=alpha:subscribe:ns/ro-*, other=bravo:*, bare"
"""``full`` may do everything in tenant alpha; ``ro`` only subscribe to ``ns/ro-*``;
``other`` everything in tenant bravo; ``bare`` is an operator."""
OPTIONS = {
    "token": "full",
    "tenant": "alpha",
    "namespace": "ns",
    "restricted_token": "ro",
    "restricted_subject": "shared-secret:2",  # its place in SECRETS
    "other_token": "other",
    "other_tenant": "bravo",
}
RBAC = {
    "rbac.granted",
    "rbac.forbidden",
    "rbac.admin-reads",
    "rbac.foreign-consumer",
    "rbac.foreign-subscription",
    "rbac.live-change",
}


async def _run(running: Running, expr: str = "rbac.*", **options: str) -> dict[str, Result]:
    base = running.options()
    options = options or OPTIONS
    chosen = select(all_checks(), expr)
    results = await run_checks(chosen, dataclasses.replace(base, **options))  # type: ignore[arg-type]
    return {r.check.name: r for r in results}


def _explain(results: dict[str, Result]) -> str:
    return (
        "\n".join(r.line() for r in results.values()) + "\n" + summary_line(list(results.values()))
    )


async def test_the_rbac_checks_pass_with_a_restricted_token(tmp_path: Path) -> None:
    async with broker(tmp_path, auth_tokens=SECRETS) as running:
        results = await _run(running, "rbac.*,auth.other-tenant-feeds")
    assert set(results) == {*RBAC, "auth.other-tenant-feeds"}
    assert {r.outcome for r in results.values()} == {Outcome.PASS}, _explain(results)


async def test_they_skip_without_a_restricted_token(tmp_path: Path) -> None:
    async with broker(tmp_path) as running:
        results = await _run(running, token="")
    assert set(results) == RBAC
    for result in results.values():
        assert result.outcome is Outcome.SKIP, _explain(results)
        assert result.reason == "no --restricted-token given"
    async with broker(tmp_path, auth_tokens=SECRETS) as running:
        options = {k: v for k, v in OPTIONS.items() if k != "restricted_subject"}
        results = await _run(running, "rbac.live-change", **options)
    assert results["rbac.live-change"].outcome is Outcome.SKIP, _explain(results)
    assert results["rbac.live-change"].reason == "no --restricted-subject given"


def spilling(real: Callable[[Principal, Access], EngineError | None]) -> Callable[..., object]:
    """An authorization where ``subscribe`` on a stream also grants ``cache.read`` on a
    cache of the same name."""

    def decide(principal: Principal, access: Access) -> EngineError | None:
        if access.action is Action.CACHE_READ:
            access = dataclasses.replace(access, action=Action.SUBSCRIBE)
        return real(principal, access)

    return decide


async def test_a_grant_that_spills_fails_rbac_forbidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("felix_server.router.authorize", spilling(authorize))
    async with broker(tmp_path, auth_tokens=SECRETS) as running:
        results = await _run(running, "rbac.forbidden,rbac.granted")
    assert results["rbac.forbidden"].outcome is Outcome.FAIL, _explain(results)
    assert "Subscribe(cache) on an existing cache answered Subscribed" in (
        results["rbac.forbidden"].reason
    )
    assert results["rbac.granted"].outcome is Outcome.PASS, _explain(results)


def no_details(msg: m.Message) -> m.Message:
    """FORBIDDEN without ``details``."""
    if isinstance(msg, m.Error) and msg.code == ErrorCode.FORBIDDEN:
        return dataclasses.replace(msg, details={})
    return msg


async def test_forbidden_without_details_fails(tmp_path: Path) -> None:
    async with broker(
        tmp_path, auth_tokens=SECRETS, connection_factory=rewriting(no_details)
    ) as running:
        results = await _run(running, "rbac.forbidden,rbac.admin-reads,rbac.granted")
    for name in ("rbac.forbidden", "rbac.admin-reads"):
        assert results[name].outcome is Outcome.FAIL, _explain(results)
        assert "FORBIDDEN details {}" in results[name].reason
    assert results["rbac.granted"].outcome is Outcome.PASS, _explain(results)


def telling(msg: m.Message) -> m.Message:
    """NOT_FOUND for an id that was handed out says that it exists elsewhere."""
    if isinstance(msg, m.Error) and msg.code == ErrorCode.NOT_FOUND:
        for key in ("consumer_id", "subscription_id"):
            held = msg.details.get(key)
            if isinstance(held, int) and held < 1_000_000:
                return dataclasses.replace(msg, message=f"{key} {held} belongs to another client")
    return msg


async def test_an_answer_that_tells_another_connections_feed_fails(tmp_path: Path) -> None:
    async with broker(tmp_path, auth_tokens=SECRETS, connection_factory=rewriting(telling)) as r:
        results = await _run(r, "rbac.foreign-*,auth.other-tenant-feeds")
    for name in ("rbac.foreign-consumer", "rbac.foreign-subscription", "auth.other-tenant-feeds"):
        assert results[name].outcome is Outcome.FAIL, _explain(results)
        assert "they must be the same" in results[name].reason


async def test_welcome_names_the_tenant_of_a_tenant_credential_only(tmp_path: Path) -> None:
    async with broker(tmp_path, auth_tokens=SECRETS) as running:
        endpoint = running.options().endpoint
        for token, tenant in (("ro", "alpha"), ("other", "bravo"), ("bare", None)):
            async with open_conn(endpoint) as conn:
                welcome = await conn.hello(token=token)
                assert isinstance(welcome, m.Welcome), welcome
                assert welcome.tenant == tenant, token


async def test_roles_that_apply_only_to_new_connections_fail_live_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "felix_server.router.Router._access_changed", lambda self, tenants, now: None
    )
    async with broker(tmp_path, auth_tokens=SECRETS) as running:
        results = await _run(running, "rbac.live-change,rbac.granted")
    assert results["rbac.live-change"].outcome is Outcome.FAIL, _explain(results)
    assert "Publish after the binding answered Error 111" in results["rbac.live-change"].reason
    assert results["rbac.granted"].outcome is Outcome.PASS, _explain(results)
