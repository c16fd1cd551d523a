"""Micro-benchmark of ``felix_core.cache.Cache`` alone: thread CPU per put and per get.

No broker, no codec, no QUIC: one :class:`~felix_core.cache.Cache` with the default
settings, its change feed first filled to its retention (100,000 records) so that every
put also trims one record, as in a broker that has run for a while; a fake clock that
moves 1 ms per batch, and 256 B values over a working set of keys. Each case runs
``--batches`` batches of ``--batch`` calls and reports the median thread CPU per call
(robust on a loaded machine). To compare two trees, run each tree's copy of this script
(it imports the tree it sits in) in alternation.

Cases: ``put`` (unconditional, default TTL 0), ``put_ttl`` (``ttl=30``), ``put_cas``
(``if_version`` = the live version, keeps the expiry), ``get`` (hits).

Usage: ``python benchmarks/cache_put.py [--json] [--batches 200] [--batch 256]
[--keys 1024] [--fill N] [--case put,put_ttl,put_cas,get] [--profile CASE]``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_core.cache import Cache

VALUE = b"v" * 256
CASES = ("put", "put_ttl", "put_cas", "get")


def _runner(case: str, cache: Cache, keys: list[str], batch: int) -> Callable[[float], None]:
    nkeys = len(keys)
    pos = 0

    def run(now: float) -> None:
        nonlocal pos
        put = cache.put
        get = cache.get
        start = pos
        pos = (pos + batch) % nkeys
        for i in range(start, start + batch):
            key = keys[i % nkeys]
            if case == "put":
                put(key, VALUE, now)
            elif case == "put_ttl":
                put(key, VALUE, now, ttl=30.0)
            elif case == "put_cas":
                entry = cache.peek(key, now)
                assert entry is not None
                assert put(key, VALUE, now, if_version=entry.version).applied
            else:
                get(key, now)

    return run


def measure(
    case: str, batches: int, batch: int, nkeys: int, fill: int | None, profile: bool
) -> float:
    """Median thread CPU per call, in microseconds."""
    cache = Cache()
    keys = [f"key-{i}" for i in range(nkeys)]
    now = 1_000_000.0
    for key in keys:
        cache.put(key, VALUE, now, ttl=3600.0)
    if fill is None:
        fill = cache.config.feed_retention.max_records or 0
    for i in range(fill):  # the feed at its retention: steady state
        cache.put(keys[i % nkeys], VALUE, now, ttl=3600.0)
    run = _runner(case, cache, keys, batch)
    for _ in range(10):  # warm up
        now += 0.001
        run(now)
    prof = cProfile.Profile() if profile else None
    samples = []
    for _ in range(batches):
        now += 0.001
        if prof is not None:
            prof.enable()
        t0 = time.thread_time_ns()
        run(now)
        samples.append((time.thread_time_ns() - t0) / batch / 1000)
        if prof is not None:
            prof.disable()
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--case", default=",".join(CASES), help="cases, comma-separated")
    parser.add_argument("--batches", type=int, default=200, help="batches measured per case")
    parser.add_argument("--batch", type=int, default=256, help="calls per batch")
    parser.add_argument("--keys", type=int, default=1024, help="distinct keys")
    parser.add_argument(
        "--fill", type=int, help="puts made before measuring (default: the feed's retention)"
    )
    parser.add_argument("--profile", choices=CASES, help="cProfile one case (slows it)")
    args = parser.parse_args()
    cases = [c for c in args.case.split(",") if c]
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}")
    figures = {
        case: round(
            measure(case, args.batches, args.batch, args.keys, args.fill, case == args.profile), 3
        )
        for case in cases
    }
    if args.json:
        print(json.dumps({"cpu_us_per_call": figures}))
    else:
        for case, us in figures.items():
            print(f"{case:8} {us:8.3f} us CPU/call")


if __name__ == "__main__":
    main()
