"""``felix bench`` as a user runs it: a separate process that starts its own broker (or
measures the one given with ``--server``) and its own load-generator processes.

Every scenario runs here in a very short form (``--seconds 0.3``, a small matrix). The
checks are about behaviour, never speed: every figure present, valid (no unexplained
loss), with positive rates, ordered percentiles and a ratio to an anchor measured in the
same run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from brokers import child_env, start_broker

from felix_client._transport import TransportOptions
from felix_client.bench.settings import RAW_CLIENT, RAW_SERVER

TIMEOUT = 120
MiB = 1 << 20
SHORT = ("--seconds", "0.3")
HAS_REDIS = shutil.which("redis-server") is not None


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``felix bench ARGS`` (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "felix_client.cli", "bench", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or child_env(),
    )


def figures_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The figures of a ``--json`` run, by id, after the checks every run must pass."""
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["valid"] is True
    figures = {f["id"]: f for f in doc["figures"]}
    assert len(figures) == len(doc["figures"]), "figure ids are unique"
    for f in figures.values():
        assert f["valid"], (f["id"], f["notes"])
        m = f["metrics"]
        for rate in ("msg_per_s", "ops_per_s"):
            if rate in m:
                assert m[rate] > 0, f["id"]
        if "p50_us" in m:
            assert m["count"] > 0, f["id"]
            assert 0 < m["p50_us"] <= m["p99_us"] <= m["p999_us"] <= m["max_us"], f["id"]
        if f["scenario"] == "pubsub-latency" or "/ping-pong/" in f["id"]:
            ladder = f["distribution"]  # the plots draw it
            assert [p for p, _ in ladder] == sorted(p for p, _ in ladder), f["id"]
            assert [us for _, us in ladder] == sorted(us for _, us in ladder), f["id"]
            assert ladder[-1][1] == pytest.approx(m["max_us"], rel=0.01), f["id"]
        if f["scenario"].startswith("pubsub"):
            fanout = f["params"]["fanout"]
            assert m["delivered"] + m["dropped"] == m["published"] * fanout, f["id"]
            # The clients' CPU, also split by process (which side a change moved).
            split = m["publisher_cpu_us"] + m["subscriber_cpu_us"]
            assert split == pytest.approx(m["client_cpu_us"]), f["id"]
        if f["anchor"] is not None and f["anchor"] in figures:
            assert f["ratios"], f["id"]
    return figures


@pytest.fixture(scope="module")
def all_run() -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """One ``felix bench all`` with a small matrix: (run, figures by id, stderr)."""
    done = bench(
        "all",
        *SHORT,
        "--json",
        "--payload",
        "100",
        "--fanout",
        "1,2",
        "--batch",
        "1,16",
        "--concurrency",
        "1,4",
        "--publishers",
        "1,4",
    )
    figures = figures_of(done)
    return json.loads(done.stdout)["run"], figures, done.stderr


def test_all_measures_the_matrix_with_anchors_from_the_same_run(
    all_run: tuple[dict[str, Any], dict[str, dict[str, Any]], str],
) -> None:
    run, figures, _ = all_run
    expected = {
        "raw-quic/aioquic/one-way/size=100",
        "raw-quic/aioquic/ping-pong/size=64",
        "raw-quic/qh3/one-way/size=100",
        "raw-quic/qh3/ping-pong/size=64",
        "pubsub-latency/payload=100/fanout=1",
        "pubsub-latency/payload=100/fanout=2",
        "pubsub-throughput/payload=100/batch=1/fanout=1",
        "pubsub-throughput/payload=100/batch=1/fanout=2",
        "pubsub-throughput/payload=100/batch=16/fanout=1",
        "pubsub-throughput/payload=100/batch=16/fanout=2",
        "queue/consumers=1",
        "queue/consumers=4",
        "cache/felix/get/c=1",
        "cache/felix/put/c=1",
        "cache/felix/get/c=4",
        "cache/felix/put/c=4",
        "durable/accepted/durability=ephemeral",
        "durable/accepted/durability=durable",
        "durable/plain-fsync",
        "durable/committed/publishers=1",
        "durable/committed/publishers=4",
        "durable/committed/publishers=1/batch=1",
        "durable/committed/publishers=4/batch=1",
        "memory/stalled-subscriber/publishes=30000",  # 100,000 per second of a short all
    }
    if HAS_REDIS:
        expected |= {f"cache/redis/{op}/c={c}" for op in ("get", "put") for c in (1, 4)}
    assert set(figures) == expected
    assert run["scenario"] == "all"
    assert run["broker"].startswith("asyncio runtime")
    assert run["engine"].startswith("aioquic ")
    assert run["seconds"] == 0.3
    assert "CPUs" in run["machine"]


def test_each_figure_is_divided_by_the_right_anchor(
    all_run: tuple[dict[str, Any], dict[str, dict[str, Any]], str],
) -> None:
    _, figures, _ = all_run
    one_way = figures["raw-quic/aioquic/one-way/size=100"]
    ping = figures["raw-quic/aioquic/ping-pong/size=64"]
    tput = figures["pubsub-throughput/payload=100/batch=16/fanout=1"]
    assert tput["anchor"] == one_way["id"]
    assert tput["ratios"]["msg_per_s"] == pytest.approx(
        tput["metrics"]["msg_per_s"] / one_way["metrics"]["msg_per_s"]
    )
    assert figures["queue/consumers=1"]["anchor"] == one_way["id"]
    lat = figures["pubsub-latency/payload=100/fanout=1"]
    assert lat["anchor"] == ping["id"]
    assert set(lat["ratios"]) == {"p50_us", "p99_us", "p999_us"}
    assert lat["ratios"]["p50_us"] == pytest.approx(
        lat["metrics"]["p50_us"] / ping["metrics"]["p50_us"]
    )
    # A request/reply is compared with a request/reply: cache latency with raw ping-pong,
    # cache rate with redis-py at the same concurrency (when redis-server is installed).
    get1 = figures["cache/felix/get/c=1"]
    assert get1["anchor"] == ping["id"]
    assert "ops_per_s" not in get1["ratios"]
    get4 = figures["cache/felix/get/c=4"]
    if HAS_REDIS:
        assert get4["anchor"] == "cache/redis/get/c=4"
        assert get4["ratios"]["ops_per_s"] == pytest.approx(
            get4["metrics"]["ops_per_s"] / figures["cache/redis/get/c=4"]["metrics"]["ops_per_s"]
        )
    else:
        assert get4["anchor"] is None
    assert figures["raw-quic/qh3/one-way/size=100"]["anchor"] == one_way["id"]
    assert figures["raw-quic/qh3/ping-pong/size=64"]["anchor"] == ping["id"]
    assert one_way["anchor"] is None and not one_way["ratios"]


def test_each_quic_engine_is_measured_against_its_own_ceiling_in_one_run() -> None:
    """``--quic-engine aioquic,qh3``: the scenario on a broker and clients of each engine,
    each figure divided by raw QUIC of its own engine (raw qh3 by raw aioquic)."""
    done = bench(
        "pubsub-latency",
        *SHORT,
        "--json",
        "--payload",
        "100",
        "--fanout",
        "1",
        "--quic-engine",
        "aioquic,qh3",
    )
    figures = figures_of(done)
    assert set(figures) == {
        "raw-quic/aioquic/ping-pong/size=64",
        "raw-quic/qh3/ping-pong/size=64",
        "pubsub-latency/payload=100/fanout=1",
        "pubsub-latency/payload=100/fanout=1/engine=qh3",
    }
    qh3 = figures["pubsub-latency/payload=100/fanout=1/engine=qh3"]
    assert qh3["anchor"] == "raw-quic/qh3/ping-pong/size=64"
    assert qh3["params"]["quic_engine"] == "qh3" and qh3["label"].endswith("[qh3]")
    assert figures["pubsub-latency/payload=100/fanout=1"]["anchor"] == (
        "raw-quic/aioquic/ping-pong/size=64"
    )
    assert figures["raw-quic/qh3/ping-pong/size=64"]["anchor"] == (
        "raw-quic/aioquic/ping-pong/size=64"
    )
    run = json.loads(done.stdout)["run"]
    assert run["engine"].startswith("aioquic ") and ", qh3 " in run["engine"]


def test_memory_reports_the_broker_rss_against_the_limits_of_its_configuration(
    all_run: tuple[dict[str, Any], dict[str, dict[str, Any]], str],
) -> None:
    """The limits come from the broker's ``--print-config`` and the stream; the peak is
    measured from the baseline; the stalled subscriber read everything once resumed (the
    stream retains all 30,000 records of a short all)."""
    _, figures, _ = all_run
    figure = figures["memory/stalled-subscriber/publishes=30000"]
    m, params = figure["metrics"], figure["params"]
    assert params["limits"] == {
        "stream.retention_max_bytes": 64 * MiB,
        "subscriber.transport.connection_buffer_cap": 16 * MiB,
        "subscriber.transport.max_data": 16 * MiB,
        "publisher.transport.connection_buffer_cap": 16 * MiB,
        "publisher.transport.max_data": 16 * MiB,
    }
    assert params["slow_consumer"] == "drop_oldest"
    assert m["limits_mib"] == 128
    assert 0 < m["baseline_rss_mib"] <= m["peak_rss_mib"]
    assert m["bound_mib"] == pytest.approx(m["baseline_rss_mib"] + 128 + 50e6 / MiB)
    assert m["within_bound"] == 1.0
    assert m["published"] == m["received"] == 30_000 and m["dropped"] == 0
    assert m["publish_msg_per_s"] > 0 and m["broker_cpu_us"] > 0
    assert any(note.startswith("peak RSS") and "within" in note for note in figure["notes"])


def test_memory_on_a_given_server_reports_the_gap_and_says_what_it_cannot_measure(
    tmp_path: Path,
) -> None:
    """A stream retaining 2,000 records of 100 B, 20,000 publishes past a subscriber that
    reads nothing (its first credit, the client's default 8192 records, arrives), on a
    broker the bench did not start: the broker trims what the subscriber has not read and
    reports it as a gap; the RSS is not measured (and said so)."""
    broker = start_broker("asyncio", tmp_path / "broker")
    try:
        done = bench(
            "memory",
            "--json",
            "--server",
            broker.url,
            "--ca",
            broker.ca_file,
            "--memory-publishes",
            "20000",
            "--stream-set",
            "retention_max_bytes=200000",
        )
    finally:
        broker.stop()
    (figure,) = figures_of(done).values()
    assert figure["id"] == "memory/stalled-subscriber/publishes=20000"
    m, notes = figure["metrics"], figure["notes"]
    assert "peak_rss_mib" not in m and "within_bound" not in m
    assert figure["params"]["limits"] == {"stream.retention_max_bytes": 200_000}
    assert "unknown" in figure["params"]["limits_source"]
    assert "the broker's RSS is not measured: it is not ours (--server)" in notes
    assert m["published"] == 20_000
    assert m["dropped"] > 0 and m["received"] + m["dropped"] == 20_000
    assert 2_000 <= m["received"] <= 2_000 + 8192 + 64  # retention + the first credit
    assert any("skipped by the broker" in note for note in notes), notes


def test_progress_goes_to_stderr_one_line_per_figure(
    all_run: tuple[dict[str, Any], dict[str, dict[str, Any]], str],
) -> None:
    _, figures, stderr = all_run
    lines = [line for line in stderr.splitlines() if line.strip()]
    labels = {f["label"] for f in figures.values()}
    done = {line.split(":")[0] for line in lines}
    assert labels <= done, labels - done


def test_a_scenario_alone_runs_its_anchor_first_against_a_given_server(tmp_path: Path) -> None:
    """pubsub-throughput alone measures raw one-way with messages of its payload size
    first, then its figure, on a broker it did not start."""
    broker = start_broker("asyncio", tmp_path / "broker")
    try:
        done = bench(
            "pubsub-throughput",
            *SHORT,
            "--json",
            "--server",
            broker.url,
            "--ca",
            broker.ca_file,
            "--payload",
            "1024",
            "--batch",
            "64",
            "--fanout",
            "1",
            "--stream-set",
            "slow_consumer=block",
        )
    finally:
        broker.stop()
    figures = figures_of(done)
    assert list(figures) == [
        "raw-quic/aioquic/one-way/size=1024",
        "pubsub-throughput/payload=1024/batch=64/fanout=1",
    ]
    doc = json.loads(done.stdout)
    assert doc["run"]["broker"] == f"at {broker.url} (not started by felix bench)"
    assert doc["run"]["stream_settings"] == {"slow_consumer": "block"}
    tput = figures["pubsub-throughput/payload=1024/batch=64/fanout=1"]
    assert tput["anchor"] == "raw-quic/aioquic/one-way/size=1024"
    assert tput["metrics"]["dropped"] == 0
    assert tput["metrics"]["delivered"] == tput["metrics"]["published"] > 0


def test_durable_puts_durable_next_to_ephemeral_and_committed_next_to_fsync() -> None:
    """``durable`` alone: accepted to a durable stream divided by the same to an ephemeral
    one, committed publishes (1 and 4 publishers, batch 64 and batch 1) divided by a plain
    write + fsync loop, how many times one publisher's rate the concurrent publishers
    reach, and the broker's fsyncs (group commit: one publisher makes one per publish)."""
    done = bench("durable", *SHORT, "--json", "--publishers", "1,4", "--runtime", "anyio-trio")
    figures = figures_of(done)
    assert list(figures) == [
        "durable/accepted/durability=ephemeral",
        "durable/accepted/durability=durable",
        "durable/plain-fsync",
        "durable/committed/publishers=1",
        "durable/committed/publishers=4",
        "durable/committed/publishers=1/batch=1",
        "durable/committed/publishers=4/batch=1",
    ]
    ephemeral = figures["durable/accepted/durability=ephemeral"]
    durable = figures["durable/accepted/durability=durable"]
    assert durable["anchor"] == ephemeral["id"] and ephemeral["anchor"] is None
    assert durable["params"]["fsync"] == "interval" and durable["params"]["batch"] == 64
    assert durable["ratios"]["msg_per_s"] == pytest.approx(
        durable["metrics"]["msg_per_s"] / ephemeral["metrics"]["msg_per_s"]
    )
    assert durable["metrics"]["broker_cpu_ratio"] == pytest.approx(
        ephemeral["metrics"]["broker_cpu_us"] / durable["metrics"]["broker_cpu_us"]
    )
    fsync = figures["durable/plain-fsync"]
    assert fsync["metrics"]["ops_per_s"] > 0 and fsync["metrics"]["p50_us"] > 0
    for suffix, batch in (("", 64), ("/batch=1", 1)):
        one = figures[f"durable/committed/publishers=1{suffix}"]
        four = figures[f"durable/committed/publishers=4{suffix}"]
        for f in (one, four):
            assert f["anchor"] == fsync["id"] and f["params"]["ack"] == "committed"
            assert f["params"]["batch"] == batch
            assert f["metrics"]["broker_cpu_us"] > 0 and f["metrics"]["client_cpu_us"] > 0
            assert set(f["ratios"]) == {"ops_per_s", "p50_us", "p99_us", "p999_us"}
            assert f["metrics"]["fsyncs_per_s"] > 0
        assert four["metrics"]["vs_1_publisher"] > 0 and "vs_1_publisher" not in one["metrics"]
        # one publisher waits for each publish's fsync: about one fsync a publish (an
        # interval sync may add one); four may share theirs, never need more
        assert 0.5 < one["metrics"]["publishes_per_fsync"] <= 1.01
        assert four["metrics"]["publishes_per_fsync"] >= 0.5
    assert json.loads(done.stdout)["run"]["runtime"] == "anyio-trio"


def test_text_output_is_a_table() -> None:
    done = bench("queue", "--seconds", "0.2", "--consumers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("felix bench queue: ")
    assert lines[1].split()[:2] == ["figure", "rate"]
    rows = [line for line in lines if line.startswith(("raw aioquic one-way", "queue 100 B"))]
    assert len(rows) == 2
    assert "raw-quic/aioquic/one-way/size=100" in rows[1]  # the queue row names its anchor


def test_cache_without_redis_server_skips_the_comparison_on_trio(tmp_path: Path) -> None:
    """No redis-server on PATH: a message, Felix figures only; the anyio runtime on trio
    and load generators on trio work the same way."""
    env = child_env()
    env["PATH"] = str(tmp_path)  # nothing there: no redis-server
    done = bench(
        "cache",
        "--seconds",
        "0.2",
        "--json",
        "--concurrency",
        "2",
        "--runtime",
        "anyio-trio",
        "--loop",
        "trio",
        env=env,
    )
    figures = figures_of(done)
    assert "redis-server is not on PATH" in done.stderr
    assert set(figures) == {
        "raw-quic/aioquic/ping-pong/size=64",
        "cache/felix/get/c=2",
        "cache/felix/put/c=2",
    }
    assert figures["cache/felix/get/c=2"]["anchor"] is None
    assert any("redis" in note for note in figures["cache/felix/get/c=2"]["notes"])
    run = json.loads(done.stdout)["run"]
    assert (run["runtime"], run["loop"]) == ("anyio-trio", "trio")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cache", "--server", "quic://127.0.0.1:1"), "--server needs --ca"),
        (("cache", "--seconds", "0"), "--seconds"),
        (("raw-quic", "--engine", "picoquic"), "unknown QUIC engine"),
        (("cache", "--quic-engine", "aioquic,picoquic"), "unknown QUIC engine"),
        (("queue", "--consumers", "0"), "at least 1"),
        (("durable", "--publishers", "0"), "at least 1"),
        (("nonsense",), "invalid choice"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    done = bench(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_raw_quic_uses_the_broker_and_client_defaults() -> None:
    """The ceiling is measured with the settings the broker and the client run with."""
    out = subprocess.run(
        [sys.executable, "-m", "felix_client.cli", "broker", "--print-config"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    ).stdout
    transport = tomllib.loads(out)["transport"]
    assert RAW_SERVER.max_datagram_size == transport["max_datagram_size"]
    assert RAW_SERVER.max_data == transport["max_data"]
    assert RAW_SERVER.max_stream_data == transport["max_stream_data"]
    assert RAW_SERVER.idle_timeout == transport["idle_timeout_s"]
    client = TransportOptions()
    assert (RAW_CLIENT.max_datagram_size, RAW_CLIENT.max_data, RAW_CLIENT.max_stream_data) == (
        client.max_datagram_size,
        client.max_data,
        client.max_stream_data,
    )
    assert RAW_CLIENT.idle_timeout == client.idle_timeout


def test_felix_help_lists_bench() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "felix_client.cli", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 0
    assert "bench" in done.stdout
