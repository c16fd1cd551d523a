"""A connection the broker closes with a Felix error code fails its pending requests (and
new work) with that code's typed error and the broker's reason, not a bare
``ConnectionLost`` (issue 13: ``OVERLOADED`` when the requests it holds go over
``transport.max_data``).

The client's :class:`~felix_client._connection.Connection` runs over a fake transport here
(``memory_connection.py``), then gets the QUIC termination event the transport would hand
it, then the transport's own end.
"""

from __future__ import annotations

import pytest
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from memory_connection import cache_get, connected

from felix_client import errors
from felix_client._connection import Connection
from felix_proto.errors import ErrorCode
from felix_server.session import OVERFLOW_REASON

pytestmark = pytest.mark.anyio


async def _closed_with(conn: Connection, event: ConnectionTerminated) -> errors.FelixError:
    """Close ``conn`` as the transport does with ``event``; the pending request's error."""
    rid = conn.start(cache_get)
    conn.quic_event(event, 100.0)
    conn.transport_closed("connection closed: " + event.reason_phrase)
    with pytest.raises(errors.FelixError) as caught:
        await conn.wait(rid)
    return caught.value


async def test_overloaded_close_fails_pending_requests_with_overloaded() -> None:
    conn = connected()
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
    conn = connected()
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
    conn = connected()
    error = await _closed_with(conn, event)
    assert type(error) is errors.ConnectionLost
    assert type(conn.closed_error) is errors.ConnectionLost
