"""A sans-IO broker and aioquic clients exchanging datagrams in memory under a fake clock,
where a client can stop reading: while ``quic.reading`` is false its QUIC grants the broker
no more flow-control credit (a client that does not read its replies).

Shared by ``test_unread_replies.py`` (what the broker queues for such a client is bounded),
``test_held_requests_bound.py`` (what it holds of that client's requests is bounded) and
``test_receive_window.py`` (the credit the broker grants stays one window wide).
"""

from __future__ import annotations

from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto.client import ClientConnection
from felix_server.server import FelixServer

SERVER_ADDR = ("127.0.0.1", 7447)


class StingyQuic(QuicConnection):
    """A client QUIC that, while ``reading`` is false, grants the broker no more credit."""

    reading = True

    def _write_connection_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_connection_limits(*args, **kwargs)

    def _write_stream_limits(self, *args: Any, **kwargs: Any) -> None:
        if self.reading:
            super()._write_stream_limits(*args, **kwargs)


class StingyClient:
    """An aioquic client QUIC and a felix_proto ``ClientConnection`` on ``127.0.0.1:port``,
    keeping the cache values it received and the ids of the cache puts answered."""

    def __init__(self, cafile: str, port: int, now: float) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=60.0,
            max_data=256 * 1024,
            max_stream_data=128 * 1024,
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = StingyQuic(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.felix = ClientConnection(default_timeout=3600.0)
        self.values: dict[int, bytes | None] = {}
        self.stored: set[int] = set()  # ids of the cache puts answered
        self.connected = False
        self.welcomed = False
        self.written = 0  # stream bytes handed to QUIC
        self.terminated: qe.ConnectionTerminated | None = None

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = event
        while (fev := self.felix.next_event()) is not None:
            if isinstance(fev, fe.CacheValueReceived):
                self.values[fev.request_id] = fev.value
            elif isinstance(fev, fe.CachePutCompleted):
                self.stored.add(fev.request_id)
            elif isinstance(fev, fe.Welcomed):
                self.welcomed = True
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)
            self.written += len(data)


class MemoryPair:
    """``server`` and its clients, stepped 1 ms at a time (:meth:`step`, :meth:`settle`).
    Subclasses watch each step in :meth:`stepped`."""

    def __init__(self, server: FelixServer, now: float) -> None:
        self.server = server
        self.now = now
        self.clients: dict[tuple[str, int], StingyClient] = {}

    def add(self, client: StingyClient) -> StingyClient:
        self.clients[client.addr] = client
        return client

    def stepped(self) -> None:
        """Called after every step."""

    def step(self) -> bool:
        """Fire due timers and move every datagram once; whether anything moved."""
        self.now += 0.001
        now, server, moved = self.now, self.server, False
        for client in self.clients.values():
            timer = client.quic.get_timer()
            if timer is not None and timer <= now:
                client.quic.handle_timer(now)
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
        for client in self.clients.values():
            client.pump()
            for data, _ in client.quic.datagrams_to_send(now=now):
                server.datagram_received(data, client.addr, now)
                moved = True
        for data, addr in server.datagrams_to_send(now):
            self.clients[addr].quic.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        for client in self.clients.values():
            client.pump()
        self.stepped()
        return moved

    def settle(self, rounds: int = 3000) -> None:
        """Step until nothing moved for 10 steps (at most ``rounds``)."""
        quiet = 0
        for _ in range(rounds):
            quiet = 0 if self.step() else quiet + 1
            if quiet >= 10:
                return
        raise AssertionError("did not settle")
