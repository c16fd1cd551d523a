"""``raw-quic``: the ceiling. The QUIC engine alone, no Felix, same certificate and settings.

Two figures per engine, each with a raw server in one worker process and a raw client in
another (as the broker and a client are):

* ``one-way``: the client writes ``raw_message``-byte messages (100 B) on one stream as
  fast as the engine takes them, keeping at most 8 MiB unconfirmed; the server counts the
  bytes and confirms every 256 KiB. msg/s from the first write until the server has
  confirmed the last byte. This is what the pub/sub and queue rates are divided by (each by
  one-way with messages of its own payload size: :func:`anchor`).
* ``ping-pong``: the client sends ``raw_ping`` bytes (64 B), the server echoes them, the
  client waits for the echo before the next; round-trip percentiles. This is what
  publish-to-deliver and cache latencies are divided by. (The jobs also take a
  ``concurrency``: that many streams ping-ponging at once, the anchor of
  ``benchmarks/e2e.py``'s cache at concurrency 32.)

The server uses the broker's QUIC settings (``settings.RAW_SERVER``) and its certificate,
the client ``felix_client``'s (``settings.RAW_CLIENT``). aioquic is the engine the broker
runs on and so the anchor; qh3 (when installed) is measured next to it, as a ratio to
aioquic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from dataclasses import replace
from typing import Any

from .hdr import distribution, summarize
from .quic_endpoint import Endpoint, EngineMissing, load_engine
from .report import Figure
from .runner import Runner
from .settings import RAW_CLIENT, RAW_SERVER
from .workers import JobContext

__all__ = ["client_job", "run", "server_job"]

MODULE = "felix_client.bench.raw_quic"
WINDOW = 8 << 20
"""Bytes the one-way client keeps unconfirmed at most."""
REPORT_EVERY = 256 * 1024
"""The one-way server confirms after this many bytes (and at the end of the stream)."""
PING_WARMUP = 50
"""Round trips made before the timed ones."""
STREAM_ID = 0


def figure_id(engine: str, mode: str, size: int) -> str:
    """``raw-quic/ENGINE/MODE/size=BYTES``: the ids other scenarios name as anchors."""
    return f"raw-quic/{engine}/{mode}/size={size}"


# ------------------------------------------------------------------ jobs (in a worker)


async def server_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """A raw server: one connection; in ``one-way`` mode count and confirm, in
    ``ping-pong`` mode echo. Ends when the client closes (or at ``timeout``)."""
    engine = load_engine(p["engine"])
    config = engine.configuration_for(
        RAW_SERVER, is_client=False, cert=(p["cert"][0], p["cert"][1])
    )
    received = 0
    reported = 0
    echo = p["mode"] == "ping-pong"

    def on_event(event: Any) -> None:
        nonlocal received, reported
        if not isinstance(event, engine.stream_data_received):
            return
        data: bytes = event.data
        stream_id: int = event.stream_id
        received += len(data)
        if echo:
            if data:
                server.quic.send_stream_data(stream_id, data)
        elif received - reported >= REPORT_EVERY or event.end_stream:
            reported = received
            server.quic.send_stream_data(stream_id, received.to_bytes(8, "big"))

    server = Endpoint(engine, on_event, server_config=config)
    address = server.open()
    ctx.ready(address=address)
    cpu = time.process_time()
    try:
        await asyncio.wait_for(server.terminated.wait(), p["timeout"])
    except TimeoutError:
        pass
    finally:
        server.close()
    return {"received": received, "cpu_s": time.process_time() - cpu}


async def client_job(ctx: JobContext, p: dict[str, Any]) -> dict[str, Any]:
    """A raw client for ``one-way`` or ``ping-pong`` (see the module docstring)."""
    engine = load_engine(p["engine"])
    config = engine.configuration_for(RAW_CLIENT, is_client=True, ca_file=p["ca_file"])
    handshake = asyncio.Event()
    if p["mode"] == "one-way":
        return await _one_way(ctx, p, engine, config, handshake)
    return await _ping_pong(ctx, p, engine, config, handshake)


async def _one_way(
    ctx: JobContext, p: dict[str, Any], engine: Any, config: Any, handshake: asyncio.Event
) -> dict[str, Any]:
    size = int(p["size"])
    message = b"x" * size
    sent = confirmed = 0
    stopping = False
    done = asyncio.Event()
    deadline = 0

    def pump() -> None:
        nonlocal sent, stopping
        quic = client.quic
        while not stopping and sent * size - confirmed < WINDOW:
            for _ in range(256):
                quic.send_stream_data(STREAM_ID, message)
            sent += 256
            ctx.report(sent)
            if time.monotonic_ns() >= deadline:
                stopping = True
                quic.send_stream_data(STREAM_ID, b"", end_stream=True)

    def on_event(event: Any) -> None:
        nonlocal confirmed
        if isinstance(event, engine.handshake_completed):
            handshake.set()
        elif isinstance(event, engine.stream_data_received):
            data: bytes = event.data
            for i in range(0, len(data) - len(data) % 8, 8):
                confirmed = int.from_bytes(data[i : i + 8], "big")
            if stopping and confirmed >= sent * size:
                done.set()
            elif handshake.is_set():
                pump()

    client = Endpoint(engine, on_event)
    client.open()
    client.connect(tuple(p["address"]), config)
    try:
        await asyncio.wait_for(handshake.wait(), 10)
        cpu = time.process_time()
        started = time.monotonic_ns()
        deadline = started + int(p["seconds"] * 1e9)
        pump()
        client.transmit()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), p["timeout"])
        finished = time.monotonic_ns()
        cpu = time.process_time() - cpu
    finally:
        client.close()
    return {
        "sent": sent,
        "confirmed_messages": confirmed // size,
        "seconds": (finished - started) / 1e9,
        "cpu_s": cpu,
    }


async def _ping_pong(
    ctx: JobContext, p: dict[str, Any], engine: Any, config: Any, handshake: asyncio.Event
) -> dict[str, Any]:
    """``concurrency`` streams (default 1), each sending ``size`` bytes and waiting for
    their echo before the next: every round trip is one latency sample."""
    size = int(p["size"])
    message = b"p" * size
    loop = asyncio.get_running_loop()
    streams = [4 * i for i in range(int(p.get("concurrency", 1)))]  # client bidi streams
    pending = dict.fromkeys(streams, 0)
    waiting: dict[int, asyncio.Future[None]] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, engine.handshake_completed):
            handshake.set()
        elif isinstance(event, engine.stream_data_received):
            sid = event.stream_id
            pending[sid] += len(event.data)
            if pending[sid] >= size:
                pending[sid] -= size
                future = waiting.pop(sid, None)
                if future is not None and not future.done():
                    future.set_result(None)

    client = Endpoint(engine, on_event)
    client.open()
    client.connect(tuple(p["address"]), config)
    samples = array("q")
    clock = time.monotonic_ns

    async def round_trip(sid: int) -> int:
        future = waiting[sid] = loop.create_future()
        t0 = clock()
        client.quic.send_stream_data(sid, message)
        client.transmit_soon()
        await future
        return clock() - t0

    async def stream(sid: int, deadline: int) -> None:
        while clock() < deadline:
            samples.append(await round_trip(sid))
            if len(samples) % 64 == 0:
                ctx.report(len(samples))

    try:
        async with asyncio.timeout(p["timeout"]):
            await handshake.wait()
            for sid in streams:  # warm-up, so the timed loop starts on open streams
                for _ in range(PING_WARMUP):
                    await round_trip(sid)
            cpu = time.process_time()
            started = clock()
            deadline = started + int(p["seconds"] * 1e9)
            await asyncio.gather(*(stream(sid, deadline) for sid in streams))
            elapsed = (clock() - started) / 1e9
            cpu = time.process_time() - cpu
    finally:
        client.close()
    return {"samples": samples.tobytes(), "seconds": elapsed, "cpu_s": cpu}


# ------------------------------------------------------------------- the parent's side


def run(runner: Runner) -> None:
    """One-way (``raw_message`` bytes) and ping-pong (``raw_ping`` bytes) for each engine of
    the settings; an engine that is not installed is skipped with a message."""
    m = runner.settings.matrix
    for name in runner.settings.engines:
        try:
            engine = load_engine(name)
        except EngineMissing as exc:
            runner.progress.message(f"raw-quic: {name} skipped: {exc}")
            continue
        for mode, size in (("one-way", m.raw_message), ("ping-pong", m.raw_ping)):
            if not runner.has(figure_id(engine.name, mode, size)):
                _measure(runner, engine.name, engine.version, mode, size)


def anchor(runner: Runner, mode: str, size: int) -> str:
    """The id of the raw ``mode`` figure with ``size``-byte messages of the runner's engine
    (``runner.engine``: a figure is divided by the ceiling of the engine it ran on), measured
    now unless this run already has it: a scenario calls this for each anchor it needs before
    its own figures (message rates are divided by one-way at the same message size, so a
    4 KiB record is compared with 4 KiB raw messages; latencies by 64-byte ping-pong). A raw
    qh3 figure is itself anchored to raw aioquic's."""
    ident = figure_id(runner.engine, mode, size)
    if not runner.has(ident):
        if runner.engine != "aioquic":
            anchor(replace(runner, engine="aioquic"), mode, size)  # the raw figure's anchor
        engine = load_engine(runner.engine)
        _measure(runner, engine.name, engine.version, mode, size)
    return ident


def _measure(runner: Runner, engine: str, version: str, mode: str, size: int) -> Figure:
    settings = runner.settings
    server, client = runner.pool[0], runner.pool[1]
    common = {"engine": engine, "mode": mode, "timeout": runner.job_timeout}
    server.submit(f"{MODULE}:server_job", common | {"cert": runner.cert}, backend="asyncio")
    address = server.ready(runner.wait)["address"]
    label = f"raw {engine} {mode} {size} B"
    unit = "msg" if mode == "one-way" else "round trips"
    runner.begin(label, settings.seconds, lambda: client.progress, unit, broker=False)
    client.submit(
        f"{MODULE}:client_job",
        common
        | {
            "address": address,
            "ca_file": runner.cert[0],
            "size": size,
            "seconds": settings.seconds,
        },
        backend="asyncio",
    )
    result = client.result(runner.wait, runner.progress.tick)
    served = server.result(runner.wait, runner.progress.tick)
    params = {"engine": engine, "version": version, "size": size}
    figure = Figure(
        id=figure_id(engine, mode, size),
        scenario="raw-quic",
        label=label,
        params=params,
        anchor=None if engine == "aioquic" else figure_id("aioquic", mode, size),
    )
    if mode == "one-way":
        messages = result["confirmed_messages"]
        seconds = result["seconds"]
        figure.metrics = {
            "msg_per_s": messages / seconds,
            "mb_per_s": messages * size / seconds / 1e6,
            "messages": messages,
            "seconds": seconds,
        }
        if messages != result["sent"]:
            figure.valid = False
            figure.notes.append(f"{result['sent'] - messages} messages were never confirmed")
        units = max(messages, 1)
    else:
        latency = summarize([result["samples"]])
        figure.distribution = distribution([result["samples"]])
        figure.metrics = {
            **latency,
            "round_trips_per_s": latency["count"] / result["seconds"],
            "seconds": result["seconds"],
        }
        if latency["count"] == 0:
            figure.valid = False
            figure.notes.append("no round trip completed")
        units = max(int(latency["count"]), 1)
    figure.metrics["client_cpu_us"] = result["cpu_s"] * 1e6 / units
    figure.metrics["server_cpu_us"] = served["cpu_s"] * 1e6 / units
    return runner.add(figure)
