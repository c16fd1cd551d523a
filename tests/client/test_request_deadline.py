"""Request deadlines are the machine's: no per-request timer in the client.

``Connection.wait`` has no cancel scope of its own; a request ends with its reply, with
``RequestTimeout`` when the felix_proto machine's deadline passes (the transport's loop
fires the machine's timer), or with the connection's error. These tests pin what that
relies on: a silent broker still times a request out after ``timeout`` seconds (a per-call
``timeout`` too), and the transport fires a due timer also while datagrams keep arriving (a
busy connection must not starve its timers: a deadline that passed cancels the next wait).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from aioquic.quic.events import QuicEvent
from brokers import Broker, start_broker

from felix_client import Client, errors
from felix_client._transport import QuicTransport, TransportOptions

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0


@pytest.fixture
def asyncio_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of its own (it gets stopped); the runtime does not matter here."""
    broker = start_broker("asyncio", tmp_path / "broker")
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()


async def test_request_to_a_silent_broker_times_out(asyncio_broker: Broker) -> None:
    async with Client(asyncio_broker.url, ca_file=asyncio_broker.ca_file, timeout=TIMEOUT) as c:
        await c.admin.create("cache", "c", {})
        cache = c.cache("c")
        await cache.put("k", b"v")
        os.kill(asyncio_broker.process.pid, signal.SIGSTOP)  # alive, but silent
        try:
            started = anyio.current_time()
            with anyio.fail_after(TIMEOUT * 4), pytest.raises(errors.RequestTimeout):
                await cache.get("k")
            elapsed = anyio.current_time() - started
            assert TIMEOUT * 0.9 <= elapsed < TIMEOUT * 2
            with anyio.fail_after(TIMEOUT * 4), pytest.raises(errors.RequestTimeout):
                await cache.get("k", timeout=TIMEOUT / 2)  # a per-call timeout is kept too
        finally:
            os.kill(asyncio_broker.process.pid, signal.SIGCONT)
        assert (await cache.get("k")) is not None  # the late replies were dropped


class _Handler:
    """A Felix layer stand-in with one deadline; records when its timer fired."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired_at: float | None = None

    def quic_event(self, event: QuicEvent, now: float) -> None:
        pass

    def pump(self, now: float) -> bool:
        return False

    def get_timer(self) -> float | None:
        return self.deadline if self.fired_at is None else None

    def handle_timer(self, now: float) -> None:
        if self.fired_at is None and now >= self.deadline:
            self.fired_at = now

    def transport_closed(self, reason: str) -> None:
        pass


async def test_timers_fire_while_datagrams_keep_arriving() -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    transport = await QuicTransport.connect(
        "127.0.0.1", peer.getsockname()[1], TransportOptions(insecure=True)
    )
    handler = _Handler(transport.clock() + 0.2)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.run, handler)
            await anyio.wait_readable(peer)
            _, client_addr = peer.recvfrom(65536)  # the client's Initial: its address

            with anyio.fail_after(5):
                while handler.fired_at is None:  # junk QUIC drops, every millisecond
                    peer.sendto(b"\x40" + bytes(40), client_addr)
                    await anyio.sleep(0.001)
            assert handler.fired_at < handler.deadline + 0.5
            tg.cancel_scope.cancel()
    finally:
        peer.close()
