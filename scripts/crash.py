"""Crash a broker under publish load and check that what it acknowledged is there.

Each cycle starts a real broker subprocess (``felix broker``, the chosen runtime) on the
same data directory, has ``--publishers`` concurrent clients publish small batches to a
durable stream (``fsync`` policy from ``--fsync``) with ``ack=committed`` (and one more
with ``ack=accepted``), kills the broker with SIGKILL at a random instant, restarts it and
reads the whole stream from the earliest offset. Every batch whose *committed* ack arrived
before the kill must be there, at the offsets its ack named, with its content, in order:
anything else is a failure (exit 1). Batches acked ``accepted`` (in the page cache only)
are counted too: a SIGKILL keeps the page cache, so none should be lost either; what is
lost of them is reported, not failed (only a power loss may lose them, and
``fsync=none`` makes that window as long as the OS likes). Batches whose ack never came
may or may not be there, and are reported.

    .venv/bin/python scripts/crash.py --cycles 20 --runtime asyncio --json
    .venv/bin/python scripts/crash.py --cycles 5 --runtime anyio-trio --fsync none

``--json`` prints one object: per cycle and in total, the acked batches and records, what
was missing, the unacked records found anyway, and the broker's restart times.

``--mode queue`` crashes the broker under consume load instead: a durable queue (visibility
timeout 2 s) gets messages enqueued with ``ack=committed``, ``--publishers`` consumers take
them and ack each with mode ``committed`` (half one by one with ``ack_sync``, half in
batches with ``ack_many``), and the broker is SIGKILLed at a random instant. After each
restart one consumer drains the queue: no message whose committed ack arrived may come
back, and every message whose committed enqueue arrived and that was not acked must come
back (those in flight at the crash once their visibility deadline passed); acks sent but
not answered before the kill may go either way (reported as ``in_doubt``). The drain acks
what it gets (committed), so the next cycle starts from an empty queue.

    .venv/bin/python scripts/crash.py --mode queue --cycles 20 --runtime anyio-trio --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from felix_client import AckMode, Client, FelixError  # noqa: E402

RUNTIMES = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-asyncio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-trio": ["--runtime", "anyio", "--backend", "trio"],
}
ENTRY = "import sys; from felix_client.cli import broker_main; sys.exit(broker_main(sys.argv[1:]))"
START_TIMEOUT = 20.0
STREAM = "crash"
QUEUE = "crashq"
VISIBILITY_MS = 2000
"""The queue's visibility timeout: what was in flight at a kill comes back this long after."""
DRAIN_TIMEOUT_S = 30.0
"""How long a drain may wait for the messages that must come back."""


class Broker:
    """A broker subprocess on free ports."""

    def __init__(self, runtime: str, data_dir: Path) -> None:
        cmd = [
            *(sys.executable, "-c", ENTRY, *RUNTIMES[runtime]),
            *("--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"),
            *("--data-dir", str(data_dir), "--log-format", "json"),
            *("--shutdown-grace-s", "0.2", "--shutdown-drain-s", "2"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(data_dir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ca_file = str(data_dir / "cert.pem")
        self.url = ""
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                if line.get("msg") == "felix broker listening":
                    self.url = f"quic://{line['quic']}"
                    self.start_s = time.monotonic() - started
                    return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"the broker did not start: {self.lines[-10:]}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"msg": raw.decode(errors="replace").rstrip()})

    def field(self, msg: str, name: str) -> Any:
        """A field of the first log line with message ``msg`` (None: no such line)."""
        for line in self.lines:
            if line.get("msg") == msg:
                return line.get(name)
        return None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final sync."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code (SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@dataclass
class Acked:
    """A batch whose ack arrived: where it landed and what it held."""

    first_offset: int
    payloads: list[bytes]
    committed: bool


@dataclass
class Cycle:
    """One cycle's figures."""

    killed_after_s: float = 0.0
    committed_batches: int = 0
    committed_records: int = 0
    accepted_batches: int = 0
    accepted_records: int = 0
    committed_missing: int = 0
    accepted_missing: int = 0
    mismatched: int = 0
    unacked_found: int = 0
    records_after_restart: int = 0
    restart_s: float = 0.0
    recovery_s: float | None = None
    truncated_bytes: int = 0
    """Torn-tail bytes the restarted broker cut off (its log lines)."""
    errors: list[str] = field(default_factory=list)


async def _publisher(
    url: str,
    ca_file: str,
    tag: str,
    ack: AckMode,
    batch: int,
    out: list[Acked],
    stop: anyio.Event,
) -> None:
    """Publish until ``stop`` (or the broker dies), recording each acked batch."""
    seq = 0
    with contextlib.suppress(FelixError, OSError, anyio.BrokenResourceError):
        async with Client(url, ca_file=ca_file, timeout=3.0) as client:
            while not stop.is_set():
                payloads = [f"{tag}-{seq + i}".encode() for i in range(batch)]
                seq += batch
                result = await client.publish_batch(STREAM, payloads, ack=ack)
                assert result is not None
                out.append(Acked(result.first_offset, payloads, ack == AckMode.COMMITTED))


FLOWING_TIMEOUT_S = 15.0
"""How long a cycle waits for its first committed ack before the kill clock starts anyway."""


async def _load(
    broker: Broker, cycle: int, publishers: int, batch: int, kill_at: float
) -> tuple[list[Acked], float]:
    acked: list[Acked] = []
    stop = anyio.Event()
    killed_after = 0.0
    async with anyio.create_task_group() as tg:
        for p in range(publishers):
            tg.start_soon(
                _publisher,
                broker.url,
                broker.ca_file,
                f"c{cycle}-p{p}",
                AckMode.COMMITTED,
                batch,
                acked,
                stop,
            )
        tg.start_soon(
            _publisher,
            broker.url,
            broker.ca_file,
            f"c{cycle}-a",
            AckMode.ACCEPTED,
            batch,
            acked,
            stop,
        )
        # The kill instant is counted from the first committed ack, not from the start:
        # on a loaded machine the connections alone can take longer than kill_at.
        with anyio.move_on_after(FLOWING_TIMEOUT_S):
            while not any(a.committed for a in acked):
                await anyio.sleep(0.01)
        started = time.monotonic()
        await anyio.sleep(kill_at)
        # What was acked before the kill is what counts: copy, then kill.
        before = list(acked)
        broker.kill()
        killed_after = time.monotonic() - started
        stop.set()
        tg.cancel_scope.cancel()
    return before, killed_after


async def _read_all(broker: Broker) -> list[tuple[int, bytes]]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        described = await client.admin.describe("stream", STREAM)
        end = int(described["stats"]["next_offset"])
        records: list[tuple[int, bytes]] = []
        if end == 0:
            return records
        with anyio.fail_after(60):
            async with client.subscribe(
                STREAM, start="earliest", credit_messages=4096
            ) as subscription:
                async for event in subscription:
                    records.append((event.offset, event.payload))
                    if event.offset >= end - 1:
                        break
        return records


async def _ensure_stream(broker: Broker, fsync: str) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        with contextlib.suppress(FelixError):  # AlreadyExists after the first cycle
            await client.admin.create(
                "stream",
                STREAM,
                {
                    "durability": "durable",
                    "fsync": fsync,
                    "retention_max_bytes": 1 << 30,
                },
            )


def check(
    all_acked: list[Acked], new: list[Acked], records: list[tuple[int, bytes]], cycle: Cycle
) -> None:
    """Compare everything acked so far with what was read back; count this cycle's acks."""
    for batch in new:
        if batch.committed:
            cycle.committed_batches += 1
            cycle.committed_records += len(batch.payloads)
        else:
            cycle.accepted_batches += 1
            cycle.accepted_records += len(batch.payloads)
    offsets = [o for o, _ in records]
    if offsets and offsets != list(range(offsets[0], offsets[0] + len(offsets))):
        cycle.errors.append("offsets read back are not consecutive")
    by_offset = dict(records)
    acked_offsets: set[int] = set()
    for batch in all_acked:
        for i, payload in enumerate(batch.payloads):
            offset = batch.first_offset + i
            acked_offsets.add(offset)
            got = by_offset.get(offset)
            if got is None:
                if batch.committed:
                    cycle.committed_missing += 1
                else:
                    cycle.accepted_missing += 1
            elif got != payload:
                cycle.mismatched += 1
    cycle.records_after_restart = len(records)
    cycle.unacked_found = sum(1 for o in by_offset if o not in acked_offsets)
    if cycle.committed_missing:
        cycle.errors.append(f"{cycle.committed_missing} committed records missing")
    if cycle.mismatched:
        cycle.errors.append(f"{cycle.mismatched} records with other content at their offset")


def run_crash(
    runtime: str,
    cycles: int,
    *,
    data_dir: Path,
    fsync: str = "interval",
    publishers: int = 4,
    batch: int = 8,
    min_s: float = 0.2,
    max_s: float = 1.0,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run the cycles; return the report (``ok`` false on any failure)."""
    rng = random.Random(seed)
    all_acked: list[Acked] = []
    report: list[Cycle] = []
    broker = Broker(runtime, data_dir)
    anyio.run(_ensure_stream, broker, fsync)
    for n in range(cycles):
        cycle = Cycle()
        kill_at = rng.uniform(min_s, max_s)
        acked, cycle.killed_after_s = anyio.run(_load, broker, n, publishers, batch, kill_at)
        all_acked.extend(acked)
        started = time.monotonic()
        broker = Broker(runtime, data_dir)
        cycle.restart_s = round(time.monotonic() - started, 3)
        cycle.recovery_s = broker.field(
            "storage: resource definitions and durable logs", "recovery_s"
        )
        cycle.truncated_bytes = sum(
            int(line.get("bytes", 0))
            for line in broker.lines
            if line.get("msg") == "durable log: torn tail truncated"
        )
        try:
            records = anyio.run(_read_all, broker)
        except Exception as exc:  # reported, not raised: the cycle failed
            cycle.errors.append(f"reading back failed: {exc!r}")
            records = []
        check(all_acked, acked, records, cycle)
        report.append(cycle)
    code = broker.stop()
    totals = {
        "committed_acked_records": sum(c.committed_records for c in report),
        "committed_missing": max((c.committed_missing for c in report), default=0),
        "accepted_acked_records": sum(c.accepted_records for c in report),
        "accepted_missing": max((c.accepted_missing for c in report), default=0),
        "mismatched": max((c.mismatched for c in report), default=0),
        "truncated_bytes": sum(c.truncated_bytes for c in report),
        "restarts_with_a_torn_tail": sum(1 for c in report if c.truncated_bytes),
    }
    ok = all(not c.errors for c in report) and code == 0
    return {
        "ok": ok,
        "runtime": runtime,
        "fsync": fsync,
        "cycles": [asdict(c) for c in report],
        "totals": totals,
        "final_exit_code": code,
    }


# ------------------------------------------------------------------------------ queue mode


@dataclass
class Settled:
    """What the consumers of one cycle (and the drains) did, by payload."""

    enqueued: set[bytes] = field(default_factory=set)
    """Payloads whose committed enqueue was answered."""
    done: set[bytes] = field(default_factory=set)
    """Payloads whose committed ack was answered: they must never come back."""
    in_doubt: set[bytes] = field(default_factory=set)
    """Payloads whose ack was sent and not answered (the kill came first)."""


@dataclass
class QueueCycle:
    """One queue cycle's figures."""

    killed_after_s: float = 0.0
    enqueued: int = 0
    acked_committed: int = 0
    in_doubt: int = 0
    owed: int = 0
    """Messages enqueued (committed) and not acked: the drain must get every one."""
    drained: int = 0
    acked_came_back: int = 0
    missing: int = 0
    restart_s: float = 0.0
    drain_s: float = 0.0
    errors: list[str] = field(default_factory=list)


async def _enqueuer(url: str, ca_file: str, tag: str, state: Settled, stop: anyio.Event) -> None:
    seq = 0
    with contextlib.suppress(FelixError, OSError, anyio.BrokenResourceError):
        async with Client(url, ca_file=ca_file, timeout=3.0) as client:
            while not stop.is_set():
                payloads = [f"{tag}-{seq + i}".encode() for i in range(16)]
                seq += 16
                await client.enqueue(QUEUE, payloads, ack=AckMode.COMMITTED)
                state.enqueued.update(payloads)
                await anyio.sleep(0.005)


async def _consumer(url: str, ca_file: str, one_by_one: bool, state: Settled) -> None:
    """Take messages and ack them committed until the broker dies."""
    dead = (FelixError, OSError, anyio.BrokenResourceError, StopAsyncIteration)
    with contextlib.suppress(*dead):
        async with (
            Client(url, ca_file=ca_file, timeout=3.0) as client,
            client.consume(QUEUE, group="g", prefetch=32) as consumer,
        ):
            while True:
                batch = [await anext(consumer)]
                if not one_by_one:  # what else is already there, up to 16
                    with anyio.move_on_after(0.002):
                        while len(batch) < 16:
                            batch.append(await anext(consumer))
                payloads = [m.payload for m in batch]
                state.in_doubt.update(payloads)
                if one_by_one:
                    await batch[0].ack_sync(AckMode.COMMITTED)
                else:
                    await consumer.ack_many(batch, wait=True, mode=AckMode.COMMITTED)
                state.in_doubt.difference_update(payloads)
                state.done.update(payloads)


async def _consume_load(
    broker: Broker, cycle: int, consumers: int, kill_at: float, state: Settled
) -> float:
    stop = anyio.Event()
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        first = [f"c{cycle}-first-{i}".encode() for i in range(256)]
        await client.enqueue(QUEUE, first, ack=AckMode.COMMITTED)
        state.enqueued.update(first)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_enqueuer, broker.url, broker.ca_file, f"c{cycle}-e", state, stop)
        for c in range(consumers):
            tg.start_soon(_consumer, broker.url, broker.ca_file, c % 2 == 0, state)
        settled_before = len(state.done)
        with anyio.move_on_after(FLOWING_TIMEOUT_S):  # the clock starts at the first ack
            while len(state.done) == settled_before:
                await anyio.sleep(0.01)
        started = time.monotonic()
        await anyio.sleep(kill_at)
        broker.kill()  # what was answered before this line is what counts
        killed_after = time.monotonic() - started
        stop.set()
        tg.cancel_scope.cancel()
    return killed_after


async def _drain(broker: Broker, owed: set[bytes], state: Settled, settle_s: float) -> list[bytes]:
    """Take every message until all of ``owed`` came (bounded), then for a little longer;
    ack each (committed). Returns the payloads received, in order."""
    got: list[bytes] = []
    missing = set(owed)
    async with (
        Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client,
        client.consume(QUEUE, group="g", prefetch=256) as consumer,
    ):
        with anyio.move_on_after(DRAIN_TIMEOUT_S):
            while missing:
                msg = await anext(consumer)
                got.append(msg.payload)
                missing.discard(msg.payload)
                with contextlib.suppress(FelixError):  # timed out and handed out again
                    await msg.ack_sync(AckMode.COMMITTED)
                    state.done.add(msg.payload)
        with anyio.move_on_after(settle_s):  # anything more (an acked one would be wrong)
            while True:
                msg = await anext(consumer)
                got.append(msg.payload)
                with contextlib.suppress(FelixError):
                    await msg.ack_sync(AckMode.COMMITTED)
                    state.done.add(msg.payload)
    return got


async def _ensure_queue(broker: Broker, fsync: str, visibility_ms: int) -> None:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        with contextlib.suppress(FelixError):  # AlreadyExists
            await client.admin.create(
                "queue",
                QUEUE,
                {
                    "durability": "durable",
                    "fsync": fsync,
                    "visibility_timeout_ms": visibility_ms,
                    "max_attempts": 1_000_000,
                    "max_records": 1_000_000,
                },
            )


def run_queue_crash(
    runtime: str,
    cycles: int,
    *,
    data_dir: Path,
    fsync: str = "interval",
    consumers: int = 4,
    min_s: float = 0.2,
    max_s: float = 1.0,
    seed: int | None = None,
    visibility_ms: int = VISIBILITY_MS,
    settle_s: float = 1.0,
) -> dict[str, Any]:
    """Run the queue cycles; return the report (``ok`` false on any failure).

    ``visibility_ms`` is the queue's visibility timeout (a shorter one makes the drain
    shorter; too short and busy consumers see their deliveries time out); ``settle_s`` is
    how long a drain waits for more once every owed message came."""
    rng = random.Random(seed)
    report: list[QueueCycle] = []
    done: set[bytes] = set()  # acked committed in any cycle so far: never again
    broker = Broker(runtime, data_dir)
    anyio.run(_ensure_queue, broker, fsync, visibility_ms)
    for n in range(cycles):
        cycle = QueueCycle()
        state = Settled()
        kill_at = rng.uniform(min_s, max_s)
        cycle.killed_after_s = anyio.run(_consume_load, broker, n, consumers, kill_at, state)
        done |= state.done
        owed = state.enqueued - state.done - state.in_doubt
        cycle.enqueued, cycle.owed = len(state.enqueued), len(owed)
        cycle.acked_committed, cycle.in_doubt = len(state.done), len(state.in_doubt)
        started = time.monotonic()
        broker = Broker(runtime, data_dir)
        cycle.restart_s = round(time.monotonic() - started, 3)
        drain_state = Settled()
        started = time.monotonic()
        try:
            got = anyio.run(_drain, broker, owed, drain_state, settle_s)
        except Exception as exc:  # reported, not raised: the cycle failed
            cycle.errors.append(f"draining failed: {exc!r}")
            got = []
        cycle.drain_s = round(time.monotonic() - started, 3)
        cycle.drained = len(got)
        cycle.acked_came_back = len(set(got) & done)
        cycle.missing = len(owed - set(got))
        done |= drain_state.done
        if cycle.acked_came_back:
            cycle.errors.append(f"{cycle.acked_came_back} committed-acked messages came back")
        if cycle.missing:
            cycle.errors.append(f"{cycle.missing} unacked messages did not come back")
        report.append(cycle)
    code = broker.stop()
    totals = {
        "enqueued": sum(c.enqueued for c in report),
        "acked_committed": sum(c.acked_committed for c in report),
        "in_doubt": sum(c.in_doubt for c in report),
        "owed": sum(c.owed for c in report),
        "acked_came_back": sum(c.acked_came_back for c in report),
        "missing": sum(c.missing for c in report),
    }
    return {
        "ok": all(not c.errors for c in report) and code == 0,
        "mode": "queue",
        "runtime": runtime,
        "fsync": fsync,
        "cycles": [asdict(c) for c in report],
        "totals": totals,
        "final_exit_code": code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("stream", "queue"), default="stream")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="asyncio")
    parser.add_argument("--fsync", choices=("interval", "none"), default="interval")
    parser.add_argument(
        "--publishers", type=int, default=4, help="publishers (queue mode: consumers)"
    )
    parser.add_argument("--batch", type=int, default=8, help="records per publish")
    parser.add_argument("--min-s", type=float, default=0.2, help="earliest kill, seconds")
    parser.add_argument("--max-s", type=float, default=1.0, help="latest kill, seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="felix-crash-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        if args.mode == "queue":
            report = run_queue_crash(
                args.runtime,
                args.cycles,
                data_dir=data_dir,
                fsync=args.fsync,
                consumers=args.publishers,
                min_s=args.min_s,
                max_s=args.max_s,
                seed=args.seed,
            )
            return _print(report, args.json, _queue_cycle)
        report = run_crash(
            args.runtime,
            args.cycles,
            data_dir=data_dir,
            fsync=args.fsync,
            publishers=args.publishers,
            batch=args.batch,
            min_s=args.min_s,
            max_s=args.max_s,
            seed=args.seed,
        )
    return _print(report, args.json, _publish_cycle)


def _publish_cycle(c: dict[str, Any]) -> str:
    return (
        f"killed after {c['killed_after_s']:.2f}s, committed acked "
        f"{c['committed_records']} (missing {c['committed_missing']}), accepted acked "
        f"{c['accepted_records']} (missing {c['accepted_missing']}), unacked found "
        f"{c['unacked_found']}, restart {c['restart_s']}s, errors {c['errors']}"
    )


def _queue_cycle(c: dict[str, Any]) -> str:
    return (
        f"killed after {c['killed_after_s']:.2f}s, enqueued {c['enqueued']}, "
        f"acked committed {c['acked_committed']}, in doubt {c['in_doubt']}, owed "
        f"{c['owed']}, drained {c['drained']} in {c['drain_s']}s (acked back "
        f"{c['acked_came_back']}, missing {c['missing']}), restart {c['restart_s']}s, "
        f"errors {c['errors']}"
    )


def _print(report: dict[str, Any], as_json: bool, describe: Callable[[dict[str, Any]], str]) -> int:
    """Print the report (JSON, or a line per cycle and the totals); the exit code."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for i, cycle in enumerate(report["cycles"]):
            print(f"cycle {i}: {describe(cycle)}")
        print("OK" if report["ok"] else "FAILED", json.dumps(report["totals"]))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
