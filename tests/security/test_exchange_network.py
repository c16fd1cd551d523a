"""Token exchange over the network, on every runtime: a broker configured with a
Kubernetes-style issuer (``--auth-exchange``, ``--auth-signing-key``); a client logs in with
a projected service-account token, the Felix token works in a later ``Hello``, a refused
identity token, renewal by exchange past the first token's expiry, ``felix login``, and the
audit trail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from brokers import Broker, FreshBroker, child_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from oidc_issuers import K8S_ISSUER, OidcIssuer

from felix_client import Client, Unauthenticated, UnexpectedMessage
from felix_runtime.tokens import read_unverified

pytestmark = pytest.mark.anyio

K8S = OidcIssuer(url=K8S_ISSUER, kid="cluster-1")


def sa_token(namespace: str = "ci", name: str = "builder", ttl: float = 3600.0) -> str:
    now = int(time.time())
    return K8S.token(
        sub=f"system:serviceaccount:{namespace}:{name}",
        groups=None,
        iat=now,
        nbf=now,
        exp=now + int(ttl),
        **{"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}}},
    )


def exchange_broker(fresh_broker: FreshBroker, tmp: Path, ttl: float = 900.0) -> Broker:
    (tmp / "k8s-jwks.json").write_bytes(K8S.jwks())
    key = Ed25519PrivateKey.generate()
    (tmp / "private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp / "exchange.toml").write_text(
        f"""
[[issuer]]
issuer = "{K8S_ISSUER}"
audience = "felix"
jwks_file = "{tmp / "k8s-jwks.json"}"
algorithms = ["RS256"]

[[rule]]
namespace = "ci"
service_account = "builder"
tenant = "ci"
permissions = ["*"]
"""
    )
    return fresh_broker(
        "--auth-exchange",
        str(tmp / "exchange.toml"),
        "--auth-signing-key",
        str(tmp / "private.pem"),
        "--auth-exchange-ttl-s",
        str(ttl),
    )


def client(broker: Broker, **kwargs: Any) -> Client:
    return Client(broker.url, namespace="ns", **broker.client_kwargs(), **kwargs)


def audit_events(broker: Broker) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted((broker.data_dir / "audit").glob("audit-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["kind"] == "token_exchange"]


async def test_login_with_a_service_account_token(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    broker = exchange_broker(fresh_broker, tmp_path, ttl=2.0)
    async with client(broker, id_token_provider=sa_token) as c:
        assert c.tenant == "ci"  # from the exchanged token
        claims = read_unverified(c.token or "")[1]
        assert claims["sub"] == "system:serviceaccount:ci:builder"
        await c.admin.create("tenant", "ci")
        await c.admin.create("namespace", "ns")
        await c.admin.create("stream", "s")
        first = c.token
        await anyio.sleep(2.2)  # past the first token's exp: renewed by another exchange
        assert c.token != first
        await c.publish("s", b"still in")
        latest = c.token
    # a later connection presents the Felix token in its Hello (the broker trusts its key)
    async with client(broker, token=latest) as again:
        assert (await again.publish("s", b"by token")).first_offset == 1
    with pytest.raises(Unauthenticated) as refused:
        async with client(broker, id_token=sa_token(namespace="prod")):
            pass
    assert refused.value.details == {"reason": "no_matching_rule"}
    broker.stop()
    events = audit_events(broker)
    outcomes = [(e["outcome"], e.get("id_subject"), e.get("reason")) for e in events]
    assert outcomes[0] == ("ok", "system:serviceaccount:ci:builder", "")
    assert outcomes[-1] == ("refused", "system:serviceaccount:prod:builder", "no_matching_rule")
    assert events[0]["id_issuer"] == K8S_ISSUER and events[0]["tenant"] == "ci"


def test_felix_login_saves_the_token(fresh_broker: FreshBroker, tmp_path: Path) -> None:
    broker = exchange_broker(fresh_broker, tmp_path)
    (tmp_path / "sa-token").write_text(sa_token() + "\n")
    saved = tmp_path / "felix-token"
    cli = [sys.executable, "-m", "felix_client.cli", "--server", broker.url]
    cli += ["--ca", broker.ca_file, "login", "--id-token", str(tmp_path / "sa-token")]
    done = subprocess.run(
        [*cli, "--save", str(saved)],
        check=False,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "written to" in done.stdout and "tenant ci" in done.stdout
    assert saved.stat().st_mode & 0o777 == 0o600
    assert read_unverified(saved.read_text().strip())[1]["tenant"] == "ci"
    (tmp_path / "bad-token").write_text(sa_token(name="intruder"))
    cli[-1] = str(tmp_path / "bad-token")
    refused = subprocess.run(
        cli, check=False, env=child_env(), capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1
    assert "no_matching_rule" in refused.stderr


async def test_a_broker_without_exchange(broker: Broker) -> None:
    with pytest.raises(UnexpectedMessage, match="token-exchange"):
        async with client(broker, id_token=sa_token()):
            pass


def test_conformance_exchange_checks(fresh_broker: FreshBroker, tmp_path: Path) -> None:
    """The conformance suite's token-exchange checks pass against this broker (they are
    skipped in tests/conformance, whose broker has no issuer)."""
    broker = exchange_broker(fresh_broker, tmp_path)
    login = [sys.executable, "-m", "felix_client.cli", "--server", broker.url, "--ca"]
    (tmp_path / "sa-token").write_text(sa_token())
    token = subprocess.run(
        [*login, broker.ca_file, "login", "--id-token", str(tmp_path / "sa-token")],
        check=True,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "conformance", "--server", broker.url, "--ca", broker.ca_file),
            *("--token", token, "--tenant", "ci", "--namespace", "conf", "-k", "exchange."),
        ],
        check=False,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("exchange.forgeries-refused", "exchange.login-first"):
        assert re.search(rf"PASS\s+{re.escape(name)}", result.stdout), result.stdout
