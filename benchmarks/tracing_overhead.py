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

Then the broker's side: three brokers, the same three modes in the broker process (set up
by a ``sitecustomize`` on its ``PYTHONPATH``: ``no-api``, ``api-no-sdk``, ``sdk`` with no
span processor), each driven by an ``sdk`` client (its records carry ``traceparent``, so a
traced broker extracts contexts and links its spans): ``publish_us`` per sequential publish
(an ``append`` span each), ``deliver_us`` per record read by a subscription from the
earliest offset (a ``deliver`` span per batch), ``consume_us`` per queue message consumed
and acked (a ``deliver`` and an ``ack`` span each). Rounds alternate the brokers.

Usage::

    .venv/bin/python benchmarks/tracing_overhead.py [--count 3000] [--rounds 3] [--no-broker]
"""

from __future__ import annotations

import argparse
import json
import os
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


_BROKER_CHILD = """
import sys, time, json
url, ca, stream, queue, count = sys.argv[1:6]
count = int(count)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
import anyio
from felix_client import AlreadyExists, Client

async def main():
    async with Client(url, ca_file=ca, timeout=10.0) as client:
        for kind, name in (("stream", stream), ("queue", queue)):
            try:
                await client.admin.create(kind, name)
            except AlreadyExists:
                pass
        for _ in range(200):  # warm up
            await client.publish(stream, b"x" * 64)
        t0 = time.perf_counter()
        for _ in range(count):
            await client.publish(stream, b"x" * 64)
            await client.enqueue(queue, b"x" * 64)
        t1 = time.perf_counter()
        with anyio.fail_after(60):
            async with client.subscribe(stream, start="earliest") as sub:
                first = await sub.__anext__()
                t2 = time.perf_counter()
                read = 1
                while read < count + 200:
                    await sub.__anext__()
                    read += 1
                t3 = time.perf_counter()
            t4 = time.perf_counter()
            async with client.consume(queue, prefetch=64) as consumer:
                for _ in range(count):
                    msg = await consumer.__anext__()
                    await msg.ack()
                t5 = time.perf_counter()
        print(json.dumps({"append_us": (t1 - t0) / count / 2 * 1e6,
                          "deliver_us": (t3 - t2) / (read - 1) * 1e6,
                          "consume_us": (t5 - t4) / count * 1e6}))

anyio.run(main)
"""

_SITECUSTOMIZE = {
    "no-api": "import sys\nsys.modules['opentelemetry'] = None\n",
    "api-no-sdk": "",
    "sdk": (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
    ),
}
"""What each broker mode's ``sitecustomize`` does before the broker starts."""

BROKER_FIGURES = ("append_us", "deliver_us", "consume_us")


def broker_side(tmp: Path, count: int, rounds: int) -> None:
    """The broker's tracing cost: one broker per mode, an ``sdk`` client against each."""
    brokers = {}
    try:
        for mode in MODES:
            site = tmp / f"site-{mode}"
            site.mkdir()
            (site / "sitecustomize.py").write_text(_SITECUSTOMIZE[mode])
            env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
            brokers[mode] = start_broker(tmp / f"data-{mode}", env=env)
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for i in range(rounds):
            for mode in MODES[i % 3 :] + MODES[: i % 3]:
                broker = brokers[mode]
                argv = [broker.url, broker.ca_file, f"s{i}", f"q{i}", str(count)]
                out = subprocess.run(
                    [sys.executable, "-c", _BROKER_CHILD, *argv],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode:
                    raise SystemExit(f"the {mode} round failed:\n{out.stderr}")
                results[mode].append(json.loads(out.stdout))
    finally:
        for broker in brokers.values():
            broker.stop()
    base = {k: statistics.median(r[k] for r in results["no-api"]) for k in BROKER_FIGURES}
    print("\nbroker side (the client traces in every mode):")
    print(f"{'broker':<12}" + "".join(f" {k:>11} {'ratio':>6}" for k in BROKER_FIGURES))
    for mode in MODES:
        row = f"{mode:<12}"
        for k in BROKER_FIGURES:
            value = statistics.median(r[k] for r in results[mode])
            row += f" {value:>11.1f} {value / base[k]:>6.3f}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-broker", action="store_true", help="skip the broker's side")
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
    if not args.no_broker:
        with tempfile.TemporaryDirectory() as tmp:
            broker_side(Path(tmp), args.count, args.rounds)


if __name__ == "__main__":
    main()
