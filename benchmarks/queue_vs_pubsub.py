"""Queue consumption next to pub/sub, in one run: the ratio issue 12 asks for.

Runs ``felix bench``'s ``pubsub-throughput`` (100-byte records, batches of 64, one
subscriber) and then its ``queue`` scenario (100-byte messages, one consumer running the
natural loop ``async for msg in consumer: await msg.ack()``) against one broker, in one run,
and prints the table and ``queue / pubsub``: acked queue messages per second over records
delivered per second to one subscriber.

``--rounds N`` runs N rounds, each with its own broker, and prints each round and the
medians (the ratio, and the queue's CPU per acked message). ``--consumers`` sets the queue
figure's consumer count (default 1), ``--quic-engine`` the engine of broker and clients.

``--ab N`` runs N pairs of rounds alternating (ABAB) the consumer without and with the
``delivery-batch`` capability (A: one ``Delivery`` frame per message, B: the deliveries of
a dispatch in one ``DeliveryBatch``), each round with its own broker, and prints each
round and the medians.

Usage::

    .venv/bin/python benchmarks/queue_vs_pubsub.py [--seconds 2] [--runtime asyncio]
        [--quic-engine aioquic] [--consumers 1] [--rounds 3 | --ab 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import felix_client.client
from felix_client.bench import command, pubsub, queues
from felix_proto.connection import DELIVERY_BATCH

SINGLE = "FELIX_BENCH_SINGLE_DELIVERIES"
"""Set (round A of ``--ab``): the clients do not offer ``delivery-batch``. The bench's
worker processes are spawned and run this module's top level as ``__mp_main__``, so they
see it too (the broker's process does not need it)."""
if os.environ.get(SINGLE):
    felix_client.client.CAPABILITIES = tuple(
        c for c in felix_client.client.CAPABILITIES if c != DELIVERY_BATCH
    )


def main() -> int:
    """Run both scenarios against one broker; print the table and the ratio (or, with
    ``--ab``, alternate rounds without and with ``delivery-batch``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="2")
    parser.add_argument("--runtime", default="asyncio")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--quic-engine", default="aioquic")
    parser.add_argument("--consumers", default="1")
    parser.add_argument("--ab", type=int, default=0, metavar="PAIRS")
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    command.plan = lambda scenario: [pubsub.run_throughput, queues.run]  # type: ignore[assignment]
    if args.rounds:
        return repeated(args)
    if not args.ab:
        return one_round(args, quiet=False)[0]
    rounds: dict[str, list[tuple[float, float, float, float]]] = {"A single": [], "B batch": []}
    for i in range(2 * args.ab):
        name = "A single" if i % 2 == 0 else "B batch"
        if i % 2 == 0:
            os.environ[SINGLE] = "1"
        else:
            os.environ.pop(SINGLE, None)
        code, q_rate, s_rate, cpu = one_round(args, quiet=True)
        if code:
            return code
        rounds[name].append((q_rate, s_rate, cpu["client_cpu_us"], cpu["broker_cpu_us"]))
        print(
            f"round {i + 1} {name}: queue {q_rate:,.0f} msg/s, pub/sub {s_rate:,.0f} msg/s, "
            f"ratio {q_rate / s_rate:.2f}; queue CPU us per message: client "
            f"{cpu['client_cpu_us']:.1f}, broker {cpu['broker_cpu_us']:.1f}",
            flush=True,
        )
    os.environ.pop(SINGLE, None)
    for name, got in rounds.items():
        q = statistics.median(r[0] for r in got)
        ratio = statistics.median(r[0] / r[1] for r in got)
        client = statistics.median(r[2] for r in got)
        broker = statistics.median(r[3] for r in got)
        print(
            f"{name}: median queue {q:,.0f} msg/s, median queue / pubsub {ratio:.2f}, "
            f"median CPU us per message: client {client:.1f}, broker {broker:.1f}"
        )
    q_a = statistics.median(r[0] for r in rounds["A single"])
    q_b = statistics.median(r[0] for r in rounds["B batch"])
    print(f"queue rate B / A = {q_b / q_a:.2f}; load average {os.getloadavg()[0]:.2f}")
    return 0


def repeated(args: argparse.Namespace) -> int:
    """``--rounds``: each round's figures, then the medians."""
    got: list[tuple[float, float, float, float]] = []
    for i in range(args.rounds):
        code, q_rate, s_rate, cpu = one_round(args, quiet=True)
        if code:
            return code
        got.append((q_rate, s_rate, cpu["client_cpu_us"], cpu["broker_cpu_us"]))
        print(
            f"round {i + 1}: queue {q_rate:,.0f} msg/s, pub/sub {s_rate:,.0f} msg/s, ratio "
            f"{q_rate / s_rate:.2f}; queue CPU us per message: client "
            f"{cpu['client_cpu_us']:.1f}, broker {cpu['broker_cpu_us']:.1f}; load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
    print(
        f"{args.quic_engine}, {args.runtime}, {args.consumers} consumer(s): median queue "
        f"{statistics.median(r[0] for r in got):,.0f} msg/s, pub/sub "
        f"{statistics.median(r[1] for r in got):,.0f} msg/s, queue / pubsub "
        f"{statistics.median(r[0] / r[1] for r in got):.2f}; median queue CPU us per message: "
        f"client {statistics.median(r[2] for r in got):.1f}, broker "
        f"{statistics.median(r[3] for r in got):.1f}"
    )
    return 0


def one_round(
    args: argparse.Namespace, *, quiet: bool
) -> tuple[int, float, float, dict[str, float]]:
    """One broker, both figures: (exit code, queue msg/s, pub/sub msg/s, the queue's CPU
    per message)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        argv = [
            "pubsub-throughput",
            "--payload=100",
            "--batch=64",
            "--fanout=1",
            f"--consumers={args.consumers}",
            f"--quic-engine={args.quic_engine}",
            f"--seconds={args.seconds}",
            f"--runtime={args.runtime}",
            f"--loop={args.loop}",
            "--quiet",
            f"--json-file={out}",
        ]
        if quiet:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                code = command.main(argv)
        else:
            code = command.main(argv)
        figures = {f["id"]: f for f in json.loads(out.read_text())["figures"]}
    queue = next(f for i, f in figures.items() if i.startswith("queue/"))
    sub = next(f for i, f in figures.items() if i.startswith("pubsub-throughput/"))
    q_rate, s_rate = queue["metrics"]["msg_per_s"], sub["metrics"]["msg_per_s"]
    if not quiet:
        print(
            f"\nqueue enqueue->consume->ack, 1 consumer: {q_rate:,.0f} msg/s; pub/sub to one "
            f"subscriber: {s_rate:,.0f} msg/s; queue / pubsub = {q_rate / s_rate:.2f}"
        )
        for name, fig in (("queue", queue), ("pub/sub", sub)):
            cpu = {k: v for k, v in fig["metrics"].items() if k.endswith("_cpu_us")}
            print(
                f"{name} CPU us per message: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
            )
    cpu = {k: v for k, v in queue["metrics"].items() if k.endswith("_cpu_us")}
    return code, q_rate, s_rate, cpu


if __name__ == "__main__":
    sys.exit(main())
