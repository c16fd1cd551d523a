"""Everything the engine emits, in one hierarchy.

The engine (:class:`~felix_core.broker.Broker`) has one output stream: the events below, in
the order they happened, taken with :meth:`~felix_core.broker.Broker.drain_events`. Every
event but :class:`MessageDeadLettered` names the connection it is for, so the glue hands
each connection its own events in order; across connections the order does not matter.

* Feed events: :class:`RecordsDelivered`, :class:`RecordsSkipped` and
  :class:`SubscriptionClosed` for a subscription; :class:`MessagesDelivered` and
  :class:`ConsumerClosed` for a queue consumer.
* Request completions: every request the engine is given carries its identity (the
  connection and the caller's number for the request) and ends with exactly one
  :class:`RequestCompleted` (a subclass carrying the result) or :class:`RequestRefused`,
  at once or later (a committed publish waits until its log says the records are durable).
  A request's completion comes before any feed event it causes: a subscription's
  :class:`SubscriptionOpened` precedes its first :class:`RecordsDelivered`.
* :class:`MetadataWrite`: a change of resource metadata the engine asks its store to make
  (an admin request waits for the store's answer, ``Broker.metadata_written``).
* :class:`MessageDeadLettered`: for logs and metrics only.
* :class:`AccessChanged`: a tenant's roles or bindings changed; the glue resolves the
  principals of that tenant's connections again.

Events are plain records (STYLE habit 3), read-only by convention but not frozen: one is
built per request and per delivered batch, and a frozen dataclass costs more than twice as
much to build (0.75 us against 0.31 us for a five-field record, measured). Their names do not
repeat those of :mod:`felix_proto.events` or :mod:`felix_proto.messages`: those are the
wire's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from felix_core.errors import EngineError
from felix_core.log import LogSlice
from felix_core.metadata import ResourceRecord, WriteOp
from felix_core.queue_types import QueueDelivery, QueueKey

__all__ = [
    "AccessChanged",
    "Appended",
    "CacheRead",
    "CacheRemoved",
    "CacheStored",
    "ConnectionEvent",
    "ConsumerClosed",
    "ConsumerOpened",
    "EngineEvent",
    "MessageDeadLettered",
    "MessagesDelivered",
    "MetadataWrite",
    "RecordsDelivered",
    "RecordsSkipped",
    "RequestCompleted",
    "RequestRefused",
    "ResourceDescribed",
    "ResourcesListed",
    "SubscriptionClosed",
    "SubscriptionOpened",
]


@dataclass(slots=True, kw_only=True)
class EngineEvent:
    """Base of everything :meth:`~felix_core.broker.Broker.drain_events` returns."""


@dataclass(slots=True, kw_only=True)
class ConnectionEvent(EngineEvent):
    """Base of the events for one connection: feed events and request completions."""

    connection_id: int
    """The connection the event is for (that holds the feed, or made the request)."""


# -- feeds ---------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RecordsDelivered(ConnectionEvent):
    """Records for a subscription. The same slice object may go to many subscriptions."""

    subscription_id: int
    """The subscription."""
    slice: LogSlice
    """The records; encode once per distinct object."""


@dataclass(slots=True, kw_only=True)
class RecordsSkipped(ConnectionEvent):
    """Retention trimmed records the subscription had not received; it skips them."""

    subscription_id: int
    """The subscription."""
    missed: int
    """Exactly how many records were skipped."""
    next_offset: int
    """The offset the subscription continues from."""


@dataclass(slots=True, kw_only=True)
class SubscriptionClosed(ConnectionEvent):
    """The subscription is over; nothing more will be delivered for it."""

    subscription_id: int
    """The subscription."""
    reason: str
    """``unsubscribed``, ``lagged``, ``deleted``, ``too_old``, ``shutdown``, ``forbidden``
    or ``error``."""
    message: str = ""
    """Human-readable detail."""
    next_offset: int | None = None
    """Where a resumed subscription would continue."""


@dataclass(slots=True, kw_only=True)
class MessagesDelivered(ConnectionEvent):
    """Queue deliveries for one consumer, to be sent on its consumer stream in order."""

    consumer_id: int
    """The consumer receiving the deliveries."""
    queue: QueueKey
    """The queue delivered from."""
    deliveries: list[QueueDelivery]
    """One or more deliveries in the order they were made."""


@dataclass(slots=True, kw_only=True)
class ConsumerClosed(ConnectionEvent):
    """A consumer is over: cancelled, its queue deleted, or the broker shutting down."""

    consumer_id: int
    """The consumer that ended."""
    queue: QueueKey
    """The queue it consumed from."""
    reason: str
    """``unsubscribed``, ``deleted``, ``shutdown`` or ``forbidden``, matching the wire
    ``EndReason``."""
    message: str = ""
    """Human-readable detail."""


@dataclass(slots=True, kw_only=True)
class MessageDeadLettered(EngineEvent):
    """A message left a consumer group as a dead letter (for logs and metrics)."""

    queue: QueueKey
    """The source queue."""
    group: str
    """The group that gave up on the message."""
    offset: int
    """The message's offset in the source queue."""
    attempts: int
    """How many deliveries were made."""
    reason: str
    """``max_attempts`` or ``rejected``."""
    target: str | None
    """The dead-letter queue it was appended to, or None if it was dropped."""


@dataclass(slots=True, kw_only=True)
class AccessChanged(EngineEvent):
    """What a tenant's roles and bindings grant changed (:mod:`felix_core.rbac`)."""

    tenant: str
    """The tenant whose principals must be resolved again."""


@dataclass(slots=True, kw_only=True)
class MetadataWrite(EngineEvent):
    """The engine asks its metadata store for a change. The glue applies it and reports
    the outcome with ``Broker.metadata_written(write_id, ...)``, and the change itself (as
    for any writer's) with ``Broker.metadata_changed``."""

    write_id: int
    """The engine's number for the write."""
    op: WriteOp
    """Create, replace or delete."""
    record: ResourceRecord
    """The record to store (``uid`` 0 for a create: the store gives one), or to delete."""
    expected_generation: int | None
    """For a replace: the generation the stored record must have."""


# -- request completions -----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RequestCompleted(ConnectionEvent):
    """A request succeeded. Used as is for requests without a result (unsubscribe, cancel,
    ack, nack, delete); the subclasses below carry the others' results."""

    request: int
    """The caller's number for the request (unique per connection while it is pending)."""


@dataclass(slots=True, kw_only=True)
class RequestRefused(ConnectionEvent):
    """A request failed: the engine refused it (the error goes on the wire 1:1)."""

    request: int
    """The caller's number for the request."""
    error: EngineError
    """Why: its code, message, details and retryability."""


@dataclass(slots=True, kw_only=True)
class Appended(RequestCompleted):
    """A publish or enqueue: the records are in the log (durable, for a committed one)."""

    first_offset: int
    """Offset of the first record appended."""
    last_offset: int
    """Offset of the last record appended."""


@dataclass(slots=True, kw_only=True)
class SubscriptionOpened(RequestCompleted):
    """A subscribe: the subscription exists; its records follow."""

    subscription_id: int
    """The new subscription's id."""
    first_offset: int
    """The first offset it receives."""


@dataclass(slots=True, kw_only=True)
class ConsumerOpened(RequestCompleted):
    """A consume: the consumer joined its group; its deliveries follow."""

    consumer_id: int
    """The new consumer's id."""


@dataclass(slots=True, kw_only=True)
class CacheStored(RequestCompleted):
    """A cache put: whether it stored, and the version."""

    stored: bool
    """False when the put's condition (absent, version) did not hold."""
    version: int | None
    """The new version, or (not stored) the live entry's version, None without one."""


@dataclass(slots=True, kw_only=True)
class CacheRead(RequestCompleted):
    """A cache get: the live entry, or a miss (``value`` None)."""

    value: bytes | None
    """The value; None on a miss."""
    version: int | None
    """The entry's version; None on a miss."""
    ttl_remaining_ms: int | None
    """Milliseconds the entry has left; None on a miss or when it never expires."""


@dataclass(slots=True, kw_only=True)
class CacheRemoved(RequestCompleted):
    """A cache delete: whether a live entry was removed."""

    deleted: bool
    """True when a live entry was removed."""


@dataclass(slots=True, kw_only=True)
class ResourceDescribed(RequestCompleted):
    """An admin create, describe or update: the resource as it now is."""

    resource: dict[str, Any]
    """The resource as a mapping (the wire's ``AdminResource.resource``), with live
    ``stats`` for streams, queues and caches."""


@dataclass(slots=True, kw_only=True)
class ResourcesListed(RequestCompleted):
    """An admin list: the resources of a kind under a parent."""

    resources: list[dict[str, Any]]
    """The resources as mappings (without stats), sorted by path."""
