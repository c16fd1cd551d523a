"""The transport's transmit keeps datagrams in order when the kernel buffer is full: a
transmit that could not write everything waits for room holding the send lock, and a
transmit made meanwhile queues behind it; while nobody waits, a transmit writes without the
lock (``QuicTransport._transmit``)."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from felix_client._transport import QuicTransport

pytestmark = pytest.mark.anyio


class _FullSocket:
    """Takes one datagram without waiting, then only once :attr:`room` is set."""

    remote = ("127.0.0.1", 7447)

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.room = anyio.Event()
        self.full = True

    async def receive_many(self, limit: int, deadline: float = math.inf) -> list[bytes]:
        await anyio.sleep_forever()
        return []

    def move_deadline(self, deadline: float) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def send_nowait(self, datagrams: list[tuple[bytes, object]]) -> int:
        if not self.full:
            self.written.extend(d for d, _ in datagrams)
            return len(datagrams)
        self.written.extend(d for d, _ in datagrams[:1])
        return min(1, len(datagrams))

    async def send(self, data: bytes) -> None:
        await self.room.wait()
        self.full = False
        self.written.append(data)

    def close(self) -> None:
        pass


class _Quic:
    def __init__(self, flights: list[list[bytes]]) -> None:
        self.flights = flights

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        flight = self.flights.pop(0) if self.flights else []
        return [(d, None) for d in flight]


async def test_a_transmit_queues_behind_one_waiting_for_room() -> None:
    sock = _FullSocket()
    transport = QuicTransport(sock, _Quic([[b"a", b"b", b"c"], [b"d"]]))  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport._transmit)
        await anyio.wait_all_tasks_blocked()
        assert sock.written == [b"a"]  # b and c wait for room
        tg.start_soon(transport._transmit)
        await anyio.wait_all_tasks_blocked()
        assert sock.written == [b"a"]  # d waits behind them, not before
        sock.room.set()
    assert sock.written == [b"a", b"b", b"c", b"d"]
    assert not transport._send_lock.locked()


async def test_a_transmit_with_room_writes_everything_at_once() -> None:
    sock = _FullSocket()
    sock.full = False
    transport = QuicTransport(sock, _Quic([[b"a", b"b"], []]))  # type: ignore[arg-type]
    await transport._transmit()
    await transport._transmit()  # nothing to send: nothing written
    assert sock.written == [b"a", b"b"]
    assert not transport._send_lock.locked()
