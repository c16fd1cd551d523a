"""When the client acknowledges what the broker sent it: sparse ACKs for a reader.

aioquic acknowledges a packet 1 ms after it arrived (its ack delay, ``K_GRANULARITY``)
unless data leaves sooner, and only on that timer: nothing is acknowledged every *n*
packets. A client that only reads (a subscriber, a consumer waiting for jobs) sends no data
to carry the ACK, so at a few records per millisecond or less it sends one ACK-only datagram
per record or two (0.45 to 0.5 per record at one record per millisecond, the
``pubsub-latency`` pace), and each one wakes the broker for a pass that reads it, feeds it
to QUIC and builds nothing: about a third of the datagrams the broker reads in that figure,
and a timer wake-up plus a transmit of the subscriber each.

:class:`ReaderAcks` holds the first packet's ACK for :data:`READER_ACK_DELAY` instead (10
ms, within the 25 ms ``max_ack_delay`` aioquic announces, which the broker's loss detection
already waits for), so a slow reader sends an ACK every :data:`READER_ACK_DELAY` at most,
and makes it due as aioquic would have (1 ms after the first packet it covers) once
:data:`ACK_EVERY` datagrams wait for it. A fast reader therefore acknowledges exactly as
before (every millisecond: at least :data:`ACK_EVERY` datagrams arrive in it), so the
broker's congestion window, its loss detection and the bytes its send buffers hold for this
connection (its back-pressure count) see no change; a slow one acknowledges every
:data:`ACK_EVERY` datagrams or :data:`READER_ACK_DELAY`, whichever comes first, which
bounds what the broker holds unacknowledged to :data:`ACK_EVERY` datagrams or 10 ms of a
slow stream.

Why 4 and not more: a sender's congestion window must hold :data:`ACK_EVERY` datagrams in
flight, or the ACK that would let it send more waits for the 10 ms timer. aioquic starts
with 10 full datagrams and halves the window on a loss, so after one loss from the start
(5 datagrams) the broker still gets its ACK within 1 ms; only a window squeezed below 4 full
datagrams (persistent congestion, repeated losses) waits for the timer, at most 10 ms an ACK,
until it grows again. Requests still carry the pending ACK at once
(:class:`~felix_server.quic_engine.AckWithData`). aioquic only: qh3 decides for itself.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection

from felix_server.quic import ack_by, ack_due, set_ack_delay
from felix_server.quic_engine import ACK_WITH_DATA_INTERVAL

__all__ = ["ACK_EVERY", "READER_ACK_DELAY", "ReaderAcks"]

READER_ACK_DELAY = 0.010
"""Seconds the client holds an ACK after the first packet it acknowledges (aioquic: 1 ms)."""
ACK_EVERY = 4
"""Datagrams received under one pending ACK after which it is due as aioquic would send it:
:data:`~felix_server.quic_engine.ACK_WITH_DATA_INTERVAL` after the first."""


class ReaderAcks:
    """One connection's ACK timing (see the module docstring).

    Call :meth:`start` once the handshake completed and :meth:`received` after feeding each
    batch of datagrams to QUIC; the next transmit (or QUIC's timer) sends the ACK when due.
    """

    __slots__ = ("_count", "_due", "_first", "_on")

    def __init__(self) -> None:
        self._on = False
        self._due: float | None = None  # the pending ACK's due time as last seen or set
        self._first = 0.0  # when the first packet it acknowledges arrived
        self._count = 0  # datagrams received while it was pending

    def start(self, quic: Any) -> None:
        """The handshake is over: hold ACKs for :data:`READER_ACK_DELAY` (aioquic only)."""
        if isinstance(quic, QuicConnection):
            set_ack_delay(quic, READER_ACK_DELAY)
            self._on = True

    def received(self, quic: Any, datagrams: int) -> None:
        """``datagrams`` were just fed to ``quic``: count them against the pending ACK."""
        if not self._on:
            return
        due = ack_due(quic)
        if due is None:  # nothing to acknowledge (or it just went out)
            self._due = None
            return
        if due != self._due:  # a new ACK: aioquic set due = first arrival + the delay
            self._first = due - READER_ACK_DELAY
            self._count = 0
        self._count += datagrams
        if self._count >= ACK_EVERY:
            ack_by(quic, self._first + ACK_WITH_DATA_INTERVAL)
            due = ack_due(quic)
        self._due = due
