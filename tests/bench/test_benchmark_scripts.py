"""The short forms of the in-process benchmark scripts of round 8 (benchmarks/): each runs
to the end with tiny counts and prints every figure it names, so a script that stops working
is seen by the suite, not at the next measurement.

* ``cache_path.py``: both cache operations are served (every request of every round
  answered, no failure) and both sides' figures come out;
* ``proto_request.py``: every request of every round is answered and turned into its
  event, and the three steps' figures come out;
* ``request_loop.py``: against the broker it starts, the client's requests are counted (a
  request costs at least one loop iteration and one datagram read at concurrency 1);
* ``cache_put.py``: every case runs (a compare-and-set of each round applies) and prints
  its figure;
* ``client_record.py``: both clients' turns and raw aioquic's send and receive are timed;
* ``adapter_pass.py``: each runtime adapter echoes every datagram of the timed round trips
  (a fake server in a child process: the adapter's calls on it must still match the
  broker's);
* ``latency_stages.py``: a broker, a publisher and a subscriber in three processes; every
  stage of a record is timed and the broker's socket calls and its ``FelixServer`` calls are
  traced (it wraps the runtimes' socket functions, so a change of their signatures shows
  here first);
* ``connect_storm.py``: clients opened at once against a fresh broker with the receive
  queue given, every one connected and timed;
* ``keeps_up.py``: the README's publisher and subscriber commands against a fresh broker
  (on the anyio runtime over trio, the one the other short forms use least).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_json(script: str, *args: str) -> Any:
    """Run ``benchmarks/<script>`` with ``--json`` and ``args``; its JSON document."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_cache_path_prints_every_figure() -> None:
    figures = run_json("cache_path.py", "--rounds", "3", "--concurrency", "8")
    for op in ("get", "put"):
        for side in ("server", "client", "client_issue"):
            assert figures[f"{op}_c8_{side}_us"] > 0, (op, side)


def test_cache_path_serves_every_request_with_mid_pass_transmits() -> None:
    # 16 requests, a transmit after every 4: the script checks every reply came back
    figures = run_json(
        "cache_path.py", "--rounds", "3", "--concurrency", "16", "--transmit-after", "4"
    )
    assert figures["get_c16_server_us"] > 0


def test_proto_request_prints_every_figure() -> None:
    figures = run_json("proto_request.py", "--rounds", "3", "--concurrency", "8")
    for op in ("get", "put"):
        for step in ("issue", "server", "receive"):
            assert figures[f"{op}_c8_{step}_us"] > 0, (op, step)


def test_request_loop_counts_the_client_loop() -> None:
    figures = run_json("request_loop.py", "--seconds", "0.2", "--concurrency", "1")["c=1"]
    assert figures["requests_per_s"] > 0
    assert figures["loop_iterations_per_request"] >= 1
    assert figures["datagrams_read_per_request"] >= 1
    assert figures["datagrams_sent_per_request"] >= 1


def test_cache_put_prints_every_case() -> None:
    args = ("--batches", "3", "--batch", "8", "--keys", "16", "--fill", "100")
    figures = run_json("cache_put.py", *args)["cpu_us_per_call"]
    assert set(figures) == {"put", "put_ttl", "put_cas", "get"}
    assert all(us > 0 for us in figures.values()), figures


def test_server_pass_publish_times_the_record_path() -> None:
    """``server_pass.py --publish``: every record reaches the subscriber in one datagram, and
    the path (publish read -> delivery handed to ``send``) is timed, within the pass."""
    figures = run_json("server_pass.py", "--publish", "20")
    assert figures["to_subscriber_per_record"] == 1.0
    assert 0 < figures["path_us_p50"] <= figures["broker_us_per_record_p50"]


def test_client_record_times_both_ends() -> None:
    figures = run_json("client_record.py", "--records", "20", "--rounds", "1")[0]
    for name in ("pub", "sub", "pub_pass", "sub_pass", "raw_send", "raw_recv"):
        assert figures[f"{name}_us"] > 0, name
    assert figures["sub_iterations"] >= 1  # the reader runs after the pass that woke it
    assert figures["sub_pass_iterations"] >= figures["sub_iterations"]


def test_adapter_pass_echoes_on_every_runtime() -> None:
    figures = run_json(
        "adapter_pass.py", "--runtime", "asyncio,anyio-asyncio,anyio-trio", "--count", "50"
    )
    for runtime in ("asyncio", "anyio-asyncio", "anyio-trio"):
        assert figures[runtime]["adapter_cpu_us_per_round_trip"] > 0, runtime
        assert 0 < figures[runtime]["rtt_p50_us"] <= figures[runtime]["rtt_p99_us"], runtime


def test_keeps_up_runs_the_readme_commands_and_counts_what_arrived() -> None:
    """``keeps_up.py``: a fresh broker, ``felix sub --count`` and ``felix pub --count``; every
    record arrives (20,000 is far inside the default retention, so a loss here is a broken
    path, not a slow one) and the publisher's rate comes out."""
    result = run_json("keeps_up.py", "--count", "20000", "--runtime", "anyio", "--backend", "trio")
    (run,) = result["runs"]
    assert run["received"] == run["published"] == 20000, run
    assert run["lost"] == 0 and run["gap_reports"] == 0, run
    assert run["publish_msg_per_s"] > 0


def test_latency_stages_times_every_stage_across_three_processes() -> None:
    """``latency_stages.py``: records cross publisher -> broker -> subscriber, each stage is
    found in the three processes' traces, and the stages add up to the total."""
    (round_,) = run_json("latency_stages.py", "--seconds", "0.3", "--no-raw", "--broker-calls")
    stages = round_["stages"]
    assert stages["count"] > 10, stages
    parts = ("pub_client", "to_broker", "broker", "to_sub", "sub_client")
    for name in parts:
        assert 0 < stages[name]["p50"] <= stages[name]["p99"], name
    assert stages["total"]["p50"] >= max(stages[name]["p50"] for name in parts)
    assert stages["datagrams_per_record"]["publisher_sent"] >= 1.0
    assert stages["datagrams_per_record"]["broker_sent_to_sub"] >= 1.0


def test_connect_storm_connects_every_client_and_times_them() -> None:
    """``connect_storm.py``: a fresh broker with ``transport.receive_buffer`` set (the flag
    reaches it: a wrong key would stop it from starting), 20 clients at once, all connected,
    with their connect times."""
    result = run_json("connect_storm.py", "--clients", "20", "--receive-buffer", "262144")
    (run,) = result["runs"]
    assert run["receive_buffer"] == 262144
    assert run["connected"] == run["clients"] == 20 and run["failed"] == 0, run
    assert 0 < run["connect_p50_ms"] <= run["connect_p90_ms"] <= run["connect_max_ms"]
