"""The audit trail of a real broker, on every runtime: every kind of event a client can
cause over the network is written (handshakes accepted and refused, token refreshes, a
permission denial, admin changes with their outcome), the trail checks out with ``felix
audit verify``, an edit is named, and ``audit = false`` writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from brokers import Broker, FreshBroker
from test_auth_network import Issuer, client

from felix_client import Forbidden, NotFound, Unauthenticated
from felix_client.cli import main as felix
from felix_proto.errors import ErrorCode
from felix_runtime.audit import audit_files

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


def entries(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for f in audit_files(directory) for line in f.read_bytes().splitlines()
    ]


async def cause_every_event(broker: Broker, issuer: Issuer, stranger: Issuer) -> None:
    admin = issuer.token("acme")
    async with client(broker, admin, "acme") as c:
        await c.admin.create("tenant", "acme")
        await c.admin.create("namespace", "ns")
        await c.admin.create("stream", "s")
        await c.admin.update("stream", "s", {"retention_max_records": 5})
        await c.admin.delete("stream", "s")
        with pytest.raises(NotFound):
            await c.admin.delete("stream", "s")  # an admin change that fails
        await c.refresh_token(issuer.token("acme"))
        with pytest.raises(Forbidden):
            await c.refresh_token(issuer.token("other"))
    async with client(broker, issuer.token("acme", "subscribe:ns/*"), "acme") as c:
        with pytest.raises(Forbidden):
            await c.publish("s", b"x")
    with pytest.raises(Unauthenticated):
        async with client(broker, stranger.token("acme"), "acme") as c:
            await c.publish("s", b"x")


async def test_every_event_kind_is_written_and_verifies(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await cause_every_event(broker, issuer, Issuer(tmp_path, "stranger"))
    assert broker.stop() == 0  # the trail is flushed and closed at shutdown
    trail = broker.data_dir / "audit"
    got = entries(trail)
    kinds = {e["kind"] for e in got}
    assert kinds >= {
        "chain_start",
        "handshake_accepted",
        "handshake_refused",
        "token_refresh",
        "access_denied",
        "admin",
    }
    accepted = next(e for e in got if e["kind"] == "handshake_accepted")
    assert (accepted["subject"], accepted["tenant"], accepted["issuer"]) == (
        "acme-app",
        "acme",
        "felix",
    )
    assert accepted["token_id"].startswith("acme-")
    refused = next(e for e in got if e["kind"] == "handshake_refused")
    assert (refused["reason"], refused["code"]) == ("unknown_key", int(ErrorCode.UNAUTHENTICATED))
    refreshes = [(e["outcome"], e["reason"]) for e in got if e["kind"] == "token_refresh"]
    assert refreshes[0] == ("ok", "") and refreshes[1][0] == "refused"
    denied = next(e for e in got if e["kind"] == "access_denied")
    assert (denied["action"], denied["resource"]) == ("publish", "stream acme/ns/s")
    admin = [(e["operation"], e["resource"], e["outcome"]) for e in got if e["kind"] == "admin"]
    assert admin == [
        ("create", "tenant acme//", "ok"),
        ("create", "namespace acme/ns/", "ok"),
        ("create", "stream acme/ns/s", "ok"),
        ("update", "stream acme/ns/s", "ok"),
        ("delete", "stream acme/ns/s", "ok"),
        ("delete", "stream acme/ns/s", "error"),
    ]
    closed = next(line for line in list(broker.log) if line.get("msg") == "audit trail closed")

    capsys.readouterr()
    assert felix(["audit", "verify", str(trail)]) == 0
    out = capsys.readouterr().out
    assert f"ok: {len(got)} entries" in out and closed["head"] in out  # the logged anchor

    assert felix(["audit", "tail", str(trail), "-n", "2"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [
        len(got) - 2,
        len(got) - 1,
    ]

    (path,) = audit_files(trail)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"acme', b'"evil', 1)
    path.write_bytes(b"".join(lines))
    assert felix(["audit", "verify", str(trail)]) == 1
    assert f"{path}:4: edited" in capsys.readouterr().err


async def test_a_restarted_broker_continues_the_chain(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    flags = ("--auth-issuer-key", str(issuer.public_file), "--audit-rotate-bytes", "1024")
    first = fresh_broker(*flags)
    async with client(first, issuer.token("acme"), "acme") as c:
        await c.admin.create("tenant", "acme")
    assert first.stop() == 0
    again = fresh_broker(*flags, data_dir=first.data_dir)
    for _ in range(3):
        async with client(again, issuer.token("acme"), "acme") as c:
            await c.admin.create("namespace", f"ns{_}")
    assert again.stop() == 0
    trail = first.data_dir / "audit"
    assert len(audit_files(trail)) >= 2
    assert [e["seq"] for e in entries(trail)] == list(range(len(entries(trail))))
    assert felix(["audit", "verify", str(trail)]) == 0


async def test_audit_off_writes_nothing(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "trail"
    broker = fresh_broker(
        "--auth-issuer-key",
        str(issuer.public_file),
        "--audit",
        "false",
        "--audit-path",
        str(elsewhere),
    )
    async with client(broker, issuer.token("acme"), "acme") as c:
        await c.admin.create("tenant", "acme")
    assert broker.stop() == 0
    assert not elsewhere.exists() and not (broker.data_dir / "audit").exists()


async def test_audit_path_is_where_the_trail_goes(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "trail"
    broker = fresh_broker(
        "--auth-issuer-key", str(issuer.public_file), "--audit-path", str(elsewhere)
    )
    async with client(broker, issuer.token("acme"), "acme") as c:
        await c.admin.create("tenant", "acme")
    assert broker.stop() == 0
    assert "handshake_accepted" in {e["kind"] for e in entries(elsewhere)}
    assert not (broker.data_dir / "audit").exists()
