"""Identity over the network, on every runtime: a broker trusting an issuer key, Felix
tokens of two tenants, the cross-tenant matrix (every operation x another tenant's
resource: denied, and answered exactly as an absent resource), permissions, token refusals
on the wire, expiry of a live subscription, and the start-up rules without authentication.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from brokers import ROOT, Broker, FreshBroker, child_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from felix_client import Client, FelixError, Forbidden, NotFound, Unauthenticated
from felix_core.access import Permission
from felix_runtime.tokens import issue_token, key_id

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Issuer:
    """An Ed25519 issuer whose public key is in a PEM file a broker can trust."""

    def __init__(self, directory: Path, name: str = "key") -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_file = directory / f"{name}.pem"
        self.public_file.write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, tenant: str, *grants: str, ttl: float = 600.0, **claims: Any) -> str:
        return issue_token(
            self.key,
            subject=f"{tenant}-app",
            tenant=tenant,
            now=time.time(),
            ttl=ttl,
            token_id=f"{tenant}-{time.monotonic_ns()}",
            permissions=[Permission.parse(g) for g in grants or ("*",)],
            **claims,
        )

    def signed(self, claims: dict[str, Any], **header: Any) -> str:
        head = {"kid": key_id(self.key.public_key()), **header}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers=head)


def client(broker: Broker, token: str | None, tenant: str, **kwargs: Any) -> Client:
    return Client(
        broker.url, token=token, tenant=tenant, namespace="ns", **broker.client_kwargs(), **kwargs
    )


async def setup_tenant(broker: Broker, token: str, tenant: str) -> None:
    """The tenant's own admin makes its tenant, namespace ``ns`` and s, q, c."""
    async with client(broker, token, tenant) as c:
        await c.admin.create("tenant", tenant)
        await c.admin.create("namespace", "ns")
        for kind, name in (("stream", "s"), ("queue", "q"), ("cache", "c")):
            await c.admin.create(kind, name)
        await c.publish("s", b"secret")
        await c.enqueue("q", b"secret")
        await c.cache("c").put("k", b"secret")


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


async def two_tenants(fresh_broker: FreshBroker, issuer: Issuer) -> tuple[Broker, str, str]:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    alice, bob = issuer.token("alice"), issuer.token("bob")
    await setup_tenant(broker, bob, "bob")
    await setup_tenant(broker, alice, "alice")
    return broker, alice, bob


Op = Callable[[Client, str], Awaitable[object]]


async def _subscribe(c: Client, name: str, cache_feed: bool = False) -> None:
    async with c.subscribe(name, start="earliest", cache_feed=cache_feed):
        pass


async def _consume(c: Client, name: str) -> None:
    consumer = c.consume(name)
    with anyio.fail_after(WAIT):
        await anext(consumer)  # type: ignore[call-overload]


OPERATIONS: dict[str, tuple[str, Op]] = {
    # name: (the kind of resource it names, the operation)
    "publish": ("s", lambda c, n: c.publish(n, b"x")),
    "publish_batch": ("s", lambda c, n: c.publish_batch(n, [b"x", b"y"])),
    "subscribe": ("s", _subscribe),
    "cache_feed": ("c", lambda c, n: _subscribe(c, n, cache_feed=True)),
    "enqueue": ("q", lambda c, n: c.enqueue(n, b"x")),
    "consume": ("q", _consume),
    "cache_get": ("c", lambda c, n: c.cache(n).get("k")),
    "cache_put": ("c", lambda c, n: c.cache(n).put("k", b"x")),
    "cache_delete": ("c", lambda c, n: c.cache(n).delete("k")),
    "describe": ("s", lambda c, n: c.admin.describe("stream", n)),
    "describe_queue": ("q", lambda c, n: c.admin.describe("queue", n)),
    "update": ("s", lambda c, n: c.admin.update("stream", n, {"retention_max_records": 5})),
    "delete": ("c", lambda c, n: c.admin.delete("cache", n)),
    "list": ("s", lambda c, n: c.admin.list("stream")),
    "create": ("s", lambda c, n: c.admin.create("stream", n + "2")),
    "describe_namespace": ("s", lambda c, n: c.admin.describe("namespace", "ns")),
    "describe_tenant": ("s", lambda c, n: c.admin.describe("tenant", c.tenant)),
}


async def failure(op: Op, c: Client, name: str) -> FelixError:
    with pytest.raises(FelixError) as caught, anyio.fail_after(WAIT):
        await op(c, name)
    return caught.value


def shape(error: FelixError, *names: str) -> tuple[type[FelixError], str, dict[str, Any]]:
    """An error with the names it mentions replaced, to compare two answers."""
    text = error.message
    for name in names:
        text = re.sub(rf"\b{re.escape(name)}\b", "NAME", text)
    return type(error), text, dict(error.details)


async def test_cross_tenant_matrix(fresh_broker: FreshBroker, issuer: Issuer) -> None:
    broker, alice, bob = await two_tenants(fresh_broker, issuer)
    async with (
        client(broker, alice, "bob") as as_bob,
        client(broker, alice, "ghost") as ghost,
        client(broker, alice, "alice") as own,
    ):
        for label, (name, op) in OPERATIONS.items():
            theirs = await failure(op, as_bob, name)  # bob's, which exists
            nobodys = await failure(op, ghost, name)  # a tenant that does not exist
            assert isinstance(theirs, NotFound), (label, theirs)
            assert shape(theirs, "bob") == shape(nobodys, "ghost"), label
            if label not in ("list", "create", "describe_namespace", "describe_tenant"):
                # and like a name that does not exist in alice's own tenant
                absent = await failure(op, own, name + "-missing")
                assert shape(theirs, "bob", name) == shape(absent, "alice", name + "-missing"), (
                    label
                )
    # bob's data is untouched, and his own token still serves him
    async with client(broker, bob, "bob") as c:
        assert (await c.cache("c").get("k")).value == b"secret"  # type: ignore[union-attr]
        assert (await c.admin.describe("stream", "s"))["stats"]["records"] == 1
    status, body = await _metrics(broker, alice)  # /metrics wants a credential, too
    assert status == 200
    denied = _samples(body, "felix_auth_denied_total")
    assert denied["publish"] >= 4 and denied["admin"] >= 16 and denied["cache.read"] >= 4


async def test_a_missing_permission_is_forbidden_and_named(
    fresh_broker: FreshBroker, issuer: Issuer
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await setup_tenant(broker, issuer.token("acme"), "acme")
    reader = issuer.token("acme", "subscribe:ns/*", "cache.read:ns/c")
    async with client(broker, reader, "acme") as c:
        async with c.subscribe("s", start="earliest") as sub:
            with anyio.fail_after(WAIT):
                event = await anext(sub)  # type: ignore[call-overload]
            assert event.payload == b"secret"
        assert (await c.cache("c").get("k")).value == b"secret"  # type: ignore[union-attr]
        for op, permission in (
            (lambda: c.publish("s", b"x"), "publish:ns/s"),
            (lambda: c.enqueue("q", b"x"), "enqueue:ns/q"),
            (lambda: c.cache("c").put("k", b"x"), "cache.write:ns/c"),
            (lambda: c.admin.list("stream"), "admin:ns/*"),
            (lambda: c.admin.delete("stream", "s"), "admin:ns/s"),
        ):
            with pytest.raises(Forbidden) as caught:
                await op()
            assert caught.value.message == f"missing permission {permission}"
            assert caught.value.details["permission"] == permission


def _refusals(issuer: Issuer, stranger: Issuer) -> dict[str, str | None]:
    now = int(time.time())
    claims = {"iss": "felix", "sub": "x", "aud": "felix", "tenant": "acme", "exp": now + 600}
    good = issuer.signed(claims)
    head, _, sig = good.split(".")
    tampered = issuer.signed({**claims, "tenant": "root"}).split(".")[1]
    hs256 = jwt.encode(claims, "a-guessed-secret-long-enough-for-hs256", algorithm="HS256")
    none = jwt.encode(claims, None, algorithm="none")
    return {
        "missing": None,
        "malformed": "not-a-token",
        "bad_signature": f"{head}.{tampered}.{sig}",
        "unknown_key": stranger.signed(claims),
        "expired": issuer.signed({**claims, "exp": now - 60}),
        "not_yet_valid": issuer.signed({**claims, "nbf": now + 600}),
        "wrong_issuer": issuer.signed({**claims, "iss": "evil"}),
        "wrong_audience": issuer.signed({**claims, "aud": "other"}),
        "algorithm_not_allowed": none,
        "algorithm_not_allowed ": hs256,  # HS256 (with any secret)
    }


async def test_token_refusals_over_the_wire(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    stranger = Issuer(tmp_path, "stranger")
    for reason, token in _refusals(issuer, stranger).items():
        with pytest.raises(Unauthenticated) as caught:
            async with client(broker, token, "acme") as c:
                await c.publish("s", b"x")
        assert caught.value.message == f"missing or invalid token ({reason.strip()})", reason
        assert caught.value.details == {"reason": reason.strip()}


async def test_expiry_ends_a_live_subscription(fresh_broker: FreshBroker, issuer: Issuer) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await setup_tenant(broker, issuer.token("acme"), "acme")
    short = issuer.token("acme", ttl=2.0)
    started = time.time()
    async with client(broker, short, "acme") as c, c.subscribe("s", start="earliest") as sub:
        with pytest.raises(Unauthenticated) as caught:
            with anyio.fail_after(WAIT):
                async for _ in sub:
                    pass
    assert caught.value.details == {"reason": "expired"}
    assert 0.9 <= time.time() - started < 6.0  # at exp (whole seconds: 1-2 s), not later


async def test_shared_secrets_bare_and_mapped(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--auth-tokens", "plain, mapped=blue:publish:default/*")
    async with Client(broker.url, token="plain", **broker.client_kwargs()) as c:
        await c.admin.create("stream", "legacy")
        await c.admin.create("tenant", "blue")  # a bare secret is an operator, as it was
        await c.admin.create("namespace", "default", tenant="blue")
        await c.admin.create("stream", "orders", tenant="blue")
    async with Client(broker.url, token="mapped", tenant="blue", **broker.client_kwargs()) as c:
        assert (await c.publish("orders", b"x")).first_offset == 0  # type: ignore[union-attr]
        with pytest.raises(NotFound):  # another tenant's stream: as if absent
            await c.publish("legacy", b"x", tenant="default")
        with pytest.raises(Forbidden):
            await c.admin.describe("stream", "orders")
    assert any("bare secret is an operator credential" in m for m in broker.log_messages())


def test_a_public_listen_address_without_auth_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "felix_runtime_asyncio", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=child_env(),
    )
    assert result.returncode == 2
    assert "not a loopback address and authentication is off" in result.stderr
    assert "--insecure-no-auth" in result.stderr


def test_the_unauthenticated_broker_says_so(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker()
    said = [m for m in broker.log_messages() if "authentication is off" in m]
    assert said == [
        "authentication is off: every client may do everything; listening on loopback only"
    ]


async def _metrics(broker: Broker, token: str) -> tuple[int, str]:
    """GET /metrics with ``token`` (status, body)."""
    with anyio.fail_after(WAIT):
        async with await anyio.connect_tcp(*broker.metrics_address) as stream:
            request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            await stream.send(request.encode())
            data = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def _samples(body: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.splitlines():
        found = re.match(rf'{name}\{{action="([^"]+)"\}} (\S+)', line)
        if found:
            out[found[1]] = float(found[2])
    return out


async def test_a_token_provider_renews_the_token_on_the_live_connection(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await setup_tenant(broker, issuer.token("acme"), "acme")
    issued: list[str] = []

    def provider() -> str:
        issued.append(issuer.token("acme", ttl=2.0))
        return issued[-1]

    kwargs = broker.client_kwargs()
    async with Client(broker.url, token_provider=provider, namespace="ns", **kwargs) as c:
        assert c.tenant == "acme"  # from the provider's token
        async with c.subscribe("s", start="earliest") as sub:
            with anyio.fail_after(WAIT):
                assert (await anext(sub)).payload == b"secret"  # type: ignore[call-overload]
            await anyio.sleep(2.5)  # past the first token's exp: renewed ahead of it
            await c.publish("s", b"after")
            with anyio.fail_after(WAIT):
                assert (await anext(sub)).payload == b"after"  # type: ignore[call-overload]
    assert len(issued) >= 2


async def test_refresh_token_refusals(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    await setup_tenant(broker, issuer.token("acme"), "acme")
    stranger = Issuer(tmp_path, "stranger")
    async with client(broker, issuer.token("acme"), "acme") as c:
        with pytest.raises(Forbidden, match="must name the connection's tenant and subject"):
            await c.refresh_token(issuer.token("other"))
        with pytest.raises(Unauthenticated) as caught:
            await c.refresh_token(stranger.token("acme"))
        assert caught.value.details == {"reason": "unknown_key"}
        await c.refresh_token(issuer.token("acme", "publish:ns/s"))  # fewer permissions
        await c.publish("s", b"still allowed")
        with pytest.raises(Forbidden, match="missing permission enqueue:ns/q"):
            await c.enqueue("q", b"no longer allowed")


@pytest.mark.parametrize("runtime", ["asyncio"])  # the checks live in the pure router;
# tests/conformance runs the suite on every runtime, the matrix above runs auth on every one
def test_conformance_with_a_token_pair(fresh_broker: FreshBroker, issuer: Issuer) -> None:
    """The whole conformance suite as a tenant (not an operator), plus its auth checks."""
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    alpha, bravo = issuer.token("alpha"), issuer.token("bravo")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "--server",
            broker.url,
            "--ca",
            broker.ca_file,
            "--token",
            alpha,
            "--tenant",
            "alpha",
            "--namespace",
            "conf",
            "--other-token",
            bravo,
            "--other-tenant",
            "bravo",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "auth.other-tenant-is-absent",
        "auth.other-tenant-listing",
        "auth.refresh-keeps-the-tenant",
        "session.bad-token",
    ):
        assert f"PASS {name}" in result.stdout, result.stdout
    assert " 0 failed" in result.stdout
