"""The data directory as the runtimes open it: one broker at a time (a lock), metadata and
logs side by side, damaged definitions reported."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from felix_runtime.storage import open_storage
from felix_server.config import ServerConfig


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
