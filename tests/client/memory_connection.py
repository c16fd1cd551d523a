"""A client :class:`~felix_client._connection.Connection` without a network: its machine
handshaken with a server machine in memory, over a fake transport (a clock, a QUIC close,
``flush``). Shared by the client's unit tests of what the connection does with events."""

from __future__ import annotations

from typing import Any

from felix_client._connection import Connection
from felix_proto.client import ClientConnection
from felix_proto.server import ServerConnection


class _FakeTransport:
    """What :class:`Connection` uses of its transport: a clock, the QUIC connection (its
    writes and a close the machine requests: kept) and ``flush``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.closes: list[tuple[int, str]] = []
        self.written: list[tuple[int, bytes, bool]] = []

    def clock(self) -> float:
        return self.now

    @property
    def quic(self) -> Any:
        return self

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        self.closes.append((error_code, reason_phrase))

    def get_next_available_stream_id(self) -> int:
        return 1 << 60  # every stream the machine writes to is open already

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.written.append((stream_id, data, end_stream))

    async def flush(self) -> None:
        return None

    async def flush_request(self) -> None:
        return None


def connected() -> Connection:
    """A :class:`Connection` over a fake transport whose machine is handshaken (with a
    server machine, in memory)."""
    machine = ClientConnection(client_name="test")
    server = ServerConnection(server_id="broker-1", region="eu")
    machine.connect(now=100.0)
    for sid, data, end in machine.data_to_send():
        server.stream_data_received(sid, data, end)
    while server.next_event() is not None:
        pass
    server.accept()
    for sid, data, end in server.data_to_send():
        machine.stream_data_received(sid, data, end)
    conn = Connection(_FakeTransport(), machine, timeout=5.0)  # type: ignore[arg-type]
    conn._dispatch()  # Welcomed
    assert conn.welcome is not None
    return conn


def cache_get(machine: ClientConnection, now: float) -> int:
    """A request: ``Connection.start(cache_get)``."""
    return machine.cache_get("default", "default", "c", "k", now=now)
