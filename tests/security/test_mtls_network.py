"""Mutual TLS over the network, on every runtime and with clients of both QUIC engines: no
certificate, another CA, an expired certificate and a valid one (whose SPIFFE URI names the
tenant and subject), also through an intermediate CA; ``optional`` client authentication
with a token. The ``asyncio-qh3`` runtime runs them against a broker on qh3, whose server
asks for client certificates through Felix's own code (``felix_runtime.quic_qh3``)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from brokers import ROOT, Broker, FreshBroker, child_env
from certs import DAY, Issued, TestCA
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from felix_client import Client, ConnectionLost, Forbidden, NotFound, Unauthenticated
from felix_core.access import Permission
from felix_runtime.tokens import issue_token

pytestmark = pytest.mark.anyio

RULES = (
    "uri:spiffe://felix/tenant/{tenant}/sa/{subject} => admin publish:default/*;"
    "cn:{subject} o:{tenant} => subscribe:default/*"
)
ENGINES = ("aioquic", "qh3")


def mtls_broker(fresh_broker: FreshBroker, runtime: str, ca: TestCA, *flags: str) -> Broker:
    return fresh_broker(
        "--tls-client-ca", str(ca.file), "--tls-client-rules", RULES, "--audit", "false", *flags
    )


def client(broker: Broker, issued: Issued | None, engine: str, **kwargs: Any) -> Client:
    files = {}
    if issued is not None:
        files = {"cert_file": str(issued.cert_file), "key_file": str(issued.key_file)}
    return Client(broker.url, quic_engine=engine, **broker.client_kwargs(), **files, **kwargs)


async def refusals(broker: Broker) -> dict[str, int]:
    """``felix_tls_client_refused_total`` by reason, from the broker's ``/metrics``."""
    host, port = broker.metrics_address
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    data += await stream.receive()
    found = re.findall(r'felix_tls_client_refused_total\{reason="(\w+)"\} (\S+)', data.decode())
    return {reason: int(float(value)) for reason, value in found}


async def refused(broker: Broker, issued: Issued | None, engine: str) -> str:
    with pytest.raises(ConnectionLost) as lost:
        async with client(broker, issued, engine, tenant="acme") as c:
            await c.publish("orders", b"x")
    return str(lost.value)


async def test_client_certificates(fresh_broker: FreshBroker, runtime: str, tmp_path: Path) -> None:
    ca, other = TestCA(tmp_path, "clients"), TestCA(tmp_path, "other")
    broker = mtls_broker(fresh_broker, runtime, ca)
    alice = ca.issue("alice", uris=("spiffe://felix/tenant/acme/sa/alice",))
    readers = [  # the key types clients use: each engine's server must accept them all
        ca.issue(f"reader-{kind}", cn="reader", o="acme", key_type=kind)
        for kind in ("ec", "ed25519", "rsa")
    ]
    forged = other.issue("forged", uris=("spiffe://felix/tenant/acme/sa/alice",))
    expired = ca.issue(
        "expired",
        uris=("spiffe://felix/tenant/acme/sa/alice",),
        not_before=-3 * DAY,
        not_after=-DAY,
    )
    issuing = ca.intermediate("issuing")  # a chain: the client sends the intermediate too
    chained = issuing.issue("chained", uris=("spiffe://felix/tenant/acme/sa/carol",))
    chained.cert_file.write_bytes(chained.cert_file.read_bytes() + issuing.file.read_bytes())
    async with client(broker, alice, "aioquic") as c:  # the SPIFFE URI names the tenant
        assert c.tenant == "acme"  # as the broker says in Welcome.tenant: no --tenant needed
        await c.admin.create("tenant", "acme")
        await c.admin.create("namespace", "default")
        await c.admin.create("stream", "orders", namespace="default")
    for engine in ENGINES:
        assert "a client certificate is required" in await refused(broker, None, engine)
        assert "client certificate refused" in await refused(broker, forged, engine)
        assert "has expired" in await refused(broker, expired, engine)
    assert await refusals(broker) == {
        "missing": 2,
        "untrusted": 2,
        "expired": 2,
        "not_yet_valid": 0,
    }
    for engine in ENGINES:
        async with client(broker, alice, engine, tenant="acme") as c:
            await c.publish("orders", engine.encode())
            with pytest.raises(NotFound):  # another tenant: as if it did not exist
                await c.publish("orders", b"x", tenant="globex")
            with pytest.raises(Forbidden, match="subscribe:default/orders"):
                async with c.subscribe("orders", start="earliest"):
                    pass
        async with client(broker, chained, engine, tenant="acme") as c:
            await c.publish("orders", b"through an intermediate")
        for reader in readers:
            async with client(broker, reader, engine, tenant="acme") as c:  # CN / O rule
                async with c.subscribe("orders", start="earliest") as sub:
                    assert (await anext(aiter(sub))).payload == b"aioquic"
                with pytest.raises(Forbidden, match="publish:default/orders"):
                    await c.publish("orders", b"x")


async def test_optional_client_certificates_with_tokens(
    fresh_broker: FreshBroker, runtime: str, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path, "clients")
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "issuer.pem"
    key_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    broker = mtls_broker(
        fresh_broker,
        runtime,
        ca,
        "--tls-client-auth",
        "optional",
        "--auth-issuer-key",
        str(key_file),
    )

    def token(subject: str) -> str:
        return issue_token(
            key,
            subject=subject,
            tenant="acme",
            now=time.time(),
            ttl=600,
            token_id=f"{subject}-token",
            permissions=[Permission.parse("*")],
        )

    alice = ca.issue("alice", uris=("spiffe://felix/tenant/acme/sa/alice",))
    async with client(broker, None, "aioquic", token=token("bob")) as c:  # no certificate
        await c.admin.create("tenant", "acme")
    async with client(broker, alice, "qh3", token=token("alice")) as c:  # both agree
        await c.admin.create("namespace", "default")
    with pytest.raises(Unauthenticated, match="certificate_mismatch"):
        async with client(broker, alice, "aioquic", token=token("bob")) as c:
            await c.admin.list("namespace")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-client-ca", "{missing}"], "tls_client_ca: {missing}: No such file"),
        (["--tls-client-ca", "{garbage}"], "tls_client_ca: {garbage}: "),
        (
            ["--tls-client-ca", "{ca}", "--tls-client-rules", "cn:{{subject}} => admin"],
            "tls_client_rules: rule 1: {{tenant}} must appear once",
        ),
        (["--tls-client-rules", "o:{{tenant}} => admin"], "tls_client_rules needs tls_client_ca"),
        (["--tls-client-ca", "{ca}", "--tls-client-auth", "maybe"], "required or optional"),
    ],
)
def test_bad_client_tls_settings_stop_the_broker(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    ca = TestCA(tmp_path, "clients")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    names = {"missing": str(tmp_path / "nope.pem"), "garbage": str(garbage), "ca": str(ca.file)}
    result = subprocess.run(
        [sys.executable, "-m", "felix_runtime_asyncio", "--print-config"]
        + [f.format(**names) for f in flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=child_env(),
    )
    assert result.returncode == 2, result.stderr
    assert message.format(**names) in result.stderr


def test_the_client_takes_its_certificate_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        Client("quic://127.0.0.1:7447", cert_file="client.pem")
    monkeypatch.setenv("FELIX_CERT", "env.pem")
    monkeypatch.setenv("FELIX_CERT_KEY", "env.key")
    options = Client("quic://127.0.0.1:7447")._options
    assert (options.cert_file, options.key_file) == ("env.pem", "env.key")
    options = Client("quic://127.0.0.1:7447", cert_file="a.pem", key_file="a.key")._options
    assert (options.cert_file, options.key_file) == ("a.pem", "a.key")
