"""Helpers for the durable log tests: run jobs inline, read a whole log through jobs."""

from __future__ import annotations

from felix_core.disklog import DiskLog, DiskLogStore, StorageJob, StorageNotice
from felix_core.log import LogSlice, ReadPending, TooOld


class Meter:
    """A MemoryMeter that just counts."""

    def __init__(self) -> None:
        self.held = 0

    def adjust(self, delta: int) -> None:
        self.held += delta


def run_jobs(jobs: list[StorageJob], now: float = 0.0) -> list[StorageNotice]:
    """Run each job inline (run, then finish with its result or exception)."""
    notices: list[StorageNotice] = []
    for job in jobs:
        try:
            outcome: object = job.run()
        except Exception as exc:  # the job's failure is its outcome
            outcome = exc
        notices.extend(job.finish(outcome, now))
    return notices


def settle(store: DiskLogStore, now: float = 0.0) -> list[StorageNotice]:
    """Run jobs until the store hands out none."""
    notices: list[StorageNotice] = []
    for _ in range(100):
        jobs = store.take_jobs()
        if not jobs:
            return notices
        notices.extend(run_jobs(jobs, now))
    raise AssertionError("jobs never settle")


def read_all(log: DiskLog, start: int | None = None) -> LogSlice:
    """Read every retained record from ``start`` (default: first_offset), running the read
    jobs reads ask for; return them as one slice-like set of lists."""
    offset = log.first_offset if start is None else start
    payloads: list[bytes] = []
    stamps: list[int] = []
    keys: list[bytes | None] = []
    headers: list[dict[str, bytes] | None] = []
    base = offset
    for _ in range(100_000):
        if offset >= log.next_offset:
            break
        got = log.read(offset, 1000, 1 << 30)
        if isinstance(got, ReadPending):
            run_jobs(log.take_jobs())
            continue
        assert not isinstance(got, TooOld)
        n = len(got)
        payloads += got.payloads
        stamps += got.timestamps_ms
        keys += got.keys if got.keys is not None else [None] * n
        headers += got.headers if got.headers is not None else [None] * n
        offset = got.next_offset
    return LogSlice(base, payloads, stamps, keys, headers, 0)
