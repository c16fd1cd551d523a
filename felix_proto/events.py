"""Events the Felix connection machines hand to their user through ``next_event()``.

Every event is a plain frozen record under :class:`Event`. Inbound happenings are named in
the past tense. A few events are *instructions to the glue* rather than news for the
application: :class:`CloseRequested` asks the runtime to close the QUIC connection (after
writing what :meth:`data_to_send` returned), and is always followed by the terminal
:class:`ConnectionTerminated`.

Client events (:class:`~felix_proto.client.ClientConnection`): :class:`Welcomed`,
:class:`PublishAcked`, :class:`SubscriptionStarted`, :class:`EventsReceived`,
:class:`GapReported`, :class:`SubscriptionEnded`, :class:`ConsumerStarted`,
:class:`DeliveryReceived` (or :class:`DeliveriesReceived`), :class:`ConsumerEnded`,
:class:`CacheValueReceived`, :class:`CachePutCompleted`, :class:`CacheDeleteCompleted`,
:class:`AdminReplied`, :class:`RequestSucceeded`, :class:`RequestFailed`,
:class:`RequestTimedOut`, :class:`GoAwayReceived`.

Server events (:class:`~felix_proto.server.ServerConnection`):
:class:`HandshakeRequested`, :class:`RequestReceived`, :class:`CreditGranted`,
:class:`SubscriptionCancelled`, :class:`ConsumerCancelled`.

Both sides: :class:`PongReceived`, :class:`ErrorReceived`, :class:`ProtocolViolation`,
:class:`CloseRequested`, :class:`ConnectionTerminated`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import Delivery, DeliveryBatch, EventBatch, Hello, Message

__all__ = [
    "AdminReplied",
    "CacheDeleteCompleted",
    "CachePutCompleted",
    "CacheValueReceived",
    "CloseRequested",
    "ConnectionTerminated",
    "ConsumerCancelled",
    "ConsumerEnded",
    "ConsumerStarted",
    "CreditGranted",
    "DeliveriesReceived",
    "DeliveryReceived",
    "ErrorReceived",
    "Event",
    "EventsReceived",
    "GapReported",
    "GoAwayReceived",
    "HandshakeRequested",
    "PongReceived",
    "ProtocolViolation",
    "PublishAcked",
    "RequestFailed",
    "RequestReceived",
    "RequestSucceeded",
    "RequestTimedOut",
    "SubscriptionCancelled",
    "SubscriptionEnded",
    "SubscriptionStarted",
    "TokenReceived",
    "Welcomed",
]


class Event:
    """Base class of every event a Felix connection machine emits."""

    __slots__ = ()


# ------------------------------------------------------------------------------ both sides


@dataclass(frozen=True, slots=True, kw_only=True)
class PongReceived(Event):
    """The peer answered one of our ``Ping`` messages."""

    nonce: int
    """The nonce of the ``Ping`` it answers (the value :meth:`ping` returned)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReceived(Event):
    """The peer sent an ``Error`` that belongs to no pending request (connection-level)."""

    stream_id: int
    """The stream it arrived on."""
    code: int
    """A code from :class:`~felix_proto.errors.ErrorCode` (or an unknown newer one)."""
    message: str
    """The peer's explanation."""
    details: dict[str, Any] = field(default_factory=dict)
    """Machine-readable extras the peer sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation(Event):
    """The peer broke the protocol; the machine already answered with an ``Error`` frame.

    Emitted for observability (logs, metrics); the consequences have their own events.
    """

    stream_id: int
    """The stream the offending bytes arrived on."""
    error_code: int
    """The :class:`~felix_proto.errors.ErrorCode` sent back."""
    message: str
    """What was wrong."""
    fatal: bool
    """Whether the stream (or, for the control stream, the connection) was ended for it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequested(Event):
    """Instruction to the glue: write pending data, then close the QUIC connection."""

    error_code: int
    """The QUIC application error code to close with (0 for a clean close)."""
    reason: str
    """The reason phrase to close with."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated(Event):
    """The Felix connection is over. Always the last event; nothing is left pending."""

    error_code: int
    """Why: an :class:`~felix_proto.errors.ErrorCode`, or 0 for a clean close."""
    reason: str
    """Human-readable explanation."""
    by_peer: bool
    """True when the peer (or the network) ended it, false when this side decided."""
    details: dict[str, Any] = field(default_factory=dict)
    """Extras, e.g. ``supported_versions`` when the handshake failed on the version."""


# ---------------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcomed(Event):
    """The broker accepted the handshake; requests may now be sent."""

    version: int
    """The protocol version chosen for the connection."""
    server_id: str
    """The broker process that answered."""
    region: str
    """The broker's sovereign region."""
    capabilities: list[str]
    """Optional features both sides support."""
    limits: dict[str, int]
    """Limits announced by the broker, ``max_frame_size`` always among them."""
    tenant: str | None = None
    """The tenant the broker assigned to the connection (``Welcome.tenant``), if it said."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishAcked(Event):
    """A publish, publish batch or enqueue was appended at an inclusive offset range."""

    request_id: int
    """The request this answers."""
    first_offset: int
    """Offset of the first record written."""
    last_offset: int
    """Offset of the last record written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionStarted(Event):
    """A ``Subscribe`` succeeded; its events follow as :class:`EventsReceived`."""

    request_id: int
    """The ``Subscribe`` request this answers."""
    subscription_id: int
    """The broker's id for the subscription (used by unsubscribe and credit)."""
    first_offset: int
    """The offset of the first record the subscription will deliver."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsReceived(Event):
    """A batch of consecutive records arrived on a subscription."""

    subscription_id: int
    """The subscription the batch belongs to."""
    batch: EventBatch
    """The records: ``base_offset``, ``payloads`` and optional timestamps, keys, headers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GapReported(Event):
    """The broker skipped records on a subscription (they were trimmed or lagged out)."""

    subscription_id: int
    """The subscription concerned."""
    missed: int
    """How many records were skipped."""
    next_offset: int
    """The offset of the next record that will be delivered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionEnded(Event):
    """A subscription is over; no more events will arrive for it."""

    subscription_id: int
    """The subscription that ended."""
    reason: str
    """An :class:`~felix_proto.messages.EndReason` value (``error`` for local failures)."""
    message: str = ""
    """Human-readable detail."""
    next_offset: int | None = None
    """Where a resumed subscription would continue, when known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerStarted(Event):
    """A ``Consume`` succeeded; deliveries follow as :class:`DeliveryReceived`."""

    request_id: int
    """The ``Consume`` request this answers."""
    consumer_id: int
    """The broker's id for the consumer (used by ack, nack and cancel_consume)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReceived(Event):
    """A queue message arrived; it awaits ``ack`` or ``nack``."""

    consumer_id: int
    """The consumer it was delivered to."""
    delivery: Delivery
    """The delivery: ``delivery_id``, ``attempt``, ``offset``, ``payload`` ..."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveriesReceived(Event):
    """The deliveries of one ``DeliveryBatch`` frame, in one event, when the machine was
    made with ``batch_deliveries=True`` (otherwise each is a :class:`DeliveryReceived`):
    the consumer reads the columns as they are instead of one event per message.
    ``felix_proto.client.unbatch(batch)`` gives them as ``Delivery`` records."""

    consumer_id: int
    """The consumer they were delivered to."""
    batch: DeliveryBatch
    """The validated frame: its ids await ``ack`` or ``nack`` like a ``Delivery``'s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerEnded(Event):
    """A queue consumer is over; unsettled deliveries are forgotten (the broker redelivers)."""

    consumer_id: int
    """The consumer that ended."""
    reason: str
    """An :class:`~felix_proto.messages.EndReason` value."""
    message: str = ""
    """Human-readable detail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheValueReceived(Event):
    """The reply to ``cache_get``: a hit or a miss."""

    request_id: int
    """The request this answers."""
    found: bool
    """Whether the key holds a value."""
    value: bytes | None = None
    """The value on a hit."""
    version: int | None = None
    """The value's version on a hit."""
    ttl_remaining_ms: int | None = None
    """Milliseconds until expiry; ``None`` when it never expires or on a miss."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePutCompleted(Event):
    """The reply to ``cache_put``."""

    request_id: int
    """The request this answers."""
    stored: bool
    """False when the put's condition (if-absent, if-version) did not hold."""
    version: int | None = None
    """The new version when stored; the current version (if any) otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheDeleteCompleted(Event):
    """The reply to ``cache_delete``."""

    request_id: int
    """The request this answers."""
    deleted: bool
    """Whether an entry was removed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminReplied(Event):
    """The reply to an admin create, describe, update (``resource``) or list (``resources``)."""

    request_id: int
    """The request this answers."""
    resource: dict[str, Any] | None = None
    """The resource as it now is (create, describe, update)."""
    resources: list[dict[str, Any]] | None = None
    """The resources listed (list)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenReceived(Event):
    """The reply to a ``TokenExchange``: a Felix token, now the connection's credential."""

    request_id: int
    """The request this answers."""
    token: str
    """The Felix token."""
    expires_in_ms: int
    """Milliseconds from the reply until it expires."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSucceeded(Event):
    """A request whose success carries no data (``Ok``) completed."""

    request_id: int
    """The request this answers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFailed(Event):
    """A request failed: the broker said so, or the connection or its stream went away."""

    request_id: int
    """The request that failed."""
    code: int
    """An :class:`~felix_proto.errors.ErrorCode` (``CONNECTION_LOST`` for local loss)."""
    message: str
    """Human-readable explanation."""
    retryable: bool
    """Whether the same request may succeed if retried later."""
    details: dict[str, Any] = field(default_factory=dict)
    """Machine-readable extras, e.g. ``first_offset`` for ``CURSOR_TOO_OLD``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestTimedOut(Event):
    """A request (or a ping) got no reply before its deadline; a late reply is dropped."""

    request_id: int
    """The request (or ping nonce) that timed out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GoAwayReceived(Event):
    """The broker is shutting down; new requests are refused locally from now on."""

    reason: str
    """The broker's explanation."""
    deadline_ms: int
    """Milliseconds (from when it was sent) after which the broker closes the connection."""
    code: int
    """An :class:`~felix_proto.errors.ErrorCode`, normally ``SHUTTING_DOWN``."""


# ---------------------------------------------------------------------------------- server


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRequested(Event):
    """A client sent ``Hello``; answer with ``accept()`` or ``reject()``."""

    hello: Hello
    """The client's ``Hello`` (name, token, capabilities ...)."""
    version: int
    """The protocol version that will be used (the first client version we speak)."""
    capabilities: list[str]
    """The capabilities both sides support, in the client's order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived(Event):
    """A client request arrived; answer with ``send_reply`` or ``send_error``.

    Requests without a ``request_id`` (``Ack``/``Nack`` without one, ``ack=NONE`` publishes
    still carry one) need no answer.
    """

    stream_id: int
    """The stream it arrived on (replies are routed there by request id)."""
    message: Message
    """The request message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditGranted(Event):
    """The client allowed more records and bytes on a subscription (already accounted)."""

    subscription_id: int
    """The subscription concerned."""
    messages: int
    """Additional records allowed."""
    bytes: int
    """Additional payload bytes allowed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionCancelled(Event):
    """A subscription ended without ``end_subscription``: the client stopped its stream or
    the connection ended. Stop producing for it; further sends for it are errors."""

    subscription_id: int
    """The subscription concerned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerCancelled(Event):
    """A consumer ended without ``end_consumer``: the client stopped its stream or the
    connection ended. Return its in-flight deliveries to the queue."""

    consumer_id: int
    """The consumer concerned."""
