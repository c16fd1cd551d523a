"""``cache``: get and put latency at concurrency 1, ops/s at concurrency 64, next to redis-py.

One load-generator process per figure runs ``concurrency`` tasks on one client, each
issuing sequential requests on one key holding a ``cache_value``-byte value (a hit every
time) for the figure's seconds, after a short warm-up. Felix runs with the client's
defaults (one connection, requests spread over its streams).

redis-py: when ``redis-server`` is on ``PATH`` the run starts one on 127.0.0.1 (free port,
no persistence) and measures ``GET`` / ``SET`` the same way through ``redis.asyncio`` with
a pool of at most 64 connections, interleaved with the Felix figures so both see the same
machine. It is the anchor of the Felix figures at concurrency 64; at concurrency 1 the
anchor is raw aioquic ping-pong (a request/reply next to a request/reply).
"""

from __future__ import annotations

import contextlib
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import AlreadyExists
from . import raw_quic
from .hdr import summarize
from .report import Figure
from .runner import Runner
from .servers import LocalRedis, redis_server_path
from .settings import BrokerTarget
from .workers import JobContext

__all__ = ["felix_job", "redis_job", "run"]

MODULE = "felix_client.bench.cache"
KEY = "bench-key"
WARMUP_PER_TASK = 5
REDIS_POOL = 64


async def _timed(
    ctx: JobContext, op: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Run ``op`` from ``concurrency`` tasks for ``seconds``; latencies and the rate."""
    async with anyio.create_task_group() as tg:  # warm-up: connections, streams, caches
        for _ in range(concurrency):

            async def warm() -> None:
                for _ in range(WARMUP_PER_TASK):
                    await op()

            tg.start_soon(warm)
    samples = array("q")
    clock = time.monotonic_ns
    cpu = time.process_time()
    started = clock()
    deadline = started + int(seconds * 1e9)

    async def task() -> None:
        append = samples.append
        while (t0 := clock()) < deadline:
            await op()
            append(clock() - t0)
            if len(samples) & 255 == 0:
                ctx.report(len(samples))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(task)
    elapsed = (clock() - started) / 1e9
    return {"samples": samples.tobytes(), "seconds": elapsed, "cpu_s": time.process_time() - cpu}


async def felix_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """Felix cache ``get`` or ``put`` at ``concurrency``."""
    target: BrokerTarget = p["target"]
    value = b"v" * int(p["value"])
    misses = [0]
    async with target.connect() as client:
        with contextlib.suppress(AlreadyExists):
            await client.admin.create("cache", p["cache"], {})
        cache = client.cache(p["cache"])
        await cache.put(KEY, value)

        async def get() -> None:
            if await cache.get(KEY) is None:
                misses[0] += 1

        async def put() -> None:
            await cache.put(KEY, value)

        result = await _timed(ctx, get if p["op"] == "get" else put, p["concurrency"], p["seconds"])
    return result | {"misses": misses[0]}


async def redis_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """redis-py ``GET`` or ``SET`` at ``concurrency`` (asyncio; a pool of 64 connections)."""
    import redis.asyncio as aioredis

    value = b"v" * int(p["value"])
    misses = [0]
    pool = aioredis.ConnectionPool(host="127.0.0.1", port=p["port"], max_connections=REDIS_POOL)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.set(KEY, value)

        async def get() -> None:
            if await client.get(KEY) is None:
                misses[0] += 1

        async def put() -> None:
            await client.set(KEY, value)

        result = await _timed(ctx, get if p["op"] == "get" else put, p["concurrency"], p["seconds"])
    finally:
        await client.aclose()
        await pool.disconnect()
    return result | {"misses": misses[0]}


def run(runner: Runner) -> None:
    """Felix and (when installed) redis-py, get and put, at each concurrency."""
    redis: LocalRedis | None = None
    executable = redis_server_path() if runner.settings.redis else None
    if runner.settings.redis and executable is None:
        runner.progress.message(
            "cache: redis-server is not on PATH, the redis-py comparison is skipped "
            "(apt-get install redis-server)"
        )
    ping_pong = raw_quic.anchor(runner, "ping-pong", runner.settings.matrix.raw_ping)
    try:
        if executable is not None:
            redis = LocalRedis(executable, runner.tmp / "redis").__enter__()
        cache = runner.name("cache")
        for concurrency in runner.settings.matrix.cache_concurrency:
            for op in ("get", "put"):
                _felix(runner, cache, op, concurrency, ping_pong, redis is not None)
                if redis is not None and not runner.has(_redis_id(op, concurrency)):
                    _redis(runner, redis, op, concurrency)  # once per run, for every engine
    finally:
        if redis is not None:
            redis.__exit__(None, None, None)


def _redis_id(op: str, concurrency: int) -> str:
    return f"cache/redis/{op}/c={concurrency}"


def _felix(
    runner: Runner, cache: str, op: str, concurrency: int, ping_pong: str, redis: bool
) -> None:
    value = runner.settings.matrix.cache_value
    label = runner.label(f"cache {op} {value} B c={concurrency}")
    worker = runner.pool[0]
    mark = runner.cpu_mark()
    runner.begin(label, runner.settings.seconds, lambda: worker.progress, "ops")
    worker.submit(
        f"{MODULE}:felix_job",
        {
            "target": runner.target,
            "cache": cache,
            "op": op,
            "concurrency": concurrency,
            "value": value,
            "seconds": runner.settings.seconds,
        },
    )
    result = worker.result(runner.wait, runner.progress.tick)
    ident = runner.ident(f"cache/felix/{op}/c={concurrency}")
    figure = _figure(runner, ident, label, op, concurrency, result)
    figure.params["quic_engine"] = runner.engine
    if concurrency == 1:
        figure.anchor = ping_pong
    elif redis:
        figure.anchor = _redis_id(op, concurrency)
    else:
        figure.notes.append("no redis-server on PATH: no redis-py anchor")
    figure.metrics["broker_cpu_us"] = (
        runner.broker_cpu_since(mark) * 1e6 / max(int(figure.metrics["count"]), 1)
    )
    runner.add(figure)


def _redis(runner: Runner, redis: LocalRedis, op: str, concurrency: int) -> None:
    value = runner.settings.matrix.cache_value
    name = "GET" if op == "get" else "SET"
    label = f"redis-py {name} {value} B c={concurrency}"
    worker = runner.pool[0]
    runner.begin(label, runner.settings.seconds, lambda: worker.progress, "ops", broker=False)
    worker.submit(
        f"{MODULE}:redis_job",
        {
            "port": redis.port,
            "op": op,
            "concurrency": concurrency,
            "value": value,
            "seconds": runner.settings.seconds,
        },
        backend="asyncio",
    )
    result = worker.result(runner.wait, runner.progress.tick)
    figure = _figure(runner, _redis_id(op, concurrency), label, op, concurrency, result)
    figure.params["pool"] = REDIS_POOL
    runner.add(figure)


def _figure(
    runner: Runner, ident: str, label: str, op: str, concurrency: int, result: dict[str, Any]
) -> Figure:
    latency = summarize([result["samples"]])
    count = max(int(latency["count"]), 1)
    figure = Figure(
        id=ident,
        scenario="cache",
        label=label,
        params={"op": op, "concurrency": concurrency, "value": runner.settings.matrix.cache_value},
        metrics={
            "ops_per_s": latency["count"] / result["seconds"],
            **latency,
            "misses": result["misses"],
            "seconds": result["seconds"],
            "client_cpu_us": result["cpu_s"] * 1e6 / count,
        },
    )
    if latency["count"] == 0:
        figure.valid = False
        figure.notes.append("no operation completed")
    if result["misses"]:
        figure.valid = False
        figure.notes.append(f"{result['misses']} gets found no value")
    return figure
