"""At start, the log directories of incarnations that no stored definition names (a resource
deleted while the broker died before its files went, an older incarnation of one created
again) are removed before any log opens, with a log line each."""

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


def test_leftover_incarnations_are_removed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(data_dir=str(tmp_path))
    storage = open_storage(config)
    for kind, path in ((Kind.TENANT, ("t", "", "")), (Kind.NAMESPACE, ("t", "n", ""))):
        storage.metadata.apply(
            WriteOp.CREATE, ResourceRecord(kind=kind, tenant=path[0], namespace=path[1]), None
        )
    settings = stream_schema(config.broker)(("t", "n", "s"), {"durability": "durable"}, None)
    stored = storage.metadata.apply(
        WriteOp.CREATE,
        ResourceRecord(kind=Kind.STREAM, tenant="t", namespace="n", name="s", settings=settings),
        None,
    )
    uid = stored.uid
    logs = tmp_path / "logs" / "stream" / "t" / "n"
    for leftover in (logs / "s" / str(uid + 100), logs / "gone" / "7"):
        leftover.mkdir(parents=True)
        (leftover / "00000000000000000000.log").write_bytes(b"an old incarnation's records")

    with caplog.at_level(logging.INFO):
        server, _ = build_server(config, make_quic_configuration(config), storage, ServerObserver())
    storage.close()

    assert sorted(p.name for p in (logs / "s").iterdir()) == [str(uid)]  # the live one only
    assert not (logs / "gone" / "7").exists()
    removed = [
        r.__dict__["fields"]["log"]
        for r in caplog.records
        if r.getMessage() == "durable log of a deleted resource removed at start"
    ]
    assert sorted(removed) == ["stream/t/n/gone/7", f"stream/t/n/s/{uid + 100}"]
    assert server.broker.registry.find(Kind.STREAM, ("t", "n", "s")) is not None
