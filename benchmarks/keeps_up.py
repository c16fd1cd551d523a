"""Does one subscriber keep up with one publisher running flat out, on defaults?

The README's commands, as a user runs them: a fresh ``felix broker`` (its defaults, in a
temporary data directory, on a free loopback port), ``felix sub STREAM --count N`` with its
output to a file, and ``felix pub STREAM --count N --size 100`` started a second later. The
figure is what the subscriber wrote and the gaps the broker reported to it (``-- gap: ...``
lines on its stderr), with the publisher's rate (its own ``--stats`` line is not used: the
wall time of the command is)::

    python benchmarks/keeps_up.py --count 1000000 --runs 3 [--runtime anyio --backend trio]
        [--quic-engine qh3] [--set KEY=VALUE ...] [--json]

A run fails (exit 1) when any record was lost; issue 12's target is 1,000,000 x 100 B with
none lost. The suite runs a short form (``tests/bench/test_benchmark_scripts.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FELIX = [sys.executable, "-m", "felix_client.cli"]
GAP = re.compile(r"-- gap: (\d+) record")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(path: Path, text: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else "(no output)"
    raise RuntimeError(f"{path.name} never said {text!r}; it ends with:\n{tail}")


def stop(process: subprocess.Popen[Any], timeout: float) -> None:
    """End a broker politely (SIGTERM: its drain), killing it after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def one_run(count: int, broker_args: list[str], client_args: list[str]) -> dict[str, Any]:
    """One fresh broker, one subscriber, one publisher of ``count`` x 100 B."""
    with tempfile.TemporaryDirectory(prefix="felix-keeps-up-") as tmp:
        work = Path(tmp)
        port = _free_port()
        server = f"quic://127.0.0.1:{port}"
        env = os.environ | {"FELIX_CA": str(work / "felix-data" / "cert.pem")}
        log = work / "broker.log"
        with log.open("w") as log_file:
            broker = subprocess.Popen(
                [*FELIX, "broker", *broker_args, "--listen", f"127.0.0.1:{port}"],
                cwd=work,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            _wait_for(log, "default tenant and namespace created", time.monotonic() + 30)
            common = ["--server", server, *client_args]
            subprocess.run(
                [*FELIX, "admin", "create", "stream", "orders", *common],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
                timeout=30,
            )
            out, err = work / "sub.out", work / "sub.err"
            with out.open("wb") as sub_out, err.open("wb") as sub_err:
                sub = subprocess.Popen(
                    [*FELIX, "sub", "orders", "--count", str(count), *common],
                    cwd=work,
                    stdout=sub_out,
                    stderr=sub_err,
                    env=env,
                )
                time.sleep(1.0)  # subscribed before the first record
                started = time.monotonic()
                subprocess.run(
                    [*FELIX, "pub", "orders", "--count", str(count), "--size", "100", *common],
                    cwd=work,
                    env=env,
                    check=True,
                    capture_output=True,
                    timeout=max(120, count / 2000),
                )
                publish_s = time.monotonic() - started
                try:
                    sub.wait(timeout=max(60, count / 5000))
                except subprocess.TimeoutExpired:
                    sub.kill()
                    sub.wait()
            with out.open("rb") as lines:
                received = sum(1 for _ in lines)
            gaps = [int(n) for n in GAP.findall(err.read_text(errors="replace"))]
        finally:
            stop(broker, 15)
    return {
        "published": count,
        "received": received,
        "lost": count - received,
        "gap_reports": len(gaps),
        "gap_records": sum(gaps),
        "publish_s": publish_s,
        "publish_msg_per_s": count / publish_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--runtime", choices=["asyncio", "anyio"], default="asyncio")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default=None)
    parser.add_argument("--quic-engine", choices=["aioquic", "qh3"], default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker setting (felix broker --set), e.g. transport.receive_buffer=1048576",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    broker_args = ["--runtime", args.runtime]
    for setting in args.set:
        broker_args += ["--set", setting]
    if args.backend:
        broker_args += ["--backend", args.backend]
    client_args: list[str] = []
    if args.quic_engine:
        broker_args += ["--set", f"quic_engine={args.quic_engine}"]
        client_args += ["--quic-engine", args.quic_engine]
    runs = []
    for number in range(1, args.runs + 1):
        run = one_run(args.count, broker_args, client_args)
        runs.append(run)
        if not args.json:
            print(
                f"run {number}: {run['received']:,} of {run['published']:,} received, "
                f"{run['lost']:,} lost ({run['gap_reports']} gap reports), publisher "
                f"{run['publish_msg_per_s']:,.0f} msg/s",
                flush=True,
            )
    if args.json:
        print(json.dumps({"runtime": broker_args, "runs": runs}))
    return 1 if any(run["lost"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
