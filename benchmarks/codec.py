"""Codec benchmark: Felix encode+decode per message next to plain msgpack of the same dict.

For three workloads (a single 256-byte publish, a 64 x 256-byte publish batch and a
64 x 256-byte event batch) it times, in the same run:

* ``felix``: :func:`felix_proto.codec.encode` (or ``encode_event_batch``) producing a
  complete frame, then :func:`felix_proto.codec.decode` of its payload into a validated,
  frozen message;
* ``msgpack``: ``msgpack.packb`` of an equivalent dict (the same fields plus ``type``) and
  ``msgpack.unpackb`` of the result, with no framing and no validation.

``ratio`` = felix / msgpack; the target is at most 1.5. Each workload runs ``--repeat``
rounds; a round times ``--number`` iterations of felix and then of msgpack back to back, so
both sides see the same machine load. Reported: the median per-message time of each side
and the median of the per-round ratios (a shared host makes single rounds noisy; the
median of paired rounds is stable where the best of independent rounds is not).

Usage: ``python benchmarks/codec.py [--json] [--number N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_proto.codec import decode, encode, encode_event_batch
from felix_proto.frames import HEADER_SIZE
from felix_proto.messages import EventBatch, Publish, PublishBatch

TARGET_RATIO = 1.5
PAYLOAD = bytes(range(256))
BATCH = 64


def _workloads() -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    payloads = [PAYLOAD] * BATCH
    timestamps = [1_700_000_000_000 + i for i in range(BATCH)]
    publish = Publish(
        request_id=12345, tenant="acme", namespace="orders", stream="created", payload=PAYLOAD
    )
    publish_dict = {
        "type": Publish.TYPE,
        "request_id": 12345,
        "tenant": "acme",
        "namespace": "orders",
        "stream": "created",
        "payload": PAYLOAD,
        "ack": 1,
    }
    batch = PublishBatch(
        request_id=12345, tenant="acme", namespace="orders", stream="created", payloads=payloads
    )
    batch_dict = {
        "type": PublishBatch.TYPE,
        "request_id": 12345,
        "tenant": "acme",
        "namespace": "orders",
        "stream": "created",
        "payloads": payloads,
        "ack": 1,
    }
    events_dict = {
        "type": EventBatch.TYPE,
        "base_offset": 1_000_000,
        "payloads": payloads,
        "timestamps_ms": timestamps,
    }

    def felix_publish() -> Any:
        return decode(encode(publish)[HEADER_SIZE:])

    def felix_batch() -> Any:
        return decode(encode(batch)[HEADER_SIZE:])

    def felix_events() -> Any:
        return decode(encode_event_batch(1_000_000, payloads, timestamps)[HEADER_SIZE:])

    def plain(d: dict[str, Any]) -> Callable[[], Any]:
        return lambda: msgpack.unpackb(msgpack.packb(d))

    return {
        "publish": (felix_publish, plain(publish_dict)),
        "publish_batch_64": (felix_batch, plain(batch_dict)),
        "event_batch_64": (felix_events, plain(events_dict)),
    }


def _check_equivalent(name: str, message: Any, plain: Any) -> None:
    """Both sides must carry the same data: the decoded message matches the decoded dict."""
    fields = {k: v for k, v in plain.items() if k != "type"}
    if plain["type"] != message.TYPE or {k: getattr(message, k) for k in fields} != fields:
        raise SystemExit(f"{name}: the felix and msgpack workloads carry different data")


def _paired(
    felix_fn: Callable[[], Any], plain_fn: Callable[[], Any], number: int, repeat: int
) -> tuple[float, float, float]:
    """Median felix seconds, median msgpack seconds and median ratio of paired rounds."""
    felix_timer = timeit.Timer(felix_fn)
    plain_timer = timeit.Timer(plain_fn)
    felix_times: list[float] = []
    plain_times: list[float] = []
    ratios: list[float] = []
    for _ in range(repeat):
        felix_s = felix_timer.timeit(number) / number
        plain_s = plain_timer.timeit(number) / number
        felix_times.append(felix_s)
        plain_times.append(plain_s)
        ratios.append(felix_s / plain_s)
    return statistics.median(felix_times), statistics.median(plain_times), statistics.median(ratios)


def run(number: int, repeat: int) -> dict[str, Any]:
    """Time every workload; returns per-message microseconds and ratios (medians)."""
    results: dict[str, Any] = {}
    for name, (felix_fn, plain_fn) in _workloads().items():
        _check_equivalent(name, felix_fn(), plain_fn())
        felix_s, plain_s, ratio = _paired(felix_fn, plain_fn, number, repeat)
        results[name] = {
            "felix_us": round(felix_s * 1e6, 3),
            "msgpack_us": round(plain_s * 1e6, 3),
            "ratio": round(ratio, 3),
        }
    return {
        "python": sys.version.split()[0],
        "msgpack": ".".join(map(str, msgpack.version)),
        "number": number,
        "repeat": repeat,
        "target_ratio": TARGET_RATIO,
        "workloads": results,
        "all_within_target": all(r["ratio"] <= TARGET_RATIO for r in results.values()),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table, or a JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--number", type=int, default=20_000, help="iterations per round")
    parser.add_argument("--repeat", type=int, default=9, help="paired rounds (median is kept)")
    args = parser.parse_args(argv)
    report = run(args.number, args.repeat)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"python {report['python']}, msgpack {report['msgpack']}")
    print(f"{'workload':<18} {'felix us':>10} {'msgpack us':>11} {'ratio':>7}")
    for name, r in report["workloads"].items():
        print(f"{name:<18} {r['felix_us']:>10.3f} {r['msgpack_us']:>11.3f} {r['ratio']:>7.3f}")
    verdict = "within" if report["all_within_target"] else "OVER"
    print(f"target ratio <= {TARGET_RATIO}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
