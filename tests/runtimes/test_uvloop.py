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


def test_timer_delay_rounds_up_to_whole_milliseconds() -> None:
    from felix_runtime.timers import timer_delay

    assert timer_delay(10.0003, 10.0) == 0.001
    assert timer_delay(10.0009, 10.0) == 0.001
    assert timer_delay(10.002, 10.0) == 0.002
    assert timer_delay(10.0021, 10.0) == 0.003
    assert timer_delay(9.0, 10.0) == 0.0


class _TimerServer:
    """A server with one deadline and nothing to send; notes the wall clock when its timer
    is handled."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead  # the deadline: this long after the adapter first asks for it
        self.deadline: float | None = None
        self.fired: list[tuple[float, float]] = []  # (now given, wall clock then)
        self.finished = False
        self.storage = None

    def datagram_received(self, data: bytes, addr: object, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float, send: object = None) -> list[object]:
        return []

    def get_timer(self) -> float | None:
        import time

        if self.deadline is None and not self.fired:
            self.deadline = time.time() + self.ahead
        return self.deadline

    def handle_timer(self, now: float) -> None:
        import time

        self.fired.append((now, time.time()))
        self.deadline = None

    def take_storage_jobs(self, now: float) -> list[object]:
        return []


@pytest.mark.parametrize("runtime", ["asyncio", "anyio"])
def test_the_timer_never_fires_early_on_uvloop(runtime: str) -> None:
    """uvloop rounds a timer's delay down to the millisecond (a timer 0.4 ms ahead fires at
    once): the adapters arm whole milliseconds rounded up, and one that fires early anyway
    waits for the rest, so the server never gets a ``now`` the wall clock has not reached."""
    import asyncio
    from typing import Any, cast

    import uvloop

    from felix_runtime.timers import TIMER_SLACK
    from felix_server.server import FelixServer

    async def run_asyncio(server: _TimerServer) -> None:
        from felix_runtime_asyncio.runtime import UdpRuntime

        rt = UdpRuntime(cast(FelixServer, server))
        await rt.start("127.0.0.1", 0)
        rt.wake()
        with anyio.fail_after(WAIT):
            while not server.fired:
                await asyncio.sleep(0.001)
        rt.close()

    async def run_anyio(server: _TimerServer) -> None:
        from felix_runtime_anyio.runtime import AnyioUdpRuntime

        rt = AnyioUdpRuntime(cast(FelixServer, server))
        rt.bind("127.0.0.1", 0)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.serve)
                while not server.fired:
                    await anyio.sleep(0.001)
                tg.cancel_scope.cancel()
        rt.close()

    early: list[float] = []
    for _ in range(5):
        server = _TimerServer(0.0004)
        main: Any = run_asyncio if runtime == "asyncio" else run_anyio
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(server))
        ((given, wall),) = server.fired
        early.append(given - wall)  # how far the now handed over is ahead of the wall clock
    assert max(early) <= TIMER_SLACK


def test_felix_bench_runs_the_broker_on_uvloop() -> None:
    """``felix bench --runtime asyncio-uvloop`` starts the broker as the suite does."""
    from brokers import RUNTIMES

    from felix_client.bench.settings import RUNTIMES as BENCH_RUNTIMES

    assert BENCH_RUNTIMES["asyncio-uvloop"] == RUNTIMES["asyncio-uvloop"]
