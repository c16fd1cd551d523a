"""The parts of ``felix bench`` that judge a measurement: loss accounting, ratios to the
anchor, percentiles, and a load generator that fails."""

from __future__ import annotations

from array import array
from typing import Any

import anyio
import pytest

from felix_client.bench import queues
from felix_client.bench.hdr import summarize
from felix_client.bench.pubsub import account
from felix_client.bench.report import Figure, attach_ratios, document
from felix_client.bench.workers import WorkerFailed, WorkerPool


def _figure(**kw: Any) -> Figure:
    return Figure(id=kw.pop("id", "f"), scenario="s", label="l", **kw)


def _subs(*rows: tuple[int, int]) -> dict[str, Any]:
    """Subscriber results: (received, missed) per subscription, from offset 0."""
    subs = [{"first_offset": 0, "received": r, "missed": m} for r, m in rows]
    return {"subs": subs, "timed_out": False}


def test_every_offset_received_is_valid() -> None:
    figure = _figure()
    delivered = account(figure, {"last_offset": 99, "published": 100}, _subs((100, 0), (100, 0)))
    assert delivered == 200
    assert figure.valid and not figure.notes
    assert figure.metrics["dropped"] == 0


def test_drops_reported_as_gaps_are_counted_and_explained() -> None:
    figure = _figure()
    delivered = account(figure, {"last_offset": 99, "published": 100}, _subs((60, 40)))
    assert delivered == 60
    assert figure.valid
    assert figure.metrics["dropped"] == 40
    assert "40 deliveries dropped" in figure.notes[0]


def test_unexplained_loss_makes_the_figure_invalid() -> None:
    figure = _figure()
    account(figure, {"last_offset": 99, "published": 100}, _subs((100, 0), (97, 1)))
    assert not figure.valid
    assert any("2 deliveries lost without a gap report" in n for n in figure.notes)


def test_duplicates_and_timeouts_make_the_figure_invalid() -> None:
    figure = _figure()
    account(figure, {"last_offset": 9, "published": 10}, _subs((11, 0)))
    assert not figure.valid
    figure = _figure()
    late = _subs((10, 0)) | {"timed_out": True}
    account(figure, {"last_offset": 9, "published": 10}, late)
    assert not figure.valid


def test_a_subscription_that_started_later_expects_fewer_offsets() -> None:
    figure = _figure()
    received = {"subs": [{"first_offset": 5, "received": 5, "missed": 0}], "timed_out": False}
    account(figure, {"last_offset": 9, "published": 10}, received)
    assert figure.valid


def test_ratios_divide_by_the_anchor_of_the_same_run() -> None:
    anchor = _figure(id="a", metrics={"msg_per_s": 200.0, "p50_us": 100.0})
    rate = _figure(id="r", metrics={"msg_per_s": 50.0}, anchor="a")
    latency = _figure(id="l", metrics={"p50_us": 150.0, "p99_us": 3.0}, anchor="a")
    orphan = _figure(id="o", metrics={"msg_per_s": 1.0}, anchor="missing")
    attach_ratios([anchor, rate, latency, orphan])
    assert rate.ratios == {"msg_per_s": 0.25}
    assert latency.ratios == {"p50_us": 1.5}  # the anchor has no p99: no ratio for it
    assert orphan.ratios == {}
    assert "missing was not measured" in orphan.notes[0]
    assert anchor.ratios == {}


def test_an_invalid_anchor_is_flagged_on_its_dependents() -> None:
    anchor = _figure(id="a", metrics={"msg_per_s": 200.0}, valid=False)
    rate = _figure(id="r", metrics={"msg_per_s": 50.0}, anchor="a")
    attach_ratios([anchor, rate])
    assert "anchor a is invalid" in rate.notes
    assert document([anchor, rate], {})["valid"] is False


def test_percentiles_come_out_ordered_in_microseconds() -> None:
    samples = array("q", [1_000] * 980 + [50_000] * 19 + [2_000_000])
    latency = summarize([samples.tobytes()])
    assert latency["count"] == 1000
    assert latency["p50_us"] == pytest.approx(1.0, rel=0.01)
    assert latency["p99_us"] == pytest.approx(50.0, rel=0.01)
    assert latency["p999_us"] == pytest.approx(50.0, rel=0.01)
    assert latency["max_us"] == pytest.approx(2000.0, rel=0.01)
    assert summarize([])["count"] == 0


def test_a_failing_job_is_reported_with_its_traceback_and_the_worker_lives_on() -> None:
    with WorkerPool(1, "asyncio") as pool:
        worker = pool[0]
        params = {"engine": "picoquic", "mode": "one-way", "timeout": 1.0, "cert": ("", "")}
        worker.submit("felix_client.bench.raw_quic:server_job", params)
        with pytest.raises(WorkerFailed, match="unknown QUIC engine 'picoquic'"):
            worker.result(30)
        assert not worker.busy
        worker.submit("felix_client.bench.raw_quic:server_job", params)
        with pytest.raises(WorkerFailed, match="Traceback"):
            worker.result(30)


def test_a_dead_worker_is_reported_not_waited_for() -> None:
    with WorkerPool(1, "asyncio") as pool:
        worker = pool[0]
        worker.process.kill()
        with pytest.raises(WorkerFailed, match="died"):
            worker.result(30)


def test_prepare_heap_moves_the_surviving_objects_out_of_full_collections() -> None:
    """Workers call it before each job: a full collection during the job then skips what
    the process held before (the first one took 77-150 ms with ten subscribers)."""
    import gc

    from felix_client.bench.workers import prepare_heap

    kept = [object() for _ in range(1000)]
    try:
        prepare_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        prepare_heap()  # again, as before the next job: unfrozen, collected, frozen
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


class _Enqueues:
    """A stand-in client for the queue producer: counts enqueues in flight."""

    wait = staticmethod(anyio.sleep)  # the real one (the test counts the producer's sleeps)

    def __init__(self) -> None:
        self.in_flight = self.most = self.calls = 0

    async def __aenter__(self) -> _Enqueues:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def enqueue(self, queue: str, items: list[bytes]) -> None:
        self.in_flight += 1
        self.calls += 1
        self.most = max(self.most, self.in_flight)
        await self.wait(0.002)
        self.in_flight -= 1


class _Ctx:
    def __init__(self, acked: int) -> None:
        self.acked = acked
        self.reported = 0

    def report(self, count: int) -> None:
        self.reported = count

    def progress_of(self, index: int) -> int:
        return self.acked


@pytest.mark.parametrize("acked, most, calls", [(10**9, 4, None), (0, 2, 2)])
def test_the_queue_producer_keeps_enqueues_in_flight_within_the_backlog(
    acked: int, most: int, calls: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four enqueues in flight (one at a time, the producer's round trip bounded the
    figure); never more than the backlog ahead of the acks (2 lists of 64 for 128), and
    then one task polls for room while the others wait."""
    fake = _Enqueues()
    sleeping = [0, 0]  # now, most
    real_sleep = anyio.sleep

    async def sleep(seconds: float) -> None:
        sleeping[0] += 1
        sleeping[1] = max(sleeping)
        await real_sleep(seconds)
        sleeping[0] -= 1

    monkeypatch.setattr(queues.anyio, "sleep", sleep)

    class Target:
        def connect(self) -> _Enqueues:
            return fake

    ctx = _Ctx(acked)
    params = {
        "target": Target(),
        "queue": "q",
        "payload": 1,
        "batch": 64,
        "seconds": 0.05,
        "pace": 0,
        "backlog": 128,
        "in_flight": queues.ENQUEUES_IN_FLIGHT,
    }
    out = anyio.run(queues.enqueue_job, ctx, params)
    assert fake.most == most
    if calls is not None:
        assert fake.calls == calls
    assert out["enqueued"] == 64 * fake.calls == ctx.reported
    assert sleeping[1] == (1 if acked == 0 else 0)
