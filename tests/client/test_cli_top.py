"""``felix top``: scrapes -> figures -> a rich renderable, tested without a terminal; then
the command against a live broker (``--once``, and the live view under tmux when tmux is
installed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from brokers import Broker, child_env
from rich.console import Console

from felix_client import cli
from felix_client._top import (
    METRICS,
    Scrape,
    compute_view,
    metrics_url,
    parse_scrape,
    render,
)

FIRST = """\
# TYPE felix_ready gauge
felix_ready 1.0
# TYPE felix_connections gauge
felix_connections 3.0
# TYPE felix_subscriptions gauge
felix_subscriptions 2.0
# TYPE felix_queue_consumers gauge
felix_queue_consumers 1.0
# TYPE felix_publish_records_total counter
felix_publish_records_total 1000.0
# TYPE felix_enqueue_records_total counter
felix_enqueue_records_total 10.0
# TYPE felix_deliveries_total counter
felix_deliveries_total{source="stream"} 500.0
felix_deliveries_total{source="queue"} 100.0
# TYPE felix_delivered_bytes_total counter
felix_delivered_bytes_total{source="stream"} 0.0
# TYPE felix_memory_used_bytes gauge
felix_memory_used_bytes 512.0
# TYPE felix_memory_limit_bytes gauge
felix_memory_limit_bytes 1024.0
# TYPE felix_subscribe_dropped_total counter
felix_subscribe_dropped_total{reason="lagged"} 1.0
# TYPE felix_connections_refused_total counter
felix_connections_refused_total{reason="max_connections"} 5.0
felix_connections_refused_total{reason="shutting_down"} 0.0
# TYPE felix_queue_depth_per_queue gauge
felix_queue_depth_per_queue{namespace="default",queue="jobs",tenant="default"} 7.0
felix_queue_depth_per_queue{namespace="ns",queue="deep",tenant="acme"} 70.0
# TYPE felix_queue_in_flight_per_queue gauge
felix_queue_in_flight_per_queue{namespace="default",queue="jobs",tenant="default"} 2.0
felix_queue_in_flight_per_queue{namespace="ns",queue="deep",tenant="acme"} 0.0
# TYPE felix_queue_redeliveries_per_queue_total counter
felix_queue_redeliveries_per_queue_total{namespace="default",queue="jobs",tenant="default"} 4.0
# TYPE felix_queue_oldest_age_seconds_per_queue gauge
felix_queue_oldest_age_seconds_per_queue{namespace="default",queue="jobs",tenant="default"} 90.0
# TYPE felix_cache_entries_per_cache gauge
felix_cache_entries_per_cache{cache="sessions",namespace="default",tenant="default"} 12.0
felix_cache_entries_per_cache{cache="cold",namespace="default",tenant="default"} 0.0
# TYPE felix_cache_hits_per_cache_total counter
felix_cache_hits_per_cache_total{cache="sessions",namespace="default",tenant="default"} 20.0
# TYPE felix_cache_misses_per_cache_total counter
felix_cache_misses_per_cache_total{cache="sessions",namespace="default",tenant="default"} 10.0
# TYPE felix_metrics_resource_series_capped gauge
felix_metrics_resource_series_capped{kind="queue"} 0.0
felix_metrics_resource_series_capped{kind="cache"} 0.0
"""


def _second() -> str:
    """Two seconds later: 200 more publishes, 60 more deliveries, 2 redeliveries of jobs, 10
    more gets of sessions (8 hits), one more drop; a memory near its limit."""
    text = FIRST
    for old, new in (
        ("felix_publish_records_total 1000.0", "felix_publish_records_total 1200.0"),
        ('{source="queue"} 100.0', '{source="queue"} 160.0'),
        ('tenant="default"} 4.0', 'tenant="default"} 6.0'),
        (
            'sessions",namespace="default",tenant="default"} 20.0',
            'sessions",namespace="default",tenant="default"} 28.0',
        ),
        (
            'sessions",namespace="default",tenant="default"} 10.0',
            'sessions",namespace="default",tenant="default"} 12.0',
        ),
        ('{reason="lagged"} 1.0', '{reason="lagged"} 2.0'),
        ("felix_memory_used_bytes 512.0", "felix_memory_used_bytes 1000.0"),
        (
            'felix_metrics_resource_series_capped{kind="cache"} 0.0',
            'felix_metrics_resource_series_capped{kind="cache"} 1.0',
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


def _text(renderable: object, width: int = 140) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# -------------------------------------------------------------------------- figures


def test_metrics_url_forms() -> None:
    assert metrics_url("127.0.0.1:8080") == "http://127.0.0.1:8080/metrics"
    assert metrics_url("http://h:1") == "http://h:1/metrics"
    assert metrics_url("http://h:1/") == "http://h:1/metrics"
    assert metrics_url("https://h/custom") == "https://h/custom"
    for bad in ("quic://h:1", "http://", "ftp://h/metrics"):
        with pytest.raises(ValueError, match="invalid --metrics"):
            metrics_url(bad)


def test_gauges_sums_and_first_frame_without_rates() -> None:
    view = compute_view(None, parse_scrape(FIRST, 10.0))
    assert (view.ready, view.connections, view.subscriptions, view.consumers) == (
        True,
        3.0,
        2.0,
        1.0,
    )
    assert (view.memory_used, view.memory_limit, view.drops, view.refused) == (
        512.0,
        1024.0,
        1.0,
        5.0,
    )
    assert view.interval is None
    assert view.publish_rate is view.delivery_rate is view.drop_rate is None
    # queues deepest first; names are tenant/namespace/queue
    assert [q.name for q in view.queues] == ["acme/ns/deep", "default/default/jobs"]
    jobs = view.queues[1]
    assert (jobs.depth, jobs.in_flight, jobs.redeliveries, jobs.oldest_age) == (7, 2, 4, 90)
    assert jobs.redelivery_rate is None
    assert [(c.name, c.entries) for c in view.caches] == [
        ("default/default/sessions", 12.0),
        ("default/default/cold", 0.0),
    ]
    assert view.caches[0].hit_ratio == pytest.approx(2 / 3)
    assert view.caches[1].hit_ratio is None  # no lookup yet
    assert view.capped == ()


def test_rates_come_from_two_scrapes() -> None:
    view = compute_view(parse_scrape(FIRST, 10.0), parse_scrape(_second(), 12.0))
    assert view.interval == 2.0
    assert view.publish_rate == 100.0
    assert view.enqueue_rate == 0.0
    assert view.delivery_rate == 30.0  # summed over sources
    assert view.drop_rate == 0.5
    assert view.refused_rate == 0.0
    jobs = next(q for q in view.queues if q.name == "default/default/jobs")
    assert jobs.redelivery_rate == 1.0
    deep = next(q for q in view.queues if q.name == "acme/ns/deep")
    assert deep.redelivery_rate == 0.0  # no series: none yet
    sessions = view.caches[0]
    assert sessions.lookup_rate == 5.0
    assert sessions.hit_ratio == pytest.approx(28 / 40)
    assert view.capped == ("cache",)


def test_a_counter_reset_counts_from_zero() -> None:
    """A broker restarted between two scrapes: its counters start again (as Prometheus's
    rate() reads them), never a negative rate."""
    restarted = FIRST.replace(
        "felix_publish_records_total 1000.0", "felix_publish_records_total 40.0"
    )
    view = compute_view(parse_scrape(FIRST, 0.0), parse_scrape(restarted, 4.0))
    assert view.publish_rate == 10.0


def test_scrapes_out_of_order_give_no_rate() -> None:
    view = compute_view(parse_scrape(FIRST, 5.0), parse_scrape(_second(), 5.0))
    assert view.publish_rate is None and view.interval is None


def test_missing_metrics_read_as_zero() -> None:
    view = compute_view(None, Scrape(0.0, {}))
    assert (view.ready, view.connections, view.queues, view.caches) == (False, 0.0, (), ())


def test_not_prometheus_text_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_scrape("felix_connections {{{ nonsense", 0.0)


# --------------------------------------------------------------------------- render


def test_render_shows_every_figure() -> None:
    view = compute_view(parse_scrape(FIRST, 10.0), parse_scrape(_second(), 12.0))
    text = _text(render(view, "http://h:1/metrics"))
    assert "felix top  http://h:1/metrics  every 2.0s" in text
    for needle in (
        "broker ready",
        "connections 3",
        "subscriptions 2",
        "queue consumers 1",
        "publish 100/s",
        "deliver 30.0/s",
        "memory 1,000 B / 1.0 KiB (97.7%)",
        "drops 2 (0.5/s)",
        "refused connections 5 (0.0/s)",
        "gap records 0",
        "per-resource series capped by the broker for: cache",
    ):
        assert needle in text, needle
    jobs = next(line for line in text.splitlines() if "default/default/jobs" in line)
    assert jobs.split("│")[2:7] == [
        "     7 ",
        "         2 ",
        "            6 ",
        "     1.0/s ",
        "   1.5m ",
    ]
    sessions = next(line for line in text.splitlines() if "default/default/sessions" in line)
    assert [c.strip() for c in sessions.split("│")[1:5]] == [
        "default/default/sessions",
        "12",
        "70.0%",
        "5.0/s",
    ]


def test_render_marks_memory_near_its_limit_in_red() -> None:
    view = compute_view(None, parse_scrape(_second(), 0.0))  # 1000 of 1024 bytes
    console = Console(
        record=True,
        width=140,
        force_terminal=True,
        color_system="standard",
        file=io.StringIO(),
    )
    console.print(render(view, "u"))
    styled = console.export_text(styles=True)
    assert "\x1b[1;31mmemory 1,000 B" in styled


def test_render_limits_rows_and_says_how_many_are_hidden() -> None:
    view = compute_view(None, parse_scrape(FIRST, 0.0))
    text = _text(render(view, "u", limit=1))
    assert "acme/ns/deep" in text and "default/default/jobs" not in text
    assert "... 1 more" in text


def test_render_before_a_scrape_and_after_a_failed_one() -> None:
    text = _text(render(None, "http://h:1/metrics", error="connection refused"))
    assert "cannot scrape: connection refused" in text and "stale" not in text
    assert "waiting for the first scrape" in text
    view = compute_view(None, parse_scrape(FIRST, 0.0))
    text = _text(render(view, "u", error="timed out"))
    assert "cannot scrape: timed out (figures below are stale)" in text
    assert "default/default/jobs" in text


# ------------------------------------------------------------------------ arguments


def test_metrics_url_precedence(tmp_path: Path) -> None:
    from felix_client._contexts import ConfigFile, Context

    ConfigFile(tmp_path / "config.toml", {"c": Context(metrics="ctx:1")}, "c").save()
    env = {"FELIX_CONFIG_DIR": str(tmp_path)}
    assert cli.parse_args(["top"], env=env).metrics == "ctx:1"
    assert cli.parse_args(["top"], env={**env, "FELIX_METRICS": "env:2"}).metrics == "env:2"
    args = cli.parse_args(["top", "--metrics", "flag:3"], env={**env, "FELIX_METRICS": "env:2"})
    assert args.metrics == "flag:3"
    assert cli.parse_args(["top"], env={}).metrics == "http://127.0.0.1:8080/metrics"
    assert cli.parse_args(["top", "-i", "0.5", "--once"], env={}).interval == 0.5


@pytest.mark.parametrize("bad", ["0", "-1", "inf", "nan"])
def test_interval_must_be_positive(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["top", "--interval", bad]) == 2
    assert "must be a positive number" in capsys.readouterr().err


def _felix(*argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**child_env(), "COLUMNS": "140", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "felix_client.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_once_without_a_broker_is_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        done = _felix("top", "--once", "--metrics", f"127.0.0.1:{port}", "-i", "0.1")
    assert done.returncode == 1
    assert done.stderr.startswith(f"felix: error: cannot scrape http://127.0.0.1:{port}/metrics")
    assert done.stderr.count("\n") == 1


def test_without_rich_top_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['rich'] = None; from felix_client.cli import main; "
        "sys.exit(main(['top', '--once']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "felix: error: felix top needs rich: pip install 'felix[top]'\n"


# --------------------------------------------------------------------- live broker


def _metrics_page(broker: Broker) -> str:
    host, port = broker.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def _resources(broker: Broker, suffix: str) -> None:
    from felix_client.sync import BlockingClient

    with BlockingClient(broker.url, ca_file=broker.ca_file, timeout=10) as client:
        client.admin("create", "queue", f"top-q-{suffix}")
        client.admin("create", "cache", f"top-c-{suffix}")
        client.enqueue(f"top-q-{suffix}", [b"a", b"b", b"c"])
        client.cache(f"top-c-{suffix}").put("k", "v")
        client.cache(f"top-c-{suffix}").get("k")


def test_every_metric_top_reads_is_exported(broker: Broker) -> None:
    _resources(broker, uuid.uuid4().hex[:8])
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(_metrics_page(broker)):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")  # a labelled counter with no series yet
        names.update(s.name for s in family.samples)
    assert sorted(set(METRICS) - names) == []


def test_once_against_a_live_broker(broker: Broker) -> None:
    suffix = uuid.uuid4().hex[:8]
    _resources(broker, suffix)
    host, port = broker.metrics_address
    done = _felix("top", "--once", "--metrics", f"{host}:{port}", "-i", "0.2")
    assert done.returncode == 0, done.stderr
    assert "broker ready" in done.stdout
    queue = next(line for line in done.stdout.splitlines() if f"top-q-{suffix}" in line)
    assert [c.strip() for c in queue.split("│")[2:4]] == ["3", "0"]  # depth, in flight
    cache = next(line for line in done.stdout.splitlines() if f"top-c-{suffix}" in line)
    assert [c.strip() for c in cache.split("│")[2:4]] == ["1", "100.0%"]


def test_once_as_json(broker: Broker) -> None:
    suffix = uuid.uuid4().hex[:8]
    _resources(broker, suffix)
    host, port = broker.metrics_address
    done = _felix("top", "--once", "-o", "json", "--metrics", f"{host}:{port}", "-i", "0.2")
    assert done.returncode == 0, done.stderr
    frame = json.loads(done.stdout)
    assert frame["metrics"] == f"http://{host}:{port}/metrics"
    assert frame["ready"] is True and frame["interval"] > 0
    queue = next(q for q in frame["queues"] if q["name"] == f"default/default/top-q-{suffix}")
    assert (queue["depth"], queue["in_flight"]) == (3, 0)
    cache = next(c for c in frame["caches"] if c["name"] == f"default/default/top-c-{suffix}")
    assert (cache["entries"], cache["hit_ratio"]) == (1, 1.0)


def test_json_needs_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["top", "-o", "json"]) == 2
    assert "--output json needs --once" in capsys.readouterr().err


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _pane(session: str) -> str:
    done = subprocess.run(
        ["tmux", "-L", session, "capture-pane", "-p", "-t", session],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout


def _wait_for(session: str, needle: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _pane(session)
        if needle in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared; the screen:\n{screen}")


@needs_tmux
def test_the_live_view_in_a_terminal(broker: Broker, tmp_path: Path) -> None:
    """felix top in a real terminal (tmux): it draws, follows the broker as it changes,
    and Ctrl-C ends it with status 0."""
    suffix = uuid.uuid4().hex[:8]
    _resources(broker, suffix)
    host, port = broker.metrics_address
    session = f"felix-top-{suffix}"
    status = tmp_path / "status"
    env = child_env()
    command = (
        f"env -u COLUMNS -u LINES {sys.executable} -m felix_client.cli top "
        f"--metrics {host}:{port} -i 0.2; "
        f"echo $? > {status}"
    )
    tmux_env = [f"-e{k}={v}" for k, v in env.items() if k in ("PYTHONPATH", "PATH", "HOME")]
    subprocess.run(
        [
            "tmux",
            "-L",
            session,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "150",
            "-y",
            "50",
            *tmux_env,
            command,
        ],
        check=True,
        timeout=10,
    )
    try:
        screen = _wait_for(session, f"top-q-{suffix}")
        assert "felix top" in screen and "caches" in screen
        from felix_client.sync import BlockingClient

        with BlockingClient(broker.url, ca_file=broker.ca_file, timeout=10) as client:
            client.enqueue(f"top-q-{suffix}", [b"d"] * 39)  # 3 -> 42
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = [line for line in _pane(session).splitlines() if f"top-q-{suffix}" in line]
            if row and row[0].split("│")[2].strip() == "42":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the depth never became 42:\n{_pane(session)}")
        subprocess.run(
            ["tmux", "-L", session, "send-keys", "-t", session, "C-c"], check=True, timeout=10
        )
        deadline = time.monotonic() + 20
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.read_text().strip() == "0"
    finally:
        subprocess.run(
            ["tmux", "-L", session, "kill-server"], check=False, timeout=10, capture_output=True
        )
