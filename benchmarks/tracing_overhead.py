"""What the client's OpenTelemetry hooks cost on the publish path, in one run.

Three client modes, each in a fresh child interpreter against one broker subprocess (in
memory, untraced, on 127.0.0.1):

- ``no-api``: ``opentelemetry`` cannot be imported (an install without the ``otel`` extra);
- ``api-no-sdk``: the API is importable but no tracer provider is configured (the default:
  the client holds no tracer, every hook is one ``is None`` test);
- ``sdk``: an SDK ``TracerProvider`` with no span processor (spans are made and dropped:
  the cost of making them and of writing ``traceparent`` into the headers).

Two figures per mode: ``publish_us``, sequential ``await client.publish(...)`` (default
``AckMode.ACCEPTED``: one round trip each), and ``send_us``, ``AckMode.NONE`` publishes
(no round trip: the client's CPU cost per call); under ``sdk``, ``hooks_us`` is the
client's tracing work per published and received record measured alone (a publish span with
its header injection, plus a receive span with its extraction), free of the network's
noise. Modes run interleaved for ``--rounds``
rounds (in a rotated order); the median per mode is printed with its ratio to ``no-api``.

Usage::

    .venv/bin/python benchmarks/tracing_overhead.py [--count 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from felix_client.pytest_plugin import start_broker

MODES = ("no-api", "api-no-sdk", "sdk")

_CHILD = """
import sys, time, json
mode, url, ca, stream, count = sys.argv[1:6]
count = int(count)
if mode == "no-api":
    sys.modules["opentelemetry"] = None
elif mode == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
import anyio
from felix_client import AckMode, AlreadyExists, Client

async def main():
    async with Client(url, ca_file=ca, timeout=10.0) as client:
        assert (client.tracer is not None) == (mode == "sdk"), mode
        try:
            await client.admin.create("stream", stream)
        except AlreadyExists:
            pass
        for _ in range(200):  # warm up
            await client.publish(stream, b"x" * 64)
        t0 = time.perf_counter()
        for _ in range(count):
            await client.publish(stream, b"x" * 64)
        t1 = time.perf_counter()
        for _ in range(count):
            await client.publish(stream, b"x" * 64, ack=AckMode.NONE)
        t2 = time.perf_counter()
        hooks = 0.0
        if client.tracer is not None:  # the hooks alone, without the network's noise
            from felix_client import _tracing
            t3 = time.perf_counter()
            for _ in range(count):
                span, headers = _tracing.send_span(
                    client.tracer, "publish", stream, "default", "default", None, 1
                )
                _tracing.finish(span, None, 0)
                _tracing.consumer_span(
                    client.tracer, stream, "default", "default", headers[0], 0
                )
            hooks = (time.perf_counter() - t3) / count * 1e6
        print(json.dumps({"publish_us": (t1 - t0) / count * 1e6,
                          "send_us": (t2 - t1) / count * 1e6, "hooks_us": hooks}))

anyio.run(main)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "data")
        try:
            stream = "tracing-overhead"
            results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for i in range(args.rounds):
                for mode in MODES[i % 3 :] + MODES[: i % 3]:  # rotated: no mode always first
                    argv = [mode, broker.url, broker.ca_file, stream, str(args.count)]
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, *argv],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    results[mode].append(json.loads(out.stdout))
        finally:
            broker.stop()
    base = {
        k: statistics.median(r[k] for r in results["no-api"]) for k in ("publish_us", "send_us")
    }
    print(
        f"{'mode':<12} {'publish_us':>11} {'ratio':>6} {'send_us':>8} {'ratio':>6} {'hooks_us':>9}"
    )
    for mode in MODES:
        pub = statistics.median(r["publish_us"] for r in results[mode])
        send = statistics.median(r["send_us"] for r in results[mode])
        hooks = statistics.median(r["hooks_us"] for r in results[mode])
        print(
            f"{mode:<12} {pub:>11.1f} {pub / base['publish_us']:>6.3f} "
            f"{send:>8.1f} {send / base['send_us']:>6.3f} {hooks:>9.1f}"
        )


if __name__ == "__main__":
    main()
