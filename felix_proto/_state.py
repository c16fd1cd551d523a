"""The state machines of a Felix connection, as Enums and transition tables.

Theory of operation
-------------------

Each machine is a table ``(state, input) -> next state``. The connection objects
(:mod:`felix_proto.client`, :mod:`felix_proto.server`) look every move up with
:func:`transition` and do the side effect that belongs to the input; the table alone decides
whether the move is legal. A missing key is a protocol error: a *local* input (an API call)
raises :class:`~felix_proto.errors.LocalProtocolError` at once, a *remote* input (something
the peer sent) raises :class:`UnexpectedMessage`, which the receive entry point turns into an
``Error(UNEXPECTED_MESSAGE)`` frame.

Machines:

* :data:`CLIENT_CONNECTION` and :data:`SERVER_CONNECTION`: the handshake and the connection's
  life (``Hello`` -> ``Welcome`` -> ready -> going away -> closed).
* :data:`CLIENT_SUBSCRIPTION`: ``PENDING`` (``Subscribe`` sent) -> ``ACTIVE`` (``Subscribed``
  received) -> ``CLOSING`` (``Unsubscribe`` sent) -> ``CLOSED`` (``SubscriptionEnded``
  received, or failure). Frames from the subscription's stream may arrive while ``PENDING``
  (QUIC does not order streams): they are buffered and replayed on ``STARTED``.
* :data:`CLIENT_CONSUMER`: the same shape for queue consumers.
* :data:`SERVER_FEED`: a broker-side subscription or consumer stream: ``OPEN`` -> ``ENDED``
  (the broker ended it) or ``CANCELLED`` (the client stopped it, or the connection ended).
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CLIENT_CONNECTION",
    "CLIENT_CONSUMER",
    "CLIENT_SUBSCRIPTION",
    "SERVER_CONNECTION",
    "SERVER_FEED",
    "ConnInput",
    "ConnState",
    "FeedInput",
    "FeedState",
    "FlowControlError",
    "ServerFeedState",
    "UnexpectedMessage",
    "transition",
]


class UnexpectedMessage(RemoteProtocolError):
    """A well-formed message arrived in a state or on a stream where it is not allowed.

    Not fatal by default: the receiver answers it with ``Error(UNEXPECTED_MESSAGE)`` and the
    stream goes on.
    """

    error_code = ErrorCode.UNEXPECTED_MESSAGE
    fatal = False


class FlowControlError(RemoteProtocolError):
    """The broker sent more records than the subscription's credit allowed."""

    error_code = ErrorCode.LIMIT_EXCEEDED
    fatal = True


class ConnState(Enum):
    """States of a whole connection (client and server)."""

    __hash__ = object.__hash__
    """Identity hash (members are singletons and compare by identity): the transition
    table is looked up on every request and reply, and ``Enum.__hash__`` is Python code."""

    IDLE = "idle"
    """Client only: created, ``Hello`` not sent yet."""
    AWAITING_HELLO = "awaiting_hello"
    """Server only: waiting for the client's ``Hello``."""
    HANDSHAKING = "handshaking"
    """Client: ``Hello`` sent. Server: ``Hello`` received, ``accept``/``reject`` pending."""
    READY = "ready"
    """Handshake done; requests flow."""
    GOING_AWAY = "going_away"
    """``GoAway`` sent (server) or received (client): existing work finishes, no new work."""
    CLOSED = "closed"
    """Terminal: every pending thing has ended with an event."""


class ConnInput(Enum):
    """Inputs of the connection machines."""

    __hash__ = object.__hash__
    """Identity hash, as :class:`ConnState`."""

    CONNECT = "connect"
    """Client API: send ``Hello``."""
    HELLO = "hello"
    """Server: a ``Hello`` arrived."""
    ACCEPT = "accept"
    """Server API: send ``Welcome``."""
    WELCOME = "welcome"
    """Client: a ``Welcome`` arrived."""
    REQUEST = "request"
    """A new request (client API call, or a request arriving at the server)."""
    FINISH = "finish"
    """Work on existing things: ack, nack, credit, unsubscribe, cancel, replies."""
    GOAWAY = "goaway"
    """``GoAway`` sent (server) or received (client)."""
    PING = "ping"
    """A ``Ping`` sent or received."""
    CLOSE = "close"
    """Either side decided to close (a refused handshake included), or the connection was
    lost."""


_LIVE_CLIENT = (ConnState.IDLE, ConnState.HANDSHAKING, ConnState.READY, ConnState.GOING_AWAY)
_LIVE_SERVER = (
    ConnState.AWAITING_HELLO,
    ConnState.HANDSHAKING,
    ConnState.READY,
    ConnState.GOING_AWAY,
)

CLIENT_CONNECTION: dict[tuple[ConnState, ConnInput], ConnState] = {
    (ConnState.IDLE, ConnInput.CONNECT): ConnState.HANDSHAKING,
    (ConnState.HANDSHAKING, ConnInput.WELCOME): ConnState.READY,
    (ConnState.READY, ConnInput.REQUEST): ConnState.READY,
    (ConnState.READY, ConnInput.FINISH): ConnState.READY,
    (ConnState.READY, ConnInput.PING): ConnState.READY,
    (ConnState.READY, ConnInput.GOAWAY): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.FINISH): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.PING): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.GOAWAY): ConnState.GOING_AWAY,
    **{(s, ConnInput.CLOSE): ConnState.CLOSED for s in _LIVE_CLIENT},
}
"""The client's connection machine."""

SERVER_CONNECTION: dict[tuple[ConnState, ConnInput], ConnState] = {
    (ConnState.AWAITING_HELLO, ConnInput.HELLO): ConnState.HANDSHAKING,
    (ConnState.HANDSHAKING, ConnInput.ACCEPT): ConnState.READY,
    (ConnState.READY, ConnInput.REQUEST): ConnState.READY,
    (ConnState.READY, ConnInput.FINISH): ConnState.READY,
    (ConnState.READY, ConnInput.PING): ConnState.READY,
    (ConnState.READY, ConnInput.GOAWAY): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.FINISH): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.PING): ConnState.GOING_AWAY,
    (ConnState.GOING_AWAY, ConnInput.GOAWAY): ConnState.GOING_AWAY,
    **{(s, ConnInput.CLOSE): ConnState.CLOSED for s in _LIVE_SERVER},
}
"""The server's connection machine. ``REQUEST`` while ``GOING_AWAY`` is legal on the wire
(the client may not have seen ``GoAway`` yet) but answered ``SHUTTING_DOWN``; the server
checks that before consulting this table."""


class FeedState(Enum):
    """States of a client-side subscription or queue consumer."""

    PENDING = "pending"
    """The request was sent; no reply yet (stream frames are buffered)."""
    ACTIVE = "active"
    """The broker confirmed; frames are delivered as events."""
    CLOSING = "closing"
    """Unsubscribe / cancel sent; frames still delivered until the end frame."""
    CLOSED = "closed"
    """Terminal: the end event was emitted."""


class FeedInput(Enum):
    """Inputs of the client-side subscription and consumer machines."""

    STARTED = "started"
    """The ``Subscribed`` / ``Consuming`` reply arrived."""
    REFUSED = "refused"
    """The request failed or timed out."""
    STREAM_OPENED = "stream_opened"
    """The broker's stream for it opened (its start frame arrived)."""
    DATA = "data"
    """An event batch, gap or delivery arrived."""
    ENDED = "ended"
    """The end frame arrived, or the stream failed."""
    STOP = "stop"
    """API: unsubscribe / cancel_consume."""
    CREDIT = "credit"
    """API: credit top-up (subscriptions) or ack/nack (consumers)."""
    LOST = "lost"
    """The connection ended."""


_FEED: dict[tuple[FeedState, FeedInput], FeedState] = {
    (FeedState.PENDING, FeedInput.STARTED): FeedState.ACTIVE,
    (FeedState.PENDING, FeedInput.REFUSED): FeedState.CLOSED,
    (FeedState.PENDING, FeedInput.STREAM_OPENED): FeedState.PENDING,
    (FeedState.PENDING, FeedInput.DATA): FeedState.PENDING,
    (FeedState.PENDING, FeedInput.ENDED): FeedState.PENDING,
    (FeedState.PENDING, FeedInput.LOST): FeedState.CLOSED,
    (FeedState.ACTIVE, FeedInput.STREAM_OPENED): FeedState.ACTIVE,
    (FeedState.ACTIVE, FeedInput.DATA): FeedState.ACTIVE,
    (FeedState.ACTIVE, FeedInput.ENDED): FeedState.CLOSED,
    (FeedState.ACTIVE, FeedInput.STOP): FeedState.CLOSING,
    (FeedState.ACTIVE, FeedInput.CREDIT): FeedState.ACTIVE,
    (FeedState.ACTIVE, FeedInput.LOST): FeedState.CLOSED,
    (FeedState.CLOSING, FeedInput.STREAM_OPENED): FeedState.CLOSING,
    (FeedState.CLOSING, FeedInput.DATA): FeedState.CLOSING,
    (FeedState.CLOSING, FeedInput.ENDED): FeedState.CLOSED,
    (FeedState.CLOSING, FeedInput.LOST): FeedState.CLOSED,
}

CLIENT_SUBSCRIPTION: dict[tuple[FeedState, FeedInput], FeedState] = dict(_FEED)
"""A client-side subscription. ``PENDING`` + ``ENDED`` stays ``PENDING``: the end frame is
buffered with the data and replayed when ``Subscribed`` arrives."""

CLIENT_CONSUMER: dict[tuple[FeedState, FeedInput], FeedState] = {
    **_FEED,
    # Acks and nacks may still settle deliveries after CancelConsume was sent.
    (FeedState.CLOSING, FeedInput.CREDIT): FeedState.CLOSING,
}
"""A client-side queue consumer (``CREDIT`` stands for ack/nack here)."""


class ServerFeedState(Enum):
    """States of a broker-side subscription or consumer stream."""

    OPEN = "open"
    """Start frame written; data may be sent."""
    ENDED = "ended"
    """End frame and FIN written by the broker."""
    CANCELLED = "cancelled"
    """The client stopped the stream, or the connection ended."""


SERVER_FEED: dict[tuple[ServerFeedState, FeedInput], ServerFeedState] = {
    (ServerFeedState.OPEN, FeedInput.DATA): ServerFeedState.OPEN,
    (ServerFeedState.OPEN, FeedInput.CREDIT): ServerFeedState.OPEN,
    (ServerFeedState.OPEN, FeedInput.ENDED): ServerFeedState.ENDED,
    (ServerFeedState.OPEN, FeedInput.STOP): ServerFeedState.CANCELLED,
    (ServerFeedState.OPEN, FeedInput.LOST): ServerFeedState.CANCELLED,
}
"""A broker-side feed. ``DATA`` and ``ENDED`` are API calls (send, end); ``CREDIT`` and
``STOP`` come from the client; ``LOST`` is the connection ending."""

S = TypeVar("S", bound=Enum)
I = TypeVar("I", bound=Enum)  # noqa: E741


def transition(table: dict[tuple[S, I], S], state: S, event: I, *, what: str, local: bool) -> S:
    """Look up the next state of a machine.

    Args:
        table: the machine's transition table.
        state: the current state.
        event: the input.
        what: names the machine in the error message (e.g. ``"subscription 7"``).
        local: whether the input is an API call (else it came from the peer).

    Returns:
        The next state.

    Raises:
        LocalProtocolError: ``local`` and the move is not in the table.
        UnexpectedMessage: not ``local`` and the move is not in the table.
    """
    try:
        return table[(state, event)]
    except KeyError:
        text = f"{what}: {event.value} is not allowed in state {state.value}"
        if local:
            raise LocalProtocolError(text) from None
        raise UnexpectedMessage(text) from None
