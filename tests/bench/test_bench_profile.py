"""``felix bench --profile``: the per-layer breakdown of collapsed stacks (pure, no py-spy),
the flamegraph, the refusals when py-spy is missing or may not attach, and one short real
run."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from brokers import child_env

from felix_client.bench import command, spy
from felix_client.bench.flamegraph import COLOURS, render
from felix_client.bench.parser import build_parser
from felix_client.bench.profiles import (
    LAYERS,
    Breakdown,
    attribute,
    breakdown,
    format_table,
    layer_of,
    merge,
    parse_collapsed,
    parse_frame,
)
from felix_client.bench.report import Figure
from felix_client.bench.runner import Progress, Runner
from felix_client.bench.settings import BrokerTarget, RunSettings

LOOP = (
    "<module> (felix_client/cli.py:9);BaseEventLoop.run_forever (asyncio/base_events.py:607);"
    "Handle._run (asyncio/events.py:80)"
)
RT = "UdpRuntime._readable (felix_runtime_asyncio/runtime.py:126)"
SEND = "UdpRuntime._send (felix_runtime_asyncio/runtime.py:141);send_all (felix_runtime/udp.py:82)"
STACKS = [
    (
        f"{LOOP};{RT};FelixServer.receive (felix_server/server.py:300);"
        "QuicConnection.receive_datagram (aioquic/quic/connection.py:968)",
        30,
    ),
    (f"{LOOP};{RT};decode (felix_proto/codec.py:50);unpackb (msgpack/fallback.py:120)", 10),
    (f"{LOOP};{RT};MemoryLog.append (felix_core/log.py:40);replace (dataclasses.py:1500)", 20),
    (f"{LOOP};{SEND}", 15),
    (
        "BaseEventLoop._run_once (asyncio/base_events.py:1884);"
        "EpollSelector.select (selectors.py:468)",
        15,
    ),
    (
        f"{LOOP};_child_main (felix_client/bench/workers.py:109);"
        "prepare_heap (felix_client/bench/workers.py:122)",
        40,
    ),
    (f"{LOOP};{SEND}", 5),
    ("not a stack line", None),
    (
        f"{LOOP};publish_job (felix_client/bench/pubsub.py:170);"
        "Client.publish (felix_client/client.py:300)",
        5,
    ),
]
COLLAPSED = "".join(f"{text} {count}\n" if count else f"{text}\n" for text, count in STACKS)


def test_frames_parse_with_and_without_file_or_line() -> None:
    frame = parse_frame("Handle._run (asyncio/events.py:80)")
    assert (frame.function, frame.file) == ("Handle._run", "asyncio/events.py")
    assert parse_frame("main (prof.py)").file == "prof.py"
    assert parse_frame("<listcomp> (a/b.py:3)").function == "<listcomp>"
    assert parse_frame("no file here") == parse_frame("no file here")
    assert parse_frame("no file here").file == ""


def test_collapsed_stacks_sum_duplicates_and_skip_other_lines() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert sum(stacks.values()) == 30 + 10 + 20 + 15 + 15 + 40 + 5 + 5
    send = [s for s in stacks if s[-1].startswith("send_all")]
    assert len(send) == 1 and stacks[send[0]] == 20
    assert merge([stacks, stacks])[send[0]] == 40


@pytest.mark.parametrize(
    ("file", "layer"),
    [
        ("aioquic/quic/connection.py", "quic"),
        ("aioquic/_crypto.py", "quic"),
        ("qh3/quic/connection.py", "quic"),
        ("felix_proto/codec.py", "proto"),
        ("felix_server/server.py", "server"),
        ("felix_core/log.py", "core"),
        ("felix_runtime/udp.py", "runtime"),
        ("felix_runtime_anyio/runtime.py", "runtime"),
        ("felix_client/client.py", "client"),
        ("felix_client/bench/pubsub.py", "bench"),
        ("/work/x/felix_client/bench/cache.py", "bench"),
        ("asyncio/base_events.py", "loop"),
        ("selectors.py", "loop"),
        ("trio/_core/_run.py", "loop"),
        ("anyio/_backends/_asyncio.py", "loop"),
        ("msgpack/fallback.py", "msgpack"),
        ("redis/asyncio/client.py", "other"),
        ("/v/lib/python3.11/site-packages/redis/client.py", "other"),
        ("my_script.py", "other"),
        ("dataclasses.py", None),
        ("json/encoder.py", None),
        ("/usr/lib/python3.11/enum.py", None),
        ("<frozen importlib._bootstrap>", None),
        ("", None),
    ],
)
def test_files_map_to_layers(file: str, layer: str | None) -> None:
    assert layer_of(file) == layer


def test_a_sample_goes_to_its_innermost_frame_of_a_known_layer() -> None:
    stacks = list(parse_collapsed(COLLAPSED))
    by_leaf = {parse_frame(s[-1]).function: attribute(s) for s in stacks}
    assert by_leaf["QuicConnection.receive_datagram"] == "quic"
    assert by_leaf["unpackb"] == "msgpack"
    assert by_leaf["replace"] == "core"  # a stdlib helper counts for its caller
    assert by_leaf["send_all"] == "loop"  # its own time is sendto
    assert by_leaf["EpollSelector.select"] == "loop"
    assert by_leaf["Client.publish"] == "client"
    # asyncio calling a package of no known layer: that package's, not the loop's
    assert attribute(["Handle._run (asyncio/events.py:80)", "get (redis/client.py:1)"]) == "other"
    assert attribute(["Handle._run (asyncio/events.py:80)", "dumps (json/__init__.py:1)"]) == (
        "loop"
    )
    assert attribute(["<module> (<frozen runpy>)"]) == "other"
    read = "read_batch (/w/felix_runtime/udp.py:65)"
    assert attribute([LOOP, read]) == "loop"  # the recvfrom
    assert attribute([LOOP, read, "feed (felix_server/server.py:9)"]) == "server"
    assert attribute(["_UdpSocket._take (felix_client/_transport.py:193)"]) == "loop"


def test_breakdown_counts_layers_and_top_functions_without_the_heap_preparation() -> None:
    result = breakdown(parse_collapsed(COLLAPSED), top=3)
    assert result.samples == 100  # the 40 samples of prepare_heap are left out
    assert result.layers["quic"] == 30
    assert result.layers["runtime"] == 0
    assert result.layers["core"] == 20
    assert result.layers["loop"] == 35  # the selector's 15 and send_all's 20
    assert result.share("msgpack") == pytest.approx(0.10)
    assert result.top[0] == ("QuicConnection.receive_datagram (aioquic/quic/connection.py)", 30)
    assert [name for name, _ in result.top[1:]] == [
        "replace (dataclasses.py)",
        "send_all (felix_runtime/udp.py)",
    ]
    data = result.as_dict()
    assert list(data["layers"]) == list(LAYERS)
    assert data["layers"]["quic"] == 0.3
    assert data["top"][0]["share"] == 0.3
    assert breakdown({}).share("quic") == 0.0


def test_the_table_names_each_layer_with_samples_and_the_top_functions() -> None:
    result = breakdown(parse_collapsed(COLLAPSED))
    result.busy = 0.5
    empty = breakdown({})
    empty.top = [("py-spy: Error: no such process", 0)]
    lines = format_table([("fig A", "broker", result), ("fig A", "worker 1 (x)", empty)])
    header = lines[0].split()
    assert header[:4] == ["figure", "process", "samples", "busy"]
    assert header[4:] == ["quic", "core", "client", "loop", "msgpack"]  # no zero column
    assert lines[2].split()[:6] == ["fig", "A", "broker", "100", "50%", "30%"]
    assert lines[3].startswith(" " * len("fig A"))  # the figure is named once
    assert any("send_all (felix_runtime/udp.py) 20%" in line for line in lines)
    assert any("py-spy: Error: no such process" in line for line in lines)


def test_the_flamegraph_draws_one_box_per_frame_coloured_by_layer() -> None:
    stacks = parse_collapsed(COLLAPSED)
    svg = render(stacks, "a & b")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    rects = root.findall(".//s:rect", ns)
    assert len(rects) == len({s[: i + 1] for s in stacks for i in range(len(s))})  # per path
    fills = {r.get("fill") for r in rects}
    assert COLOURS["quic"] in fills and COLOURS["core"] in fills
    titles = [t.text or "" for t in root.findall(".//s:title", ns)]
    assert any(
        t.startswith("QuicConnection.receive_datagram") and "30 samples" in t for t in titles
    )
    assert "a &amp; b" in svg


def test_profile_is_an_option_of_the_command_line() -> None:
    parser = build_parser()
    args = parser.parse_args(["cache", "--profile", "out", "--profile-rate", "100"])
    assert (args.profile, args.profile_rate) == ("out", 100)
    assert "--profile DIR" in parser.format_help()


def test_without_py_spy_the_run_stops_before_measuring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    started = time.monotonic()
    assert command.main(["cache", "--profile", str(tmp_path / "p"), "--quiet"]) == 1
    assert time.monotonic() - started < 1.0  # no worker, no broker was started
    err = capsys.readouterr().err
    assert "--profile needs py-spy" in err and "pip install py-spy" in err


def _fake_py_spy(tmp_path: Path, said: str, code: int) -> str:
    script = tmp_path / "py-spy"
    script.write_text(f"#!/bin/sh\necho '{said}' >&2\nexit {code}\n")
    script.chmod(0o755)
    return str(script)


def test_a_py_spy_that_may_not_attach_is_refused_with_how_to_allow_it(tmp_path: Path) -> None:
    fake = _fake_py_spy(tmp_path, "Error: Permission Denied", 1)
    with pytest.raises(spy.ProfileUnavailable) as caught:
        spy.check_attach(fake, 12345)
    message = str(caught.value)
    assert "cannot attach to process 12345 (Error: Permission Denied)" in message
    assert "root" in message and "CAP_SYS_PTRACE" in message
    spy.check_attach(_fake_py_spy(tmp_path, "ok", 0), 12345)  # attached: no error


def _can_attach() -> bool | None:
    """Whether py-spy attaches here, found without felix bench: None when not installed."""
    try:
        executable = spy.find_py_spy()
    except spy.ProfileUnavailable:
        return None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        done = subprocess.run(
            [executable, "dump", "--pid", str(child.pid)],
            capture_output=True,
            timeout=20,
            check=False,
        )
        return done.returncode == 0
    finally:
        child.kill()
        child.wait()


def test_a_short_profiled_run_samples_the_broker_and_the_load_generators(tmp_path: Path) -> None:
    """The cheapest real run: one raw anchor and one publish-to-deliver figure, 0.3 s each.
    Where py-spy is missing or may not attach, felix bench must say so and exit 1."""
    attach = _can_attach()
    out = tmp_path / "profiles"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "felix_client.cli", "bench", "pubsub-latency"),
            *("--payload", "100", "--fanout", "1", "--seconds", "0.3", "--quiet"),
            *("--profile", str(out), "--json-file", str(tmp_path / "run.json")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=child_env(),
    )
    if attach is None:
        assert done.returncode == 1 and "pip install py-spy" in done.stderr
        return
    if not attach:
        assert done.returncode == 1 and "CAP_SYS_PTRACE" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "run.json").read_text())
    figure = next(f for f in doc["figures"] if f["scenario"] == "pubsub-latency")
    profile = figure["profile"]
    assert set(profile) == {"broker", "worker 0 (subscribe_job)", "worker 1 (publish_job)"}
    for process in ("broker", "worker 1 (publish_job)"):
        assert profile[process]["samples"] > 0, process
        assert sum(profile[process]["layers"].values()) == pytest.approx(1.0, abs=0.01)
        assert profile[process]["top"]
        for file in profile[process]["files"]:
            assert Path(file).stat().st_size > 0
    raw = next(f for f in doc["figures"] if f["scenario"] == "raw-quic")
    assert "broker" not in raw["profile"]  # a raw QUIC figure does not involve the broker
    assert "profiles (py-spy)" in done.stdout
    assert "quic" in done.stdout and "runtime" in done.stdout


class _Worker:
    def __init__(self, index: int) -> None:
        self.index, self.pid, self.busy, self.submitted, self.job = index, 100 + index, False, 0, ""


class _Pool:
    def __init__(self) -> None:
        self.workers = [_Worker(0), _Worker(1)]

    def __getitem__(self, index: int) -> _Worker:
        return self.workers[index]


class _Profiler:
    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, int]]] = []

    def start(self, key: str, targets: dict[str, int]) -> None:
        self.started.append((key, targets))

    def finish(self, key: str) -> dict[str, Breakdown]:
        return {name: breakdown({("f (felix_core/x.py:1)",): 1}) for name in self.started[-1][1]}


def _runner(pool: _Pool, profiler: _Profiler) -> Runner:
    progress = Progress(io.StringIO(), live=False, quiet=True)
    return Runner(
        settings=RunSettings(),
        pool=pool,  # type: ignore[arg-type]
        target=BrokerTarget(url="quic://127.0.0.1:1"),
        broker_pid=42,
        cert=("c", "k"),
        progress=progress,
        tmp=Path("."),
        profiler=profiler,  # type: ignore[arg-type]
    )


def test_a_figure_keeps_the_profiles_of_the_broker_and_the_workers_that_ran_its_jobs() -> None:
    pool, profiler = _Pool(), _Profiler()
    runner = _runner(pool, profiler)
    pool[0].busy, pool[0].submitted, pool[0].job = True, 1, "subscribe_job"  # before begin
    runner.begin("fig", 1.0, lambda: 0, "msg")
    assert profiler.started[-1] == ("fig", {"broker": 42, "worker 0": 100, "worker 1": 101})
    pool[1].submitted, pool[1].job = 1, "publish_job"  # during the figure
    figure = runner.add(Figure(id="f", scenario="s", label="fig"))
    assert set(figure.profile) == {"broker", "worker 0 (subscribe_job)", "worker 1 (publish_job)"}

    pool[0].busy = pool[1].busy = False
    runner.begin("raw", 1.0, lambda: 0, "msg", broker=False, profile_as="raw figure")
    assert profiler.started[-1] == ("raw figure", {"worker 0": 100, "worker 1": 101})
    pool[0].submitted, pool[0].job = 2, "server_job"  # worker 1 ran nothing of this figure
    figure = runner.add(Figure(id="r", scenario="s", label="raw figure"))
    assert set(figure.profile) == {"worker 0 (server_job)"}
    assert figure.as_dict()["profile"]["worker 0 (server_job)"]["layers"]["core"] == 1.0
