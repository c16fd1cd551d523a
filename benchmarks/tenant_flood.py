"""One tenant flooding, another's publish-to-deliver latency: with and without a quota.

A broker subprocess (asyncio runtime) per checkout compared: this one, and with
``--against DIR`` another (a ``git archive`` or worktree of, say, the integration branch),
so before and after are measured in one run. Tenant ``b`` (the victim) publishes one
100-byte record every ``--interval`` ms to its stream and reads it back on its own
subscription; each record carries its send time, so the latency is publish call ->
delivery, one clock. A flooder subprocess of tenant ``a`` publishes batches of 64 x 100-byte
records as fast as the broker takes them, with ``--flooders`` concurrent publishers, at
``nice`` ``--flooder-nice`` (default 10: on a 2-core machine the flooder's own CPU would
otherwise compete with the broker and the victim, which measures the OS scheduler rather
than the broker). Three conditions, alternated each round (ABCABC..., and broker after
broker within each condition) on the same brokers:

* ``idle``: no flood;
* ``flood``: the flood, tenant ``a`` unlimited (the default);
* ``flood+quota``: the flood with tenant ``a``'s setting ``publish_messages_per_s`` at
  ``--quota`` (a publish refused ``OVERLOADED`` is retried after ``retry_after_ms``; a
  broker that throttles instead only delays it).

Prints each round, then per broker and condition the median over rounds of the victim's
p50 and p99 (ms), the flooder's accepted records/s and refusals, the broker's CPU use (% of
one core, from ``/proc``) while the victim runs, the ratios of p99 to ``idle``, and the load
average before and after.

Usage: ``python benchmarks/tenant_flood.py [--rounds N] [--seconds S] [--quota R]
[--against DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    """Publish tenant ``a``'s batches for ``seconds``; print the records accepted and the
    refusals."""
    accepted = refused = 0
    batch = [PAD + b"flooding"] * 64

    async def one(c: Client, deadline: float) -> None:
        nonlocal accepted, refused
        while time.monotonic() < deadline:
            try:
                await c.publish_batch("s", batch)
                accepted += len(batch)
            except Overloaded as exc:
                refused += 1
                await asyncio.sleep(exc.details.get("retry_after_ms", 10) / 1000)

    async with Client(url, tenant="a", namespace="ns", ca_file=ca) as c:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(c, deadline) for _ in range(flooders)))
    print(accepted / seconds, refused, flush=True)


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


CONDITIONS = ("idle", "flood", "flood+quota")


async def setup(url: str, ca: str) -> None:
    async with Client(url, ca_file=ca) as ops:
        for t in ("a", "b"):
            await ops.admin.create("tenant", t)
            await ops.admin.create("namespace", "ns", tenant=t)
            await ops.admin.create("stream", "s", tenant=t, namespace="ns")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Row = tuple[float, float, float, int, float]


async def condition(
    args: argparse.Namespace, url: str, ca: str, vb: Client, cond: str, pid: int
) -> Row:
    """One condition on one broker: (victim p50, p99, flood records/s, flood refusals,
    broker CPU %)."""
    quota = args.quota if cond == "flood+quota" else None
    async with Client(url, ca_file=ca) as ops:
        await ops.admin.update("tenant", "a", {"publish_messages_per_s": quota})
    proc = None
    if cond != "idle":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, __file__, "--flood", url, ca, str(args.seconds + 1)]
        proc = subprocess.Popen(
            [*cmd, str(args.flooders), str(args.flooder_nice)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        await asyncio.sleep(0.5)  # the flood is on
    cpu, start = cpu_seconds(pid), time.monotonic()
    lat = await victim(vb, args.seconds, args.interval / 1000)
    busy = (cpu_seconds(pid) - cpu) / (time.monotonic() - start) * 100
    rate, refusals = 0.0, 0
    if proc is not None:
        out, _ = proc.communicate(timeout=60)
        fields = out.split()
        rate, refusals = float(fields[0]), int(fields[1])
    return p(lat, 0.5), p(lat, 0.99), rate, refusals, busy


async def run(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    checkouts = [("this", ROOT)]
    if args.against:
        checkouts.append(("against", Path(args.against).resolve()))
    results: dict[tuple[str, str], list[Row]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            brokers: list[tuple[str, str, str, Client, int]] = []
            for label, root in checkouts:
                data = Path(tmp) / label
                data.mkdir()
                url, pid = stack.enter_context(broker("asyncio", data, None, root))
                ca = str(data / "cert.pem")
                await setup(url, ca)
                vb = Client(url, tenant="b", namespace="ns", ca_file=ca)
                brokers.append((label, url, ca, await stack.enter_async_context(vb), pid))
            for r in range(args.rounds):
                for cond in CONDITIONS:
                    order = brokers if r % 2 == 0 else brokers[::-1]  # ABBA across rounds
                    for label, url, ca, vb, pid in order:
                        row = await condition(args, url, ca, vb, cond, pid)
                        results.setdefault((label, cond), []).append(row)
                        print(
                            f"round {r} {label:8} {cond:12} p50 {row[0]:7.2f} ms "
                            f"p99 {row[1]:7.2f} ms  flood {row[2]:9.0f} rec/s "
                            f"refused {row[3]:4}  broker CPU {row[4]:3.0f} %",
                            flush=True,
                        )
    print(f"load average before {load_before} after {os.getloadavg()}")
    for label, root in checkouts:
        print(f"{label}: {root}")
        idle99 = statistics.median(x[1] for x in results[(label, "idle")])
        for cond in CONDITIONS:
            rows = results[(label, cond)]
            p50 = statistics.median(x[0] for x in rows)
            p99 = statistics.median(x[1] for x in rows)
            rate = statistics.median(x[2] for x in rows)
            refusals = statistics.median(x[3] for x in rows)
            busy = statistics.median(x[4] for x in rows)
            print(
                f"  {cond:12} median p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                f"p99/idle {p99 / idle99:5.2f}  flood {rate:9.0f} rec/s  refused {refusals:g}  "
                f"broker CPU {busy:3.0f} %"
            )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--flood":
        url, ca, seconds, flooders, nice = sys.argv[2:7]
        os.nice(int(nice))
        asyncio.run(flood(url, ca, float(seconds), int(flooders)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=5.0, help="ms between publishes")
    parser.add_argument("--quota", type=int, default=2000, help="a's records/s with quota")
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--flooder-nice", type=int, default=10, help="the flooder's nice")
    parser.add_argument("--against", help="another checkout's root to compare with")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
