"""In-process engine benchmark: no network, no codec, just ``felix_core.Broker``.

Every request completes through the engine's event stream, which the loops drain as the
server does.

Measures:

* stream fanout: publish batches of 64 x 100 B records and drain the outputs, with 1 and
  with 10 subscribers (delivered records per second, summed over subscribers);
* queue: enqueue a batch of 64, drain the deliveries, ack them (messages per second);
* cache: put and get operations per second.

Usage: ``python benchmarks/engine.py [--json] [--seconds S]``. ``--json`` prints one JSON
object; otherwise a readable table. Targets (issue 3): >= 1,000,000 delivered msg/s to one
subscriber, >= 500,000 cache gets/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_core import Broker, BrokerConfig, MessagesDelivered, RecordsDelivered
from felix_core.events import RequestCompleted
from felix_server.local_route import LocalRoute

BATCH = 64
PAYLOAD = b"x" * 100
T, NS = "default", "default"


def _timed(step: Callable[[], int], seconds: float) -> float:
    """Run ``step`` (returns units of work done) for about ``seconds``; return units/s."""
    for _ in range(50):  # warm-up
        step()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            done += step()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def _engine() -> tuple[Broker, LocalRoute]:
    """An engine with its metadata store (applied by the server's local route, used here
    for the set-up requests only)."""
    broker = Broker(BrokerConfig(memory_limit_bytes=1 << 34))
    return broker, LocalRoute(broker)


def _setup(route: LocalRoute, call: Callable[..., None], *args: object, **kwargs: object) -> Any:
    """Make one set-up request and return its completion."""
    call(*args, **kwargs)
    (done,) = [e for e in route.take_events(0.0) if isinstance(e, RequestCompleted)]
    return done


def bench_fanout(subscribers: int, seconds: float) -> float:
    """Delivered records per second with ``subscribers`` draining subscriptions."""
    broker, route = _engine()
    _setup(
        route, broker.create, 0, 0, "stream", T, NS, "bench", {"batch_max_events": BATCH}, now=0.0
    )
    for conn in range(1, subscribers + 1):
        broker.attach(conn, 0.0)
        _setup(
            route,
            broker.subscribe,
            conn,
            0,
            T,
            NS,
            "bench",
            credit_messages=1 << 30,
            credit_bytes=1 << 40,
            now=0.0,
        )
    payloads = [PAYLOAD] * BATCH
    publish = broker.publish
    drain = broker.drain_events
    clock = [1.0]
    numbers = itertools.count(1)

    def step() -> int:
        clock[0] += 1e-6
        publish(0, next(numbers), T, NS, "bench", payloads, now=clock[0])
        delivered = 0
        for out in drain():
            if type(out) is RecordsDelivered:
                delivered += len(out.slice)
        return delivered

    return _timed(step, seconds)


def bench_queue(seconds: float) -> float:
    """Messages per second through enqueue -> deliver -> ack."""
    broker, route = _engine()
    _setup(route, broker.create, 0, 0, "queue", T, NS, "bench", {"max_prefetch": 4096}, now=0.0)
    broker.attach(1, 0.0)
    consumer = _setup(route, broker.consume, 1, 0, T, NS, "bench", prefetch=4096, now=0.0)
    consumer_id = consumer.consumer_id
    payloads = [PAYLOAD] * BATCH
    clock = [1.0]
    numbers = itertools.count(1)

    def step() -> int:
        clock[0] += 1e-6
        now = clock[0]
        broker.enqueue(1, next(numbers), T, NS, "bench", payloads, now=now)
        acked = 0
        for out in broker.drain_events():
            if isinstance(out, MessagesDelivered):
                ids = [d.delivery_id for d in out.deliveries]
                broker.ack(1, next(numbers), consumer_id, ids, now=now)
                acked += len(ids)
        broker.drain_events()  # the acks' completions
        return acked

    return _timed(step, seconds)


def bench_cache(seconds: float) -> dict[str, float]:
    """Cache put and get operations per second (1024 keys, 100-byte values), each request
    completed through the engine's events (drained once per 1024 requests)."""
    broker, route = _engine()
    _setup(route, broker.create, 0, 0, "cache", T, NS, "bench", {}, now=0.0)
    keys = [f"key-{i}" for i in range(1024)]
    value = b"v" * 100
    put = broker.cache_put
    get = broker.cache_get
    drain = broker.drain_events

    def puts() -> int:
        for i, key in enumerate(keys):
            put(0, i, T, NS, "bench", key, value, now=1.0)
        drain()
        return len(keys)

    def gets() -> int:
        for i, key in enumerate(keys):
            get(0, i, T, NS, "bench", key, now=1.0)
        drain()
        return len(keys)

    return {
        "cache_put_ops_per_s": _timed(puts, seconds),
        "cache_get_ops_per_s": _timed(gets, seconds),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args(argv)
    results: dict[str, object] = {
        "python": platform.python_version(),
        "batch": BATCH,
        "payload_bytes": len(PAYLOAD),
        "fanout1_delivered_msgs_per_s": bench_fanout(1, args.seconds),
        "fanout10_delivered_msgs_per_s": bench_fanout(10, args.seconds),
        "queue_msgs_per_s": bench_queue(args.seconds),
    }
    results.update(bench_cache(args.seconds))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"felix_core engine benchmark (Python {results['python']}, in-process)")
    for name, value in results.items():
        if isinstance(value, float):
            print(f"  {name:34s} {value:>14,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
