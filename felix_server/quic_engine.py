"""The engine-neutral face of QUIC for the session: events, back-pressure count, credit.

The broker runs on one of two sans-IO QUIC engines (aioquic, the default, or qh3; chosen in
:mod:`felix_runtime.quic_engines`, which builds configurations and connections). Both
have the same calls and events with the same fields, but their event classes are distinct
and their stream internals differ. The session asks this module, never an engine:

* :data:`EVENTS`: the event classes of every engine loaded in this process, as tuples for
  ``isinstance`` (aioquic's are always there; loading qh3 adds its own with
  :func:`register_events`, since importing qh3 here would load asyncio: qh3's package
  imports its asyncio layer);
* :func:`send_buffered`: the bytes a connection's send buffers hold (the session's
  back-pressure count);
* :func:`hold_credit`: hold back or release the connection's flow-control credit, where the
  engine allows it (aioquic; see :mod:`felix_server.quic`).
* :class:`AckWithData`: let a delayed ACK ride in the packet that carries data about to be
  sent, no more often than aioquic's timer would send it (aioquic; qh3's engine decides
  for itself);
* :func:`quiet_test`: the cheap test that a transmit would send nothing, for the connection
  classes it mirrors (aioquic's own and Felix's broker connection).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from aioquic.quic import events as qe
from aioquic.quic.connection import NetworkAddress, QuicConnection

from felix_server.quic import FelixQuicConnection
from felix_server.quic import ack_with_data as _aioquic_ack_with_data
from felix_server.quic import nothing_to_send as _aioquic_nothing_to_send
from felix_server.quic import send_buffered as _aioquic_send_buffered

__all__ = [
    "ACK_WITH_DATA_INTERVAL",
    "EVENTS",
    "AckWithData",
    "EngineEvents",
    "QuicConnectionLike",
    "hold_credit",
    "register_events",
    "send_buffered",
]


class QuicConnectionLike(Protocol):
    """The calls the broker makes on a server connection: what every engine has."""

    @property
    def host_cid(self) -> bytes: ...
    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None: ...
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Raises ``ValueError`` or ``AssertionError`` when the stream is gone."""

    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]: ...
    def close(
        self, error_code: int = ..., frame_type: int | None = ..., reason_phrase: str = ...
    ) -> None: ...


class EngineEvents:
    """``isinstance`` tuples of the QUIC event classes of every registered engine.

    Typed as aioquic's classes: every engine's events carry the same fields."""

    def __init__(self) -> None:
        self.stream_data: tuple[type[qe.StreamDataReceived], ...] = ()
        self.stream_reset: tuple[type[qe.StreamReset], ...] = ()
        self.stop_sending: tuple[type[qe.StopSendingReceived], ...] = ()
        self.handshake_completed: tuple[type[qe.HandshakeCompleted], ...] = ()
        self.cid_issued: tuple[type[qe.ConnectionIdIssued], ...] = ()
        self.cid_retired: tuple[type[qe.ConnectionIdRetired], ...] = ()
        self.terminated: tuple[type[qe.ConnectionTerminated], ...] = ()
        self.modules: list[str] = []
        """The events modules registered, in order."""

    @property
    def reset_or_stop(self) -> tuple[type[qe.StreamReset | qe.StopSendingReceived], ...]:
        """A peer abandoned a stream (``StreamReset`` or ``StopSendingReceived``)."""
        return self.stream_reset + self.stop_sending

    def add(self, module: ModuleType) -> None:
        """Add an engine's ``quic.events`` module (idempotent)."""
        if module.__name__ in self.modules:
            return
        self.modules.append(module.__name__)
        self.stream_data += (module.StreamDataReceived,)
        self.stream_reset += (module.StreamReset,)
        self.stop_sending += (module.StopSendingReceived,)
        self.handshake_completed += (module.HandshakeCompleted,)
        self.cid_issued += (module.ConnectionIdIssued,)
        self.cid_retired += (module.ConnectionIdRetired,)
        self.terminated += (module.ConnectionTerminated,)


EVENTS = EngineEvents()
"""The event classes of every engine loaded in this process."""
EVENTS.add(qe)


def register_events(module: ModuleType) -> None:
    """Make the session recognise an engine's events (its ``quic.events`` module)."""
    EVENTS.add(module)


def send_buffered(quic: QuicConnectionLike) -> int:
    """Bytes held in the send buffers of every stream of ``quic``.

    aioquic: written and not yet acknowledged (:func:`felix_server.quic.send_buffered`).
    Another engine's connection says it with ``unacknowledged_bytes()``
    (:meth:`felix_runtime.quic_qh3.FelixQh3Connection.unacknowledged_bytes`).
    """
    if isinstance(quic, QuicConnection):
        return _aioquic_send_buffered(quic)
    size: int = quic.unacknowledged_bytes()  # type: ignore[attr-defined]
    return size


def hold_credit(quic: QuicConnectionLike, held: bool) -> None:
    """Hold back (``held``) or release ``quic``'s flow-control credit. Only Felix's aioquic
    connection can (:attr:`FelixQuicConnection.credit_held
    <felix_server.quic.FelixQuicConnection.credit_held>`); for any other this does
    nothing: qh3 grants credit as data arrives, so requests the session holds unread are
    not bounded by QUIC there; the session bounds them by ``transport.max_data`` itself
    (:meth:`Gate.overflowing <felix_server.gate.Gate.overflowing>`: the connection is closed
    ``OVERLOADED``)."""
    if isinstance(quic, FelixQuicConnection):
        quic.credit_held = held


def quiet_test(quic: QuicConnectionLike) -> Callable[[Any, float], bool] | None:
    """The function that tells, without building a packet, that ``datagrams_to_send(now)``
    of ``quic`` would return nothing (:func:`felix_server.quic.nothing_to_send`, which then
    leaves the connection as that call would), or None where it does not apply: it mirrors
    aioquic's own ``QuicConnection`` and :class:`~felix_server.quic.FelixQuicConnection`
    exactly, so any other class (qh3's, a subclass that may write other frames) always
    goes through its engine's call."""
    if type(quic) is QuicConnection or type(quic) is FelixQuicConnection:
        return _aioquic_nothing_to_send
    return None


ACK_WITH_DATA_INTERVAL = 0.001
"""Least time between two ACKs sent early with data on one connection (aioquic's ack
delay, ``K_GRANULARITY``): no more ACKs than aioquic's timer would send."""


class AckWithData:
    """Lets one connection's delayed ACK ride with the data it sends, at most once per
    :data:`ACK_WITH_DATA_INTERVAL` (:func:`felix_server.quic.ack_with_data`; aioquic only,
    qh3's engine decides for itself).

    One request answered at a time (a publisher waiting for each ``PublishAck``): each reply
    carries the ACK of its request and no ACK-only datagram follows. Data sent flat out
    (batches, replies many times per millisecond): ACKs still go about once per
    millisecond, as aioquic's timer sends them, but inside data packets, so the peer does
    not process more ACK frames than before. An ACK pending when the interval has not
    passed waits for the next data or for aioquic's timer, whichever comes first: the
    timer is due no earlier than the interval after the last early ACK.
    """

    __slots__ = ("sent_at",)

    def __init__(self) -> None:
        self.sent_at = -math.inf
        """When an ACK last went early with data."""

    def data_written(self, quic: QuicConnectionLike, now: float) -> None:
        """Stream data was just written to ``quic`` and is about to be sent."""
        if (
            now - self.sent_at >= ACK_WITH_DATA_INTERVAL
            and isinstance(quic, QuicConnection)
            and _aioquic_ack_with_data(quic, now)
        ):
            self.sent_at = now
