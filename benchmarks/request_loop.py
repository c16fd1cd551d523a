"""What one cache request costs the client's event loop: loop iterations, epoll calls and
datagrams per request, and CPU per request, against a broker on 127.0.0.1.

Latency and rates move with the load of a shared machine; how many times the client's
asyncio loop turns, polls the socket and sends or receives a datagram for each request
does not, so a change to the request path (``felix_client/_connection.py``,
``_transport.py``) can be judged on a loaded machine too. The script starts a broker
(``felix_client.bench.servers.LocalBroker``), runs ``--concurrency`` tasks doing cache
``get`` (a hit, 256 B) for ``--seconds`` after a warm-up, and counts, in this process:
``BaseEventLoop._run_once`` calls, ``EpollSelector.select`` calls (and those with a zero
timeout: an iteration that found work ready), and the client socket's sends and reads.

Usage: ``python benchmarks/request_loop.py [--concurrency 1,64] [--seconds 3]
[--quic-engine aioquic] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import contextlib
import json
import selectors
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_client import Client, _transport
from felix_client.bench.servers import LocalBroker
from felix_client.errors import AlreadyExists

COUNTS: Counter[str] = Counter()


def _count_calls() -> None:
    """Wrap the loop's, the selector's and the client socket's calls with counters."""
    run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
    select = selectors.EpollSelector.select

    def counted_run_once(self: Any) -> None:
        COUNTS["loop_iterations"] += 1
        run_once(self)

    def counted_select(self: Any, timeout: float | None = None) -> Any:
        COUNTS["epolls"] += 1
        if timeout is not None and timeout <= 0:
            COUNTS["epolls_zero_timeout"] += 1
        return select(self, timeout)

    asyncio.base_events.BaseEventLoop._run_once = counted_run_once  # type: ignore[attr-defined]
    selectors.EpollSelector.select = counted_select  # type: ignore[method-assign]
    sock = _transport._UdpSocket
    send_nowait, take = sock.send_nowait, sock._take

    def counted_send(self: Any, datagrams: list[tuple[bytes, object]]) -> int:
        COUNTS["send_calls"] += 1
        COUNTS["datagrams_sent"] += len(datagrams)
        return send_nowait(self, datagrams)

    def counted_take(self: Any, limit: int) -> list[bytes]:
        out = take(self, limit)
        COUNTS["read_calls"] += 1
        COUNTS["datagrams_read"] += len(out)
        return out

    sock.send_nowait = counted_send  # type: ignore[method-assign]
    sock._take = counted_take  # type: ignore[method-assign]


async def measure(
    url: str, ca: str, engine: str, concurrency: int, seconds: float
) -> dict[str, float]:
    """Per-request figures of ``concurrency`` tasks doing cache gets for ``seconds``."""
    async with Client(url, ca_file=ca, quic_engine=engine) as client:
        with contextlib.suppress(AlreadyExists):
            await client.admin.create("cache", "loop", {})
        cache = client.cache("loop")
        await cache.put("k", b"v" * 256)
        done = [0]

        async def task(deadline: float) -> None:
            while time.monotonic() < deadline:
                await cache.get("k")
                done[0] += 1

        async def run(span: float) -> None:
            deadline = time.monotonic() + span
            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(task(deadline))

        await run(0.3)  # warm-up
        done[0] = 0
        COUNTS.clear()
        cpu, wall = time.process_time(), time.monotonic()
        await run(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        n = max(done[0], 1)
        figures = {f"{name}_per_request": COUNTS[name] / n for name in sorted(COUNTS)}
        return {"requests_per_s": n / wall, "client_cpu_us": cpu * 1e6 / n, **figures}


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,64", help="comma-separated task counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds measured each")
    parser.add_argument("--quic-engine", default="aioquic", help="the broker's and client's")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _count_calls()
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalBroker("asyncio", Path(tmp), quic_engine=args.quic_engine) as broker,
    ):
        for c in (int(x) for x in args.concurrency.split(",")):
            results[f"c={c}"] = asyncio.run(
                measure(broker.url, broker.ca_file, args.quic_engine, c, args.seconds)
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figures in results.items():
            print(name, " ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
