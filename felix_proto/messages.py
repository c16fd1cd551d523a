"""Every message of the Felix wire protocol, version 2, as a frozen typed dataclass.

A frame's payload is the msgpack encoding of ``[type, fields]``: ``type`` is the message's
stable numeric code (``TYPE`` below) and ``fields`` a map from field name to value. Fields
equal to ``None`` are left out of the map; a missing optional field decodes to its default.
Unknown field names are ignored so that newer peers can add fields. See
``docs/wire-protocol.md`` for the normative description of each message.

Type codes are grouped: ``0x01..`` session, ``0x10..`` publish/subscribe, ``0x30..``
queues, ``0x40..`` cache, ``0x50..`` admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, TypeVar, dataclass_transform

__all__ = [
    "MAX_DURATION_MS",
    "MAX_FRAME_SIZE_FIELD",
    "MESSAGE_TYPES",
    "Ack",
    "AckMode",
    "AdminCreate",
    "AdminDelete",
    "AdminDescribe",
    "AdminList",
    "AdminResource",
    "AdminResources",
    "AdminUpdate",
    "CacheDelete",
    "CacheDeleted",
    "CacheGet",
    "CachePut",
    "CachePutResult",
    "CacheValue",
    "CancelConsume",
    "Consume",
    "ConsumerEnded",
    "ConsumerStreamStart",
    "Consuming",
    "Credit",
    "Delivery",
    "DeliveryBatch",
    "EndReason",
    "Enqueue",
    "Error",
    "EventBatch",
    "GoAway",
    "Hello",
    "Message",
    "Nack",
    "Ok",
    "Ping",
    "Pong",
    "Publish",
    "PublishAck",
    "PublishBatch",
    "Reauthenticate",
    "ResourceKind",
    "SourceKind",
    "StartKind",
    "Subscribe",
    "Subscribed",
    "SubscriptionEnded",
    "SubscriptionGap",
    "SubscriptionStreamStart",
    "TokenExchange",
    "TokenIssued",
    "Unsubscribe",
    "Welcome",
]

_M = TypeVar("_M")

MAX_DURATION_MS = 10**12
"""Largest TTL, delay or deadline in milliseconds a message may carry (about 31.7 years):
``now`` plus any such duration stays far below 2**53 ms, so no deadline computed from one
loses precision or overflows a field it is later encoded in (``CacheValue.ttl_remaining_ms``).
Resource settings that are durations (``default_ttl_ms``, ``visibility_timeout_ms``,
``retention_max_age_ms``) have the same bound."""
MAX_FRAME_SIZE_FIELD = 0xFFFF_FFFF
"""Largest ``Hello.max_frame_size``: a frame header's payload length is a u32."""


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def _msg(cls: type[_M]) -> type[_M]:
    """``@dataclass(frozen=True, slots=True, kw_only=True)``, spelled so type checkers see it."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


class AckMode(IntEnum):
    """When the broker acknowledges a publish or enqueue."""

    NONE = 0
    """No ``PublishAck``; errors are still reported with the request id."""
    ACCEPTED = 1
    """Ack once the broker has appended the records to the log in memory."""
    COMMITTED = 2
    """Ack once the records are as durable as the stream's durability class promises."""


class StartKind(IntEnum):
    """Where a new subscription starts reading."""

    LATEST = 0
    """Only records appended after the subscription was made."""
    EARLIEST = 1
    """The oldest retained record."""
    OFFSET = 2
    """The record at ``start_value``; below the retained range is ``CURSOR_TOO_OLD``."""
    TIMESTAMP = 3
    """The first record whose timestamp (ms since epoch) is at least ``start_value``."""


class SourceKind(StrEnum):
    """What a subscription follows."""

    STREAM = "stream"
    """A stream's log."""
    CACHE = "cache"
    """A cache's change feed (one record per put, delete, expiry and eviction)."""


class EndReason(StrEnum):
    """Why a subscription or a queue consumer ended."""

    UNSUBSCRIBED = "unsubscribed"
    LAGGED = "lagged"
    DELETED = "deleted"
    TOO_OLD = "too_old"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    FORBIDDEN = "forbidden"


class ResourceKind(StrEnum):
    """The kinds of resource the admin messages manage."""

    TENANT = "tenant"
    NAMESPACE = "namespace"
    STREAM = "stream"
    QUEUE = "queue"
    CACHE = "cache"
    ROLE = "role"
    BINDING = "binding"


class Message:
    """Base class of every wire message. ``TYPE`` is the stable numeric type code."""

    __slots__ = ()
    TYPE: ClassVar[int]


# --------------------------------------------------------------------------- session


@_msg
class Hello(Message):
    """Client -> broker, first message on the control stream."""

    TYPE: ClassVar[int] = 0x01
    versions: list[int]
    """Protocol versions the client speaks, preferred first."""
    client_name: str = ""
    """Free-form client identification for logs and metrics (not a label value)."""
    capabilities: list[str] = field(default_factory=list)
    """Optional features the client understands."""
    token: str | None = None
    """Bearer token for authentication; absent for anonymous."""
    max_frame_size: int | None = None
    """Largest payload the client accepts, at least 4096 (§5.4) and at most 2^32-1 (a header's
    length field); absent for the default (16 MiB)."""


@_msg
class Welcome(Message):
    """Broker -> client, the handshake reply on the control stream."""

    TYPE: ClassVar[int] = 0x02
    version: int
    """The protocol version chosen for the connection."""
    server_id: str
    """Stable identifier of the broker process that answered."""
    region: str = ""
    """The sovereign region this broker belongs to."""
    capabilities: list[str] = field(default_factory=list)
    """Features the broker offers that the client also listed."""
    limits: dict[str, int] = field(default_factory=dict)
    """Limits the client must respect (``max_frame_size``, ``max_batch_records`` ...)."""
    tenant: str | None = None
    """The tenant the broker assigned to the connection's principal (§5.6): its token's or
    its client certificate's. Absent when it assigned none (no authentication, an operator,
    a login by ``TokenExchange`` still to come). A client not told a tenant uses this one; a
    client that does not know the field ignores it (§3)."""


@_msg
class Ping(Message):
    """Either side, on the control stream; the peer answers ``Pong`` with the same nonce."""

    TYPE: ClassVar[int] = 0x03
    nonce: int


@_msg
class Pong(Message):
    """The answer to ``Ping``."""

    TYPE: ClassVar[int] = 0x04
    nonce: int


@_msg
class GoAway(Message):
    """Broker -> client: the broker is shutting down; finish work before ``deadline_ms``."""

    TYPE: ClassVar[int] = 0x05
    reason: str
    """Human-readable reason."""
    deadline_ms: int
    """Milliseconds from now after which the broker closes the connection."""
    code: int = 501
    """An error code, ``SHUTTING_DOWN`` unless another applies."""


@_msg
class Error(Message):
    """A failed request (``request_id`` set) or a connection-level error (no ``request_id``)."""

    TYPE: ClassVar[int] = 0x06
    code: int
    """An error code from §8."""
    message: str
    """Human-readable explanation."""
    request_id: int | None = None
    """The request that failed, if any."""
    retryable: bool = False
    """Whether the same request may succeed if retried later."""
    details: dict[str, Any] = field(default_factory=dict)
    """Machine-readable extras, e.g. ``first_offset`` for ``CURSOR_TOO_OLD``."""


@_msg
class Ok(Message):
    """Generic success reply to requests that return nothing else."""

    TYPE: ClassVar[int] = 0x07
    request_id: int


@_msg
class Reauthenticate(Message):
    """Client -> broker (capability ``token-refresh``): a new bearer token for the
    connection, answered ``Ok`` or ``Error``."""

    TYPE: ClassVar[int] = 0x08
    request_id: int
    token: str
    """The new bearer token; it must name the connection's tenant and subject."""


@_msg
class TokenExchange(Message):
    """Client -> broker (capability ``token-exchange``): an identity token of an external
    issuer (an OIDC ID token, a Kubernetes service-account token) to exchange for a Felix
    token, answered ``TokenIssued`` or ``Error``. Allowed before the connection has a
    credential (the exchange is then its login) and after."""

    TYPE: ClassVar[int] = 0x09
    request_id: int
    id_token: str
    """The external identity token (a JWT)."""


@_msg
class TokenIssued(Message):
    """The answer to ``TokenExchange``: a Felix token, now the connection's credential."""

    TYPE: ClassVar[int] = 0x0A
    request_id: int
    token: str
    """The Felix token (an EdDSA JWT) the connection now speaks with."""
    expires_in_ms: int
    """Milliseconds from now until the token expires."""


# ------------------------------------------------------------------- publish/subscribe


@_msg
class Publish(Message):
    """Append one record to a stream."""

    TYPE: ClassVar[int] = 0x10
    request_id: int
    tenant: str
    namespace: str
    stream: str
    payload: bytes
    key: bytes | None = None
    headers: dict[str, bytes] | None = None
    ack: int = AckMode.ACCEPTED.value
    """When to acknowledge (§6.6 ``AckMode``)."""


@_msg
class PublishBatch(Message):
    """Append many records to a stream atomically; they get consecutive offsets."""

    TYPE: ClassVar[int] = 0x11
    request_id: int
    tenant: str
    namespace: str
    stream: str
    payloads: list[bytes]
    keys: list[bytes | None] | None = None
    """Absent, or one entry per payload."""
    headers: list[dict[str, bytes] | None] | None = None
    """Absent, or one entry per payload."""
    ack: int = AckMode.ACCEPTED.value


@_msg
class PublishAck(Message):
    """The offsets a publish, batch or enqueue received (inclusive range)."""

    TYPE: ClassVar[int] = 0x12
    request_id: int
    first_offset: int
    last_offset: int


@_msg
class Subscribe(Message):
    """Start following a stream (or a cache's change feed) from a start position."""

    TYPE: ClassVar[int] = 0x13
    request_id: int
    tenant: str
    namespace: str
    stream: str
    """The stream's name, or the cache's name when ``source`` is ``cache``."""
    start: int = StartKind.LATEST.value
    """Where to start (§6.6 ``StartKind``)."""
    start_value: int | None = None
    """The offset or timestamp (ms) for ``OFFSET`` and ``TIMESTAMP``."""
    credit_messages: int = 1024
    """How many records the broker may send before more credit arrives."""
    credit_bytes: int = 1 << 20
    """How many record bytes the broker may send before more credit arrives: a record's size is
    ``len(payload)`` + ``len(key)`` + for each header the UTF-8 length of its name plus the
    length of its value."""
    source: str = SourceKind.STREAM.value
    """What to follow (§6.6 ``SourceKind``); ``cache`` records are described in §6.9."""


@_msg
class Subscribed(Message):
    """Reply to ``Subscribe``: events follow on a broker-opened unidirectional stream."""

    TYPE: ClassVar[int] = 0x14
    request_id: int
    subscription_id: int
    first_offset: int
    """The offset of the first record the subscription will deliver."""


@_msg
class SubscriptionStreamStart(Message):
    """First frame on a subscription's unidirectional stream: binds it to the subscription."""

    TYPE: ClassVar[int] = 0x15
    subscription_id: int
    request_id: int


@_msg
class EventBatch(Message):
    """Consecutive records of a subscription, starting at ``base_offset``.

    Carries no subscription id: the unidirectional stream it arrives on says which
    subscription it belongs to, so one encoded batch serves every subscriber at that position.
    """

    TYPE: ClassVar[int] = 0x16
    base_offset: int
    payloads: list[bytes]
    timestamps_ms: list[int] | None = None
    """Absent, or one append timestamp (ms since epoch) per payload."""
    keys: list[bytes | None] | None = None
    headers: list[dict[str, bytes] | None] | None = None


@_msg
class Credit(Message):
    """Client -> broker: allow ``messages`` more records and ``bytes`` more record bytes."""

    TYPE: ClassVar[int] = 0x17
    subscription_id: int
    messages: int
    bytes: int


@_msg
class Unsubscribe(Message):
    """End a subscription; answered by ``Ok`` and a ``SubscriptionEnded`` on its stream."""

    TYPE: ClassVar[int] = 0x18
    request_id: int
    subscription_id: int


@_msg
class SubscriptionGap(Message):
    """On a subscription stream: ``missed`` records were skipped; next is ``next_offset``."""

    TYPE: ClassVar[int] = 0x19
    missed: int
    next_offset: int


@_msg
class SubscriptionEnded(Message):
    """Last frame on a subscription stream (the broker then ends the stream)."""

    TYPE: ClassVar[int] = 0x1A
    subscription_id: int
    reason: str
    """Why it ended (§6.6 ``EndReason``)."""
    message: str = ""
    next_offset: int | None = None
    """Where a resumed subscription would continue."""


# ------------------------------------------------------------------------------ queues


@_msg
class Enqueue(Message):
    """Append records to a queue; answered by ``PublishAck`` unless ``ack`` is ``NONE``."""

    TYPE: ClassVar[int] = 0x30
    request_id: int
    tenant: str
    namespace: str
    queue: str
    payloads: list[bytes]
    keys: list[bytes | None] | None = None
    headers: list[dict[str, bytes] | None] | None = None
    ack: int = AckMode.ACCEPTED.value


@_msg
class Consume(Message):
    """Join a queue's consumer group; deliveries follow on a broker-opened uni stream."""

    TYPE: ClassVar[int] = 0x31
    request_id: int
    tenant: str
    namespace: str
    queue: str
    group: str = "default"
    prefetch: int = 64
    """How many unacknowledged deliveries this consumer may hold at once."""


@_msg
class Consuming(Message):
    """Reply to ``Consume``."""

    TYPE: ClassVar[int] = 0x32
    request_id: int
    consumer_id: int


@_msg
class ConsumerStreamStart(Message):
    """First frame on a consumer's unidirectional stream: binds it to the consumer."""

    TYPE: ClassVar[int] = 0x33
    consumer_id: int
    request_id: int


@_msg
class Delivery(Message):
    """One queue message handed to a consumer; it must be acked or nacked."""

    TYPE: ClassVar[int] = 0x34
    delivery_id: int
    attempt: int
    """The attempts charged to the message before this delivery, plus one: 1 for the first delivery
    (which failures are charged: §7)."""
    offset: int
    payload: bytes
    timestamp_ms: int = 0
    key: bytes | None = None
    headers: dict[str, bytes] | None = None


@_msg
class DeliveryBatch(Message):
    """Several queue messages handed to a consumer in one frame (capability ``delivery-batch``);
    each must be acked or nacked. Entry ``i`` of every list describes delivery ``i``."""

    TYPE: ClassVar[int] = 0x39
    delivery_ids: list[int]
    attempts: list[int]
    """One per delivery, as ``Delivery.attempt``."""
    offsets: list[int]
    payloads: list[bytes]
    timestamps_ms: list[int] | None = None
    """Absent (every timestamp 0), or one per delivery."""
    keys: list[bytes | None] | None = None
    headers: list[dict[str, bytes] | None] | None = None


@_msg
class Ack(Message):
    """Finish deliveries. With a ``request_id`` the broker answers ``Ok`` or ``Error``."""

    TYPE: ClassVar[int] = 0x35
    consumer_id: int
    delivery_ids: list[int]
    request_id: int | None = None
    mode: int = AckMode.ACCEPTED.value
    """When the broker answers (§6.6 ``AckMode``): ``COMMITTED`` once the ack is on disk
    (a durable queue); ``NONE`` and ``ACCEPTED`` once it is applied."""


@_msg
class Nack(Message):
    """Return deliveries for redelivery, after ``delay_ms`` if given."""

    TYPE: ClassVar[int] = 0x36
    consumer_id: int
    delivery_ids: list[int]
    delay_ms: int = 0
    """Milliseconds before redelivery."""
    request_id: int | None = None


@_msg
class CancelConsume(Message):
    """Leave the group; in-flight deliveries are returned for redelivery at once."""

    TYPE: ClassVar[int] = 0x37
    request_id: int
    consumer_id: int


@_msg
class ConsumerEnded(Message):
    """Last frame on a consumer stream (the broker then ends the stream)."""

    TYPE: ClassVar[int] = 0x38
    consumer_id: int
    reason: str
    message: str = ""


# ------------------------------------------------------------------------------- cache


@_msg
class CachePut(Message):
    """Store a value. ``if_absent`` and ``if_version`` make it conditional."""

    TYPE: ClassVar[int] = 0x40
    request_id: int
    tenant: str
    namespace: str
    cache: str
    key: str
    value: bytes
    ttl_ms: int | None = None
    """Absent: the cache's default TTL, except with ``if_version``: the entry keeps its expiry. 0:
    never expires."""
    if_absent: bool = False
    if_version: int | None = None
    """Store only if the current version equals this (compare-and-set)."""


@_msg
class CachePutResult(Message):
    """Reply to ``CachePut``: ``stored`` false means the condition did not hold (conflict)."""

    TYPE: ClassVar[int] = 0x41
    request_id: int
    stored: bool
    version: int | None = None
    """The new version when stored; the current version (if any) on conflict."""


@_msg
class CacheGet(Message):
    """Read a value."""

    TYPE: ClassVar[int] = 0x42
    request_id: int
    tenant: str
    namespace: str
    cache: str
    key: str


@_msg
class CacheValue(Message):
    """Reply to ``CacheGet``: a hit with value, version and remaining TTL, or a miss."""

    TYPE: ClassVar[int] = 0x43
    request_id: int
    found: bool
    value: bytes | None = None
    version: int | None = None
    ttl_remaining_ms: int | None = None
    """Absent when the entry never expires."""


@_msg
class CacheDelete(Message):
    """Delete a value, optionally only at a given version."""

    TYPE: ClassVar[int] = 0x44
    request_id: int
    tenant: str
    namespace: str
    cache: str
    key: str
    if_version: int | None = None


@_msg
class CacheDeleted(Message):
    """Reply to ``CacheDelete``: whether an entry was removed."""

    TYPE: ClassVar[int] = 0x45
    request_id: int
    deleted: bool


# ------------------------------------------------------------------------------- admin


@_msg
class AdminCreate(Message):
    """Create a resource. Unused path parts for a kind are empty strings."""

    TYPE: ClassVar[int] = 0x50
    request_id: int
    kind: str
    """What to create (§6.6 ``ResourceKind``, paths in §6.8)."""
    tenant: str
    namespace: str = ""
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@_msg
class AdminDescribe(Message):
    """Describe one resource."""

    TYPE: ClassVar[int] = 0x51
    request_id: int
    kind: str
    tenant: str
    namespace: str = ""
    name: str = ""


@_msg
class AdminList(Message):
    """List resources of a kind under a tenant (and namespace)."""

    TYPE: ClassVar[int] = 0x52
    request_id: int
    kind: str
    tenant: str = ""
    namespace: str = ""


@_msg
class AdminUpdate(Message):
    """Change settings of a resource; only the given settings change."""

    TYPE: ClassVar[int] = 0x53
    request_id: int
    kind: str
    tenant: str
    namespace: str = ""
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@_msg
class AdminDelete(Message):
    """Delete a resource; answered by ``Ok``."""

    TYPE: ClassVar[int] = 0x54
    request_id: int
    kind: str
    tenant: str
    namespace: str = ""
    name: str = ""


@_msg
class AdminResource(Message):
    """Reply to create, describe and update: the resource as it now is."""

    TYPE: ClassVar[int] = 0x55
    request_id: int
    resource: dict[str, Any]


@_msg
class AdminResources(Message):
    """Reply to ``AdminList``."""

    TYPE: ClassVar[int] = 0x56
    request_id: int
    resources: list[dict[str, Any]]


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Ping,
        Pong,
        GoAway,
        Error,
        Ok,
        Reauthenticate,
        TokenExchange,
        TokenIssued,
        Publish,
        PublishBatch,
        PublishAck,
        Subscribe,
        Subscribed,
        SubscriptionStreamStart,
        EventBatch,
        Credit,
        Unsubscribe,
        SubscriptionGap,
        SubscriptionEnded,
        Enqueue,
        Consume,
        Consuming,
        ConsumerStreamStart,
        Delivery,
        DeliveryBatch,
        Ack,
        Nack,
        CancelConsume,
        ConsumerEnded,
        CachePut,
        CachePutResult,
        CacheGet,
        CacheValue,
        CacheDelete,
        CacheDeleted,
        AdminCreate,
        AdminDescribe,
        AdminList,
        AdminUpdate,
        AdminDelete,
        AdminResource,
        AdminResources,
    )
}
"""Every message class by its type code."""
