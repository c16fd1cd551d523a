"""Queue consumption next to pub/sub, in one run: the ratio issue 12 asks for.

Runs ``felix bench``'s ``pubsub-throughput`` (100-byte records, batches of 64, one
subscriber) and then its ``queue`` scenario (100-byte messages, one consumer running the
natural loop ``async for msg in consumer: await msg.ack()``) against one broker, in one run,
and prints the table and ``queue / pubsub``: acked queue messages per second over records
delivered per second to one subscriber.

Usage::

    .venv/bin/python benchmarks/queue_vs_pubsub.py [--seconds 2] [--runtime asyncio]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from felix_client.bench import command, pubsub, queues


def main() -> int:
    """Run both scenarios against one broker; print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="2")
    parser.add_argument("--runtime", default="asyncio")
    parser.add_argument("--loop", default="asyncio")
    args = parser.parse_args()
    command.plan = lambda scenario: [pubsub.run_throughput, queues.run]  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        code = command.main(
            [
                "pubsub-throughput",
                "--payload=100",
                "--batch=64",
                "--fanout=1",
                "--consumers=1",
                f"--seconds={args.seconds}",
                f"--runtime={args.runtime}",
                f"--loop={args.loop}",
                "--quiet",
                f"--json-file={out}",
            ]
        )
        figures = {f["id"]: f for f in json.loads(out.read_text())["figures"]}
    queue = next(f for i, f in figures.items() if i.startswith("queue/"))
    sub = next(f for i, f in figures.items() if i.startswith("pubsub-throughput/"))
    q_rate, s_rate = queue["metrics"]["msg_per_s"], sub["metrics"]["msg_per_s"]
    print(
        f"\nqueue enqueue->consume->ack, 1 consumer: {q_rate:,.0f} msg/s; pub/sub to one "
        f"subscriber: {s_rate:,.0f} msg/s; queue / pubsub = {q_rate / s_rate:.2f}"
    )
    for name, fig in (("queue", queue), ("pub/sub", sub)):
        cpu = {k: v for k, v in fig["metrics"].items() if k.endswith("_cpu_us")}
        print(f"{name} CPU us per message: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    return code


if __name__ == "__main__":
    sys.exit(main())
