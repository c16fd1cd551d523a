"""The conformance suite, through its command line, against every runtime's broker.

Each runtime (asyncio, anyio on asyncio, anyio on trio) runs as a ``felix broker``
subprocess (``tests/brokers.py``); the three suites run concurrently to keep
the wall time down. The result must be the in-process one: everything passes or skips
except :data:`KNOWN_BROKER_FINDINGS`, which must still fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from brokers import (
    DEFAULT_RUNTIMES,
    Broker,
    start_broker,
)  # tests/ is on sys.path (tests/conftest.py)
from test_conformance_suite import KNOWN_BROKER_FINDINGS

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def _suite(broker: Broker) -> tuple[int, str]:
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "conformance",
            "--server",
            broker.url,
            "--ca",
            broker.ca_file,
            "--server-name",
            "localhost",
            "-k",
            "not session.goaway",
        ],
        check=False,
        cwd=ROOT,
    )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def test_every_runtime_conforms(tmp_path: Path) -> None:
    brokers = [start_broker(name, tmp_path / name) for name in DEFAULT_RUNTIMES]
    outputs: dict[str, tuple[int, str]] = {}
    try:

        async def run(broker: Broker) -> None:
            outputs[broker.runtime] = await _suite(broker)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for broker in brokers:
                    tg.start_soon(run, broker)
    finally:
        for broker in brokers:
            broker.stop()
    for runtime, (code, out) in outputs.items():
        lines = out.strip().splitlines()
        failed = {line.split()[1] for line in lines if line.startswith("FAIL ")}
        assert failed == KNOWN_BROKER_FINDINGS, f"{runtime}:\n{out}"
        assert code == (1 if failed else 0), f"{runtime}:\n{out}"
        assert lines[-1].endswith(" skipped"), f"{runtime}:\n{out}"
