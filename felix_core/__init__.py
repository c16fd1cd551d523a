"""Felix engine: one append-only log with stream, queue and cache projections.

Pure: no I/O, no clock, no threads. Time arrives as ``now`` (seconds since the epoch);
deadlines leave through ``get_timer()``. The glue talks to :class:`Broker` only: requests
(each with its identity), feed commands, metadata and time in; one event stream out
(:meth:`Broker.drain_events`, :mod:`felix_core.events`): request completions and refusals,
per-connection deliveries, metadata writes for the store. See ``docs/engine.md``.
"""

from typing import TYPE_CHECKING

from felix_proto._lazy import lazy_getattr

if TYPE_CHECKING:  # the same imports, done lazily at run time (felix_proto._lazy)
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
        MetadataWrite,
        RecordsDelivered,
        RecordsSkipped,
        RequestCompleted,
        RequestRefused,
        SubscriptionClosed,
    )
    from felix_core.limits import BrokerConfig, MemoryBudget
    from felix_core.log import Log, LogSlice, MemoryLog, Retention, TooOld
    from felix_core.metadata import (
        Kind,
        MemoryMetadataStore,
        MetadataStore,
        MetadataView,
        ResourceRecord,
        WriteOp,
    )
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
    "MetadataView",
    "MetadataWrite",
    "NotFound",
    "Overloaded",
    "RecordsDelivered",
    "RecordsSkipped",
    "RequestCompleted",
    "RequestRefused",
    "ResourceRecord",
    "Retention",
    "ShuttingDown",
    "SlowConsumerPolicy",
    "StartKind",
    "StreamSettings",
    "SubscriptionClosed",
    "TooLarge",
    "TooOld",
    "WriteOp",
]


_EXPORTS: dict[str, tuple[str, ...]] = {
    "felix_core.broker": ("Broker",),
    "felix_core.errors": (
        "AlreadyExists",
        "Conflict",
        "CursorTooOld",
        "EngineError",
        "InvalidArgument",
        "LimitExceeded",
        "NotFound",
        "Overloaded",
        "ShuttingDown",
        "TooLarge",
    ),
    "felix_core.events": (
        "ConsumerClosed",
        "EngineEvent",
        "MessageDeadLettered",
        "MessagesDelivered",
        "MetadataWrite",
        "RecordsDelivered",
        "RecordsSkipped",
        "RequestCompleted",
        "RequestRefused",
        "SubscriptionClosed",
    ),
    "felix_core.limits": (
        "BrokerConfig",
        "MemoryBudget",
    ),
    "felix_core.log": (
        "Log",
        "LogSlice",
        "MemoryLog",
        "Retention",
        "TooOld",
    ),
    "felix_core.metadata": (
        "Kind",
        "MemoryMetadataStore",
        "MetadataStore",
        "MetadataView",
        "ResourceRecord",
        "WriteOp",
    ),
    "felix_core.settings": (
        "SlowConsumerPolicy",
        "StreamSettings",
    ),
    "felix_core.streams": ("StartKind",),
}

if not TYPE_CHECKING:  # mypy checks the names above, not a catch-all
    __getattr__ = lazy_getattr(__name__, _EXPORTS)
