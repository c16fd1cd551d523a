"""A stream created on defaults is bounded by bytes, not by a record count (issue 12): 100,000
records of 100 B (10 MB) were a few hundred milliseconds of one publisher flat out, so one
healthy subscriber briefly behind lost records on defaults."""

from __future__ import annotations

from engine_calls import Calls

from felix_core import Broker, BrokerConfig

T, N = "default", "default"


def test_a_default_stream_keeps_more_small_records_than_the_old_count_bound() -> None:
    b = Calls(Broker(BrokerConfig()))
    b.attach(1, 0.0)
    b.create("stream", T, N, "s", now=0.0)
    settings = b.describe("stream", T, N, "s", now=0.0)["settings"]
    assert settings["retention_max_records"] is None
    assert settings["retention_max_bytes"] == 64 << 20
    b.subscribe(1, T, N, "s", credit_messages=1, credit_bytes=1, now=0.0)
    payloads = [b"x" * 100] * 1000
    for i in range(150):  # 150,000 records of 100 B, the reader behind by all but one
        b.publish(9, T, N, "s", payloads, now=1.0 + i / 1000)
    stats = b.describe("stream", T, N, "s", now=2.0)["stats"]
    assert stats["records"] == 150_000 and stats["trimmed_records"] == 0
