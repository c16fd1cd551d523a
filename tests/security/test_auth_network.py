"""Identity over the network, on every runtime: a broker trusting an issuer key, Felix
tokens of two tenants, the cross-tenant matrix (every operation x another tenant's
resource: denied, and answered exactly as an absent resource), permissions, token refusals
on the wire, expiry of a live subscription, and the start-up rules without authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
    """The tenant's own admin makes its tenant, namespace ``ns``, s, q, c, role ``r`` and
    binding ``b``."""
    async with client(broker, token, tenant) as c:
        await c.admin.create("tenant", tenant)
        await c.admin.create("namespace", "ns")
        for kind, name in (("stream", "s"), ("queue", "q"), ("cache", "c")):
            await c.admin.create(kind, name)
        await c.publish("s", b"secret")
        await c.enqueue("q", b"secret")
        await c.cache("c").put("k", b"secret")
        await c.admin.create("role", "r", {"permissions": ["subscribe:ns/*"]})
        await c.admin.create("binding", "b", {"role": "r", "subjects": ["auditor"]})


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


async def two_tenants(fresh_broker: FreshBroker, issuer: Issuer) -> tuple[Broker, str, str]:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    alice, bob = issuer.token("alice"), issuer.token("bob")
    await setup_tenant(broker, bob, "bob")
    await setup_tenant(broker, alice, "alice")
    return broker, alice, bob


Op = Callable[[Client, str, str | None], Awaitable[object]]
"""``(client, name, tenant)``: one operation on ``name``, in ``tenant`` (None: the client's
default tenant)."""


async def _subscribe(
    c: Client, name: str, tenant: str | None, start: str | int, cache_feed: bool = False
) -> None:
    async with c.subscribe(name, start=start, cache_feed=cache_feed, tenant=tenant):
        pass


async def _consume(c: Client, name: str, tenant: str | None) -> None:
    consumer = c.consume(name, tenant=tenant)
    with anyio.fail_after(WAIT):
        await anext(consumer)  # type: ignore[call-overload]


OPERATIONS: dict[str, tuple[str, Op]] = {
    # name: (the resource it names, the operation)
    "publish": ("s", lambda c, n, t: c.publish(n, b"x", tenant=t)),
    "publish_batch": ("s", lambda c, n, t: c.publish_batch(n, [b"x", b"y"], tenant=t)),
    "subscribe": ("s", lambda c, n, t: _subscribe(c, n, t, "earliest")),
    "subscribe_offset": ("s", lambda c, n, t: _subscribe(c, n, t, 0)),
    "subscribe_latest": ("s", lambda c, n, t: _subscribe(c, n, t, "latest")),
    "cache_feed": ("c", lambda c, n, t: _subscribe(c, n, t, "earliest", cache_feed=True)),
    "enqueue": ("q", lambda c, n, t: c.enqueue(n, b"x", tenant=t)),
    "consume": ("q", _consume),
    "cache_get": ("c", lambda c, n, t: c.cache(n, tenant=t).get("k")),
    "cache_put": ("c", lambda c, n, t: c.cache(n, tenant=t).put("k", b"x")),
    "cache_put_if_absent": ("c", lambda c, n, t: c.cache(n, tenant=t).put_if_absent("k", b"x")),
    "cache_cas": ("c", lambda c, n, t: c.cache(n, tenant=t).compare_and_set("k", b"x", version=1)),
    "cache_delete": ("c", lambda c, n, t: c.cache(n, tenant=t).delete("k")),
    "cache_delete_cas": ("c", lambda c, n, t: c.cache(n, tenant=t).delete("k", if_version=1)),
    "describe": ("s", lambda c, n, t: c.admin.describe("stream", n, tenant=t)),
    "describe_queue": ("q", lambda c, n, t: c.admin.describe("queue", n, tenant=t)),
    "describe_cache": ("c", lambda c, n, t: c.admin.describe("cache", n, tenant=t)),
    "update": (
        "s",
        lambda c, n, t: c.admin.update("stream", n, {"retention_max_records": 5}, tenant=t),
    ),
    "update_queue": (
        "q",
        lambda c, n, t: c.admin.update("queue", n, {"visibility_timeout_ms": 5000}, tenant=t),
    ),
    "update_cache": (
        "c",
        lambda c, n, t: c.admin.update("cache", n, {"default_ttl_ms": 5000}, tenant=t),
    ),
    "delete": ("c", lambda c, n, t: c.admin.delete("cache", n, tenant=t)),
    "delete_stream": ("s", lambda c, n, t: c.admin.delete("stream", n, tenant=t)),
    "delete_queue": ("q", lambda c, n, t: c.admin.delete("queue", n, tenant=t)),
    "describe_role": ("r", lambda c, n, t: c.admin.describe("role", n, tenant=t)),
    "update_role": (
        "r",
        lambda c, n, t: c.admin.update("role", n, {"permissions": ["*"]}, tenant=t),
    ),
    "delete_binding": ("b", lambda c, n, t: c.admin.delete("binding", n, tenant=t)),
    "create_binding": (
        "b",
        lambda c, n, t: c.admin.create(
            "binding", n + "2", {"role": "r", "subjects": ["x"]}, tenant=t
        ),
    ),
    "list_roles": ("r", lambda c, n, t: c.admin.list("role", tenant=t)),
    "list_bindings": ("b", lambda c, n, t: c.admin.list("binding", tenant=t)),
    "list": ("s", lambda c, n, t: c.admin.list("stream", tenant=t)),
    "list_queues": ("q", lambda c, n, t: c.admin.list("queue", tenant=t)),
    "list_caches": ("c", lambda c, n, t: c.admin.list("cache", tenant=t)),
    "list_namespaces": ("s", lambda c, n, t: c.admin.list("namespace", tenant=t)),
    "create": ("s", lambda c, n, t: c.admin.create("stream", n + "2", tenant=t)),
    "describe_namespace": ("s", lambda c, n, t: c.admin.describe("namespace", "ns", tenant=t)),
    "describe_tenant": ("s", lambda c, n, t: c.admin.describe("tenant", t or c.tenant)),
    "update_tenant": (
        "s",
        lambda c, n, t: c.admin.update("tenant", t or c.tenant, {"max_connections": 1}),
    ),
    "delete_tenant": ("s", lambda c, n, t: c.admin.delete("tenant", t or c.tenant)),
}
NO_NAME = {"list", "list_queues", "list_caches", "list_namespaces", "list_roles"}
NO_NAME |= {"list_bindings", "create", "create_binding"}
NO_NAME |= {"describe_namespace", "describe_tenant", "update_tenant", "delete_tenant"}
"""Operations that do not fail on a missing name in one's own tenant."""


async def failure(op: Op, c: Client, name: str, tenant: str | None = None) -> FelixError:
    with pytest.raises(FelixError) as caught, anyio.fail_after(WAIT):
        await op(c, name, tenant)
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
            nobodys = await failure(op, ghost, name)  # a tenant that does not exist
            # bob's, which exists, named three ways: the client's default tenant, the
            # request's own tenant, and the name in other letter case
            for how, c, tenant, who in (
                ("default", as_bob, None, "bob"),
                ("per request", own, "bob", "bob"),
                ("case", own, "Bob", "Bob"),
            ):
                theirs = await failure(op, c, name, tenant)
                assert isinstance(theirs, NotFound), (label, how, theirs)
                assert shape(theirs, who) == shape(nobodys, "ghost"), (label, how)
            if label not in NO_NAME:
                # and like a name that does not exist in alice's own tenant
                absent = await failure(op, own, name + "-missing")
                assert shape(theirs, "Bob", name) == shape(absent, "alice", name + "-missing"), (
                    label
                )
        # creating bob's tenant (or any but one's own) is an operator's business, whether
        # it exists or not
        for tenant in ("bob", "ghost"):
            with pytest.raises(Forbidden, match="only an operator manages tenants"):
                await own.admin.create("tenant", tenant)
        # a token refresh naming bob (his own token) answers as one naming no tenant at all
        with pytest.raises(FelixError) as refresh_theirs:
            await own.refresh_token(bob)
        with pytest.raises(FelixError) as refresh_nobodys:
            await own.refresh_token(issuer.token("ghost"))
        assert isinstance(refresh_theirs.value, Forbidden), refresh_theirs.value
        assert shape(refresh_theirs.value, "bob") == shape(refresh_nobodys.value, "ghost")
        await own.publish("s", b"mine")  # and alice's rights stand
    # bob's data is untouched, and his own token still serves him
    async with client(broker, bob, "bob") as c:
        assert (await c.cache("c").get("k")).value == b"secret"  # type: ignore[union-attr]
        assert (await c.admin.describe("stream", "s"))["stats"]["records"] == 1
    status, body = await _metrics(broker, alice)  # /metrics wants a credential, too
    assert status == 200
    denied = _samples(body, "felix_auth_denied_total")
    assert denied["publish"] >= 4 and denied["admin"] >= 16 and denied["cache.read"] >= 4


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the checks run in a subprocess
async def test_cross_tenant_feed_ids(fresh_broker: FreshBroker, issuer: Issuer) -> None:
    """Feeds are named by id: bob's connection acks, nacks, cancels, unsubscribes and
    credits alice's consumer and subscription (the conformance check, over the network on
    this runtime): answered as ids never handed out, credit ignored, alice's feeds go on."""
    broker, alice, bob = await two_tenants(fresh_broker, issuer)
    argv = ["--server", broker.url, "--ca", broker.ca_file, "--server-name", "localhost"]
    argv += ["--token", alice, "--tenant", "alice", "--namespace", "ns"]
    argv += ["--other-token", bob, "--other-tenant", "bob", "-k", "auth.other-tenant-feeds"]
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "conformance", *argv], check=False, cwd=ROOT, env=child_env()
        )
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "PASS auth.other-tenant-feeds" in out, out


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


def _hmac_forgery(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """An HS256 token built by hand (PyJWT refuses a PEM public key as an HMAC secret)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusals(issuer: Issuer, stranger: Issuer) -> list[tuple[str, str, str | None]]:
    """``(what, the reason the broker must give, the token)``."""
    now = int(time.time())
    claims = {"iss": "felix", "sub": "x", "aud": "felix", "tenant": "acme", "exp": now + 600}
    good = issuer.signed(claims)
    head, _, sig = good.split(".")
    tampered = issuer.signed({**claims, "tenant": "root"}).split(".")[1]
    hs256 = jwt.encode(claims, "a-guessed-secret-long-enough-for-hs256", algorithm="HS256")
    none = jwt.encode(claims, None, algorithm="none")
    kid = key_id(issuer.key.public_key())
    public_pem = issuer.public_file.read_bytes()  # what anyone may read
    public_raw = issuer.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return [
        ("missing", "missing", None),
        ("malformed", "malformed", "not-a-token"),
        ("bad signature", "bad_signature", f"{head}.{tampered}.{sig}"),
        ("unknown key", "unknown_key", stranger.signed(claims)),
        ("expired", "expired", issuer.signed({**claims, "exp": now - 60})),
        ("not yet valid", "not_yet_valid", issuer.signed({**claims, "nbf": now + 600})),
        ("wrong issuer", "wrong_issuer", issuer.signed({**claims, "iss": "evil"})),
        ("wrong audience", "wrong_audience", issuer.signed({**claims, "aud": "other"})),
        ("alg none", "algorithm_not_allowed", none),
        ("HS256, a guessed secret", "algorithm_not_allowed", hs256),
        (
            "HS256, the public key (PEM) as secret",
            "algorithm_not_allowed",
            _hmac_forgery(public_pem, claims, kid),
        ),
        (
            "HS256, the public key (raw) as secret",
            "algorithm_not_allowed",
            _hmac_forgery(public_raw, claims, kid),
        ),
    ]


async def test_token_refusals_over_the_wire(
    fresh_broker: FreshBroker, issuer: Issuer, tmp_path: Path
) -> None:
    broker = fresh_broker("--auth-issuer-key", str(issuer.public_file))
    stranger = Issuer(tmp_path, "stranger")
    for what, reason, token in _refusals(issuer, stranger):
        with pytest.raises(Unauthenticated) as caught:
            async with client(broker, token, "acme") as c:
                await c.publish("s", b"x")
        assert caught.value.message == f"missing or invalid token ({reason})", what
        assert caught.value.details == {"reason": reason}, what


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
    """The whole conformance suite as a tenant (not an operator), plus its auth checks and,
    with a token of the same tenant that may only subscribe to ``conf/ro-*``, its RBAC
    checks."""
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
            "--restricted-token",
            issuer.token("alpha", "subscribe:conf/ro-*"),
            "--restricted-subject",
            "alpha-app",  # Issuer.token's subject
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
        "auth.other-tenant-feeds",
        "auth.refresh-keeps-the-tenant",
        "session.bad-token",
        "rbac.granted",
        "rbac.forbidden",
        "rbac.admin-reads",
        "rbac.foreign-consumer",
        "rbac.foreign-subscription",
        "rbac.live-change",
    ):
        assert f"PASS {name}" in result.stdout, result.stdout
    assert " 0 failed" in result.stdout
