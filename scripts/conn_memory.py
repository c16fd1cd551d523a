"""Does the broker give back the memory of connections that never said Hello? A leak, or
the allocator?

Runs a broker (asyncio runtime) in a child process that answers reports on its stdin, and
drives it from this process in rounds: each round opens ``--connections`` raw QUIC
connections that complete the QUIC handshake but never send ``Hello``, then closes them
(``--close hangup``: a QUIC CONNECTION_CLOSE) or lets them vanish (``--close vanish``: the
broker's handshake timeout closes them; ``mixed``, the default: every other one), and
waits until the broker holds no session. After every round the child reports, after a full
``gc.collect()``:

* its RSS; glibc's view of the C heap (``mallinfo2``, main arena: bytes in use, bytes free
  but kept); pymalloc's arenas and the bytes in used and free blocks
  (``sys._debugmallocstats``, not available under ``--tracemalloc``);
* live objects found by ``gc``: the server's sessions, aioquic ``QuicConnection``\\ s,
  Felix ``Session`` and ``ServerConnection`` objects, the demux table, every gc-tracked
  object;
* with ``--tracemalloc``, the Python heap traced by :mod:`tracemalloc` and its top growth
  since the baseline (file:line).

At the end the child calls ``malloc_trim(0)`` and reports again: memory that comes back
then was free memory the allocator kept, not live objects.

A leak shows as objects (and traced bytes) that grow with the rounds; the allocator shows
as flat object counts and traced bytes while RSS stays up (and ``malloc_trim`` returns
it). With ``--check`` the exit code is 1 unless every count of live connection objects is
back at its baseline after each round (what ``tests/test_conn_memory.py`` runs, small).

    .venv/bin/python scripts/conn_memory.py --connections 1000 --rounds 7 --tracemalloc
    .venv/bin/python scripts/conn_memory.py --connections 20 --rounds 2 --check --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SETTLE_TIMEOUT = 30.0
"""Seconds the broker may take to forget a round's connections."""
OBJECTS = ("QuicConnection", "FelixQuicConnection", "Session", "ServerConnection")
"""Types whose live instances are counted (by class name, subclasses apart)."""


# ----------------------------------------------------------------------------- the child


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _pymalloc() -> dict[str, int]:
    """pymalloc's arenas and blocks, from ``sys._debugmallocstats`` (it writes to fd 2)."""
    keys = {
        "# arenas allocated current": "pymalloc_arenas",
        "# bytes in allocated blocks": "pymalloc_used_kib",
        "# bytes in available blocks": "pymalloc_free_kib",
    }
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found = {}
    for line in text.splitlines():
        label, _, value = line.partition("=")
        key = keys.get(label.strip())
        if key is not None:
            number = int(value.strip().replace(",", ""))
            found[key] = number if key == "pymalloc_arenas" else number // 1024
    return found


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class _Reporter:
    """What the child measures about itself."""

    def __init__(self, server: Any, trace: bool) -> None:
        self.server = server
        self.libc = _libc()
        self.trace = trace
        self.baseline: tracemalloc.Snapshot | None = None

    def mallinfo(self) -> dict[str, int]:
        if self.libc is None or not hasattr(self.libc, "mallinfo2"):
            return {}
        self.libc.mallinfo2.restype = _Mallinfo2
        info = self.libc.mallinfo2()
        return {
            "heap_in_use_kib": (info.uordblks + info.hblkhd) // 1024,
            "heap_free_kept_kib": info.fordblks // 1024,
            "heap_arena_kib": info.arena // 1024,
        }

    def report(self, *, mark_baseline: bool = False) -> dict[str, Any]:
        gc.collect()
        server = self.server
        types = Counter(type(o).__name__ for o in gc.get_objects())
        out: dict[str, Any] = {
            "rss_kib": _rss_kib(),
            "pymalloc_blocks": sys.getallocatedblocks(),
            **_pymalloc(),
            **self.mallinfo(),
            "sessions": len(server.sessions),
            "demux_cids": len(server._by_cid),
            "engine_connections": server.broker.stats()["connections"],
            "objects": {name: types.get(name, 0) for name in OBJECTS},
            "gc_objects": sum(types.values()),
        }
        if self.trace:
            snapshot = tracemalloc.take_snapshot()
            out["traced_kib"] = tracemalloc.get_traced_memory()[0] // 1024
            if mark_baseline or self.baseline is None:
                self.baseline = snapshot
            else:
                top = snapshot.compare_to(self.baseline, "lineno")[:8]
                out["traced_growth"] = [
                    f"{s.size_diff / 1024:+.1f} KiB {s.count_diff:+d} "
                    f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno}"
                    for s in top
                ]
        return out

    def trim(self) -> dict[str, Any]:
        if self.libc is not None:
            self.libc.malloc_trim(0)
        return self.report()


async def _child(args: argparse.Namespace) -> None:
    from felix_runtime.logs import configure_logging
    from felix_runtime_asyncio.app import BrokerProcess
    from felix_server.config import load_config

    if args.tracemalloc:
        tracemalloc.start(1)
    flags = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        args.data_dir,
        "--metrics",
        "127.0.0.1:0",  # the health probes stay on: never the default port 8080
        "--metrics-enabled",
        "false",
        "--transport-handshake-timeout-s",
        str(args.handshake_timeout),
    ]
    config, _ = load_config(flags, {}, lambda p: Path(p).read_bytes())
    configure_logging("json", "error")
    broker = await BrokerProcess(config).start()
    assert broker.server is not None and broker.cert_path is not None
    reporter = _Reporter(broker.server, args.tracemalloc)
    host, port = broker.address
    print(json.dumps({"host": host, "port": port, "ca_file": str(broker.cert_path)}), flush=True)
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command in ("", "quit"):
            break
        if command == "trim":
            result = reporter.trim()
        else:
            result = reporter.report(mark_baseline=command == "baseline")
        print(json.dumps(result), flush=True)
    await broker.close()


# ---------------------------------------------------------------------------- the parent


class _Child:
    """The broker child process and its report channel."""

    def __init__(self, args: argparse.Namespace, data_dir: str) -> None:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--data-dir",
            data_dir,
            "--handshake-timeout",
            str(args.handshake_timeout),
        ]
        if args.tracemalloc:
            cmd.append("--tracemalloc")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=data_dir
        )
        self.where = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the broker child exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str = "report") -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _round(child: _Child, connections: int, close: str) -> None:
    """Open ``connections`` QUIC connections that never say Hello, then close them."""
    from runtime.harness import RawClient

    where = child.where
    clients = [RawClient(where["ca_file"], raw=True) for _ in range(connections)]
    for start in range(0, connections, 100):  # a hundred handshakes at a time
        batch = clients[start : start + 100]
        await asyncio.gather(
            *(c.connect((where["host"], where["port"]), hello=False, timeout=20) for c in batch)
        )
    for i, client in enumerate(clients):
        if close == "hangup" or (close == "mixed" and i % 2 == 0):
            client.hang_up()
        else:
            client.kill()
    await asyncio.sleep(0.1)  # the last CONNECTION_CLOSE datagrams leave


def _settle(child: _Child) -> dict[str, Any]:
    """Report once the broker holds no session (bounded by :data:`SETTLE_TIMEOUT`)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        report = child.ask()
        if report["sessions"] == 0 or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def _row(label: str, r: dict[str, Any]) -> str:
    objects = r["objects"]
    quic = objects["QuicConnection"] + objects["FelixQuicConnection"]
    heap = ""
    if "heap_in_use_kib" in r:
        heap = (
            f" heap in use {r['heap_in_use_kib'] / 1024:6.1f} free-kept "
            f"{r['heap_free_kept_kib'] / 1024:6.1f}"
        )
    traced = f" traced {r['traced_kib'] / 1024:6.1f}" if "traced_kib" in r else ""
    return (
        f"{label:>9}: RSS {r['rss_kib'] / 1024:6.1f} MiB{heap}{traced} | sessions "
        f"{r['sessions']} quic {quic} Session {objects['Session']} ServerConnection "
        f"{objects['ServerConnection']} cids {r['demux_cids']} gc {r['gc_objects']} "
        f"pymalloc arenas {r.get('pymalloc_arenas')} used "
        f"{r.get('pymalloc_used_kib', 0) / 1024:.1f} MiB free "
        f"{r.get('pymalloc_free_kib', 0) / 1024:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--close",
        choices=("hangup", "vanish", "mixed"),
        default="mixed",
        help="how the connections end (mixed: every other one vanishes)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=2.0,
        help="the broker's transport.handshake_timeout_s",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="trace the Python heap")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless live connection objects return to baseline",
    )
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_child(args))
        return 0

    with tempfile.TemporaryDirectory(prefix="felix-connmem-") as tmp:
        child = _Child(args, tmp)
        try:
            asyncio.run(_round(child, 10, args.close))  # warm up (imports, TLS, caches)
            _settle(child)
            baseline = child.ask("baseline")
            rounds = []
            for _ in range(args.rounds):
                asyncio.run(_round(child, args.connections, args.close))
                rounds.append(_settle(child))
            trimmed = child.ask("trim")
        finally:
            child.stop()
    problems = []
    for i, r in enumerate(rounds, 1):
        if r["sessions"] or r["demux_cids"] or r["engine_connections"]:
            problems.append(f"round {i}: connections left in the server: {r}")
        for name in OBJECTS:
            if r["objects"][name] > baseline["objects"][name]:
                problems.append(
                    f"round {i}: {r['objects'][name]} live {name} (baseline "
                    f"{baseline['objects'][name]})"
                )
    if args.json:
        print(
            json.dumps(
                {
                    "baseline": baseline,
                    "rounds": rounds,
                    "after_malloc_trim": trimmed,
                    "problems": problems,
                },
                indent=2,
            )
        )
    else:
        print(_row("baseline", baseline))
        for i, r in enumerate(rounds, 1):
            print(_row(f"round {i}", r))
            for line in r.get("traced_growth", [])[:5]:
                print(f"           {line}")
        print(_row("trimmed", trimmed))
        for problem in problems:
            print("PROBLEM:", problem)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
