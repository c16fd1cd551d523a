"""What decoding one frame costs: peak RSS growth and time, for hostile and legitimate frames.

Each case is built by one fresh interpreter (``--build NAME FILE``) and decoded by another
(``--case FILE``), which reports ``ru_maxrss`` before and after
:func:`felix_proto.codec.decode` (the payload is already in memory before the first reading,
so the growth is what decoding added) and the decode time. A decode that raises is reported
with the exception's class and error code. (Linux carries a process's peak RSS across
``fork``/``exec``, so the parent stays small and builds nothing itself.)

Hostile cases (docs/wire-protocol.md §3, "Decoding limits"):

* ``empty_maps_15m``: a ``Publish`` whose ignored field ``x`` is an array of 15,000,000
  empty maps (a 15 MiB frame); ``empty_maps_4m``: the same with 4 Mi maps;
* ``nested_empty_maps_15m``: the same maps split into 4 Ki arrays of 3,662 (what a
  per-container length limit alone would let through);
* ``map_1m_keys``: an ignored field holding a map of 1,000,000 distinct keys;
* ``at_value_limit``: empty maps up to the value limit (the most a frame may expand to).

Legitimate cases: ``batch_8192_headers`` (a ``PublishBatch`` of 8,192 records, each with a key
and 30 headers: the largest batch of that shape the value limit admits) and
``publish_16mib`` (one payload filling a 16 MiB frame).

Usage: ``python benchmarks/decode_limits.py [--json] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_proto import messages as m

MiB = 1 << 20


def _publish_with(extra_name: str, extra: bytes) -> bytes:
    """A ``Publish`` payload whose fields map ends with ``extra_name`` -> the packed ``extra``."""
    fields = {
        "request_id": 7,
        "tenant": "default",
        "namespace": "default",
        "stream": "s",
        "payload": b"x",
    }
    head = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())
    count = len(fields) + 1
    return (
        b"\x92"
        + msgpack.packb(m.Publish.TYPE)
        + b"\xde"
        + struct.pack(">H", count)
        + head
        + msgpack.packb(extra_name)
        + extra
    )


def _array_header(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


def _empty_maps(n: int) -> bytes:
    return _publish_with("x", _array_header(n) + b"\x80" * n)


def _nested_empty_maps(total: int, per: int) -> bytes:
    arrays = total // per
    inner = _array_header(per) + b"\x80" * per
    return _publish_with("x", _array_header(arrays) + inner * arrays)


def _map_keys(n: int) -> bytes:
    body = b"".join(msgpack.packb(f"k{i}") + b"\xc0" for i in range(n))
    return _publish_with("x", b"\xdf" + struct.pack(">I", n) + body)


def _at_value_limit() -> bytes:
    from felix_proto.codec import MAX_VALUES  # absent before the limit existed

    # [type, {5 fields + x}]: 2 + 12 keys and values + the array = 15 values besides the maps
    return _empty_maps(MAX_VALUES - 15)


def _batch_8192_headers() -> bytes:
    n = 8192
    headers = {f"h{i}": b"v" for i in range(30)}
    batch = m.PublishBatch(
        request_id=7,
        tenant="default",
        namespace="default",
        stream="s",
        payloads=[b"p%d" % i for i in range(n)],
        keys=[b"k%d" % i for i in range(n)],
        headers=[headers] * n,
    )
    from felix_proto.codec import encode

    return encode(batch)[12:]


def _publish_16mib() -> bytes:
    from felix_proto.codec import encode

    frame = encode(
        m.Publish(request_id=7, tenant="default", namespace="default", stream="s", payload=b"")
    )
    return _publish_with("payload2", msgpack.packb(b"\0" * (16 * MiB - len(frame) - 20)))


CASES: dict[str, Callable[[], bytes]] = {
    "empty_maps_15m": lambda: _empty_maps(15_000_000),
    "empty_maps_4m": lambda: _empty_maps(4 * MiB - 64),
    "nested_empty_maps_15m": lambda: _nested_empty_maps(15_000_000, 3662),
    "map_1m_keys": lambda: _map_keys(1_000_000),
    "at_value_limit": _at_value_limit,
    "batch_8192_headers": _batch_8192_headers,
    "publish_16mib": _publish_16mib,
}


def _measure(path: str) -> dict[str, Any]:
    """In the child: decode the payload in ``path``; report RSS growth and time."""
    from felix_proto.codec import decode
    from felix_proto.errors import RemoteProtocolError

    payload = Path(path).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        msg = decode(payload)
        outcome = f"decoded {type(msg).__name__}"
    except RemoteProtocolError as exc:
        outcome = f"{type(exc).__name__} ({int(exc.error_code)})"
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "payload_mib": round(len(payload) / MiB, 2),
        "outcome": outcome,
        "decode_s": round(seconds, 4),
        "rss_growth_mib": round((after - before) / 1024, 1),  # ru_maxrss is KiB on Linux
    }


def run(names: list[str]) -> dict[str, Any]:
    """Measure each named case in its own interpreter."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = Path(tmp) / f"{name}.bin"
            built = subprocess.run(
                [sys.executable, __file__, "--build", name, str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            if built.stdout.strip():
                results[name] = {"outcome": built.stdout.strip()}
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--case", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[name] = json.loads(out.stdout)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print a table, or a JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="cases to run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        name, path = args.build
        try:
            Path(path).write_bytes(CASES[name]())
        except ImportError:
            print("not applicable")
        return 0
    if args.case:
        print(json.dumps(_measure(args.case)))
        return 0
    results = run(args.only or list(CASES))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'case':<24} {'MiB':>6} {'decode s':>9} {'+RSS MiB':>9}  outcome")
    for name, r in results.items():
        if "decode_s" not in r:
            print(f"{name:<24} {'':>6} {'':>9} {'':>9}  {r['outcome']}")
            continue
        print(
            f"{name:<24} {r['payload_mib']:>6} {r['decode_s']:>9} "
            f"{r['rss_growth_mib']:>9}  {r['outcome']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
