"""The crash script's queue mode in its short form (``scripts/crash.py --mode queue``, one
cycle per runtime): a real broker SIGKILLed while consumers ack with mode ``committed``,
restarted on the same data directory, drained: no message whose committed ack was answered
comes back, and every message enqueued (committed) and not acked does. Run it longer by
hand: ``.venv/bin/python scripts/crash.py --mode queue --cycles 50 --json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from brokers import selected_runtimes
from test_sigkill_crash import crash_script


@pytest.mark.parametrize("runtime", selected_runtimes())
def test_committed_acks_hold_and_unacked_messages_return_after_sigkill(
    runtime: str, tmp_path: Path
) -> None:
    report = crash_script().run_queue_crash(
        runtime,
        1,
        data_dir=tmp_path,
        consumers=3,
        min_s=0.3,
        max_s=0.5,
        seed=7,
        visibility_ms=1000,
        settle_s=0.3,
    )
    assert report["ok"], report
    totals = report["totals"]
    assert totals["acked_committed"] > 0 and totals["owed"] > 0  # the load ran both ways
    assert totals["acked_came_back"] == 0 and totals["missing"] == 0
