"""felix_client: the Felix client library and the ``felix`` command-line tool.

An anyio-based async client (works in asyncio and trio programs)::

    import felix_client

    async with felix_client.connect("quic://127.0.0.1:7447", insecure=True) as client:
        await client.publish("orders", b"hello")

a blocking facade for scripts and the REPL (:mod:`felix_client.sync`), and the ``felix``
CLI (:mod:`felix_client.cli`). Errors are typed, one class per error code
(:mod:`felix_client.errors`).

``felix_client.__version__`` is the installed distribution's version: ``version`` in
``pyproject.toml`` is the only place it is written.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import TYPE_CHECKING

from felix_proto._lazy import lazy_getattr

if TYPE_CHECKING:  # the same imports, done lazily at run time (felix_proto._lazy)
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
        StorageFailed,
        StorageFull,
        TooLarge,
        Unauthenticated,
        UnexpectedMessage,
        UnknownMessage,
        UnsupportedVersionError,
    )
    from .types import AckMode, CacheEntry, Event, Headers, PublishResult, Start

try:
    __version__ = _distribution_version("felix")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

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
    "StorageFailed",
    "StorageFull",
    "Subscription",
    "TooLarge",
    "Unauthenticated",
    "UnexpectedMessage",
    "UnknownMessage",
    "UnsupportedVersionError",
    "connect",
]

_EXPORTS: dict[str, tuple[str, ...]] = {
    "felix_client._streams": (
        "Consumer",
        "Publisher",
        "QueueMessage",
        "Subscription",
    ),
    "felix_client._url": ("DEFAULT_URL",),
    "felix_client.client": (
        "Admin",
        "Cache",
        "Client",
        "connect",
    ),
    "felix_client.errors": (
        "AlreadyExists",
        "BadFrameError",
        "Conflict",
        "ConnectionLost",
        "CursorTooOld",
        "ErrorCode",
        "FelixError",
        "Forbidden",
        "InternalError",
        "InvalidArgument",
        "LimitExceeded",
        "NotFound",
        "Overloaded",
        "RequestTimeout",
        "ShuttingDown",
        "StorageFailed",
        "StorageFull",
        "TooLarge",
        "Unauthenticated",
        "UnexpectedMessage",
        "UnknownMessage",
        "UnsupportedVersionError",
    ),
    "felix_client.types": (
        "AckMode",
        "CacheEntry",
        "Event",
        "Headers",
        "PublishResult",
        "Start",
    ),
}

if not TYPE_CHECKING:  # mypy checks the names above, not a catch-all
    __getattr__ = lazy_getattr(__name__, _EXPORTS)
