"""One tenant flooding, another's publish-to-deliver latency: with and without a quota.

One broker subprocess (asyncio runtime). Tenant ``b`` (the victim) publishes one 100-byte
record every ``--interval`` ms to its stream and reads it back on its own subscription;
each record carries its send time, so the latency is publish call -> delivery, one clock.
A flooder subprocess of tenant ``a`` publishes batches of 64 x 100-byte records as fast as
the broker takes them, with ``--flooders`` concurrent publishers. Three conditions,
alternated each round (ABCABC...) on the same broker:

* ``idle``: no flood;
* ``flood``: the flood, tenant ``a`` unlimited (the default);
* ``flood+quota``: the flood with tenant ``a``'s setting ``publish_messages_per_s`` at
  ``--quota`` (its refused publishes retry after ``retry_after_ms``).

Prints, per condition, the median over rounds of the victim's p50 and p99 (ms) and the
flooder's accepted records/s, and the ratios of p99 to ``idle``.

Usage: ``python benchmarks/tenant_flood.py [--rounds N] [--seconds S] [--quota R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import broker

from felix_client import Client, Overloaded

ROOT = Path(__file__).resolve().parents[1]
PAD = b"x" * 92


async def flood(url: str, ca: str, seconds: float, flooders: int) -> None:
    """Publish tenant ``a``'s batches for ``seconds``; print the records accepted."""
    accepted = 0
    batch = [PAD + b"flooding"] * 64

    async def one(c: Client, deadline: float) -> None:
        nonlocal accepted
        while time.monotonic() < deadline:
            try:
                await c.publish_batch("s", batch)
                accepted += len(batch)
            except Overloaded as exc:
                await asyncio.sleep(exc.details.get("retry_after_ms", 10) / 1000)

    async with Client(url, tenant="a", namespace="ns", ca_file=ca) as c:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(c, deadline) for _ in range(flooders)))
    print(accepted / seconds, flush=True)


async def victim(c: Client, seconds: float, interval: float) -> list[float]:
    """Publish and read back tenant ``b``'s records; their latencies in ms."""
    latencies: list[float] = []
    async with c.subscribe("s") as sub:

        async def read() -> None:
            async for event in sub:
                sent = struct.unpack(">d", event.payload[:8])[0]
                latencies.append((time.perf_counter() - sent) * 1000)

        reader = asyncio.ensure_future(read())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await c.publish("s", struct.pack(">d", time.perf_counter()) + PAD)
            await asyncio.sleep(interval)
        await asyncio.sleep(0.5)
        reader.cancel()
    return latencies


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "broker"
        data.mkdir()
        with broker("asyncio", data, None) as (url, _pid):
            ca = str(data / "cert.pem")
            async with Client(url, ca_file=ca) as ops:
                for t in ("a", "b"):
                    await ops.admin.create("tenant", t)
                    await ops.admin.create("namespace", "ns", tenant=t)
                    await ops.admin.create("stream", "s", tenant=t, namespace="ns")
                results: dict[str, list[tuple[float, float, float]]] = {}
                async with Client(url, tenant="b", namespace="ns", ca_file=ca) as vb:
                    for r in range(args.rounds):
                        for cond in ("idle", "flood", "flood+quota"):
                            quota = args.quota if cond == "flood+quota" else None
                            await ops.admin.update("tenant", "a", {"publish_messages_per_s": quota})
                            proc = None
                            if cond != "idle":
                                env = dict(os.environ, PYTHONPATH=str(ROOT))
                                proc = subprocess.Popen(
                                    [
                                        sys.executable,
                                        __file__,
                                        "--flood",
                                        url,
                                        ca,
                                        str(args.seconds + 1),
                                        str(args.flooders),
                                    ],
                                    stdout=subprocess.PIPE,
                                    text=True,
                                    env=env,
                                )
                                await asyncio.sleep(0.5)  # the flood is on
                            lat = await victim(vb, args.seconds, args.interval / 1000)
                            rate = 0.0
                            if proc is not None:
                                out, _ = proc.communicate(timeout=60)
                                rate = float(out.strip() or 0)
                            results.setdefault(cond, []).append((p(lat, 0.5), p(lat, 0.99), rate))
                            print(
                                f"round {r} {cond:12} p50 {p(lat, 0.5):7.2f} ms "
                                f"p99 {p(lat, 0.99):7.2f} ms  n={len(lat)}  "
                                f"flood {rate:9.0f} rec/s",
                                flush=True,
                            )
    print(f"load average {os.getloadavg()}")
    idle99 = statistics.median(x[1] for x in results["idle"])
    for cond, rows in results.items():
        p50 = statistics.median(x[0] for x in rows)
        p99 = statistics.median(x[1] for x in rows)
        rate = statistics.median(x[2] for x in rows)
        print(
            f"{cond:12} median p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
            f"p99/idle {p99 / idle99:5.2f}  flood {rate:9.0f} rec/s"
        )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--flood":
        url, ca, seconds, flooders = sys.argv[2:6]
        asyncio.run(flood(url, ca, float(seconds), int(flooders)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=5.0, help="ms between publishes")
    parser.add_argument("--quota", type=int, default=2000, help="a's records/s with quota")
    parser.add_argument("--flooders", type=int, default=8)
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
