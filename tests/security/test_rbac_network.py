"""Roles and bindings over the network, on every runtime: changed during live traffic,
they apply from the next operation of an open connection (no reconnect), an open
subscription whose permission is removed ends with FORBIDDEN, they survive a restart, and
their changes are in the audit trail."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from brokers import Broker, FreshBroker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from felix_client import Client, Forbidden
from felix_core.access import Permission
from felix_runtime.tokens import issue_token

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Issuer:
    def __init__(self, directory: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_file = directory / "issuer.pem"
        self.public_file.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(
        self,
        subject: str,
        *grants: str,
        roles: tuple[str, ...] = (),
        groups: tuple[str, ...] = (),
    ) -> str:
        return issue_token(
            self.key,
            subject=subject,
            tenant="acme",
            now=time.time(),
            ttl=600.0,
            token_id=f"{subject}-{time.monotonic_ns()}",
            permissions=[Permission.parse(g) for g in grants],
            roles=roles,
            groups=groups,
        )


def client(broker: Broker, token: str) -> Client:
    return Client(broker.url, token=token, namespace="ns", **broker.client_kwargs())


async def setup(broker: Broker, admin: str) -> None:
    async with client(broker, admin) as c:
        await c.admin.create("tenant", "acme")
        await c.admin.create("namespace", "ns")
        await c.admin.create("stream", "s")


async def test_rbac_changes_apply_to_live_connections(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    issuer = Issuer(tmp_path)
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    admin = issuer.token("admin", "*")
    await setup(broker, admin)
    async with (
        client(broker, admin) as ops,
        client(broker, issuer.token("alice", groups=("team",))) as alice,
        client(broker, issuer.token("bob", roles=("writer",))) as bob,
    ):
        for c in (alice, bob):
            with pytest.raises(Forbidden, match="missing permission publish:ns/s"):
                await c.publish("s", b"x")
        role = await ops.admin.create(
            "role", "writer", {"permissions": ["publish:ns/*", "subscribe:ns/*"]}
        )
        assert role["settings"]["permissions"] == ["publish:ns/*", "subscribe:ns/*"]
        await bob.publish("s", b"bob")  # the role its token names now exists
        with pytest.raises(Forbidden):
            await alice.publish("s", b"x")  # nothing binds alice yet
        await ops.admin.create("binding", "team-writes", {"role": "writer", "groups": ["team"]})
        await alice.publish("s", b"alice")  # the same connection, the next operation
        async with alice.subscribe("s", start="earliest") as sub:
            with anyio.fail_after(WAIT):
                assert (await anext(sub)).payload == b"bob"  # type: ignore[call-overload]
            await ops.admin.update("role", "writer", {"permissions": ["publish:ns/*"]})
            with pytest.raises(Forbidden, match="missing permission subscribe:ns/s"):
                with anyio.fail_after(WAIT):
                    async for _ in sub:
                        pass
        await alice.publish("s", b"still a writer")
        assert [r["name"] for r in await ops.admin.list("binding")] == ["team-writes"]
        await ops.admin.delete("binding", "team-writes")
        with pytest.raises(Forbidden):
            await alice.publish("s", b"x")
        await bob.publish("s", b"bob again")
        # managing roles needs admin on the tenant's roles
        with pytest.raises(Forbidden, match="missing permission admin:/writer"):
            await bob.admin.delete("role", "writer")
        await ops.admin.delete("role", "writer")
        with pytest.raises(Forbidden):
            await bob.publish("s", b"x")


async def test_roles_survive_a_restart_and_their_changes_are_audited(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    issuer = Issuer(tmp_path)
    data = tmp_path / "data"
    flags = ("--auth-issuer-key", str(issuer.public_file))
    broker = fresh_broker(*flags, data_dir=data)
    admin = issuer.token("admin", "*")
    await setup(broker, admin)
    async with client(broker, admin) as ops:
        await ops.admin.create("role", "writer", {"permissions": "publish:ns/s"})
        await ops.admin.create("binding", "alice", {"role": "writer", "subjects": ["alice"]})
    assert broker.stop() == 0
    broker = fresh_broker(*flags, data_dir=data)
    async with client(broker, issuer.token("alice")) as alice:
        await alice.publish("s", b"after a restart")
    assert broker.stop() == 0
    lines = [
        json.loads(line)
        for path in sorted((data / "audit").glob("audit-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    changes = [
        (e["operation"], e["resource"], e["outcome"], e["subject"], e.get("settings"))
        for e in lines
        if e["kind"] == "admin" and e["resource"].split()[0] in ("role", "binding")
    ]
    assert changes == [  # who granted what, to whom
        ("create", "role acme//writer", "ok", "admin", {"permissions": "publish:ns/s"}),
        ("create", "binding acme//alice", "ok", "admin", {"role": "writer", "subjects": ["alice"]}),
    ]


async def test_a_narrowing_token_refresh_ends_the_feeds_it_no_longer_covers(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    issuer = Issuer(tmp_path)
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await setup(broker, issuer.token("admin", "*"))
    async with client(broker, issuer.token("carol", "subscribe:ns/*", "publish:ns/*")) as carol:
        async with carol.subscribe("s", start="latest") as sub:
            await carol.publish("s", b"before")
            with anyio.fail_after(WAIT):
                assert (await anext(sub)).payload == b"before"  # type: ignore[call-overload]
            await carol.refresh_token(issuer.token("carol", "publish:ns/*"))
            with pytest.raises(Forbidden, match="missing permission subscribe:ns/s"):
                with anyio.fail_after(WAIT):
                    async for _ in sub:
                        pass
        await carol.publish("s", b"publishing goes on")
