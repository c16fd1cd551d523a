"""A connection the broker closes with a Felix error code fails its pending requests (and
new work) with that code's typed error and the broker's reason, not a bare
``ConnectionLost`` (issue 13: ``OVERLOADED`` when the requests it holds go over
``transport.max_data``).

The client's :class:`~felix_client._connection.Connection` runs over a fake transport here: a
client machine handshaken with a server machine in memory, then the QUIC termination event
the transport would hand it, then the transport's own end.
"""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode, QuicFrameType

from felix_client import errors
from felix_client._connection import Connection
from felix_proto.client import ClientConnection
from felix_proto.errors import ErrorCode
from felix_proto.server import ServerConnection
from felix_server.session import OVERFLOW_REASON

pytestmark = pytest.mark.anyio


class _FakeTransport:
    """What :class:`Connection` uses of its transport: a clock, the QUIC connection (for a
    close the machine requests) and ``flush``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.closes: list[tuple[int, str]] = []

    def clock(self) -> float:
        return self.now

    @property
    def quic(self) -> Any:
        return self

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        self.closes.append((error_code, reason_phrase))

    async def flush(self) -> None:
        return None


def _connected() -> Connection:
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


def _cache_get(machine: ClientConnection, now: float) -> int:
    return machine.cache_get("default", "default", "c", "k", now=now)


async def _closed_with(conn: Connection, event: ConnectionTerminated) -> errors.FelixError:
    """Close ``conn`` as the transport does with ``event``; the pending request's error."""
    rid = conn.start(_cache_get)
    conn.quic_event(event, 100.0)
    conn.transport_closed("connection closed: " + event.reason_phrase)
    with pytest.raises(errors.FelixError) as caught:
        await conn.wait(rid)
    return caught.value


async def test_overloaded_close_fails_pending_requests_with_overloaded() -> None:
    conn = _connected()
    error = await _closed_with(
        conn, ConnectionTerminated(int(ErrorCode.OVERLOADED), None, OVERFLOW_REASON)
    )
    assert isinstance(error, errors.Overloaded)
    assert error.retryable
    assert OVERFLOW_REASON in error.message
    assert error.details["close_reason"] == OVERFLOW_REASON
    # New work on the closed connection gets the same typed error.
    assert isinstance(conn.closed_error, errors.Overloaded)
    with pytest.raises(errors.Overloaded, match="unread replies"):
        conn.check_open()


async def test_every_felix_close_code_is_typed() -> None:
    conn = _connected()
    error = await _closed_with(
        conn, ConnectionTerminated(int(ErrorCode.SHUTTING_DOWN), None, "shutdown")
    )
    assert isinstance(error, errors.ShuttingDown)
    assert error.message == "broker closed the connection: shutdown"


@pytest.mark.parametrize(
    "event",
    [
        ConnectionTerminated(0, None, "client closed"),
        ConnectionTerminated(int(ErrorCode.CONNECTION_LOST), None, "gone"),
        # a QUIC transport error (frame type set): not a Felix code, even if the number is
        ConnectionTerminated(int(ErrorCode.OVERLOADED), QuicFrameType.PADDING, "x"),
        ConnectionTerminated(QuicErrorCode.INTERNAL_ERROR, QuicFrameType.PADDING, "Idle timeout"),
    ],
    ids=["no-error", "connection-lost", "transport-error", "idle-timeout"],
)
async def test_other_closes_stay_connection_lost(event: ConnectionTerminated) -> None:
    conn = _connected()
    error = await _closed_with(conn, event)
    assert type(error) is errors.ConnectionLost
    assert type(conn.closed_error) is errors.ConnectionLost
