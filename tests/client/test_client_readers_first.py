"""The client's loop lets the tasks a pass woke run before it transmits ("Readers first" in
``felix_client/_transport.py``): a subscriber's record reaches ``async for`` without waiting
for the transmit of the pass that brought it, and a publisher's next publish, made right
after its ack, leaves in that pass's one transmit.

A :class:`QuicTransport` over a fake socket and a fake QUIC connection: one datagram comes
in, the handler wakes an application task, and the order of what happens is recorded.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from memory_connection import cache_get, connected

from felix_client._transport import QuicTransport, loop_checkpoint

pytestmark = pytest.mark.anyio


class _Socket:
    """Hands one datagram to the loop, then nothing more."""

    remote = ("127.0.0.1", 7447)

    def __init__(self) -> None:
        self.given = False

    async def receive_many(self, limit: int, deadline: float = math.inf) -> list[bytes]:
        if self.given:
            await anyio.sleep_forever()
        self.given = True
        return [b"datagram"]

    def move_deadline(self, deadline: float) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def send_nowait(self, datagrams: list[tuple[bytes, object]]) -> int:
        return len(datagrams)

    def close(self) -> None:
        pass


class _Quic:
    """A QUIC connection that turns the datagram into one event; records its transmits."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.events: list[object] = []

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.events.append(object())

    def next_event(self) -> object | None:
        return self.events.pop() if self.events else None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self.log.append("transmit")
        return []


class _Handler:
    """Wakes the application's task on the first event, as a record or a reply does."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.woken = anyio.Event()
        self.woke = False
        self.queued = 0  # requests the application queued
        self.pumped = 0  # of them, moved into QUIC

    def quic_event(self, event: object, now: float) -> None:
        self.woken.set()
        self.woke = True

    def pump(self, now: float) -> bool:
        if self.pumped < self.queued:
            self.log.append("pump request")
            self.pumped = self.queued
        woke, self.woke = self.woke, False
        return woke

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def transport_closed(self, reason: str) -> None:
        pass


async def _run(app: Any) -> list[str]:
    log: list[str] = []
    quic = _Quic(log)
    transport = QuicTransport(_Socket(), quic)  # type: ignore[arg-type]
    handler = _Handler(log)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, transport, handler)
        tg.start_soon(transport.run, handler)
        with anyio.fail_after(5):
            while log.count("transmit") < 2:  # the initial flush, then the pass
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # nothing else follows
        tg.cancel_scope.cancel()
    return log


ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""trio runs the tasks ready at once in either order (it reverses half its batches), so
there the woken task runs before the loop's transmit only half the time."""


@ASYNCIO_ONLY
async def test_a_woken_reader_runs_before_the_transmit() -> None:
    async def reader(transport: QuicTransport, handler: _Handler) -> None:
        await handler.woken.wait()
        handler.log.append("reader")

    log = await _run(reader)
    assert log == ["transmit", "reader", "transmit"]


@ASYNCIO_ONLY
async def test_a_request_made_on_waking_leaves_in_the_pass_transmit() -> None:
    async def publisher(transport: QuicTransport, handler: _Handler) -> None:
        await handler.woken.wait()
        handler.log.append("publish")
        handler.queued += 1
        await transport.flush()
        handler.log.append("flushed")

    log = await _run(publisher)
    # one transmit after the wake, carrying the request; the flush found it done
    assert log == ["transmit", "publish", "pump request", "transmit", "flushed"]


@ASYNCIO_ONLY
async def test_a_request_made_on_waking_does_not_wait_for_the_pass_transmit() -> None:
    async def requester(transport: QuicTransport, handler: _Handler) -> None:
        await handler.woken.wait()
        handler.log.append("request")
        handler.queued += 1
        await transport.flush_request()  # what Connection.request does
        handler.log.append("flushed")

    log = await _run(requester)
    # the request returns to wait for its reply at once (no loop iteration for the flush);
    # the pass's one transmit, right after, carries it
    assert log == ["transmit", "request", "flushed", "pump request", "transmit"]


async def test_the_connection_says_when_it_woke_a_waiter() -> None:
    conn = connected()
    assert conn.pump(100.0) is False
    conn.start(cache_get)
    assert conn.pump(100.0) is False  # the request went into QUIC; nobody woke
    conn.handle_timer(200.0)  # its deadline passed: its waiter wakes with RequestTimeout
    assert conn.pump(200.0) is True
    assert conn.pump(200.0) is False


async def test_the_loop_checkpoint_lets_the_ready_tasks_run(anyio_backend: str) -> None:
    """The loop's yield to the readers: a bare yield under asyncio, anyio's checkpoint
    elsewhere; either way the task that was ready runs before the yielding one resumes, and
    a cancellation reaches a task waiting there (under trio the order is trio's)."""
    checkpoint = loop_checkpoint()
    assert (checkpoint is anyio.lowlevel.checkpoint) == (anyio_backend != "asyncio")
    log: list[str] = []

    async def ready() -> None:
        log.append("ready")

    async with anyio.create_task_group() as tg:
        tg.start_soon(ready)
        await checkpoint()
        log.append("resumed")
    # trio runs its ready tasks in either order (see ASYNCIO_ONLY)
    assert log == ["ready", "resumed"] if anyio_backend == "asyncio" else len(log) == 2
    with anyio.CancelScope() as scope:
        scope.cancel()
        await checkpoint()
        log.append("not cancelled")
    assert scope.cancelled_caught and "not cancelled" not in log
