"""felix_client: the Felix client library and the ``felix`` command-line tool.

An anyio-based async client (works in asyncio and trio programs)::

    import felix_client

    async with felix_client.connect("quic://127.0.0.1:7447", insecure=True) as client:
        await client.publish("orders", b"hello")

a blocking facade for scripts and the REPL (:mod:`felix_client.sync`), and the ``felix``
CLI (:mod:`felix_client.cli`). Errors are typed, one class per error code
(:mod:`felix_client.errors`).
"""

from ._streams import Consumer, Publisher, QueueMessage, Subscription
from ._url import DEFAULT_URL
from .client import Admin, Cache, Client, connect
from .errors import (
    AlreadyExists,
    BadFrameError,
    Conflict,
    ConnectionLost,
    CursorTooOld,
    ErrorCode,
    FelixError,
    Forbidden,
    InternalError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Overloaded,
    RequestTimeout,
    ShuttingDown,
    TooLarge,
    Unauthenticated,
    UnexpectedMessage,
    UnknownMessage,
    UnsupportedVersionError,
)
from .types import AckMode, CacheEntry, Event, Headers, PublishResult, Start

__all__ = [
    "DEFAULT_URL",
    "AckMode",
    "Admin",
    "AlreadyExists",
    "BadFrameError",
    "Cache",
    "CacheEntry",
    "Client",
    "Conflict",
    "ConnectionLost",
    "Consumer",
    "CursorTooOld",
    "ErrorCode",
    "Event",
    "FelixError",
    "Forbidden",
    "Headers",
    "InternalError",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "PublishResult",
    "Publisher",
    "QueueMessage",
    "RequestTimeout",
    "ShuttingDown",
    "Start",
    "Subscription",
    "TooLarge",
    "Unauthenticated",
    "UnexpectedMessage",
    "UnknownMessage",
    "UnsupportedVersionError",
    "connect",
]
