"""Bearer-token authentication (``auth_tokens``) on every runtime, through the client and
the conformance suite's ``session.bad-token`` check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from brokers import FreshBroker

from felix_client import Client, FelixError, Unauthenticated

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def test_only_listed_tokens_open_a_session(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--auth-tokens", "alpha, beta")
    async with Client(broker.url, token="beta", **broker.client_kwargs()) as c:
        await c.admin.create("stream", "secured")
        assert (await c.publish("secured", b"x")).first_offset == 0
    for token in (None, "gamma", "alph"):
        with pytest.raises(Unauthenticated):  # raised by connecting (the handshake)
            async with Client(broker.url, token=token, **broker.client_kwargs()) as c:
                await c.publish("secured", b"refused")


def test_conformance_checks_the_bad_token_path(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--auth-tokens", "s3cret")
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
            "s3cret",
            "-k",
            "session.bad-token,session.welcome",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS session.bad-token" in result.stdout
    assert "2 passed, 0 failed" in result.stdout


def test_unauthenticated_is_a_felix_error() -> None:
    assert issubclass(Unauthenticated, FelixError)
