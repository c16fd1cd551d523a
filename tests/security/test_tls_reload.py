"""Reloading the broker's certificate, key and client CA without a restart: on demand
(what SIGHUP calls), when the files change, and by SIGHUP on every runtime; live
connections go on, new ones get the new material, a bad file keeps the old one."""

from __future__ import annotations

import logging
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from brokers import FreshBroker
from certs import Issued, TestCA

from felix_client import Client, FelixError
from felix_runtime_asyncio.app import BrokerProcess
from felix_server.config import ServerConfig

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the broker runs in this process, on asyncio


class Material:
    """Two server CAs (``a`` and ``b``), the files the broker reads, and how to swap them."""

    def __init__(self, directory: Path) -> None:
        self.a, self.b = TestCA(directory, "server-a"), TestCA(directory, "server-b")
        self.cert_file, self.key_file = directory / "broker.pem", directory / "broker.key"
        self.clients = TestCA(directory, "clients")
        self.client_ca_file = directory / "client-ca.pem"
        shutil.copy(self.clients.file, self.client_ca_file)
        self.use(self.a.issue("broker-a", cn="broker", server=True))

    def use(self, issued: Issued) -> None:
        shutil.copy(issued.cert_file, self.cert_file)
        shutil.copy(issued.key_file, self.key_file)


async def start(material: Material, **settings: Any) -> BrokerProcess:
    config = ServerConfig(
        listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        data_dir=str(material.cert_file.parent / "data"),
        tls_cert=str(material.cert_file),
        tls_key=str(material.key_file),
        audit=False,
        **settings,
    )
    return await BrokerProcess(config).start()


@pytest.fixture
async def material(tmp_path: Path) -> Material:
    return Material(tmp_path)


@pytest.fixture
async def broker(material: Material) -> AsyncIterator[BrokerProcess]:
    process = await start(material, tls_reload_check_s=0)
    yield process
    await process.close()


def client(broker: BrokerProcess, ca: TestCA, **kwargs: Any) -> Client:
    url = f"quic://127.0.0.1:{broker.address[1]}"
    return Client(url, ca_file=str(ca.file), timeout=3.0, server_name="localhost", **kwargs)


async def works(broker: BrokerProcess, ca: TestCA, **kwargs: Any) -> bool:
    try:
        async with client(broker, ca, **kwargs) as c:
            await c.admin.list("namespace")
    except FelixError:
        return False
    return True


async def test_reload_serves_the_new_certificate_to_new_connections_only(
    broker: BrokerProcess, material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    async with client(broker, material.a) as live:
        await live.admin.create("stream", "reloaded")
        material.use(material.b.issue("broker-b", cn="broker", server=True))
        with caplog.at_level(logging.INFO, logger="felix"):
            assert broker.reload_tls()
        assert any("TLS reloaded" in r.getMessage() for r in caplog.records)
        assert await works(broker, material.b)
        assert not await works(broker, material.a)
        await live.publish("reloaded", b"still here")  # the live connection goes on


@pytest.mark.parametrize("damage", ["garbage", "other_key", "missing"])
async def test_a_bad_file_is_logged_and_the_old_certificate_stays(
    broker: BrokerProcess, material: Material, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    if damage == "garbage":
        material.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    elif damage == "other_key":  # a certificate of B with the key of A's
        shutil.copy(material.b.issue("b", cn="broker", server=True).cert_file, material.cert_file)
    else:
        material.key_file.unlink()
    with caplog.at_level(logging.ERROR, logger="felix"):
        assert not broker.reload_tls()
    assert any("TLS reload failed" in r.getMessage() for r in caplog.records)
    assert await works(broker, material.a)


async def test_the_client_ca_is_reloaded_too(material: Material, tmp_path: Path) -> None:
    process = await start(
        material,
        tls_reload_check_s=0,
        tls_client_ca=str(material.client_ca_file),
        tls_client_rules="cn:{subject} o:{tenant} => admin",
    )
    try:
        newcomers = TestCA(tmp_path, "newcomers")
        old = material.clients.issue("old", cn="old", o="default")
        new = newcomers.issue("new", cn="new", o="default")

        def files(issued: Issued) -> dict[str, str]:
            return {"cert_file": str(issued.cert_file), "key_file": str(issued.key_file)}

        assert await works(process, material.a, **files(old))
        assert not await works(process, material.a, **files(new))
        shutil.copy(newcomers.file, material.client_ca_file)
        assert process.reload_tls()
        assert await works(process, material.a, **files(new))
        assert not await works(process, material.a, **files(old))
        material.client_ca_file.write_bytes(b"not a CA")
        assert not process.reload_tls()
        assert await works(process, material.a, **files(new))
    finally:
        await process.close()


async def test_a_changed_file_is_reloaded_by_itself(material: Material) -> None:
    process = await start(material, tls_reload_check_s=0.05)
    try:
        material.use(material.b.issue("broker-b", cn="broker", server=True))
        with anyio.fail_after(WAIT):
            while not await works(process, material.b):
                await anyio.sleep(0.05)
    finally:
        await process.close()


def test_sighup_reloads_on_every_runtime(fresh_broker: FreshBroker) -> None:
    broker = fresh_broker("--tls-reload-check-s", "0")
    broker.process.send_signal(signal.SIGHUP)
    for _ in range(200):
        if "TLS reloaded for new connections" in broker.log_messages():
            break
        anyio.run(anyio.sleep, 0.05)
    assert "TLS reloaded for new connections" in broker.log_messages()
    assert broker.process.poll() is None  # still serving
