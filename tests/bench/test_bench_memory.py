"""The ``memory`` scenario's judgement (the limits that apply, the publisher's phases, the
stalled subscriber's accounting), the RSS readings it rests on, and the latency ladder the
plots draw."""

from __future__ import annotations

import math
import os
from array import array
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from brokers import start_broker

from felix_client.bench.hdr import LADDER, distribution
from felix_client.bench.memory import (
    RssSampler,
    _outcome,
    _rates,
    default_publishes,
    limits_of,
    publish_job,
)
from felix_client.bench.report import Figure
from felix_client.bench.servers import process_memory, reset_peak_memory
from felix_client.bench.settings import BrokerTarget

MiB = 1 << 20
CONFIG: dict[str, Any] = {
    "transport": {"connection_buffer_cap": 16 * MiB, "max_data": 16 * MiB, "max_stream_data": 1},
    "broker": {"stream_retention_max_bytes": 64 * MiB},
}


def test_limits_are_the_stream_retention_and_each_connections_buffer_and_window() -> None:
    limits = limits_of(CONFIG, {"settings": {"retention_max_bytes": 5 * MiB}})
    assert limits.terms == {
        "stream.retention_max_bytes": 5 * MiB,
        "subscriber.transport.connection_buffer_cap": 16 * MiB,
        "subscriber.transport.max_data": 16 * MiB,
        "publisher.transport.connection_buffer_cap": 16 * MiB,
        "publisher.transport.max_data": 16 * MiB,
    }
    assert limits.total == 69 * MiB


def test_limits_fall_back_on_the_broker_default_retention_and_say_what_is_unknown() -> None:
    assert limits_of(CONFIG, {}).terms["stream.retention_max_bytes"] == 64 * MiB
    alone = limits_of(None, {"settings": {"retention_max_bytes": 1000}})
    assert alone.terms == {"stream.retention_max_bytes": 1000}
    assert "unknown" in alone.source


def test_the_full_count_runs_unless_all_is_short() -> None:
    assert default_publishes("memory", 0.3) == 1_000_000
    assert default_publishes("all", 2.0) == 1_000_000
    assert default_publishes("all", 1.0) == 100_000
    assert default_publishes("all", 0.01) == 10_000


def _published(**kw: Any) -> dict[str, Any]:
    marks = kw.pop("marks", [])
    times = kw.pop("times", [])
    return {
        "start_ns": 0,
        "marks": array("q", marks).tobytes(),
        "times": array("q", times).tobytes(),
        "error": None,
    } | kw


def test_publish_rates_are_split_where_retention_starts_to_trim() -> None:
    # 100 records per second until 200 (the log full), then 50 per second.
    published = _published(
        sent=400, end_ns=6 * 10**9, marks=[100, 200, 300], times=[10**9, 2 * 10**9, 4 * 10**9]
    )
    fill, trim = _rates(published, fill_records=200)
    assert fill == pytest.approx(100.0)
    assert trim == pytest.approx(50.0)
    fill, trim = _rates(published, fill_records=10_000)  # never filled
    assert fill == pytest.approx(400 / 6)
    assert math.isnan(trim)


def _judged(published: dict[str, Any], received: dict[str, Any]) -> Figure:
    figure = Figure(id="m", scenario="memory", label="m")
    figure.metrics.update({"publish_fill_msg_per_s": 1.0, "publish_trim_msg_per_s": math.nan})
    _outcome(figure, published, received)
    return figure


def test_a_stalled_subscriber_accounts_for_every_record_by_reads_and_gaps() -> None:
    figure = _judged(
        _published(acked=1000), {"received": 300, "missed": 700, "error": None, "cpu_s": 0}
    )
    assert figure.valid
    assert figure.metrics["dropped"] == 700
    assert any("700 records skipped" in note for note in figure.notes)


def test_records_neither_read_nor_reported_make_the_figure_invalid() -> None:
    figure = _judged(
        _published(acked=1000), {"received": 300, "missed": 600, "error": None, "cpu_s": 0}
    )
    assert not figure.valid


def test_a_subscription_ended_by_the_broker_is_reported_not_counted() -> None:
    received = {"received": 10, "missed": 0, "error": "Overloaded: lagged", "cpu_s": 0}
    figure = _judged(_published(acked=1000, error="stopped at its time limit"), received)
    assert figure.valid
    assert "the stalled subscriber: Overloaded: lagged" in figure.notes
    assert "the publisher: stopped at its time limit" in figure.notes


def test_rss_and_its_peak_come_from_proc_and_the_peak_can_be_reset() -> None:
    # The peak is reset first: a test process (an xdist worker) may have peaked far above
    # what it holds now, and 64 MiB more would not raise that old peak.
    assert reset_peak_memory(os.getpid())
    rss, hwm = process_memory(os.getpid())
    assert 0 < rss <= hwm
    ballast = bytearray(64 * MiB)
    ballast[::4096] = b"\1" * (64 * MiB // 4096)  # every page touched: resident
    assert process_memory(os.getpid())[1] >= rss + 60 * MiB
    del ballast
    assert reset_peak_memory(os.getpid())
    assert process_memory(os.getpid())[1] < rss + 60 * MiB
    assert process_memory(2**22 + 12345) == (0, 0)  # no such process
    with RssSampler(os.getpid()) as sampler:
        sampler.sample()
    assert sampler.peak > 0


def test_the_ladder_goes_from_the_minimum_to_the_maximum_in_microseconds() -> None:
    samples = array("q", [1_000] * 900 + [10_000] * 99 + [5_000_000])
    ladder = distribution([samples.tobytes()])
    assert [p for p, _ in ladder] == list(LADDER)
    values = [us for _, us in ladder]
    assert values == sorted(values)
    assert values[0] == pytest.approx(1.0, rel=0.01)
    assert dict(ladder)[50.0] == pytest.approx(1.0, rel=0.01)
    assert dict(ladder)[99.0] == pytest.approx(10.0, rel=0.01)
    assert values[-1] == pytest.approx(5000.0, rel=0.01)
    assert distribution([]) == []


def test_with_block_the_publisher_is_said_to_be_refused_not_trimmed() -> None:
    figure = Figure(id="m", scenario="memory", label="m", params={"slow_consumer": "block"})
    figure.metrics.update({"publish_fill_msg_per_s": 1000.0, "publish_trim_msg_per_s": 10.0})
    published = _published(acked=2000, error="Overloaded: a slow subscriber ...")
    _outcome(figure, published, {"received": 2000, "missed": 0, "error": None, "cpu_s": 0})
    assert figure.valid
    assert "the publisher: Overloaded: a slow subscriber ..." in figure.notes
    assert any("refused while the subscriber is behind" in note for note in figure.notes)


class _Ctx:
    def report(self, count: int) -> None:
        pass


def test_a_publisher_refused_under_block_reports_the_records_acknowledged(
    tmp_path: Path,
) -> None:
    """The block policy refuses the publish that would evict what the stalled subscriber
    has not read: the job stops there and reports what the broker acknowledged."""
    broker = start_broker("asyncio", tmp_path / "broker")

    async def main() -> dict[str, Any]:
        target = BrokerTarget(url=broker.url, ca_file=broker.ca_file)
        settings = {"retention_max_bytes": 100_000, "slow_consumer": "block"}  # 1,000 records
        async with target.connect() as client:
            await client.admin.create("stream", "held", settings)
            async with client.subscribe("held", start="earliest", credit_messages=100):
                params = {"target": target, "stream": "held", "payload": 100, "count": 5000}
                params |= {"batch": 64, "timeout": 30.0, "overload_retries": 0}
                return await publish_job(cast(Any, _Ctx()), params)

    try:
        result = anyio.run(main)
    finally:
        broker.stop()
    assert result["error"].startswith("Overloaded"), result["error"]
    # The log's 1,000 records plus the 100 the subscriber was sent (its credit).
    assert 1000 <= result["acked"] <= 1100 + 64 < result["sent"] + 64 <= 5000 + 64
