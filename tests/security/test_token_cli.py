"""``felix token keygen | issue | inspect`` end to end, as a user runs them (subprocess),
plus the duration parser in process. Tokens the CLI prints are checked with the library's
own TokenVerifier against the JWKS file keygen wrote."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from felix_client import _token_cli
from felix_client._token_cli import parse_ttl
from felix_core.access import Action
from felix_runtime.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    TokenVerifier,
    issue_token,
    key_id,
    load_private_key,
    load_public_key,
    read_jwks,
)


def felix(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    script = shutil.which("felix", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "felix_client.cli"]
    return subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys") / "issuer"
    result = felix("token", "keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_keygen_writes_a_private_key_only_its_owner_can_read(keys: Path) -> None:
    assert sorted(p.name for p in keys.iterdir()) == ["jwks.json", "private.pem", "public.pem"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "private.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "public.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((keys / "jwks.json").stat().st_mode) == 0o644


def test_keygen_files_are_one_key_pair_named_by_its_thumbprint(keys: Path) -> None:
    private = load_private_key((keys / "private.pem").read_bytes())
    public = load_public_key((keys / "public.pem").read_bytes())
    kid = key_id(public)
    assert key_id(private.public_key()) == kid
    jwks = read_jwks((keys / "jwks.json").read_bytes())
    assert list(jwks) == [kid]
    assert key_id(jwks[kid]) == kid
    document = json.loads((keys / "jwks.json").read_text())
    assert document["keys"][0]["use"] == "sig"
    assert document["keys"][0]["alg"] == "EdDSA"


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o277])
def test_keygen_file_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "k"
    old = os.umask(umask)
    try:
        result = felix("token", "keygen", "--out", str(out))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "private.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "public.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "jwks.json").stat().st_mode) == 0o644


def test_keygen_never_overwrites(keys: Path) -> None:
    before = (keys / "private.pem").read_bytes()
    line = one_error_line(felix("token", "keygen", "--out", str(keys)), 1)
    assert "already exists" in line
    assert (keys / "private.pem").read_bytes() == before


def test_issue_prints_a_token_that_verifies_with_the_jwks(keys: Path) -> None:
    started = time.time()
    result = felix(
        "token",
        "issue",
        "--key",
        str(keys / "private.pem"),
        "--tenant",
        "acme",
        "--allow",
        "publish:default/orders",
        "--allow",
        "subscribe:default/*",
        "--role",
        "reader",
        "--ttl",
        "15m",
        "--subject",
        "ci-job",
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    verifier = TokenVerifier({DEFAULT_ISSUER: read_jwks((keys / "jwks.json").read_bytes())})
    principal = verifier.verify(token, time.time())
    assert principal.subject == "ci-job"
    assert principal.tenant == "acme"
    assert principal.roles == ("reader",)
    assert principal.allows(Action.PUBLISH, "default", "orders")
    assert principal.allows(Action.SUBSCRIBE, "default", "anything")
    assert not principal.allows(Action.PUBLISH, "default", "payments")
    assert principal.expires_at is not None
    assert int(started) + 900 <= principal.expires_at <= time.time() + 900
    assert principal.token_id


def test_issue_issuer_audience_and_default_subject(keys: Path) -> None:
    result = felix(
        "token",
        "issue",
        "--key",
        str(keys / "private.pem"),
        "--tenant",
        "acme",
        "--role",
        "ops",
        "--issuer",
        "eu-issuer",
        "--audience",
        "eu-brokers",
        "--ttl",
        "2h",
    )
    assert result.returncode == 0, result.stderr
    verifier = TokenVerifier(
        {"eu-issuer": read_jwks((keys / "jwks.json").read_bytes())}, audience="eu-brokers"
    )
    principal = verifier.verify(result.stdout.strip(), time.time())
    assert principal.issuer == "eu-issuer"
    assert principal.subject  # the user's name
    assert principal.permissions == frozenset()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "acme"], "at least one --allow"),
        (["--tenant", "acme", "--allow", "steal"], "unknown action 'steal'"),
        (["--tenant", "acme", "--allow", "publish:orders"], "NAMESPACE/NAME"),
        (["--tenant", "bad/tenant", "--allow", "publish"], "invalid tenant name"),
        (["--tenant", "acme", "--role", "a b"], "invalid role name"),
        (["--tenant", "acme", "--allow", "publish", "--ttl", "15"], "invalid duration"),
        (["--tenant", "acme", "--allow", "publish", "--ttl", "0m"], "invalid duration"),
        (["--tenant", "acme", "--allow", "publish", "--ttl", "2w"], "invalid duration"),
    ],
)
def test_issue_usage_errors_exit_2(keys: Path, args: list[str], message: str) -> None:
    result = felix("token", "issue", "--key", str(keys / "private.pem"), *args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert message in result.stderr.strip().splitlines()[-1]


def test_issue_errors_exit_1_in_one_line(keys: Path, tmp_path: Path) -> None:
    missing = one_error_line(
        felix(
            "token",
            "issue",
            "--key",
            str(tmp_path / "nope.pem"),
            "--tenant",
            "acme",
            "--allow",
            "publish",
        ),
        1,
    )
    assert "nope.pem" in missing
    assert "No such file" in missing
    public = one_error_line(
        felix(
            "token",
            "issue",
            "--key",
            str(keys / "public.pem"),
            "--tenant",
            "acme",
            "--allow",
            "publish",
        ),
        1,
    )
    assert "not an unencrypted Ed25519 private key" in public


def _token(keys: Path, **overrides: float) -> str:
    key = load_private_key((keys / "private.pem").read_bytes())
    args = {"now": time.time(), "ttl": 900.0} | overrides
    return issue_token(key, subject="s", tenant="acme", token_id="j", roles=["r"], **args)


def test_inspect_shows_claims_and_says_they_are_not_verified(keys: Path) -> None:
    result = felix("token", "inspect", _token(keys))
    assert result.returncode == 0, result.stderr
    assert "NOT VERIFIED" in result.stderr
    shown = json.loads(result.stdout)
    assert shown["verified"] is False
    assert shown["header"]["alg"] == "EdDSA"
    assert shown["claims"]["tenant"] == "acme"
    assert shown["claims"]["aud"] == DEFAULT_AUDIENCE
    assert shown["times"]["exp"].endswith("Z")


def test_inspect_does_not_verify_without_being_asked(keys: Path) -> None:
    expired = _token(keys, now=1000.0)
    result = felix("token", "inspect", expired)
    assert result.returncode == 0
    assert json.loads(result.stdout)["claims"]["exp"] == 1900


def test_inspect_verify(keys: Path, tmp_path: Path) -> None:
    jwks = str(keys / "jwks.json")
    result = felix("token", "inspect", "-", "--verify", "--jwks", jwks, stdin=_token(keys) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["verified"] is True

    expired = one_error_line(
        felix("token", "inspect", _token(keys, now=1000.0), "--verify", "--jwks", jwks), 1
    )
    assert "token refused (expired)" in expired

    other = tmp_path / "other"
    assert felix("token", "keygen", "--out", str(other)).returncode == 0
    unknown = one_error_line(
        felix("token", "inspect", _token(keys), "--verify", "--jwks", str(other / "jwks.json")), 1
    )
    assert "token refused (unknown_key)" in unknown

    audience = one_error_line(
        felix("token", "inspect", _token(keys), "--verify", "--jwks", jwks, "--audience", "other"),
        1,
    )
    assert "token refused (wrong_audience)" in audience

    issuer = one_error_line(
        felix("token", "inspect", _token(keys), "--jwks", jwks, "--issuer", "someone-else"), 1
    )
    assert "token refused (wrong_issuer)" in issuer


def test_inspect_errors(keys: Path, tmp_path: Path) -> None:
    assert "token refused (malformed)" in one_error_line(felix("token", "inspect", "garbage"), 1)
    assert "--verify needs --jwks" in one_error_line(
        felix("token", "inspect", _token(keys), "--verify"), 2
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "RSA", "kid": "r"}]}')
    assert "only Ed25519" in one_error_line(
        felix("token", "inspect", _token(keys), "--jwks", str(bad)), 1
    )


def test_token_appears_in_felix_help() -> None:
    result = felix("--help")
    assert result.returncode == 0
    assert "token" in result.stdout
    assert felix("token", "--help").returncode == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("15m", 900.0), ("12h", 43_200.0), ("7d", 604_800.0), (" 1m ", 60.0)],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "0s", "-5m", "1.5h", "2w", "m", "15 m", "15M"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_ttl(text)


def test_cli_defaults_are_the_library_defaults() -> None:
    assert _token_cli.DEFAULT_NAME == DEFAULT_ISSUER == DEFAULT_AUDIENCE
