"""In-memory benchmark of the clients' work for one record: the publisher's send and the
subscriber's receive, with raw aioquic's own send and receive as the anchor.

Two real :class:`~felix_client.Client` objects (one publishing, one subscribing, as
``felix bench pubsub-latency`` uses them: ``await client.publish(stream, payload)``, batch
1, ``AckMode.ACCEPTED``; ``async for event in sub``) run on one asyncio loop, each over
the transport's own UDP socket on 127.0.0.1, whose other end (:class:`Tap`) belongs to a
driver task that plays the network and an in-process
:class:`~felix_server.server.FelixServer`, one side at a time: once every client waits on
its socket (and the tasks that were ready have run), it feeds the broker what the clients
sent and hands the broker's datagrams to ONE client (the subscriber first), then waits
again. So each client's work runs alone and is timed alone (syscalls included), whatever
the machine's load:

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
  of the same delivery datagram, against an aioquic peer, in the same run;
  ``pub_over_raw_us`` / ``sub_over_raw_us``: ``pub_us`` and ``sub_us`` less those (the
  firmer figures on a loaded machine: the load moves both terms).

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
import contextlib
import cProfile
import json
import math
import pstats
import socket
import statistics
import sys
import tempfile
import time
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
from felix_runtime.udp import udp_socket
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

SERVER = ("127.0.0.1", 7447)
STREAM = "bench"
PAYLOAD = b"x" * 100
clock = time.perf_counter_ns
LOOP_ITERATIONS = [0]
REAL_CONNECT = _transport._UdpSocket.connect


def _count_iterations() -> None:
    run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def counted(self: Any) -> None:
        LOOP_ITERATIONS[0] += 1
        run_once(self)

    asyncio.base_events.BaseEventLoop._run_once = counted  # type: ignore[attr-defined]


class Tap:
    """One client's socket, the transport's own (:class:`_transport._AsyncioUdpSocket`,
    real syscalls on 127.0.0.1), and the network's end of it (:attr:`peer`): its calls are
    wrapped to stamp the reads and writes and to tell :class:`Net` when the client waits."""

    def __init__(self, net: Net, sock: _transport._UdpSocket, peer: socket.socket) -> None:
        self.net, self.sock, self.peer = net, sock, peer
        self.addr: tuple[str, int] = sock.sock.getsockname()
        self.sent = False  # datagrams wait in the peer socket
        self.inflight = False  # datagrams were sent to it and it has not read them yet
        self.sent_ns = self.sent_iteration = 0  # the first write since reset
        self.read_ns = self.read_iteration = 0  # the last read that returned datagrams
        receive, take, send = sock.receive_many, sock._take, sock.send_nowait
        close = sock.close

        async def receive_many(limit: int, deadline: float = math.inf) -> list[bytes]:
            net.entering(self)  # the wait's future is made before the loop runs again
            return await receive(limit, deadline)

        def take_(limit: int) -> list[bytes]:
            out = take(limit)
            if out:
                self.inflight = False
                self.read_ns, self.read_iteration = clock(), LOOP_ITERATIONS[0]
            return out

        def send_nowait(datagrams: list[tuple[bytes, object]]) -> int:
            if datagrams:
                if not self.sent_ns:
                    self.sent_ns, self.sent_iteration = clock(), LOOP_ITERATIONS[0]
                self.sent = True
            return send(datagrams)

        def close_() -> None:
            net.taps.remove(self)
            close()
            peer.close()

        sock.receive_many = receive_many  # type: ignore[method-assign]
        sock._take = take_  # type: ignore[method-assign]
        sock.send_nowait = send_nowait  # type: ignore[method-assign]
        sock.close = close_  # type: ignore[method-assign]

    @property
    def waiting(self) -> bool:
        """The client waits on its socket and was not woken yet."""
        waiting: asyncio.Future[bool] | None = getattr(self.sock, "_waiting", None)
        return not self.inflight and waiting is not None and not waiting.done()

    def drain(self) -> list[bytes]:
        """What the client sent since the last drain."""
        out: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(self.peer.recv(65536))
        self.sent = False
        return out


class Net:
    """The network and the broker: see the module docstring."""

    def __init__(self, server: FelixServer) -> None:
        self.server = server
        self.taps: list[Tap] = []
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self.order: list[tuple[str, int]] = []  # whom to serve first (the subscriber)
        self.loop = asyncio.get_running_loop()
        self.kick: asyncio.Future[None] | None = None
        self.turn_start = 0
        self.turn_of: Tap | None = None
        self.turns: dict[tuple[str, int], list[int]] = {}
        self.turn_iterations: dict[tuple[str, int], list[int]] = {}
        self._iter0 = 0
        self.profiler: cProfile.Profile | None = None
        self.profile_addr: tuple[str, int] | None = None
        self.profiling = False  # the timed records only
        self.stop = False

    async def connect(self) -> _transport._UdpSocket:
        """A client's socket, connected to a new peer socket of the network's."""
        peer = udp_socket(socket.AF_INET)
        peer.bind(("127.0.0.1", 0))
        sock = await REAL_CONNECT("127.0.0.1", peer.getsockname()[1])
        if not isinstance(sock, _transport._AsyncioUdpSocket):
            raise RuntimeError("the asyncio socket of the transport was expected")
        peer.connect(sock.sock.getsockname())
        self.taps.append(Tap(self, sock, peer))
        return sock

    def entering(self, sock: Tap) -> None:
        if self.turn_of is sock:  # the turn ends: this client waits again
            if self.profiler is not None and sock.addr == self.profile_addr:
                self.profiler.disable()
            self.turns.setdefault(sock.addr, []).append(clock() - self.turn_start)
            self.turn_iterations.setdefault(sock.addr, []).append(LOOP_ITERATIONS[0] - self._iter0)
            self.turn_of = None
        if self.kick is not None and not self.kick.done():
            self.loop.call_soon(self._kick)  # checks, after the tasks ready now

    def idle(self) -> bool:
        """Every client waits on its socket (and none was just woken)."""
        return all(t.waiting for t in self.taps)

    def _kick(self, timer: bool = False) -> None:
        """Wake the driver: on its timer, or once every client waits on its socket (checked
        when this runs: a client woken meanwhile is mid-turn)."""
        if not timer and not self.idle():
            return
        if self.kick is not None and not self.kick.done():
            self.kick.set_result(None)

    async def run(self) -> None:
        server, loop = self.server, self.loop
        timer = server.get_timer()
        while not self.stop:
            self.kick = loop.create_future()
            handle = None
            busy = any(t.sent for t in self.taps) or any(self.pending.values())
            if busy and self.idle():
                self.kick.set_result(None)
            if timer is not None and not self.kick.done():
                handle = loop.call_at(max(timer, loop.time()), self._kick, True)
            await self.kick
            if handle is not None:
                handle.cancel()
            self._broker(loop.time())
            timer = server.get_timer()  # before a turn starts: its time is the broker's
            if self.idle():  # else a timer of the broker's fired mid-turn: deliver later
                self._deliver()

    def _broker(self, now: float) -> None:
        server = self.server
        for tap in self.taps:
            for data in tap.drain():
                server.datagram_received(data, tap.addr, now)
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
            tap = next((t for t in self.taps if t.addr == addr), None)
            self.pending[addr] = []
            if tap is None:
                continue
            self.turn_of, self.turn_start = tap, clock()
            self._iter0 = LOOP_ITERATIONS[0]
            if self.profiler is not None and self.profiling and addr == self.profile_addr:
                self.profiler.enable()
            tap.inflight = True
            for datagram in data:
                tap.peer.send(datagram)
            return


async def _felix_round(
    net: Net, pub: Client, sub_client: Client, records: int
) -> dict[str, list[int]]:
    pub_tap, sub_tap = net.taps
    net.order = [sub_tap.addr]
    samples: dict[str, list[int]] = {"pub": [], "sub": [], "pub_it": [], "sub_it": []}
    got = asyncio.Event()
    async with sub_client.subscribe(STREAM, start="latest") as sub:

        async def read() -> None:
            async for _event in sub:
                samples["sub"].append(clock() - sub_tap.read_ns)
                samples["sub_it"].append(LOOP_ITERATIONS[0] - sub_tap.read_iteration)
                got.set()

        reader = asyncio.ensure_future(read())
        for _ in range(50):  # warm-up
            got.clear()
            await pub.publish(STREAM, PAYLOAD)
            await got.wait()
        del samples["sub"][:], samples["sub_it"][:]
        net.turns.clear()
        net.turn_iterations.clear()
        net.profiling = True
        for _ in range(records):
            got.clear()
            pub_tap.sent_ns = 0
            it0 = LOOP_ITERATIONS[0]
            t0 = clock()
            await pub.publish(STREAM, PAYLOAD)
            samples["pub"].append(pub_tap.sent_ns - t0)
            samples["pub_it"].append(pub_tap.sent_iteration - it0)
            await got.wait()
        net.profiling = False
        if net.profiler is not None:
            net.profiler.disable()
        reader.cancel()
    samples["pub_pass"] = net.turns.get(pub_tap.addr, [])
    samples["sub_pass"] = net.turns.get(sub_tap.addr, [])
    samples["pub_pass_it"] = net.turn_iterations.get(pub_tap.addr, [])
    samples["sub_pass_it"] = net.turn_iterations.get(sub_tap.addr, [])
    return samples


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

        async def connect(host: str, port: int) -> _transport._UdpSocket:
            return await net.connect()

        _transport._UdpSocket.connect = connect  # type: ignore[method-assign]
        driver = asyncio.ensure_future(net.run())
        url = f"quic://127.0.0.1:{SERVER[1]}"
        try:
            async with (
                Client(url, ca_file=str(files.cert_path), client_name="felix-bench") as pub,
                Client(url, ca_file=str(files.cert_path), client_name="felix-bench") as sub,
            ):
                await pub.admin.create("stream", STREAM, {})
                if profile is not None:
                    net.profiler = cProfile.Profile()
                    net.profile_addr = net.taps[0 if profile == "pub" else 1].addr
                for _ in range(rounds):
                    felix = await _felix_round(net, pub, sub, records)
                    raw = _raw_round(records, str(files.cert_path), str(files.key_path))
                    results.append(_summary(felix | raw))
        finally:
            net.stop = True
            net._kick(True)
            driver.cancel()
            _transport._UdpSocket.connect = REAL_CONNECT  # type: ignore[method-assign]
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
    # The Felix layer's share of each end: above raw aioquic's send / receive, same round.
    out["pub_over_raw_us"] = round(out["pub_us"] - out["raw_send_us"], 1)
    out["sub_over_raw_us"] = round(out["sub_us"] - out["raw_recv_us"], 1)
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
