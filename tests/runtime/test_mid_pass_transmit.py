"""A long pass transmits after its first requests, not only at its end.

The adapters read a batch of datagrams before they transmit. With many requests in flight
(a client at concurrency 64), the broker used to serve all of them and only then send the
first reply, while the client waited; the two processes took turns. Now once
``TRANSMIT_AFTER_REQUESTS`` requests were served in a pass, ``FelixServer.transmit_due``
asks the adapter to transmit before it feeds the next datagram (``read_batch``'s
``between``), so the client works on the first replies while the broker serves the rest.
In memory (:mod:`.memory_net`) for the server, on 127.0.0.1 for ``read_batch`` and the
asyncio adapter (the anyio adapter's test is in ``tests/runtimes/test_anyio_adapter.py``).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from felix_proto import events as fe
from felix_runtime.udp import read_batch
from felix_runtime_asyncio.runtime import UdpRuntime
from felix_server.server import TRANSMIT_AFTER_REQUESTS, FelixServer

from .memory_net import SERVER_ADDR, MemoryClient, MemoryNet, N, T


def queued_gets(tmp_path: Path, count: int) -> tuple[MemoryNet, MemoryClient, list[bytes]]:
    """A broker, a client holding a cached value, and the datagrams of ``count`` gets that
    client sends in one flight (over 4 request streams, as the client does)."""
    net = MemoryNet(tmp_path)
    net.broker.create("cache", T, N, "c", {}, now=net.now)
    client = net.client()
    felix = client.felix
    assert felix is not None
    felix.cache_put(T, N, "c", "k", b"v" * 256, now=net.now)
    net.until(lambda: bool(client.of(fe.CachePutCompleted)))
    net.settle()
    streams = [felix.open_request_stream() for _ in range(4)]
    for i in range(count):
        felix.cache_get(T, N, "c", "k", now=net.now, stream_id=streams[i % 4])
    client.pump()
    datagrams = [data for data, _ in client.quic.datagrams_to_send(now=net.now)]
    return net, client, datagrams


def test_a_long_pass_sends_its_first_replies_before_reading_the_rest(tmp_path: Path) -> None:
    net, client, datagrams = queued_gets(tmp_path, 64)
    assert len(datagrams) >= 3  # several datagrams of requests: one pass of the adapter
    server, now = net.server, net.now
    early: list[bytes] = []
    for data in datagrams[:-1]:
        server.datagram_received(data, client.addr, now)
        if server.transmit_due:
            early += [d for d, _ in server.datagrams_to_send(now)]
            assert not server.transmit_due  # counted again from this transmit
    assert early, "no transmit before the last datagram of the pass"
    for data in early:
        client.quic.receive_datagram(data, SERVER_ADDR, now)
    client.pump()
    assert 0 < len(client.of(fe.CacheValueReceived)) < 64  # QUIC paces: not all 16 at once
    server.datagram_received(datagrams[-1], client.addr, now)
    for data, _ in server.datagrams_to_send(now):  # the pass ends
        client.quic.receive_datagram(data, SERVER_ADDR, now)
    net.until(lambda: len(client.of(fe.CacheValueReceived)) == 64)  # and the rest follows


def test_a_short_pass_transmits_once_at_its_end(tmp_path: Path) -> None:
    net, client, datagrams = queued_gets(tmp_path, TRANSMIT_AFTER_REQUESTS - 1)
    for data in datagrams:
        net.server.datagram_received(data, client.addr, net.now)
        assert not net.server.transmit_due


def test_read_batch_takes_the_time_between_gives_for_the_next_datagrams() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        for i in range(3):
            sender.sendto(bytes([i]), receiver.getsockname())
        receiver.settimeout(2.0)
        first, _ = receiver.recvfrom(16)  # loopback queues all three at once
        receiver.setblocking(False)
        assert first == b"\x00"
        fed: list[tuple[bytes, float]] = []
        between: list[float] = []

        def later(now: float) -> float:
            between.append(now)
            return now + 1.0  # as after a transmit: time moved on

        for _ in range(200):  # loopback delivers at once; bounded anyway
            fed.clear()
            between.clear()
            read_batch(receiver, lambda data, _a, now: fed.append((data, now)), 10.0, later)
            if fed:
                break
        assert fed == [(b"\x01", 10.0), (b"\x02", 11.0)]
        assert between == [10.0, 11.0]
    finally:
        receiver.close()
        sender.close()


class EchoServer:
    """Echoes each datagram upper-cased; asks for a transmit after two of a pass."""

    finished = False
    storage = None

    def __init__(self) -> None:
        self.fed: list[float] = []
        self.passes: list[float] = []
        self._echo: list[tuple[bytes, Any]] = []

    @property
    def transmit_due(self) -> bool:
        return len(self._echo) >= 2

    def datagram_received(self, data: bytes, addr: Any, now: float) -> None:
        self.fed.append(now)
        self._echo.append((data.upper(), addr))

    def datagrams_to_send(self, now: float, send: Any) -> list[tuple[bytes, Any]]:
        self.passes.append(now)
        out, self._echo = self._echo, []
        if out:
            send(out)
        return []

    def get_timer(self) -> float | None:
        return None

    def take_storage_jobs(self, now: float) -> list[Any]:
        return []


@pytest.mark.anyio
async def test_the_asyncio_adapter_transmits_inside_a_batch_when_the_server_asks() -> None:
    fake = EchoServer()
    runtime = UdpRuntime(cast(FelixServer, fake))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5.0)
        address = await runtime.start("127.0.0.1", 0)
        for i in range(3):  # queued before the loop reads: one batch
            peer.sendto(b"d%d" % i, address)
        echoed = []
        for _ in range(3):
            echoed.append(await asyncio.to_thread(peer.recv, 100))
        assert echoed == [b"D0", b"D1", b"D2"]
        assert len(fake.passes) == 2  # after the second datagram, and at the end
        assert fake.fed[0] == fake.fed[1] < fake.passes[0] <= fake.fed[2]
    finally:
        runtime.close()
        peer.close()
