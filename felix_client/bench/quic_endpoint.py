"""A bare QUIC endpoint for the ``raw-quic`` ceiling: one engine, one socket, no Felix.

Two engines share the sans-IO calls this module uses (``connect``, ``receive_datagram``,
``next_event``, ``datagrams_to_send``, ``get_timer``, ``handle_timer``,
``send_stream_data``, ``close``) and the same event names: aioquic, which the broker and
the client run on, and qh3 (optional: ``pip install 'felix[qh3]'``), a fork whose packet
engine and crypto are in Rust. :func:`load_engine` finds one by name; everything else here
is the same code for both.

:class:`Endpoint` drives one connection the way the broker's asyncio runtime drives its
socket (``benchmarks/quic_baseline.py``'s ``batch`` row): a non-blocking UDP socket watched
with ``loop.add_reader``; when it is readable, up to 64 datagrams are read and fed, then one
transmit; one timer follows the engine's ``get_timer()``. It runs on asyncio only: it is
the ceiling, measured with the cheapest driving there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .settings import ENGINES, QuicSettings

__all__ = ["ENGINES", "Endpoint", "Engine", "EngineMissing", "load_engine"]

ALPN = "felix-bench"
READ_BATCH = 64
SOCKET_BUFFER = 4 << 20


class EngineMissing(ImportError):
    """The engine's package is not installed."""


@dataclass(frozen=True, slots=True)
class Engine:
    """One QUIC implementation's classes."""

    name: str
    version: str
    configuration: Any
    """``QuicConfiguration``."""
    connection: Any
    """``QuicConnection``."""
    handshake_completed: Any
    stream_data_received: Any
    connection_terminated: Any

    def configuration_for(
        self,
        settings: QuicSettings,
        *,
        is_client: bool,
        cert: tuple[str, str] | None = None,
        ca_file: str | None = None,
    ) -> Any:
        """A configuration with ``settings``; a server loads ``cert`` (certificate, key),
        a client trusts ``ca_file`` (None: it does not verify the server at all)."""
        config = self.configuration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            max_datagram_size=settings.max_datagram_size,
            max_data=settings.max_data,
            max_stream_data=settings.max_stream_data,
            idle_timeout=settings.idle_timeout,
        )
        if cert is not None:
            config.load_cert_chain(cert[0], cert[1])
        if ca_file is not None:
            config.load_verify_locations(ca_file)
        elif is_client:
            config.verify_mode = ssl.CERT_NONE
        if is_client:
            config.server_name = "localhost"
        return config


def load_engine(name: str) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINES`).

    Raises:
        EngineMissing: its package is not installed.
        ValueError: an unknown name.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown QUIC engine {name!r} (known: {', '.join(ENGINES)})")
    try:
        configuration = importlib.import_module(f"{name}.quic.configuration")
        connection = importlib.import_module(f"{name}.quic.connection")
        events = importlib.import_module(f"{name}.quic.events")
    except ImportError as exc:
        raise EngineMissing(f"{name} is not installed (pip install 'felix[{name}]')") from exc
    return Engine(
        name=name,
        version=metadata.version(name),
        configuration=configuration.QuicConfiguration,
        connection=connection.QuicConnection,
        handshake_completed=events.HandshakeCompleted,
        stream_data_received=events.StreamDataReceived,
        connection_terminated=events.ConnectionTerminated,
    )


def _initial_destination_cid(datagram: bytes) -> bytes | None:
    """The destination connection id of a long-header packet (a client's Initial)."""
    if len(datagram) < 6 or not datagram[0] & 0x80:
        return None
    length = datagram[5]
    if len(datagram) < 6 + length:
        return None
    return datagram[6 : 6 + length]


class Endpoint:
    """One QUIC connection on one UDP socket (see the module docstring).

    Args:
        engine: the QUIC implementation.
        on_event: called with every QUIC event, in order.
        server_config: for a server: the configuration its connection is made with when the
            first Initial arrives. A client sets :attr:`quic` itself and calls
            :meth:`connect`.
    """

    def __init__(
        self, engine: Engine, on_event: Callable[[Any], None], server_config: Any = None
    ) -> None:
        self.engine = engine
        self.on_event = on_event
        self.server_config = server_config
        self.quic: Any = None
        self.loop = asyncio.get_running_loop()
        self.sock: socket.socket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.terminated = asyncio.Event()
        self.closed = False
        self.transmit_scheduled = False

    def open(self, local: tuple[str, int] = ("127.0.0.1", 0)) -> tuple[str, int]:
        """Bind the socket and start reading; return the bound address."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind(local)
        sock.setblocking(False)
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._readable)
        address: tuple[str, int] = sock.getsockname()
        return address

    def connect(self, address: tuple[str, int], config: Any) -> None:
        """Client side: open a connection to ``address``."""
        self.quic = self.engine.connection(configuration=config)
        self.quic.connect(address, now=time.monotonic())
        self.transmit()

    def close(self) -> None:
        """Close the connection (sending CONNECTION_CLOSE) and the socket."""
        if self.closed:
            return
        if self.quic is not None:
            self.quic.close()
            self.transmit()
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        for _ in range(READ_BATCH):
            try:
                data, address = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            self._receive(data, address)
        self.transmit()

    def _receive(self, data: bytes, address: tuple[str, int]) -> None:
        if self.quic is None:
            cid = _initial_destination_cid(data)
            if cid is None or self.server_config is None:
                return
            self.quic = self.engine.connection(
                configuration=self.server_config, original_destination_connection_id=cid
            )
        self.quic.receive_datagram(data, address, now=time.monotonic())
        self._drain_events()

    def _drain_events(self) -> None:
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, self.engine.connection_terminated):
                self.terminated.set()
            self.on_event(event)

    def transmit_soon(self) -> None:
        """Transmit once at the end of this loop pass, however many writes it makes (what
        a client with many requests in flight does)."""
        if not self.transmit_scheduled:
            self.transmit_scheduled = True
            self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        """Send what the engine wants to send and re-arm the timer."""
        self.transmit_scheduled = False
        if self.quic is None or self.closed or self.sock is None:
            return
        sock = self.sock
        for data, address in self.quic.datagrams_to_send(now=time.monotonic()):
            with contextlib.suppress(BlockingIOError):  # dropped: QUIC recovers
                sock.sendto(data, address)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        at = self.quic.get_timer()
        if at is not None:
            self.timer = self.loop.call_later(max(at - time.monotonic(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.quic is None or self.closed:
            return
        self.quic.handle_timer(now=time.monotonic())
        self._drain_events()
        self.transmit()
