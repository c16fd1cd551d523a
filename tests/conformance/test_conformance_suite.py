"""The conformance suite against our own broker, in process on 127.0.0.1.

Every check must pass or skip, except the ones listed in :data:`KNOWN_BROKER_FINDINGS`:
those are real spec violations of the broker, found by this suite and reported; each must
*still fail* (so the entry is removed the day the broker is fixed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conformance_broker import broker

from conformance.checks import all_checks
from conformance.registry import select
from conformance.runner import Outcome, Result, run_checks, summary_line
from felix_core.log import Log

pytestmark = pytest.mark.anyio

KNOWN_BROKER_FINDINGS: set[str] = set()
"""Checks our broker is known to fail (none today; an entry must name the spec section)."""


def _report(results: list[Result]) -> str:
    return "\n".join(r.line() for r in results) + "\n" + summary_line(results)


@pytest.mark.parametrize(
    ("quic_engine", "client_engine"),
    [("aioquic", "aioquic"), ("qh3", "aioquic"), ("aioquic", "qh3")],
)
async def test_every_check_passes_against_our_broker(
    tmp_path: Path, quic_engine: str, client_engine: str
) -> None:
    """The whole suite, once per QUIC engine of the broker with the suite's client on
    aioquic, and once with the client on qh3 (``--quic-engine qh3``): both mixed pairs."""
    if "qh3" in (quic_engine, client_engine):
        pytest.importorskip("qh3")
    async with broker(tmp_path, quic_engine=quic_engine) as running:
        options = running.options(quic_engine=client_engine)
        results = await run_checks(select(all_checks(), "not session.goaway"), options)
    failed = {r.check.name for r in results if r.outcome is Outcome.FAIL}
    assert failed - KNOWN_BROKER_FINDINGS == set(), _report(results)
    assert KNOWN_BROKER_FINDINGS - failed == set(), (
        "fixed in the broker? remove from KNOWN_BROKER_FINDINGS\n" + _report(results)
    )
    skipped = {r.check.name for r in results if r.outcome is Outcome.SKIP}
    # no token here: the auth checks run in tests/security/test_auth_network.py
    auth = {
        "auth.other-tenant-is-absent",
        "auth.other-tenant-listing",
        "auth.other-tenant-feeds",
        "auth.refresh-keeps-the-tenant",
        "exchange.forgeries-refused",  # no issuer here: tests/security/test_exchange_network.py
        "exchange.login-first",
        # no restricted token here: tests/conformance/test_conformance_rbac.py
        "rbac.granted",
        "rbac.forbidden",
        "rbac.admin-reads",
        "rbac.foreign-consumer",
        "rbac.foreign-subscription",
        "rbac.live-change",
    }
    assert skipped <= {"session.bad-token", "limits.subscriptions", *auth}, _report(results)


DATA_PATH = "pubsub.*,queue.*,cache.*,streams.*,credit.*,not pubsub.cursor-too-old"
"""The checks that move records, messages and entries (run again on durable resources).
Not ``pubsub.cursor-too-old``: its 10 records with ``retention_max_records=3`` stay in a
durable log's active segment, since retention deletes whole segments (a durable log keeps
up to one segment more than its limits: docs/storage-format.md §6); CURSOR_TOO_OLD on a
durable stream is checked in tests/storage/test_engine.py."""


async def test_the_data_path_checks_pass_on_durable_resources(tmp_path: Path) -> None:
    """Issue 10: the data-path checks again, against a broker on a data directory whose
    resources are all ``durable`` (``broker.durability``): every record, message and entry
    goes through the durable logs, their jobs and fsyncs."""
    async with broker(tmp_path, durable=True) as running:
        assert running.server.storage is not None
        store = running.server.storage.store
        opened: list[str] = []
        open_log = store.open_log

        def noting(kind: str, *args: Any, **kwargs: Any) -> Log:
            log = open_log(kind, *args, **kwargs)
            opened.append(type(log).__name__)
            return log

        store.open_log = noting  # type: ignore[method-assign]
        results = await run_checks(select(all_checks(), DATA_PATH), running.options())
    failed = {r.check.name for r in results if r.outcome is Outcome.FAIL}
    assert failed == set(), _report(results)
    assert sum(r.outcome is Outcome.PASS for r in results) >= 30, _report(results)
    assert set(opened) == {"DiskLog"}, opened  # the checks' resources were all durable


async def test_goaway_with_the_shutdown_hook(tmp_path: Path) -> None:
    async with broker(tmp_path) as running:
        results = await run_checks(
            select(all_checks(), "session.goaway"), running.options(goaway=running.goaway)
        )
    assert [r.outcome for r in results] == [Outcome.PASS], _report(results)


async def test_goaway_skips_without_a_hook(tmp_path: Path) -> None:
    async with broker(tmp_path) as running:
        results = await run_checks(select(all_checks(), "session.goaway"), running.options())
    assert [r.outcome for r in results] == [Outcome.SKIP], _report(results)
