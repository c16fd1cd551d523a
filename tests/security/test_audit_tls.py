"""Client certificates refused in the TLS handshake are audited, on every runtime: no
certificate, another CA, an expired one (``tls_refused``: peer address, reason, the
certificate's subject, issuer and fingerprint, the QUIC connection id, and ``conn`` null,
since the connection never became a Felix one); a certificate no rule maps is refused at the
Felix handshake and its ``handshake_refused`` entry names the certificate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from brokers import FreshBroker
from certs import DAY, TestCA
from cryptography.hazmat.primitives import hashes
from test_mtls_network import RULES, client, refused

from felix_client import Unauthenticated
from felix_client.cli import main as felix
from felix_runtime.audit import audit_files
from felix_runtime.tls_server import _peer_address


def entries(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for f in audit_files(directory) for line in f.read_bytes().splitlines()
    ]


@pytest.mark.anyio
async def test_refused_client_certificates_are_audited(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    ca, other = TestCA(tmp_path, "clients"), TestCA(tmp_path, "other")
    broker = fresh_broker("--tls-client-ca", str(ca.file), "--tls-client-rules", RULES)
    forged = other.issue("forged", cn="mallory", uris=("spiffe://felix/tenant/acme/sa/a",))
    expired = ca.issue("expired", cn="old", not_before=-3 * DAY, not_after=-DAY)
    unmapped = ca.issue("unmapped", cn="nobody")  # CN without O: no rule maps it
    assert "a client certificate is required" in await refused(broker, None, "aioquic")
    assert "client certificate refused" in await refused(broker, forged, "aioquic")
    assert "has expired" in await refused(broker, expired, "aioquic")
    with pytest.raises(Unauthenticated, match="certificate_unmapped"):
        async with client(broker, unmapped, "aioquic", tenant="acme") as c:
            await c.publish("orders", b"x")
    assert broker.stop() == 0
    trail = broker.data_dir / "audit"
    got = entries(trail)
    tls = {e["reason"]: e for e in got if e["kind"] == "tls_refused"}
    assert set(tls) == {"missing", "untrusted", "expired"}
    for entry in tls.values():
        assert entry["conn"] is None and len(entry["quic_cid"]) >= 16
        assert entry["peer"].startswith("127.0.0.1:")
    assert "subject" not in tls["missing"] and "fingerprint" not in tls["missing"]
    for reason, issued in (("untrusted", forged), ("expired", expired)):
        fingerprint = issued.certificate.fingerprint(hashes.SHA256()).hex(":").upper()
        assert tls[reason]["fingerprint"] == fingerprint
        assert tls[reason]["subject"] == issued.certificate.subject.rfc4514_string()
    assert tls["untrusted"]["issuer"] == "CN=other"
    handshake = next(e for e in got if e["kind"] == "handshake_refused")
    assert handshake["reason"] == "certificate_unmapped" and handshake["subject"] == "CN=nobody"
    fingerprint = unmapped.certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert handshake["fingerprint"] == fingerprint and isinstance(handshake["conn"], int)
    assert felix(["audit", "verify", str(trail)]) == 0


class _Aioquic:
    def __init__(self, address: Any) -> None:
        self.address = address

    def get_peer_address(self) -> Any:
        return self.address


class _Qh3:
    def __init__(self, address: Any) -> None:
        self._remote_addr = address


def test_the_peer_address_of_either_engine() -> None:
    assert _peer_address(_Aioquic(("127.0.0.1", 4433))) == "127.0.0.1:4433"
    assert _peer_address(_Qh3(("::1", 4433, 0, 0))) == "[::1]:4433"
    assert _peer_address(_Aioquic(None)) is None
    assert _peer_address(object()) is None
