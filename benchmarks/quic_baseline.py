"""Raw aioquic small-message throughput on 127.0.0.1: the yardstick for the Felix broker.

No Felix code is involved: a client writes N small messages (default 100 bytes) on one
bidirectional QUIC stream, a server counts the bytes and reports progress back every
256 KiB; the client keeps at most ``--window`` bytes unconfirmed. The figure is messages per
second from the first write until the server has every byte.

Each row varies one transport setting (issue 4, "transport tuning with figures"):

* ``datagram``: aioquic's default 1200-byte datagrams vs 1452 (fits loopback / Ethernet);
* ``windows``: flow-control windows, aioquic's default 1 MiB vs 16 MiB / 4 MiB per stream;
* ``io``: how the endpoint drives the socket:
  ``per-datagram``  a DatagramProtocol that transmits after every received datagram (what
                    aioquic.asyncio does);
  ``per-pass``      a DatagramProtocol that schedules one transmit per loop pass;
  ``batch``         a non-blocking socket read with ``loop.add_reader`` until empty (up to
                    64 datagrams), then one transmit: what felix_runtime_asyncio does.

Usage::

    .venv/bin/python benchmarks/quic_baseline.py            # every row, 200k x 100 B
    .venv/bin/python benchmarks/quic_baseline.py --count 50000 --size 256 --rows batch-1452-big

Both endpoints run in one process and one event loop, so one CPU core does the work of
both: the figure is a lower bound for a broker with clients in other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived
from aioquic.quic.packet import pull_quic_header

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from felix_runtime.tls import ensure_self_signed

REPORT_EVERY = 256 * 1024
ALPN = "felix-bench"


@dataclass(frozen=True)
class Row:
    name: str
    datagram: int
    max_data: int
    max_stream_data: int
    io: str  # per-datagram | per-pass | batch


MiB = 1024 * 1024
ROWS = [
    Row("aioquic-defaults", 1200, 1 * MiB, 1 * MiB, "per-datagram"),
    Row("datagram-1452", 1452, 1 * MiB, 1 * MiB, "per-datagram"),
    Row("windows-16M/4M", 1200, 16 * MiB, 4 * MiB, "per-datagram"),
    Row("per-pass-transmit", 1200, 1 * MiB, 1 * MiB, "per-pass"),
    Row("batch-recv-transmit", 1200, 1 * MiB, 1 * MiB, "batch"),
    Row("batch-1452-big", 1452, 16 * MiB, 4 * MiB, "batch"),
]


class Endpoint:
    """One QUIC connection on one UDP socket, driven in one of the three I/O modes."""

    def __init__(self, io: str, on_event: Callable[[QuicEvent], None]) -> None:
        self.io = io
        self.quic: QuicConnection | None = None
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.sock: socket.socket | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.scheduled = False
        self.make_connection: Callable[[bytes], QuicConnection] | None = None
        self.transmits = 0
        self.closed = False

    # socket plumbing ----------------------------------------------------------------
    async def open(self, local: tuple[str, int]) -> tuple[str, int]:
        if self.io == "batch":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
            sock.bind(local)
            sock.setblocking(False)
            self.sock = sock
            self.loop.add_reader(sock.fileno(), self._readable)
            addr: tuple[str, int] = sock.getsockname()
            return addr
        endpoint = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
                endpoint.receive(data, addr)
                endpoint.after_input()

        transport, _ = await self.loop.create_datagram_endpoint(Proto, local_addr=local)
        self.transport = transport
        sockname: tuple[str, int] = transport.get_extra_info("sockname")
        return sockname

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.transport is not None:
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            self.receive(data, addr)
        self.transmit()

    def sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self.sock is not None:
            with contextlib.suppress(BlockingIOError):  # dropped; QUIC recovers
                self.sock.sendto(data, addr)
        else:
            assert self.transport is not None
            self.transport.sendto(data, addr)

    # QUIC driving -------------------------------------------------------------------
    def receive(self, data: bytes, addr: NetworkAddress) -> None:
        if self.quic is None:
            assert self.make_connection is not None
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            self.quic = self.make_connection(header.destination_cid)
        self.quic.receive_datagram(data, addr, now=time.monotonic())
        while (event := self.quic.next_event()) is not None:
            self.on_event(event)

    def after_input(self) -> None:
        if self.io == "per-datagram":
            self.transmit()
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        self.scheduled = False
        if self.quic is None or self.closed:
            return
        self.transmits += 1
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sendto(data, addr)
        at = self.quic.get_timer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if at is not None:
            delay = max(at - time.monotonic(), 0.0)
            self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.quic is not None and not self.closed:
            self.quic.handle_timer(now=time.monotonic())
            while (event := self.quic.next_event()) is not None:
                self.on_event(event)
        self.transmit()


async def run_row(row: Row, count: int, size: int, window: int, cert: tuple[str, str]) -> float:
    """Move ``count`` messages of ``size`` bytes; return messages per second."""
    total = count * size
    done = asyncio.get_running_loop().create_future()
    state = {"received": 0, "confirmed": 0, "sent": 0, "reported": 0}
    started = [0.0]
    message = b"x" * size

    server_config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        max_datagram_size=row.datagram,
        max_data=row.max_data,
        max_stream_data=row.max_stream_data,
    )
    server_config.load_cert_chain(cert[0], cert[1])

    def on_server_event(event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            state["received"] += len(event.data)
            if state["received"] - state["reported"] >= REPORT_EVERY or (
                state["received"] == total
            ):
                state["reported"] = state["received"]
                assert server.quic is not None
                server.quic.send_stream_data(event.stream_id, state["received"].to_bytes(8, "big"))
            if state["received"] == total and not done.done():
                done.set_result(time.perf_counter())

    server = Endpoint(row.io, on_server_event)
    server.make_connection = lambda cid: QuicConnection(
        configuration=server_config, original_destination_connection_id=cid
    )
    server_addr = await server.open(("127.0.0.1", 0))

    client_config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        max_datagram_size=row.datagram,
        max_data=row.max_data,
        max_stream_data=row.max_stream_data,
        server_name="localhost",
    )
    client_config.load_verify_locations(cert[0])
    stream_id = 0

    def pump() -> None:
        assert client.quic is not None
        while state["sent"] < count and (state["sent"] * size - state["confirmed"] < window):
            client.quic.send_stream_data(stream_id, message)
            state["sent"] += 1

    def on_client_event(event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            started[0] = time.perf_counter()
            pump()
        elif isinstance(event, StreamDataReceived):
            data = event.data
            for i in range(0, len(data) - len(data) % 8, 8):
                state["confirmed"] = int.from_bytes(data[i : i + 8], "big")
            pump()

    client = Endpoint(row.io, on_client_event)
    await client.open(("127.0.0.1", 0))
    client.quic = QuicConnection(configuration=client_config)
    client.quic.connect(server_addr, now=time.monotonic())
    client.transmit()
    try:
        async with asyncio.timeout(120):
            finished = await done
    finally:
        client.close()
        server.close()
    return float(count / (finished - started[0]))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=8 * MiB, help="app-level unconfirmed bytes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (best is shown)")
    parser.add_argument("--rows", nargs="*", help="row names (default: all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = ensure_self_signed(tmp)
        cert = (str(files.cert_path), str(files.key_path))
        print(f"raw aioquic, one process, {args.count} x {args.size} B on 127.0.0.1")
        print(f"{'row':22} {'datagram':>8} {'max_data':>9} {'stream':>7} {'io':>13} {'msg/s':>10}")
        for row in ROWS:
            if args.rows and row.name not in args.rows:
                continue
            best = 0.0
            for _ in range(args.repeat):
                best = max(best, await run_row(row, args.count, args.size, args.window, cert))
            print(
                f"{row.name:22} {row.datagram:>8} {row.max_data // MiB:>8}M "
                f"{row.max_stream_data // MiB:>6}M {row.io:>13} {best:>10,.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
