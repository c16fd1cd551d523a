"""Measure what one connection with many subscriptions and a stopped peer costs the broker.

Starts a broker subprocess (``felix broker``, as ``scripts/soak.py`` does), then a
subscriber subprocess that opens ``--subscriptions`` subscriptions on one connection (credit
for a whole record each) and is then stopped with SIGSTOP: its process no longer reads,
acknowledges or grants credit, like a frozen client. A publisher then publishes
``--records`` records of ``--record-mib`` MiB each. The script samples the broker's RSS and
its ``felix_connection_buffered_bytes`` gauge for ``--seconds`` and prints the baseline, the
peak and the final figures, then kills the subscriber and stops the broker.

The per-connection bound (``transport.connection_buffer_limit``, 8 MiB; cap 16 MiB) must
hold whatever the number of subscriptions, so the RSS growth should be about one record (the
log) plus the connection's bound, not ``subscriptions x record``.

    .venv/bin/python scripts/fanout_memory.py --subscriptions 100 --record-mib 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from soak import BrokerProcess  # noqa: E402

import felix_client  # noqa: E402

STREAM = "fanout-memory"


async def _subscriber(url: str, ca_file: str, count: int, credit: int) -> None:
    async with felix_client.connect(url, ca_file=ca_file, timeout=10.0) as client:
        subs = [
            client.subscribe(STREAM, credit_messages=16, credit_bytes=credit) for _ in range(count)
        ]
        for sub in subs:
            await sub.open()
        print("ready", flush=True)
        await asyncio.sleep(3600)


async def _publish(url: str, ca_file: str, records: int, size: int, create: bool) -> None:
    async with felix_client.connect(url, ca_file=ca_file, timeout=30.0) as client:
        if create:
            settings = {"retention_max_bytes": (records + 1) * size + (1 << 20)}
            await client.admin.create("stream", STREAM, settings)
            return
        for i in range(records):
            await client.publish(STREAM, bytes([i % 256]) * size)


def _sample(broker: BrokerProcess) -> tuple[int, float]:
    rss = 0
    for line in Path(f"/proc/{broker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, broker.metrics().get("felix_connection_buffered_bytes", -1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--record-mib", type=float, default=4.0)
    parser.add_argument("--records", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to sample")
    parser.add_argument("--runtime", choices=["asyncio", "anyio"], default="asyncio")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--subscriber", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscriber:  # the child: url, ca file, count, credit
        url, ca_file, count, credit = args.subscriber
        asyncio.run(_subscriber(url, ca_file, int(count), int(credit)))
        return 0

    size = int(args.record_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="felix-fanout-") as tmp:
        broker = BrokerProcess(args.runtime, Path(tmp))
        child = None
        try:
            asyncio.run(_publish(broker.url, broker.ca_file, 0, size, create=True))
            cmd = [
                sys.executable,
                __file__,
                "--subscriber",
                broker.url,
                broker.ca_file,
                str(args.subscriptions),
                str(size + 4096),
            ]
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the subscriber did not start")
            time.sleep(0.5)
            before = _sample(broker)
            os.kill(child.pid, signal.SIGSTOP)  # from now on it reads nothing, acks nothing
            asyncio.run(_publish(broker.url, broker.ca_file, args.records, size, create=False))
            peak_rss, peak_buffered = before
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                rss, buffered = _sample(broker)
                peak_rss, peak_buffered = max(peak_rss, rss), max(peak_buffered, buffered)
                time.sleep(0.1)
            after = _sample(broker)
        finally:
            if child is not None:
                child.kill()
                child.wait()
            code = broker.stop()
    report = {
        "subscriptions": args.subscriptions,
        "records": args.records,
        "record_mib": args.record_mib,
        "rss_before_mib": round(before[0] / 2**20, 1),
        "rss_peak_mib": round(peak_rss / 2**20, 1),
        "rss_after_mib": round(after[0] / 2**20, 1),
        "buffered_peak_mib": round(peak_buffered / 2**20, 1),
        "buffered_after_mib": round(after[1] / 2**20, 1),
        "broker_exit_code": code,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
