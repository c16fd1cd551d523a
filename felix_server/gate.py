"""Back-pressure of one connection: whether its feeds flow and whether its requests are read.

Theory of operation
-------------------
A :class:`Gate` watches one number, the bytes queued for the client and not yet
acknowledged (what the Felix machine holds plus QUIC's send buffers), against three levels
of the configuration: ``resume`` <= ``limit`` <= ``cap``. Its state (:class:`Flow`) says what
the connection may do:

``OPEN``
    feeds flow and requests are read;
``PAUSED``
    the engine's deliveries to the connection are paused (feed writes that find no room
    wait in the session's outbox); requests are still read;
``HOLDING``
    over the cap: deliveries are paused, requests wait in the gate (parsed ones in order,
    and the unparsed data of request streams), and QUIC holds back the connection's
    flow-control credit, so the peer is throttled by QUIC itself.

The gate is told what it sees (:class:`Signal`) and answers with the moves the session must
make (:class:`Move`), from one table (STYLE habit 2)::

    state     signal                                  next      moves
    OPEN      OVER_CAP     (a request is next)        HOLDING   PAUSE_FEEDS, HOLD_REQUESTS
    PAUSED    OVER_CAP                                HOLDING   HOLD_REQUESTS
    OPEN      OVER_LIMIT   (or feed writes wait)      PAUSED    PAUSE_FEEDS
    PAUSED    BELOW_RESUME (and no feed write waits)  OPEN      RESUME_FEEDS
    HOLDING   BELOW_LIMIT                             PAUSED    READ_REQUESTS
    HOLDING   BELOW_RESUME                            OPEN      RESUME_FEEDS, READ_REQUESTS

Any other pair changes nothing. A feed write goes out only while :meth:`Gate.room` says so:
the queued bytes at most ``resume``, or within ``limit`` with the write added. So what one
connection holds stays within the limit (or the resume level plus one frame), replies
overshoot the cap by at most one reply, and what waits unread is bounded by the QUIC credit
granted before the hold where the engine can hold credit back (aioquic). The gate counts what
waits (:attr:`Gate.held_bytes`: the unparsed data, plus the encoded size of each parsed
request) and says when it is over ``bound`` (:meth:`Gate.overflowing`), the broker's own
flow-control window: an engine that grants credit as data arrives (qh3) would otherwise let
a client that sends without reading its replies grow it without end; the session then
closes the connection (``OVERLOADED``).

Throttling. Independently of the buffer levels, a connection whose tenant is over its publish
rate is *throttled* (muted, as Kafka mutes an over-quota channel): when the engine refuses a
publish or enqueue with a tenant publish-rate ``Overloaded`` whose ``retry_after_ms`` is at
most :data:`MAX_THROTTLE_S` (:func:`throttle_deadline`), the session does not answer it; the
gate holds requests (:meth:`Gate.throttle`, ``HOLD_REQUESTS``) until the bucket will hold
enough, and then reads again (:meth:`Gate.unthrottle`, ``READ_REQUESTS`` unless the buffer
cap still holds them), the refused request first. Until then nothing of the connection's
request streams is parsed, and QUIC's credit is held back, so the flooder is slowed by QUIC
flow control instead of costing a parse and a refusal per request. A longer wait (a batch
that left the bucket deep in debt) is answered with the refusal and its ``retry_after_ms``.

Nothing here does I/O: the session measures, the gate decides.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from felix_core.errors import EngineError, Overloaded
from felix_core.quotas import PUBLISH_BYTES, PUBLISH_MESSAGES
from felix_proto import events as fe
from felix_proto.codec import encode

__all__ = ["MAX_THROTTLE_S", "Flow", "Gate", "HeldData", "Move", "Signal", "throttle_deadline"]

MAX_THROTTLE_S = 2.0
"""The longest a refused publish is delayed by throttling its connection; a tenant that
must wait longer gets the ``OVERLOADED`` refusal and its ``retry_after_ms``."""


def throttle_deadline(error: EngineError, now: float) -> float | None:
    """When a connection refused ``error`` at ``now`` may be read again, if the refusal is
    one the connection is throttled for instead of answered: a tenant publish-rate
    :class:`~felix_core.errors.Overloaded` that clears within :data:`MAX_THROTTLE_S`.
    None: answer the refusal."""
    if type(error) is not Overloaded:
        return None
    details = error.details
    if details.get("quota") not in (PUBLISH_MESSAGES, PUBLISH_BYTES):
        return None
    wait_ms = details.get("retry_after_ms")
    if not isinstance(wait_ms, int) or wait_ms > MAX_THROTTLE_S * 1000:
        return None
    return now + wait_ms / 1000


class Flow(Enum):
    """What a connection may do."""

    OPEN = "open"
    """Feeds flow, requests are read."""
    PAUSED = "paused"
    """Deliveries are paused; requests are read."""
    HOLDING = "holding"
    """Deliveries are paused and requests wait (QUIC credit held back)."""


class Signal(Enum):
    """What the gate is told about the queued bytes."""

    OVER_CAP = "over_cap"
    """Above the cap, with a request about to be served."""
    OVER_LIMIT = "over_limit"
    """Above the limit, or feed writes wait in the outbox."""
    BELOW_LIMIT = "below_limit"
    """At or below the limit."""
    BELOW_RESUME = "below_resume"
    """At or below the resume level, and no feed write waits."""


class Move(Enum):
    """What the session must do."""

    PAUSE_FEEDS = "pause_feeds"
    """Tell the engine to stop delivering to the connection."""
    RESUME_FEEDS = "resume_feeds"
    """Tell the engine to deliver again."""
    HOLD_REQUESTS = "hold_requests"
    """Stop reading requests; hold QUIC's flow-control credit back."""
    READ_REQUESTS = "read_requests"
    """Read again: give QUIC its credit back, serve the held requests, then the held data."""


_TABLE: dict[tuple[Flow, Signal], tuple[Flow, tuple[Move, ...]]] = {
    (Flow.OPEN, Signal.OVER_CAP): (Flow.HOLDING, (Move.PAUSE_FEEDS, Move.HOLD_REQUESTS)),
    (Flow.PAUSED, Signal.OVER_CAP): (Flow.HOLDING, (Move.HOLD_REQUESTS,)),
    (Flow.OPEN, Signal.OVER_LIMIT): (Flow.PAUSED, (Move.PAUSE_FEEDS,)),
    (Flow.PAUSED, Signal.BELOW_RESUME): (Flow.OPEN, (Move.RESUME_FEEDS,)),
    (Flow.HOLDING, Signal.BELOW_LIMIT): (Flow.PAUSED, (Move.READ_REQUESTS,)),
    (Flow.HOLDING, Signal.BELOW_RESUME): (
        Flow.OPEN,
        (Move.RESUME_FEEDS, Move.READ_REQUESTS),
    ),
}


class HeldData:
    """Request-stream data QUIC delivered while the connection was holding."""

    __slots__ = ("data", "end")

    def __init__(self) -> None:
        self.data = bytearray()
        self.end = False


class Gate:
    """The back-pressure state of one connection. See the module docstring.

    Args:
        limit: ``transport.connection_buffer_limit``.
        resume: ``transport.connection_buffer_resume`` (below ``limit``).
        cap: ``transport.connection_buffer_cap`` (at least ``limit``).
        bound: the most request bytes that may wait while holding
            (``transport.max_data``, what QUIC credit allows on aioquic).
    """

    __slots__ = (
        "_bound",
        "_cap",
        "_held_sizes",
        "_limit",
        "_resume",
        "held",
        "held_bytes",
        "held_data",
        "paused",
        "reading",
        "state",
        "throttled_until",
    )

    def __init__(self, *, limit: int, resume: int, cap: int, bound: int) -> None:
        self._limit = limit
        self._resume = resume
        self._cap = cap
        self._bound = bound
        self.state = Flow.OPEN
        self.reading = True
        """Whether requests are read: not holding (:attr:`state`) and not throttled."""
        self.throttled_until: float | None = None
        """While throttled: when reading may resume (:meth:`unthrottle`)."""
        self.paused = False
        """Whether the engine's deliveries to the connection are paused; follows
        :attr:`state`."""
        self.held: deque[fe.RequestReceived] = deque()
        """Requests parsed while holding, in order."""
        self._held_sizes: deque[int] = deque()  # the encoded size of each of them
        self.held_data: dict[int, HeldData] = {}
        """Unparsed data of request streams that arrived while holding, by stream id."""
        self.held_bytes = 0
        """Bytes waiting: :attr:`held_data`, plus each request of :attr:`held` as encoded
        (without its frame header, so never more than it took on the wire)."""

    def hold_request(self, event: fe.RequestReceived) -> None:
        """Keep a parsed request until reading resumes."""
        size = len(encode(event.message))
        self.held.append(event)
        self._held_sizes.append(size)
        self.held_bytes += size

    def next_request(self) -> fe.RequestReceived:
        """The oldest held request, taken out."""
        self.held_bytes -= self._held_sizes.popleft()
        return self.held.popleft()

    def hold_data(self, stream_id: int, data: bytes, end: bool) -> None:
        """Keep request-stream data unparsed until reading resumes."""
        held = self.held_data.get(stream_id)
        if held is None:
            held = self.held_data[stream_id] = HeldData()
        held.data += data
        held.end = held.end or end
        self.held_bytes += len(data)

    def take_data(self, stream_id: int) -> HeldData | None:
        """A stream's held data, taken out (None: none held)."""
        held = self.held_data.pop(stream_id, None)
        if held is not None:
            self.held_bytes -= len(held.data)
        return held

    def overflowing(self) -> bool:
        """Whether what waits is over ``bound``."""
        return self.held_bytes > self._bound

    def drop_held(self) -> None:
        """Forget every held request and all held data."""
        self.held.clear()
        self._held_sizes.clear()
        self.held_data.clear()
        self.held_bytes = 0

    def room(self, queued: int, size: int) -> bool:
        """Whether a feed write of ``size`` bytes may go out with ``queued`` bytes queued."""
        return queued <= self._resume or queued + size <= self._limit

    def move(self, signal: Signal) -> tuple[Move, ...]:
        """Apply what the gate was told; return the moves the session must make."""
        entry = _TABLE.get((self.state, signal))
        if entry is None:
            return ()
        self.state, moves = entry
        self.paused = self.state is not Flow.OPEN
        if self.throttled_until is not None:  # requests stay held until the throttle ends
            return tuple(move for move in moves if move is not Move.READ_REQUESTS)
        self.reading = self.state is not Flow.HOLDING
        return moves

    def throttle(self, until: float) -> tuple[Move, ...]:
        """Hold requests until ``until`` (a later deadline than one set wins)."""
        if self.throttled_until is not None:
            self.throttled_until = max(self.throttled_until, until)
            return ()
        self.throttled_until = until
        was_reading, self.reading = self.reading, False
        return (Move.HOLD_REQUESTS,) if was_reading else ()

    def unthrottle(self, now: float) -> tuple[Move, ...]:
        """At ``now``: end a throttle that is due; read again unless over the cap."""
        if self.throttled_until is None or now < self.throttled_until:
            return ()
        self.throttled_until = None
        self.reading = self.state is not Flow.HOLDING
        return (Move.READ_REQUESTS,) if self.reading else ()

    def before_request(self, queued: int) -> tuple[Move, ...]:
        """A request is about to be served with ``queued`` bytes queued: over the cap, hold
        it and what follows."""
        return self.move(Signal.OVER_CAP) if queued > self._cap else ()

    def feed_blocked(self) -> tuple[Move, ...]:
        """A feed write found no room and waits: pause the deliveries."""
        return self.move(Signal.OVER_LIMIT)

    def settle(self, queued: int, waiting: bool) -> tuple[Move, ...]:
        """After a transmit: the queued bytes, and whether feed writes wait in the outbox."""
        if queued <= self._resume and not waiting:
            if self.state is Flow.OPEN:
                return ()  # the steady state: nothing to do (and no table lookup)
            return self.move(Signal.BELOW_RESUME)
        moves = self.move(Signal.OVER_LIMIT) if queued > self._limit or waiting else ()
        if queued <= self._limit:
            moves += self.move(Signal.BELOW_LIMIT)
        return moves
