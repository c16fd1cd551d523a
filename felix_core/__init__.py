"""Felix engine: one append-only log with stream, queue and cache projections.

Pure: no I/O, no clock, no threads. Time arrives as ``now`` (seconds since the epoch);
deadlines leave through ``get_timer()``. The runtime talks to :class:`Broker` only: calls in,
replies as return values, refusals as :class:`EngineError`, per-connection deliveries from
:meth:`Broker.drain_outputs`. See ``docs/engine.md``.
"""

from felix_core.broker import Broker, EngineOutput
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
from felix_core.limits import BrokerConfig, MemoryBudget
from felix_core.log import Log, LogSlice, MemoryLog, Retention, TooOld
from felix_core.metadata import Kind, MemoryMetadataStore, MetadataStore, ResourceRecord
from felix_core.queues import ConsumerEnded, MessageDeadLettered, MessagesDelivered
from felix_core.settings import SlowConsumerPolicy, StreamSettings
from felix_core.streams import StartKind, StreamBatch, StreamGap, SubscriptionEnded

__all__ = [
    "AlreadyExists",
    "Broker",
    "BrokerConfig",
    "Conflict",
    "ConsumerEnded",
    "CursorTooOld",
    "EngineError",
    "EngineOutput",
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
    "ResourceRecord",
    "Retention",
    "ShuttingDown",
    "SlowConsumerPolicy",
    "StartKind",
    "StreamBatch",
    "StreamGap",
    "StreamSettings",
    "SubscriptionEnded",
    "TooLarge",
    "TooOld",
]
