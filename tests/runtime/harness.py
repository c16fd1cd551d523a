"""Test harness for the broker on the wire: a raw QUIC Felix client and a metrics reader.

:class:`RawClient` is deliberately not felix_client: it drives an aioquic client
``QuicConnection`` and a felix_proto ``ClientConnection`` over a UDP socket by hand, so the
broker (of any runtime) is tested on the wire. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto.client import ClientConnection

E = TypeVar("E", bound=fe.Event)

WAIT = 5.0
"""Default seconds any wait may take."""


class RawClient(asyncio.DatagramProtocol):
    """A Felix client made of an aioquic QuicConnection and a felix_proto ClientConnection."""

    def __init__(
        self, cafile: str, *, alpn: list[str] | None = None, raw: bool = False, **felix: Any
    ) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN] if alpn is None else (alpn or None),
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=10.0,
        )
        config.load_verify_locations(cafile)
        self.quic = QuicConnection(configuration=config)
        felix.setdefault("default_timeout", WAIT)
        self.felix = ClientConnection(**felix)
        self.events: list[fe.Event] = []
        self.quic_events: list[qe.QuicEvent] = []
        self._changed = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.addr: NetworkAddress | None = None
        self.terminated = False
        self.raw = raw  # True: stream data is only recorded, not fed to the Felix machine
        self.errors: list[Exception] = []
        self.stalled = False  # when True, incoming datagrams are dropped (a frozen client)

    async def connect(
        self, addr: tuple[str, int], *, hello: bool = True, timeout: float = WAIT
    ) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.addr = addr
        self.quic.connect(addr, now=time.time())
        self.transmit()
        await self.wait_quic(qe.HandshakeCompleted, timeout)
        if hello and not self.raw:
            self.felix.connect(now=time.time())
            self.transmit()
            await self.wait(fe.Welcomed)

    # -- plumbing ------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if self.stalled:
            return
        try:
            self.quic.receive_datagram(data, addr, now=time.time())
            self._process()
        except Exception as exc:  # surfaced by the next wait
            self.errors.append(exc)
            self._changed.set()

    def _process(self) -> None:
        while (event := self.quic.next_event()) is not None:
            self.quic_events.append(event)
            if self.raw:
                continue
            if isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.StreamReset):
                self.felix.stream_reset(event.stream_id, event.error_code)
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = True
                self.felix.connection_lost()
        while (fev := self.felix.next_event()) is not None:
            self.events.append(fev)
            if isinstance(fev, fe.CloseRequested):
                self.quic.close(error_code=fev.error_code, reason_phrase=fev.reason)
        self.transmit()
        self._changed.set()

    def transmit(self) -> None:
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)
        if self._transport is not None:
            for data, addr in self.quic.datagrams_to_send(now=time.time()):
                self._transport.sendto(data, addr)
        if self._timer is not None:
            self._timer.cancel()
        deadlines = [t for t in (self.quic.get_timer(), self.felix.get_timer()) if t is not None]
        if deadlines and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(min(deadlines) - time.time(), 0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.time()
        try:
            self.quic.handle_timer(now)
            self.felix.handle_timer(now)
            self._process()
        except Exception as exc:
            self.errors.append(exc)
            self._changed.set()

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a ClientConnection API method with ``now`` and transmit."""
        result = method(*args, now=time.time(), **kwargs)
        self.transmit()
        return result

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def hang_up(self) -> None:
        """Close the QUIC connection (CONNECTION_CLOSE sent) and the socket."""
        if self._transport is not None:
            self.quic.close()
            self.transmit()
        self.close()

    def kill(self) -> None:
        """Vanish without a word (a killed process): no CONNECTION_CLOSE."""
        self.close()

    async def graceful_close(self) -> None:
        self.felix.close()
        self._process()
        await asyncio.sleep(0.05)
        self.close()

    # -- waiting -------------------------------------------------------------------------
    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.errors:
                    raise self.errors[0]
                self._changed.clear()
                await self._changed.wait()

    async def wait(
        self, kind: type[E], match: Callable[[E], bool] = lambda e: True, timeout: float = WAIT
    ) -> E:
        """Wait for (and return) the first event of ``kind`` matching ``match``."""
        found: list[E] = []

        def check() -> bool:
            for ev in self.events:
                if isinstance(ev, kind) and match(ev):
                    found.append(ev)
                    return True
            return False

        await self.until(check, timeout)
        return found[0]

    async def reply(self, request_id: int, timeout: float = WAIT) -> fe.Event:
        """Wait for the event answering ``request_id``."""
        return await self.wait(
            fe.Event, lambda e: getattr(e, "request_id", None) == request_id, timeout
        )

    async def wait_quic(self, kind: type[qe.QuicEvent], timeout: float = WAIT) -> qe.QuicEvent:
        found: list[qe.QuicEvent] = []

        def check() -> bool:
            found.extend(e for e in self.quic_events if isinstance(e, kind))
            return bool(found)

        await self.until(check, timeout)
        return found[0]

    def stream_bytes(self, stream_id: int) -> bytes:
        """Everything received on one stream (raw mode)."""
        return b"".join(
            e.data
            for e in self.quic_events
            if isinstance(e, qe.StreamDataReceived) and e.stream_id == stream_id
        )

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


T = N = "default"
"""The tenant and namespace the broker creates at start."""


async def create(client: RawClient, kind: str, name: str, **settings: Any) -> dict[str, Any]:
    """Create a resource in the default namespace; return it."""
    from felix_proto import messages as m

    rid = client.call(
        client.felix.admin,
        m.AdminCreate,
        kind=kind,
        tenant=T,
        namespace=N,
        name=name,
        settings=settings,
    )
    reply = await client.reply(rid)
    assert isinstance(reply, fe.AdminReplied), reply
    assert reply.resource is not None
    return reply.resource


def payloads(client: RawClient, subscription_id: int | None = None) -> list[bytes]:
    """Every payload received on subscriptions (one, or all), in arrival order."""
    return [
        p
        for e in client.of(fe.EventsReceived)
        if subscription_id is None or e.subscription_id == subscription_id
        for p in e.batch.payloads
    ]


async def http_get(address: tuple[str, int], path: str, timeout: float = WAIT) -> tuple[int, str]:
    """A minimal HTTP/1.1 GET to the metrics endpoint: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def sample(body: str, series: str) -> float:
    """The value of one series (``name`` or ``name{labels}``) in a Prometheus text body."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", body, re.MULTILINE)
    assert found, f"{series} not in the metrics"
    return float(found.group(1))


async def metric(address: tuple[str, int], series: str) -> float:
    """Scrape ``/metrics`` and return one series' value."""
    status, body = await http_get(address, "/metrics")
    assert status == 200
    return sample(body, series)
