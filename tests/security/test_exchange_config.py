"""A broker's token exchange from its configuration: the settings, the files they name, the
errors that stop the broker at start-up, the signing key trusted by the authenticator, and
keys fetched from a jwks_url (a loopback HTTP server; no outside network)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from brokers import child_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from oidc_issuers import OidcIssuer

from felix_proto import messages as m
from felix_runtime.credentials import broker_authenticator
from felix_runtime.exchange import broker_exchange
from felix_server.access import ExchangeRefusal, TokenGranted
from felix_server.config import ConfigError, ServerConfig, load_config

IDP = OidcIssuer(alg="ES256", url="https://idp.example.com")
RULE = '[[rule]]\ngroup = "engineering"\ntenant = "acme"\npermissions = ["*"]\n'


def _files(tmp: Path, issuer_table: str) -> ServerConfig:
    key = Ed25519PrivateKey.generate()
    (tmp / "private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp / "jwks.json").write_bytes(IDP.jwks())
    (tmp / "exchange.toml").write_text(issuer_table + RULE)
    return ServerConfig(
        auth_exchange=str(tmp / "exchange.toml"), auth_signing_key=str(tmp / "private.pem")
    )


def _file_issuer(tmp: Path) -> str:
    return (
        f'[[issuer]]\nissuer = "{IDP.url}"\naudience = "felix"\njwks_file = "{tmp / "jwks.json"}"\n'
    )


def test_settings_from_flags_and_environment() -> None:
    config, _ = load_config(
        ["--auth-exchange", "x.toml", "--auth-signing-key", "k.pem"],
        {"FELIX_AUTH_EXCHANGE_TTL_S": "60"},
        lambda p: b"",
    )
    assert (config.auth_exchange, config.auth_signing_key) == ("x.toml", "k.pem")
    assert config.auth_exchange_ttl_s == 60.0
    assert config.auth_enabled
    with pytest.raises(ConfigError, match="auth_exchange needs auth_signing_key"):
        load_config(["--auth-exchange", "x.toml"], {}, lambda p: b"")
    with pytest.raises(ConfigError, match="auth_exchange_ttl_s must be positive"):
        load_config(["--auth-exchange-ttl-s", "0"], {}, lambda p: b"")


def test_the_exchange_and_the_authenticator_of_a_config(tmp_path: Path) -> None:
    config = _files(tmp_path, _file_issuer(tmp_path))
    exchange = broker_exchange(config, fetch_keys=False)
    assert exchange is not None
    now = time.time()
    token = IDP.token(iat=int(now), nbf=int(now), exp=int(now) + 600)
    granted = exchange(token, now)
    assert isinstance(granted, TokenGranted)
    assert (granted.issuer, granted.subject, granted.principal.tenant) == (IDP.url, "alice", "acme")
    # the broker's authenticator trusts its own signing key: the token works in a Hello
    authenticate = broker_authenticator(config)
    assert authenticate is not None
    principal = authenticate(m.Hello(versions=[2], token=granted.token), now)
    assert principal == granted.principal
    refused = exchange(
        IDP.token(groups=["sales"], iat=int(now), nbf=int(now), exp=int(now) + 600), now
    )
    assert isinstance(refused, ExchangeRefusal)
    assert refused.details == {"reason": "no_matching_rule"} and refused.subject == "alice"
    assert broker_exchange(ServerConfig()) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("audience", "audiance"), "issuer 1: unknown key 'audiance'"),
        (lambda t: t.replace('"acme"', '"a b"'), "rule 1: invalid tenant"),
        (lambda t: t + "[[rule]]\ntenant = 3\n", "rule 2: tenant must be"),
    ],
)
def test_a_bad_exchange_file_names_the_setting_and_table(
    tmp_path: Path, change: object, message: str
) -> None:
    config = _files(tmp_path, _file_issuer(tmp_path))
    path = Path(config.auth_exchange or "")
    path.write_text(change(path.read_text()))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=f"auth_exchange: {path}: {message}"):
        broker_exchange(config, fetch_keys=False)


def test_a_bad_signing_key(tmp_path: Path) -> None:
    config = _files(tmp_path, _file_issuer(tmp_path))
    (tmp_path / "private.pem").write_bytes(IDP.jwks())
    with pytest.raises(ConfigError, match="auth_signing_key: "):
        broker_exchange(config, fetch_keys=False)
    with pytest.raises(ConfigError, match="auth_signing_key: "):
        broker_authenticator(config)


def test_the_broker_refuses_to_start_with_a_bad_exchange_file(tmp_path: Path) -> None:
    config = _files(tmp_path, _file_issuer(tmp_path))
    Path(config.auth_exchange or "").write_text("[[issuer]]\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "felix_runtime_asyncio", "--data-dir", str(tmp_path / "d")),
            *("--auth-exchange", str(config.auth_exchange)),
            *("--auth-signing-key", str(config.auth_signing_key)),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"auth_exchange: {config.auth_exchange}: issuer 1:" in done.stderr


@pytest.fixture
def jwks_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the issuer's JWKS at /jwks."""
    document = IDP.jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


def test_keys_from_a_jwks_url_are_fetched_at_start(tmp_path: Path, jwks_server: str) -> None:
    issuer = f'[[issuer]]\nissuer = "{IDP.url}"\naudience = "felix"\njwks_url = "{jwks_server}"\n'
    exchange = broker_exchange(_files(tmp_path, issuer))
    assert exchange is not None
    now = time.time()
    token = IDP.token(iat=int(now), nbf=int(now), exp=int(now) + 600)
    deadline = time.monotonic() + 5.0
    while True:  # the first fetch runs on a background thread
        outcome = exchange(token, time.time())
        if isinstance(outcome, TokenGranted) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert isinstance(outcome, TokenGranted)
