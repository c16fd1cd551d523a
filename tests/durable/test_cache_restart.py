"""A durable cache keeps its entries across a broker killed with SIGKILL and restarted
(issue 10), driven with ``felix`` against a real broker subprocess on every runtime: a key
put with a long TTL is there after the restart with its version, one put with a short TTL
is gone once its (absolute) expiry passes, and a CAS with the version read before the
restart succeeds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from brokers import selected_runtimes, start_broker
from test_restart import felix

SHORT_TTL_S = 2.0


@pytest.mark.parametrize("runtime", selected_runtimes())
def test_a_durable_cache_restores_its_entries_after_sigkill(runtime: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_broker(runtime, data)
    try:
        felix(broker, "admin", "create", "cache", "sessions", "--set", "durability=durable")
        felix(broker, "cache", "put", "sessions", "long", "kept", "--ttl", "3600")
        felix(broker, "cache", "put", "sessions", "short", "brief", "--ttl", str(SHORT_TTL_S))
        put_by = time.monotonic()  # the put was applied before its command returned
        before = json.loads(felix(broker, "cache", "get", "sessions", "long", "-o", "json"))
    finally:
        broker.process.kill()  # kill -9: no final sync, no clean close of the change log
        broker.process.wait(timeout=10)

    again = start_broker(runtime, data)
    try:
        after = json.loads(felix(again, "cache", "get", "sessions", "long", "-o", "json"))
        assert (after["value"], after["version"]) == ("kept", before["version"])
        time.sleep(max(0.0, SHORT_TTL_S + 0.2 - (time.monotonic() - put_by)))
        short = json.loads(felix(again, "cache", "get", "sessions", "short", "-o", "json"))
        assert short.get("value") is None, short
        out = felix(
            again,
            "cache",
            "put",
            "sessions",
            "long",
            "v2",
            "--if-version",
            str(before["version"]),
            "-o",
            "json",
        )
        put = json.loads(out)
        assert put["stored"] is True and put["version"] > before["version"], put
    finally:
        assert again.stop() == 0
