"""In-memory benchmark of the clients' work for one record: the publisher's send and the
subscriber's receive, with raw aioquic's own send and receive as the anchor.

Two real :class:`~felix_client.Client` objects (one publishing, one subscribing, as
``felix bench pubsub-latency`` uses them: ``await client.publish(stream, payload)``, batch
1, ``AckMode.ACCEPTED``; ``async for event in sub``) run on one asyncio loop, each over an
in-memory socket (:class:`MemSocket`, in place of the transport's UDP socket) to an
in-memory :class:`~felix_server.server.FelixServer`. A driver task plays the network and the
broker, one side at a time: once every client waits on its socket (and the tasks that were
ready have run), it feeds the broker what the clients sent and hands the broker's datagrams
to ONE client (the subscriber first), then waits again. So each client's work runs alone
and is timed alone, whatever the machine's load:

* ``pub_us``: ``await client.publish`` called -> its datagram handed to the socket (the
  stage ``pub_client`` of ``benchmarks/latency_stages.py``); ``pub_pass_us``: the
  publisher's whole turn, from the ack's datagram handed to it to its socket waiting again
  (the previous publish's return, the next publish, the transmit, the wait re-armed);
* ``sub_us``: the subscriber's socket read returns the delivery -> the record out of
  ``async for`` (``sub_client``); ``sub_pass_us``: its whole turn, to its socket waiting
  again;
* ``*_iterations``: event-loop iterations (``BaseEventLoop._run_once``) in those windows;
* ``raw_send_us`` / ``raw_recv_us``: an aioquic client's ``send_stream_data`` +
  ``datagrams_to_send`` of the same publish frame, and ``receive_datagram`` + ``next_event``
  of the same delivery datagram, against an aioquic peer, in the same run.

Timers (QUIC's ACK delay, the subscriber's held ACK) run on the loop's real clock; their
turns are outside the windows above. Medians of per-record samples, microseconds.

Usage: ``python benchmarks/client_record.py [--records 2000] [--rounds 3] [--json]
[--profile pub|sub]`` (``--profile`` runs cProfile over the clients' turns and prints the
top 30 by cumulative time).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import cProfile
import json
import math
import pstats
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_client import Client, _transport
from felix_proto import ALPN
from felix_runtime.quic_engines import server_quic
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

SERVER = ("127.0.0.1", 7447)
STREAM = "bench"
PAYLOAD = b"x" * 100
clock = time.perf_counter_ns
LOOP_ITERATIONS = [0]


def _count_iterations() -> None:
    run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def counted(self: Any) -> None:
        LOOP_ITERATIONS[0] += 1
        run_once(self)

    asyncio.base_events.BaseEventLoop._run_once = counted  # type: ignore[attr-defined]


class MemSocket(_transport._UdpSocket):
    """The transport's socket, in memory: what it sends goes to :attr:`outbound`, what the
    network hands it comes out of :meth:`receive_many`."""

    def __init__(self, net: Net, addr: tuple[str, int]) -> None:
        self.sock = None  # type: ignore[assignment]
        self.remote = SERVER
        self.addr = addr
        self.net = net
        self.loop = asyncio.get_running_loop()
        self.inbound: deque[bytes] = deque()
        self.outbound: list[bytes] = []
        self.waiting: asyncio.Future[bool] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.read_ns = 0
        self.sent_ns = 0

    def _wake(self, readable: bool) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(readable)

    async def receive_many(self, limit: int, deadline: float = math.inf) -> list[bytes]:
        loop = self.loop
        while deadline > loop.time():
            if self.inbound:
                out = list(self.inbound)
                self.inbound.clear()
                self.read_ns = clock()
                return out
            self.waiting = loop.create_future()
            if deadline != math.inf:
                self.timer = loop.call_at(deadline, self._wake, False)
            self.net.waiting(self)
            try:
                readable = await self.waiting
            finally:
                self.waiting = None
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
            if not readable:
                return []
        return []

    def move_deadline(self, deadline: float) -> None:
        if self.waiting is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deadline <= self.loop.time():
            self._wake(False)
        elif deadline != math.inf:
            self.timer = self.loop.call_at(deadline, self._wake, False)

    def interrupt(self) -> None:
        self._wake(False)

    def send_nowait(self, datagrams: list[tuple[bytes, object]]) -> int:
        if datagrams:
            self.sent_ns = self.sent_ns or clock()
            self.outbound.extend(d for d, _ in datagrams)
        return len(datagrams)

    async def send(self, data: bytes) -> None:
        self.outbound.append(data)

    def close(self) -> None:
        self.net.sockets.remove(self)


class Net:
    """The network and the broker: see the module docstring."""

    def __init__(self, server: FelixServer) -> None:
        self.server = server
        self.sockets: list[MemSocket] = []
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self.order: list[tuple[str, int]] = []  # whom to serve first (the subscriber)
        self.loop = asyncio.get_running_loop()
        self.kick: asyncio.Future[None] | None = None
        self.turn_start = 0
        self.turn_of: MemSocket | None = None
        self.turns: dict[tuple[str, int], list[int]] = {}
        self.turn_iterations: dict[tuple[str, int], list[int]] = {}
        self._iter0 = 0
        self.profiler: cProfile.Profile | None = None
        self.profile_addr: tuple[str, int] | None = None
        self.stop = False

    def socket(self, host: str, port: int) -> MemSocket:
        sock = MemSocket(self, ("10.0.0.1", 10000 + len(self.sockets)))
        self.sockets.append(sock)
        return sock

    def waiting(self, sock: MemSocket) -> None:
        if self.turn_of is sock:  # the turn ends: this client waits again
            if self.profiler is not None and sock.addr == self.profile_addr:
                self.profiler.disable()
            self.turns.setdefault(sock.addr, []).append(clock() - self.turn_start)
            self.turn_iterations.setdefault(sock.addr, []).append(LOOP_ITERATIONS[0] - self._iter0)
            self.turn_of = None
        if self.idle() and self.kick is not None and not self.kick.done():
            self.loop.call_soon(self._kick)  # after the tasks ready now

    def idle(self) -> bool:
        """Every client waits on its socket (and none was just woken)."""
        return all(s.waiting is not None and not s.waiting.done() for s in self.sockets)

    def _kick(self, timer: bool = False) -> None:
        """Wake the driver: on its timer, or once every client waits on its socket (checked
        when this runs: a client woken meanwhile is mid-turn)."""
        if not timer and not self.idle():
            return
        if self.kick is not None and not self.kick.done():
            self.kick.set_result(None)

    async def run(self) -> None:
        server, loop = self.server, self.loop
        while not self.stop:
            self.kick = loop.create_future()
            timer = server.get_timer()
            handle = None
            busy = any(s.outbound for s in self.sockets) or any(self.pending.values())
            if busy and self.idle():
                self.kick.set_result(None)
            if timer is not None and not self.kick.done():
                handle = loop.call_at(max(timer, loop.time()), self._kick, True)
            await self.kick
            if handle is not None:
                handle.cancel()
            self._broker(loop.time())
            if self.idle():  # else a timer of the broker's fired mid-turn: deliver later
                self._deliver()

    def _broker(self, now: float) -> None:
        server = self.server
        for sock in self.sockets:
            for data in sock.outbound:
                server.datagram_received(data, sock.addr, now)
            sock.outbound.clear()
            sock.sent_ns = 0
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        for data, addr in server.datagrams_to_send(now):
            self.pending.setdefault(addr, []).append(data)

    def _deliver(self) -> None:
        """Hand the broker's datagrams to one client (the first of :attr:`order` with any)."""
        addrs = self.order + [a for a in self.pending if a not in self.order]
        for addr in addrs:
            data = self.pending.get(addr)
            if not data:
                continue
            sock = next((s for s in self.sockets if s.addr == addr), None)
            self.pending[addr] = []
            if sock is None:
                continue
            sock.inbound.extend(data)
            self.turn_of, self.turn_start = sock, clock()
            self._iter0 = LOOP_ITERATIONS[0]
            if self.profiler is not None and addr == self.profile_addr:
                self.profiler.enable()
            sock._wake(True)
            return


async def _felix_round(
    net: Net, pub: Client, sub_client: Client, records: int
) -> dict[str, list[int]]:
    pub_sock, sub_sock = net.sockets[-2], net.sockets[-1]
    net.order = [sub_sock.addr]
    samples: dict[str, list[int]] = {"pub": [], "sub": [], "pub_it": [], "sub_it": []}
    got = asyncio.Event()
    async with sub_client.subscribe(STREAM, start="latest") as sub:

        async def read() -> None:
            async for _event in sub:
                t = clock()
                samples["sub"].append(t - sub_sock.read_ns)
                samples["sub_it"].append(LOOP_ITERATIONS[0] - sub_iter0[0])
                got.set()

        sub_iter0 = [0]
        real_receive = sub_sock.receive_many

        async def stamped_receive(limit: int, deadline: float = math.inf) -> list[bytes]:
            out = await real_receive(limit, deadline)
            sub_iter0[0] = LOOP_ITERATIONS[0]
            return out

        sub_sock.receive_many = stamped_receive  # type: ignore[method-assign]
        reader = asyncio.ensure_future(read())
        for _ in range(50):  # warm-up
            got.clear()
            await pub.publish(STREAM, PAYLOAD)
            await got.wait()
        del samples["sub"][:], samples["sub_it"][:]
        net.turns.clear()
        net.turn_iterations.clear()
        for _ in range(records):
            got.clear()
            pub_sock.sent_ns = 0
            it0 = LOOP_ITERATIONS[0]
            t0 = clock()
            await pub.publish(STREAM, PAYLOAD)
            samples["pub"].append(pub_sent[0] - t0)
            samples["pub_it"].append(pub_sent_it[0] - it0)
            await got.wait()
        reader.cancel()
        sub_sock.receive_many = real_receive  # type: ignore[method-assign]
    samples["pub_pass"] = net.turns.get(pub_sock.addr, [])
    samples["sub_pass"] = net.turns.get(sub_sock.addr, [])
    samples["pub_pass_it"] = net.turn_iterations.get(pub_sock.addr, [])
    samples["sub_pass_it"] = net.turn_iterations.get(sub_sock.addr, [])
    return samples


pub_sent = [0]
pub_sent_it = [0]


def _raw_round(records: int, cert: str, key: str) -> dict[str, list[int]]:
    """aioquic alone: a client sends the publish's bytes on a stream, a server echoes a
    delivery-sized message; the client's send and receive are timed."""
    sconf = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    sconf.load_cert_chain(cert, key)
    cconf = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost")
    cconf.load_verify_locations(cert)
    now = 1000.0
    client = QuicConnection(configuration=cconf)
    client.connect(SERVER, now=now)
    server: QuicConnection | None = None
    caddr = ("10.0.0.9", 9999)

    def exchange() -> None:
        nonlocal server
        for data, _ in client.datagrams_to_send(now):
            if server is None:
                server = QuicConnection(
                    configuration=sconf, original_destination_connection_id=data[6:14]
                )
            server.receive_datagram(data, caddr, now)
        assert server is not None
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
        while client.next_event() is not None:
            pass
        while server.next_event() is not None:
            pass

    for _ in range(10):
        now += 0.001
        exchange()
    assert server is not None
    sid = client.get_next_available_stream_id()
    out: dict[str, list[int]] = {"raw_send": [], "raw_recv": []}
    frame = b"p" * 150
    delivery = b"d" * 140
    ssid = server.get_next_available_stream_id(is_unidirectional=True)
    for _ in range(records + 50):
        now += 0.0005
        t0 = clock()
        client.send_stream_data(sid, frame, False)
        datagrams = client.datagrams_to_send(now)
        t1 = clock()
        for data, _ in datagrams:
            server.receive_datagram(data, caddr, now)
        while server.next_event() is not None:
            pass
        server.send_stream_data(ssid, delivery, False)
        replies = server.datagrams_to_send(now)
        t2 = clock()
        for data, _ in replies:
            client.receive_datagram(data, SERVER, now)
        while (event := client.next_event()) is not None:
            assert isinstance(event, qe.StreamDataReceived | qe.StreamDataReceived)
        t3 = clock()
        out["raw_send"].append(t1 - t0)
        out["raw_recv"].append(t3 - t2)
    out["raw_send"] = out["raw_send"][50:]
    out["raw_recv"] = out["raw_recv"][50:]
    return out


async def run(records: int, rounds: int, profile: str | None) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files = ensure_self_signed(Path(tmp))
        config = ServerConfig(data_dir=str(tmp), quic_engine="aioquic")
        quic_config, factory = server_quic(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        loop = asyncio.get_running_loop()
        server = FelixServer(config, quic_config, now=loop.time(), connection_factory=factory)
        net = Net(server)
        real_connect = _transport._UdpSocket.connect

        async def connect(host: str, port: int) -> _transport._UdpSocket:
            return net.socket(host, port)

        _transport._UdpSocket.connect = connect  # type: ignore[method-assign]
        driver = asyncio.ensure_future(net.run())
        url = f"quic://127.0.0.1:{SERVER[1]}"
        try:
            async with (
                Client(url, ca_file=str(files.cert_path), client_name="felix-bench") as pub,
                Client(url, ca_file=str(files.cert_path), client_name="felix-bench") as sub,
            ):
                await pub.admin.create("stream", STREAM, {})
                pub_sock = net.sockets[-2]
                real_send = pub_sock.send_nowait

                def stamped_send(datagrams: list[tuple[bytes, object]]) -> int:
                    if datagrams and not pub_sock.sent_ns:
                        pub_sent[0] = clock()
                        pub_sent_it[0] = LOOP_ITERATIONS[0]
                    return real_send(datagrams)

                pub_sock.send_nowait = stamped_send  # type: ignore[method-assign]
                if profile is not None:
                    net.profiler = cProfile.Profile()
                    net.profile_addr = (pub_sock if profile == "pub" else net.sockets[-1]).addr
                for _ in range(rounds):
                    felix = await _felix_round(net, pub, sub, records)
                    raw = _raw_round(records, str(files.cert_path), str(files.key_path))
                    results.append(_summary(felix | raw))
        finally:
            net.stop = True
            net._kick(True)
            driver.cancel()
            _transport._UdpSocket.connect = real_connect  # type: ignore[method-assign]
        if net.profiler is not None:
            pstats.Stats(net.profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(net.profiler).sort_stats("tottime").print_stats(25)
    return results


def _summary(samples: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in samples.items():
        if not values:
            continue
        if name.endswith("_it"):
            out[name[:-3] + "_iterations"] = round(statistics.mean(values), 2)
        else:
            out[name + "_us"] = round(statistics.median(values) / 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=("pub", "sub"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _count_iterations()
    results = asyncio.run(run(args.records, args.rounds, args.profile))
    if args.json:
        print(json.dumps(results))
    else:
        for i, r in enumerate(results):
            print(f"round {i + 1}: " + "  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
