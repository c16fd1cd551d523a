"""Test helpers for the connection machines: a fake QUIC pair and fake time.

:class:`Pair` connects a :class:`~felix_proto.client.ClientConnection` and a
:class:`~felix_proto.server.ServerConnection` through an in-memory "QUIC" that delivers each
write in 1-byte pieces (``split=True``) and can deliver streams in reverse order of their
ids (``reorder=True``), the way QUIC may present independent streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from felix_proto import events as ev
from felix_proto.client import ClientConnection
from felix_proto.connection import Connection
from felix_proto.errors import LocalProtocolError
from felix_proto.server import ServerConnection

E = TypeVar("E", bound=ev.Event)


def drain(conn: Connection) -> list[ev.Event]:
    """Every pending event of ``conn``."""
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def feed(
    dst: Connection,
    writes: list[tuple[int, bytes, bool]],
    *,
    split: bool = True,
    reorder: bool = False,
) -> None:
    """Deliver ``writes`` (as returned by ``data_to_send``) to ``dst``."""
    if reorder:
        writes = sorted(writes, key=lambda w: -w[0])
    for sid, data, end in writes:
        if split and len(data) > 1:
            for i in range(len(data)):
                dst.stream_data_received(sid, data[i : i + 1], end and i == len(data) - 1)
        else:
            dst.stream_data_received(sid, data, end)


def server_credit(server: ServerConnection, subscription_id: int) -> tuple[int, int]:
    """The credit the server machine still allows an open subscription: ``(records,
    bytes)`` from its private feed record (a test's look inside)."""
    feed = server._subs.get(subscription_id)
    if feed is None:
        raise LocalProtocolError(f"unknown or ended feed {subscription_id}")
    return feed.messages, feed.nbytes


def only(events: list[ev.Event], kind: type[E]) -> list[E]:
    """The events of one kind."""
    return [e for e in events if isinstance(e, kind)]


def single(events: list[ev.Event], kind: type[E]) -> E:
    """The one event of a kind (asserting there is exactly one)."""
    found = only(events, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {events}"
    return found[0]


class Pair:
    """A client and a server machine joined by a fake QUIC connection."""

    def __init__(
        self,
        *,
        split: bool = True,
        reorder: bool = False,
        client: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
    ) -> None:
        self.client = ClientConnection(client_name="test", **(client or {}))
        self.server = ServerConnection(
            server_id="broker-1", region="eu", **({"capabilities": ["zstd"]} | (server or {}))
        )
        self.split = split
        self.reorder = reorder
        self.now = 1000.0

    def to_server(self) -> list[ev.Event]:
        """Move the client's writes to the server; return the server's events."""
        feed(self.server, self.client.data_to_send(), split=self.split, reorder=self.reorder)
        return drain(self.server)

    def to_client(self) -> list[ev.Event]:
        """Move the server's writes to the client; return the client's events."""
        feed(self.client, self.server.data_to_send(), split=self.split, reorder=self.reorder)
        return drain(self.client)

    def handshake(self) -> ev.Welcomed:
        """Run the handshake to READY on both sides."""
        self.client.connect(now=self.now)
        hs = single(self.to_server(), ev.HandshakeRequested)
        assert hs.hello.client_name == "test"
        self.server.accept()
        return single(self.to_client(), ev.Welcomed)

    def request(self) -> ev.RequestReceived:
        """Move one client request to the server and return its RequestReceived."""
        return single(self.to_server(), ev.RequestReceived)

    def iter_events(self) -> Iterator[ev.Event]:
        """Drain both sides' events (client first)."""
        yield from drain(self.client)
        yield from drain(self.server)
