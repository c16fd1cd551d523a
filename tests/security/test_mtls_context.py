"""Mutual TLS through a CLI context: ``felix context add --cert FILE --cert-key FILE``
stores the client certificate, and every command run with that context presents it (no
``--cert`` flag, no ``FELIX_CERT``); a context without one is refused by the broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from brokers import FreshBroker
from certs import TestCA

from felix_client import cli

RULES = "uri:spiffe://felix/tenant/{tenant}/sa/{subject} => admin publish:default/*"


@pytest.mark.parametrize("runtime", ["asyncio"])  # every runtime: test_mtls_network.py
def test_a_context_presents_its_client_certificate(
    fresh_broker: FreshBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith("FELIX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FELIX_CONFIG_DIR", str(tmp_path / "cfg"))
    ca = TestCA(tmp_path, "clients")
    broker = fresh_broker(
        "--tls-client-ca", str(ca.file), "--tls-client-rules", RULES, "--audit", "false"
    )
    alice = ca.issue("alice", uris=("spiffe://felix/tenant/acme/sa/alice",))

    def felix(*argv: str) -> tuple[int, str]:
        code = cli.main(list(argv))
        return code, capsys.readouterr().err

    server = ["--server", broker.url, "--ca", broker.ca_file, "--tenant", "acme"]
    cert = ["--cert", str(alice.cert_file), "--cert-key", str(alice.key_file)]
    assert felix("context", "add", "alice", *server, *cert, "--use") == (0, "")
    assert felix("context", "add", "nobody", *server) == (0, "")

    assert felix("admin", "create", "tenant", "acme") == (0, "")
    assert felix("admin", "create", "namespace", "default") == (0, "")
    assert felix("admin", "create", "stream", "orders") == (0, "")
    assert felix("pub", "orders", "hello") == (0, "")

    code, err = felix("--context", "nobody", "pub", "orders", "x")
    assert code == 1 and "a client certificate is required" in err
    assert "--cert FILE --cert-key FILE" in err  # what to do about it
