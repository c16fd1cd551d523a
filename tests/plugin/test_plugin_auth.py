"""The plugin's brokers with authentication (``felix_auth = true``, ``factory(auth=True)``,
``start_broker(auth=True)``): they accept only Felix tokens, and ``broker.token_for(...)``
signs the ones a test needs; the client fixtures connect with a token of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from felix_client import Forbidden, Unauthenticated
from felix_client.pytest_plugin import FelixBroker, start_broker
from felix_client.sync import BlockingClient

AUTH_CHECK = """
import pytest

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncio"

async def test_the_client_fixture_has_a_token(felix_client):
    await felix_client.admin.create("stream", "authed")
    await felix_client.publish("authed", b"x")

def test_the_session_broker_signs_tokens(felix_broker):
    assert felix_broker.token_for("alice", permissions=["subscribe:*/*"]).count(".") == 2
"""


def test_token_for_grants_what_it_says(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "data", auth=True)
    try:
        with BlockingClient(broker.url, **broker.client_kwargs()) as admin:
            admin.admin("create", "stream", "orders")
            admin.publish("orders", b"by the default token")
        reader = broker.token_for("reader", permissions=["subscribe:default/*"])
        with (
            BlockingClient(broker.url, ca_file=broker.ca_file, token=reader) as client,
            pytest.raises(Forbidden),
        ):
            client.publish("orders", b"x")
        with (
            pytest.raises(Unauthenticated),
            BlockingClient(broker.url, ca_file=broker.ca_file, token="not-a-token") as client,
        ):
            client.publish("orders", b"x")
    finally:
        assert broker.stop() == 0


def test_token_for_needs_a_broker_with_auth(tmp_path: Path) -> None:
    unsecured = FelixBroker("asyncio", cast(Any, None), tmp_path)
    assert "token" not in unsecured.client_kwargs()
    with pytest.raises(RuntimeError, match="felix_auth = true"):
        unsecured.token_for()


def test_felix_auth_in_the_ini_file(tmp_path: Path) -> None:
    (tmp_path / "test_auth.py").write_text(AUTH_CHECK)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfelix_auth = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        check=False,
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
