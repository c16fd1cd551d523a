"""The data directory as the runtimes open it: one broker at a time (a lock), metadata and
logs side by side, damaged definitions reported."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from felix_core.metadata import Kind, ResourceRecord, WriteOp
from felix_core.settings import stream_schema
from felix_runtime.storage import build_server, open_storage
from felix_server.config import ServerConfig
from felix_server.observer import ServerObserver
from felix_server.server import make_quic_configuration


def test_a_second_broker_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=str(tmp_path / "data"))
    first = open_storage(config)
    with pytest.raises(OSError, match="in use by another broker"):
        open_storage(config)
    first.close()
    second = open_storage(config)  # released by close (and by the kernel on a crash)
    second.close()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["lock", "logs", "metadata"]


def test_damaged_definitions_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = tmp_path / "metadata" / "records"
    records.mkdir(parents=True)
    (records / "tenant+x++.rec").write_bytes(b"FXMD\x01garbage")
    with caplog.at_level(logging.ERROR):
        storage = open_storage(ServerConfig(data_dir=str(tmp_path)))
    storage.close()
    assert [r.getMessage() for r in caplog.records] == [
        "resource definition not loaded (damaged file)"
    ]


def test_a_durable_log_that_cannot_be_opened_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(data_dir=str(tmp_path))
    storage = open_storage(config)
    for kind, path in ((Kind.TENANT, ("t", "", "")), (Kind.NAMESPACE, ("t", "n", ""))):
        storage.metadata.apply(
            WriteOp.CREATE, ResourceRecord(kind=kind, tenant=path[0], namespace=path[1]), None
        )
    for name in ("ok", "blocked"):
        storage.metadata.apply(
            WriteOp.CREATE,
            ResourceRecord(
                kind=Kind.STREAM,
                tenant="t",
                namespace="n",
                name=name,
                settings=stream_schema(config.broker)(
                    ("t", "n", name), {"durability": "durable"}, None
                ),
            ),
            None,
        )
    (tmp_path / "logs" / "stream" / "t" / "n").mkdir(parents=True)
    (tmp_path / "logs" / "stream" / "t" / "n" / "blocked").write_bytes(b"in the way")
    with caplog.at_level(logging.INFO):
        server, _ = build_server(config, make_quic_configuration(config), storage, ServerObserver())
    storage.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.getMessage(), r.__dict__["fields"]["path"]) for r in errors] == [
        ("durable log could not be opened: the resource is not served", "t/n/blocked")
    ]
    assert server.broker.registry.find(Kind.STREAM, ("t", "n", "ok")) is not None
    assert server.broker.registry.find(Kind.STREAM, ("t", "n", "blocked")) is None
