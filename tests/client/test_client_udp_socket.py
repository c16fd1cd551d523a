"""The client's UDP socket waits for datagrams until a deadline that the loop can move or
cut short: through anyio under trio, through a reader the asyncio loop keeps for the
socket's life under asyncio (``_AsyncioUdpSocket``). Both behave the same; a real socket
pair on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from felix_client._transport import _AsyncioUdpSocket, _UdpSocket

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair() -> AsyncIterator[tuple[_UdpSocket, socket.socket]]:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    sock = await _UdpSocket.connect("127.0.0.1", peer.getsockname()[1])
    peer.connect(sock.sock.getsockname())
    try:
        yield sock, peer
    finally:
        sock.close()
        peer.close()


async def test_the_socket_kind_follows_the_loop(
    pair: tuple[_UdpSocket, socket.socket], anyio_backend: str
) -> None:
    sock, _ = pair
    assert isinstance(sock, _AsyncioUdpSocket) == (anyio_backend == "asyncio")


async def test_datagrams_already_waiting_are_taken_together(
    pair: tuple[_UdpSocket, socket.socket],
) -> None:
    sock, peer = pair
    for i in range(3):
        peer.send(b"d%d" % i)
    with anyio.fail_after(5):
        got = await sock.receive_many(64)
        while len(got) < 3:  # loopback delivers at once; bounded by fail_after
            got += await sock.receive_many(64)
    assert got == [b"d0", b"d1", b"d2"]


async def test_a_deadline_ends_the_wait_empty(pair: tuple[_UdpSocket, socket.socket]) -> None:
    sock, _ = pair
    start = anyio.current_time()
    assert await sock.receive_many(64, start + 0.05) == []
    assert anyio.current_time() - start >= 0.04
    assert await sock.receive_many(64, start) == []  # a deadline already past: at once


async def test_moving_the_deadline_or_interrupting_ends_the_wait(
    pair: tuple[_UdpSocket, socket.socket],
) -> None:
    sock, peer = pair
    results: list[list[bytes]] = []

    async def wait() -> None:
        results.append(await sock.receive_many(64, anyio.current_time() + 30))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.02)
            sock.move_deadline(anyio.current_time() + 0.02)  # earlier: ends then
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.02)
            sock.interrupt()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.02)
            sock.move_deadline(anyio.current_time() + 30)  # later: still waiting for data
            await anyio.sleep(0.02)
            peer.send(b"late")
    assert results == [[], [], [b"late"]]


async def test_a_stale_readiness_is_not_an_empty_batch(
    pair: tuple[_UdpSocket, socket.socket], anyio_backend: str
) -> None:
    """asyncio can report the socket readable once more after the reading task took
    everything; that report ends no wait: the wait goes on until data (or the deadline)."""
    if anyio_backend != "asyncio":
        pytest.skip("the asyncio socket's reader")
    sock, peer = pair
    assert isinstance(sock, _AsyncioUdpSocket)
    results: list[list[bytes]] = []

    async def wait() -> None:
        results.append(await sock.receive_many(64, anyio.current_time() + 30))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.02)
            sock._wake(True)  # what the loop's reader does, with nothing to read
            await anyio.sleep(0.02)
            assert results == []
            peer.send(b"data")
    assert results == [[b"data"]]


async def test_a_connection_that_cannot_be_built_leaves_no_socket_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from felix_client import _transport
    from felix_runtime.quic_engines import load_engine

    engine = load_engine("aioquic")
    made: list[_UdpSocket] = []
    real_connect = _UdpSocket.connect.__func__  # type: ignore[attr-defined]

    async def connect(cls: type[_UdpSocket], host: str, port: int) -> _UdpSocket:
        sock: _UdpSocket = await real_connect(cls, host, port)
        made.append(sock)
        return sock

    class Broken:
        def __getattr__(self, name: str) -> object:
            return getattr(engine, name)

        def client_connection(self, **kwargs: object) -> object:
            raise RuntimeError("no connection today")

    monkeypatch.setattr(_UdpSocket, "connect", classmethod(connect))
    monkeypatch.setattr(_transport, "load_engine", lambda name: Broken())
    with pytest.raises(RuntimeError, match="no connection today"):
        await _transport.QuicTransport.connect(
            "127.0.0.1", 9, _transport.TransportOptions(insecure=True)
        )
    assert len(made) == 1 and made[0].sock.fileno() == -1  # closed (and no longer watched)
