"""The anyio adapter's loop against a fake server, under asyncio and trio.

It checks the adapter's whole job (STYLE.md habit 8) without QUIC: datagrams read in one
pass are fed with one ``now`` and answered by one ``datagrams_to_send``; the one timer fires
``handle_timer`` no earlier than the server's deadline; ``wake`` runs a pass; a finished
server sets ``finished``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import anyio
import pytest

from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_server.server import FelixServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FakeServer:
    """Records the adapter's calls; echoes every datagram back once per pass."""

    def __init__(self) -> None:
        self.fed: list[tuple[bytes, Any, float]] = []
        self.passes: list[float] = []
        self.timers: list[float] = []
        self.deadline: float | None = None
        self.finished = False
        self.due_after: int | None = None  # ask for a transmit after that many datagrams
        self._echo: list[tuple[bytes, Any]] = []

    @property
    def transmit_due(self) -> bool:
        return self.due_after is not None and len(self._echo) >= self.due_after

    def datagram_received(self, data: bytes, addr: Any, now: float) -> None:
        self.fed.append((data, addr, now))
        self._echo.append((data.upper(), addr))

    def datagrams_to_send(self, now: float, send: Any = None) -> list[tuple[bytes, Any]]:
        self.passes.append(now)
        out, self._echo = self._echo, []
        if send is not None:  # as the real server: handed over, nothing returned
            if out:
                send(out)
            return []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.timers.append(now)
        self.deadline = None

    def take_storage_jobs(self, now: float) -> list[Any]:
        return []  # no durable log store


@contextmanager
def _adapter_and_peer(
    fake: FakeServer,
) -> Iterator[tuple[AnyioUdpRuntime, socket.socket, tuple[str, int]]]:
    """The adapter bound on 127.0.0.1 around ``fake``, a non-blocking peer socket, and the
    adapter's address; both closed afterwards."""
    runtime = AnyioUdpRuntime(cast(FelixServer, fake))
    address = runtime.bind("127.0.0.1", 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        yield runtime, peer, address
    finally:
        runtime.close()
        peer.close()


async def _receive(peer: socket.socket) -> bytes:
    await anyio.wait_readable(peer)
    return peer.recv(100)


async def test_batch_timer_wake_and_finish() -> None:
    fake = FakeServer()
    with _adapter_and_peer(fake) as (runtime, peer, (host, port)):
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                # Three datagrams queued before the loop starts: one pass, one now.
                for i in range(3):
                    peer.sendto(b"d%d" % i, (host, port))
                await anyio.sleep(0.05)
                tg.start_soon(runtime.serve)
                echoed = {await _receive(peer) for _ in range(3)}
                assert echoed == {b"D0", b"D1", b"D2"}
                assert len({now for _, _, now in fake.fed}) == 1
                assert len(fake.passes) == 1

                # The one timer: fires once, not before the deadline.
                fake.deadline = deadline = time.time() + 0.1
                runtime.wake()
                while not fake.timers:
                    await anyio.sleep(0.01)
                assert fake.timers == [pytest.approx(deadline, abs=0.05)]
                assert fake.timers[0] >= deadline

                # wake() runs a pass without input and without firing the timer.
                fake.deadline = time.time() + 60
                passes = len(fake.passes)
                runtime.wake()
                while len(fake.passes) == passes:
                    await anyio.sleep(0.01)
                assert len(fake.timers) == 1

                fake.finished = True
                runtime.wake()
                await runtime.finished.wait()
                tg.cancel_scope.cancel()


async def test_asyncio_watches_the_socket_once(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On asyncio the socket is registered with the loop once for the adapter's life, not
    once per wait (``anyio.wait_readable``: two ``epoll_ctl`` per pass)."""
    if anyio_backend != "asyncio":
        pytest.skip("trio waits through anyio")
    import asyncio

    loop = asyncio.get_running_loop()
    registered: list[int] = []
    add_reader = loop.add_reader

    def counting_add_reader(fd: Any, *args: Any) -> None:
        registered.append(fd if isinstance(fd, int) else fd.fileno())
        add_reader(fd, *args)

    monkeypatch.setattr(loop, "add_reader", counting_add_reader)
    fake = FakeServer()
    runtime = AnyioUdpRuntime(cast(FelixServer, fake))
    host, port = runtime.bind("127.0.0.1", 0)
    assert runtime._sock is not None
    fd = runtime._sock.fileno()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runtime.serve)
                for i in range(5):  # one at a time: a wait per datagram
                    peer.sendto(b"d%d" % i, (host, port))
                    while len(fake.fed) <= i:
                        await anyio.sleep(0.005)
                tg.cancel_scope.cancel()
        assert len(fake.fed) == 5
        assert registered.count(fd) == 1
    finally:
        runtime.close()
        peer.close()


async def test_a_transmit_inside_a_batch_when_the_server_asks() -> None:
    fake = FakeServer()
    fake.due_after = 2
    with _adapter_and_peer(fake) as (runtime, peer, (host, port)):
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for i in range(3):  # queued before the loop starts: one batch
                    peer.sendto(b"d%d" % i, (host, port))
                await anyio.sleep(0.05)
                tg.start_soon(runtime.serve)
                assert [await _receive(peer) for _ in range(3)] == [b"D0", b"D1", b"D2"]
                assert len(fake.passes) == 2  # after the second datagram, and at the end
                nows = [now for _, _, now in fake.fed]
                assert nows[0] == nows[1] < fake.passes[0] <= nows[2]  # time never goes back
                assert fake.passes[0] <= fake.passes[1]  # the pass end goes on from it
                tg.cancel_scope.cancel()
