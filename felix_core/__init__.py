"""Felix engine: one append-only log with stream, queue and cache projections.

Pure: no I/O, no clock, no threads. Time arrives as ``now`` (seconds since the epoch);
deadlines leave through ``get_timer()``. The runtime talks to :class:`Broker` only: calls in,
replies as return values, refusals as :class:`EngineError`, per-connection deliveries from
:meth:`Broker.drain_events`. See ``docs/engine.md``.
"""

from felix_core.broker import Broker
from felix_core.errors import (
    AlreadyExists,
    Conflict,
    CursorTooOld,
    EngineError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Overloaded,
    ShuttingDown,
    TooLarge,
)
from felix_core.events import (
    ConsumerClosed,
    EngineEvent,
    MessageDeadLettered,
    MessagesDelivered,
    RecordsDelivered,
    RecordsSkipped,
    SubscriptionClosed,
)
from felix_core.limits import BrokerConfig, MemoryBudget
from felix_core.log import Log, LogSlice, MemoryLog, Retention, TooOld
from felix_core.metadata import Kind, MemoryMetadataStore, MetadataStore, ResourceRecord
from felix_core.settings import SlowConsumerPolicy, StreamSettings
from felix_core.streams import StartKind

__all__ = [
    "AlreadyExists",
    "Broker",
    "BrokerConfig",
    "Conflict",
    "ConsumerClosed",
    "CursorTooOld",
    "EngineError",
    "EngineEvent",
    "InvalidArgument",
    "Kind",
    "LimitExceeded",
    "Log",
    "LogSlice",
    "MemoryBudget",
    "MemoryLog",
    "MemoryMetadataStore",
    "MessageDeadLettered",
    "MessagesDelivered",
    "MetadataStore",
    "NotFound",
    "Overloaded",
    "RecordsDelivered",
    "RecordsSkipped",
    "ResourceRecord",
    "Retention",
    "ShuttingDown",
    "SlowConsumerPolicy",
    "StartKind",
    "StreamSettings",
    "SubscriptionClosed",
    "TooLarge",
    "TooOld",
]
