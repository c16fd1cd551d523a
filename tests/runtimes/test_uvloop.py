"""``felix broker --loop uvloop``: the asyncio runtime, and anyio on asyncio, on uvloop's
event loop (the ``uvloop`` extra). The whole end-to-end suite runs against such a broker
with ``FELIX_TEST_RUNTIMES=asyncio-uvloop,anyio-uvloop``; these tests check the switch
itself, on every broker start."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from brokers import start_broker

from felix_client import Client

pytest.importorskip("uvloop")

pytestmark = pytest.mark.anyio

WAIT = 5.0


@pytest.mark.parametrize(
    ("runtime", "label"),
    [("asyncio-uvloop", "asyncio/uvloop"), ("anyio-uvloop", "anyio/asyncio/uvloop")],
)
async def test_broker_runs_on_uvloop(runtime: str, label: str, tmp_path: Path) -> None:
    broker = start_broker(runtime, tmp_path)
    try:
        listening = next(
            line for line in list(broker.log) if line.get("msg") == "felix broker listening"
        )
        assert listening["runtime"] == label
        async with Client(broker.url, **broker.client_kwargs()) as c:
            await c.admin.create("stream", "uv")
            sub = c.subscribe("uv", start="earliest")
            await sub.open()
            for i in range(20):
                await c.publish("uv", b"m%d" % i)
            got = []
            with anyio.fail_after(WAIT):
                async for event in sub:
                    got.append(event.payload)
                    if len(got) == 20:
                        break
            assert got == [b"m%d" % i for i in range(20)]
    finally:
        assert broker.stop() == 0


def test_uvloop_needs_asyncio_under_anyio(capsys: pytest.CaptureFixture[str]) -> None:
    from felix_runtime_anyio.app import main

    assert main(["--backend", "trio", "--loop", "uvloop"]) == 2
    assert "--loop uvloop needs --backend asyncio" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["felix_runtime_asyncio.app", "felix_runtime_anyio.app"])
def test_uvloop_missing_is_a_usage_error(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = __import__(module, fromlist=["main"]).main
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert main(["--loop", "uvloop"]) == 2
    assert "pip install 'felix[uvloop]'" in capsys.readouterr().err


def test_help_names_the_loop_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from felix_runtime_asyncio.app import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--loop {asyncio,uvloop}" in capsys.readouterr().out
