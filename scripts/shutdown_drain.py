"""Measure what a SIGTERM does to acked records a lagging subscriber has not received yet.

Starts a broker subprocess (``felix broker``, QUIC and metrics on free ports), subscribes
from the start of a stream with a *lagging* subscriber (it returns credit for at most
``--rate`` records per second, so the broker holds a backlog for it), publishes
``--records`` records with acks, sends SIGTERM as soon as the last ack is in, and counts
how many of the acked records the subscriber received, in order, before its subscription
ended or its connection closed. It also reports how the subscription ended, how long the
broker took to exit, its exit code and the broker's own account of what it could not
deliver (its ``undelivered`` log lines).

The subscriber and publisher are raw ``felix_proto`` clients over aioquic (the harness of
``tests/runtime``), so what is measured is the broker, not a client library.

    .venv/bin/python scripts/shutdown_drain.py --runtime asyncio --records 30000
    .venv/bin/python scripts/shutdown_drain.py --grace 0.5 --rate 2000   # cannot catch up
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from brokers import RUNTIMES, Broker, start_broker  # noqa: E402
from runtime.harness import N, RawClient, T, create, payloads  # noqa: E402

from felix_proto import events as fe  # noqa: E402
from felix_proto import messages as m  # noqa: E402

BATCH = 100
"""Records per publish request."""


async def lagging_credit(sub: RawClient, sub_id: int, rate: float, tick: float = 0.01) -> None:
    """Return credit for what was received, at most ``rate`` records per second."""
    returned = 0
    allowance = 0.0
    while not sub.terminated:
        await asyncio.sleep(tick)
        allowance = min(allowance + rate * tick, rate)  # at most one second's worth banked
        grant = min(len(payloads(sub, sub_id)) - returned, int(allowance))
        if grant <= 0 or sub.of(fe.SubscriptionEnded):
            continue
        allowance -= grant
        returned += grant
        sub.felix.credit(sub_id, grant, grant * 1024)
        sub.transmit()


async def measure(broker: Broker, records: int, rate: float, credit: int) -> dict[str, Any]:
    """Run the scenario against a started broker; stops it. Returns the figures."""
    pub = RawClient(broker.ca_file)
    sub = RawClient(broker.ca_file, auto_credit=None)  # credit only as it "processes"
    await pub.connect(broker.address)
    await sub.connect(broker.address)
    await create(pub, "stream", "drain", retention_max_records=max(records, 1))
    rid = sub.call(
        sub.felix.subscribe,
        T,
        N,
        "drain",
        start=m.StartKind.EARLIEST,
        credit_messages=credit,
        credit_bytes=credit * 1024,
    )
    started = await sub.reply(rid)
    assert isinstance(started, fe.SubscriptionStarted), started
    sub_id = started.subscription_id
    lag = asyncio.create_task(lagging_credit(sub, sub_id, rate))
    acked = 0
    window = []
    for base in range(0, records, BATCH):
        batch = [b"%09d" % i + b"." * 91 for i in range(base, min(base + BATCH, records))]
        window.append((pub.call(pub.felix.publish_batch, T, N, "drain", batch), len(batch)))
        if len(window) >= 16:  # a few requests in flight
            rid, count = window.pop(0)
            reply = await pub.reply(rid, timeout=30)
            assert isinstance(reply, fe.PublishAcked), reply
            acked += count
    for rid, count in window:
        reply = await pub.reply(rid, timeout=30)
        assert isinstance(reply, fe.PublishAcked), reply
        acked += count
    behind = acked - len(payloads(sub, sub_id))
    term_at = time.monotonic()
    broker.process.terminate()  # SIGTERM
    try:
        await sub.until(lambda: sub.terminated or bool(sub.of(fe.SubscriptionEnded)), 60)
    finally:
        lag.cancel()
    end_after = time.monotonic() - term_at
    ended = sub.of(fe.SubscriptionEnded)
    got = payloads(sub, sub_id)
    in_order = got == [b"%09d" % i + b"." * 91 for i in range(len(got))]
    await asyncio.to_thread(broker.process.wait, 60)
    exited = time.monotonic() - term_at
    pub.close()
    sub.close()
    await asyncio.sleep(0.2)  # the log reader thread catches up
    undelivered = [
        {k: v for k, v in line.items() if k not in ("ts", "level", "logger")}
        for line in broker.lines
        if "undelivered" in str(line.get("msg"))
    ]
    return {
        "runtime": broker.runtime,
        "acked": acked,
        "behind_at_sigterm": behind,
        "delivered": len(got),
        "delivered_in_order": in_order,
        "never_delivered": acked - len(got),
        "end": ended[0].reason if ended else "connection closed",
        "end_after_s": round(end_after, 2),
        "broker_exit_s": round(exited, 2),
        "broker_exit_code": broker.process.returncode,
        "broker_undelivered_log": undelivered,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="asyncio")
    parser.add_argument("--records", type=int, default=30_000, help="records published")
    parser.add_argument("--rate", type=float, default=10_000, help="subscriber records/s")
    parser.add_argument("--credit", type=int, default=200, help="initial credit (records)")
    parser.add_argument("--grace", type=float, default=5.0, help="shutdown_grace_s")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    flags = ["--shutdown-grace-s", str(args.grace), "--shutdown-drain-s", str(args.grace + 5)]
    with tempfile.TemporaryDirectory(prefix="felix-drain-") as tmp:
        broker = start_broker(args.runtime, Path(tmp), *flags)
        try:
            report = asyncio.run(measure(broker, args.records, args.rate, args.credit))
        finally:
            broker.terminate()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if report["never_delivered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
