"""Soak a broker: bounded loops of churn and slow or vanishing clients, then check that
nothing is left.

Starts a broker subprocess (``felix broker``) on 127.0.0.1 with QUIC and metrics on free
ports and runs, for ``--seconds``, concurrent loops of:

* connection churn: connect, publish, read the cache, leave;
* a publisher flooding two small streams (``retention_max_records`` 100), one per
  slow-consumer policy, ``drop_oldest`` and ``disconnect``;
* slow subscribers on both (small credit, a sleep per record): they see gaps, or end
  ``lagged``, and subscribe again;
* an enqueuer and queue consumers that vanish mid-delivery (take a few deliveries, ack one,
  close the connection with the rest unsettled; the broker redelivers them), plus one
  consumer that acks so the queue drains;
* cache traffic: put with a TTL, get, compare-and-set, delete over a small key space.

Then every client is gone and the script polls ``/metrics`` until the gauges
``felix_connections``, ``felix_connections_paused``, ``felix_subscriptions``,
``felix_queue_consumers`` and ``felix_queue_in_flight`` are 0, checks that the broker's
peak RSS (sampled from ``/proc``) stayed under ``--max-rss-mib``, that no loop met an
unexpected error and that the broker counted no internal error, stops the broker with
SIGTERM (exit code 0 expected) and exits non-zero if any check failed.

    .venv/bin/python scripts/soak.py --seconds 30 --runtime asyncio
    .venv/bin/python scripts/soak.py --seconds 3 --runtime anyio --json   # what CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import felix_client  # noqa: E402
from felix_client import FelixError  # noqa: E402

RUNTIMES = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio": ["--runtime", "anyio", "--backend", "asyncio"],
}
GAUGES = (
    "felix_connections",
    "felix_connections_paused",
    "felix_subscriptions",
    "felix_queue_consumers",
    "felix_queue_in_flight",
)
ENTRY = "import sys; from felix_client.cli import broker_main; sys.exit(broker_main(sys.argv[1:]))"
START_TIMEOUT = 15.0
SETTLE_TIMEOUT = 15.0
LINGER = 2.0
"""Seconds past the end a loop body may still run before it is cancelled."""


class BrokerProcess:
    """A broker subprocess, its addresses and its peak RSS."""

    def __init__(self, runtime: str, data_dir: Path) -> None:
        cmd = [
            sys.executable, "-c", ENTRY, *RUNTIMES[runtime],
            "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data-dir", str(data_dir),
            "--log-format", "json", "--shutdown-grace-s", "0.5", "--shutdown-drain-s", "3",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        self.proc = subprocess.Popen(
            cmd, cwd=str(data_dir), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ca_file = str(data_dir / "cert.pem")
        self.url = ""
        self.metrics_url = ""
        self.peak_rss = 0
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                if line.get("msg") == "felix broker listening":
                    self.url = f"quic://{line['quic']}"
                    host = str(line["metrics"]).removeprefix("http://").split("/")[0]
                    self.metrics_url = f"http://{host}/metrics"
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the broker did not start: {self.lines[-10:]}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))

    def sample_rss(self) -> int:
        """Read the broker's resident set size (bytes) and keep the peak."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
        return self.peak_rss

    def metrics(self) -> dict[str, float]:
        """Every unlabelled sample of ``/metrics`` (labelled ones summed by name)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if match:
                name = match.group(1)
                out[name] = out.get(name, 0.0) + float(match.group(3))
        return out

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after 10 s), return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


class Soak:
    """The loops; each counts what it did in :attr:`counts` and unexpected errors in
    :attr:`failures`."""

    def __init__(self, broker: BrokerProcess, seconds: float) -> None:
        self.broker = broker
        self.until = time.monotonic() + seconds
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    def running(self) -> bool:
        return time.monotonic() < self.until

    def connect(self) -> felix_client.Client:
        return felix_client.connect(self.broker.url, ca_file=self.broker.ca_file, timeout=5.0)

    async def loop(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` until the time is up; a FelixError is counted, anything else fails.

        Every run of ``body`` is bounded too: one that started just before the time was up
        may wait for traffic that has stopped (a subscriber at the log's end, a consumer of
        an empty queue), so it is cancelled :data:`LINGER` seconds after the end.
        """
        while self.running():
            try:
                # asyncio's loop clock is time.monotonic(), the clock of self.until
                async with asyncio.timeout_at(self.until + LINGER):
                    await body()
            except TimeoutError:
                self.counts[f"{name}.cancelled_at_end"] += 1
            except FelixError as exc:
                self.counts[f"{name}.{type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
            except Exception as exc:  # the soak reports it
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)

    async def setup(self) -> None:
        async with self.connect() as client:
            admin = client.admin
            for policy in ("drop_oldest", "disconnect"):
                await admin.create(
                    "stream", f"soak-{policy}",
                    {"retention_max_records": 100, "slow_consumer": policy},
                )  # fmt: skip
            await admin.create("stream", "soak-churn", {"retention_max_records": 1000})
            await admin.create("queue", "soak-q", {"max_records": 2000})
            await admin.create("cache", "soak-c", {"max_entries": 1000})

    async def churn(self) -> None:
        async with self.connect() as client:
            await client.publish("soak-churn", b"hello")
            await client.cache("soak-c").get("k1")
        self.counts["churn.connections"] += 1

    async def publisher(self) -> None:
        async with self.connect() as client:
            while self.running():
                for policy in ("drop_oldest", "disconnect"):
                    await client.publish_batch(f"soak-{policy}", [b"x" * 100] * 20)
                self.counts["publish.batches"] += 2
                await asyncio.sleep(0.002)

    async def slow_subscriber(self, policy: str) -> None:
        async with (
            self.connect() as client,
            client.subscribe(f"soak-{policy}", credit_messages=4) as sub,
        ):
            async for _ in sub:
                self.counts[f"slow.{policy}.records"] += 1
                await asyncio.sleep(0.005)
                if not self.running():
                    break
            self.counts[f"slow.{policy}.missed"] += sub.missed

    async def enqueuer(self) -> None:
        async with self.connect() as client:
            while self.running():
                try:
                    await client.enqueue("soak-q", [b"job"] * 10)
                    self.counts["queue.enqueued"] += 10
                except FelixError as exc:  # a full queue refuses: back off
                    self.counts[f"queue.enqueue.{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.002)

    async def vanishing_consumer(self) -> None:
        async with self.connect() as client, client.consume("soak-q", prefetch=8) as consumer:
            taken = 0
            async for msg in consumer:
                taken += 1
                if taken == 1:
                    await msg.ack()
                if taken >= 3:
                    break  # leave with deliveries unsettled
        self.counts["queue.vanished"] += 1

    async def acking_consumer(self) -> None:
        async with self.connect() as client, client.consume("soak-q", prefetch=32) as consumer:
            async for msg in consumer:
                await msg.ack()
                self.counts["queue.acked"] += 1
                if not self.running():
                    break

    async def cache_traffic(self) -> None:
        async with self.connect() as client:
            cache = client.cache("soak-c")
            i = 0
            while self.running():
                key = f"k{i % 200}"
                version = await cache.put(key, b"v" * 64, ttl=0.5)
                await cache.get(key)
                with contextlib.suppress(felix_client.Conflict):
                    await cache.compare_and_set(key, b"w", version=version)
                if i % 3 == 0:
                    await cache.delete(key)
                self.counts["cache.ops"] += 4
                i += 1

    async def sample(self) -> None:
        while self.running():
            self.broker.sample_rss()
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        await self.setup()
        loops = [
            self.loop("churn", self.churn),
            self.loop("churn2", self.churn),
            self.loop("publisher", self.publisher),
            self.loop("slow.drop_oldest", lambda: self.slow_subscriber("drop_oldest")),
            self.loop("slow.disconnect", lambda: self.slow_subscriber("disconnect")),
            self.loop("enqueuer", self.enqueuer),
            self.loop("vanishing", self.vanishing_consumer),
            self.loop("vanishing2", self.vanishing_consumer),
            self.loop("acking", self.acking_consumer),
            self.loop("cache", self.cache_traffic),
            self.sample(),
        ]
        await asyncio.gather(*loops)


def settle(broker: BrokerProcess) -> dict[str, float]:
    """Poll ``/metrics`` until every gauge of :data:`GAUGES` is 0 (bounded); the last read."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        figures = broker.metrics()
        if all(figures.get(g) == 0 for g in GAUGES) or time.monotonic() > deadline:
            return figures
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the loops run")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="asyncio")
    parser.add_argument("--max-rss-mib", type=float, default=512.0, help="RSS bound (MiB)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="felix-soak-") as tmp:
        broker = BrokerProcess(args.runtime, Path(tmp))
        started = time.monotonic()
        try:
            soak = Soak(broker, args.seconds)
            asyncio.run(soak.run())
            figures = settle(broker)
            broker.sample_rss()
        finally:
            code = broker.stop()
    gauges = {g: figures.get(g, -1.0) for g in GAUGES}  # -1: the broker did not export it
    internal = figures.get("felix_internal_errors_total", 0)
    problems = list(soak.failures)
    problems += [f"gauge {g} = {v:g} after the clients left" for g, v in gauges.items() if v]
    if internal:
        problems.append(f"the broker counted {internal:g} internal errors")
    if broker.peak_rss > args.max_rss_mib * 1024 * 1024:
        problems.append(f"peak RSS {broker.peak_rss / 2**20:.1f} MiB > {args.max_rss_mib} MiB")
    if code != 0:
        problems.append(f"the broker exited with {code}")
    report = {
        "runtime": args.runtime,
        "seconds": round(time.monotonic() - started, 1),
        "ok": not problems,
        "problems": problems,
        "gauges_after": gauges,
        "peak_rss_mib": round(broker.peak_rss / 2**20, 1),
        "broker_exit_code": code,
        "counts": dict(sorted(soak.counts.items())),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
