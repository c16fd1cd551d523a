"""What docs/broker.md says about settings, flags and metrics is what the broker does.

The page is checked against the broker itself, as a user would check it: the defaults in
its tables against ``felix-broker --print-config``, every flag it names against ``--help``,
and every metric name it lists against the ``/metrics`` page of a live broker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import Broker, child_env, start_broker

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "broker.md").read_text()
SIZES = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from felix_client.cli import broker_main; broker_main()", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The effective configuration on embedded defaults, flattened to dotted keys."""
    text = _run("--print-config")
    parsed = tomllib.loads(text)
    flat: dict[str, Any] = {}
    table = ""
    for line in text.splitlines():  # optional settings at None print as "# KEY unset"
        if line.startswith("["):
            table = line.strip("[]") + "."
        elif match := re.fullmatch(r"# ([a-z_]+) unset", line):
            flat[table + match.group(1)] = None
    for key, value in parsed.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _number(text: str) -> float | None:
    """``1452``, ``10 000``, ``16 MiB``, ``60`` -> the number; anything else -> None."""
    match = re.fullmatch(r"([\d ]+(?:\.\d+)?)\s*(KiB|MiB|GiB)?", text.strip())
    if match is None:
        return None
    value = float(match.group(1).replace(" ", ""))
    return value * SIZES.get(match.group(2) or "", 1)


def _tuning_rows() -> list[tuple[str, str]]:
    """``(key, default)`` of the transport tuning table (``a / b`` rows split in two)."""
    section = PAGE.split("## Transport tuning and back-pressure", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`transport."):
            continue
        keys = [k.strip().strip("`") for k in cells[0].split("/")]
        defaults = [d.strip() for d in cells[1].split("/")]
        keys = [k if k.startswith("transport.") else f"transport.{k}" for k in keys]
        rows.extend(zip(keys, defaults, strict=True))
    return rows


def test_tuning_defaults_are_the_brokers(config: dict[str, Any]) -> None:
    rows = _tuning_rows()
    assert len(rows) >= 8
    for key, default in rows:
        assert key in config, f"docs/broker.md names {key}; --print-config has no such key"
        expected = _number(default)
        assert expected is not None, f"{key}: cannot read the documented default {default!r}"
        assert config[key] == expected, f"{key}: documented {default}, broker {config[key]}"


def test_every_named_setting_exists(config: dict[str, Any]) -> None:
    named = set(re.findall(r"`((?:transport|broker)\.[a-z_]+)", PAGE))
    named |= set(re.findall(r"`([a-z_]+_s)`", PAGE))  # shutdown_grace_s ...
    assert len(named) >= 10
    missing = sorted(k for k in named if k not in config)
    assert not missing, f"docs/broker.md names settings the broker does not have: {missing}"


def test_embedded_defaults(config: dict[str, Any]) -> None:
    assert "| QUIC (UDP) listen address | `127.0.0.1:7447` |" in PAGE
    assert config["listen"] == "127.0.0.1:7447"
    assert config["metrics"] == "127.0.0.1:8080"
    assert "| data directory | `./felix-data` |" in PAGE
    assert config["data_dir"] == "felix-data"


def _felix(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from felix_client.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=60,
        check=True,
    )
    return done.stdout


def test_every_named_flag_exists() -> None:
    helps = _run("--help")
    client = _felix("--help") + _felix("broker", "--help") + _felix("log", "truncate", "--help")
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", PAGE))
    assert "--print-config" in named
    unknown = sorted(f for f in named if f not in helps and f not in client)
    assert not unknown, f"docs/broker.md names flags neither felix-broker nor felix has: {unknown}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    running = start_broker("asyncio", tmp_path_factory.mktemp("claims-broker"))
    env = {**child_env(), "FELIX_SERVER": running.url, "FELIX_CA": running.ca_file}
    for kind in ("stream", "queue", "cache"):  # so that per-resource series exist
        _felix("admin", "create", kind, f"claims-{kind}", env=env)
    yield running
    running.stop()


def test_every_listed_metric_is_exported(live: Broker) -> None:
    host, port = live.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        page = reply.read().decode()
    families = set(re.findall(r"^# TYPE (\w+) ", page, re.M))
    section = PAGE.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(felix_[a-z_]+)", section)) - {"felix_runtime", "felix_server"}
    assert len(listed) >= 30
    exported = set(families)
    for family in families:  # a counter family foo is exposed as foo_total
        exported.add(f"{family}_total")
    missing = sorted(name for name in listed if name not in exported)
    assert not missing, f"docs/broker.md lists metrics /metrics does not have: {missing}"
