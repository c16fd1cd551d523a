"""Typed exceptions of the Felix client: one class per :class:`~felix_proto.errors.ErrorCode`.

Every error the broker reports arrives as an ``Error`` frame with a numeric code; the client
raises the matching subclass of :class:`FelixError`, so callers can write ``except NotFound``
instead of comparing numbers. Two codes are raised locally: :class:`RequestTimeout` (a
request's deadline passed) and :class:`ConnectionLost` (the connection closed before the reply).

``FelixError.retryable`` says whether the same request may succeed later unchanged; it comes
from the broker's frame when there was one, else from :data:`felix_proto.errors.RETRYABLE`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from felix_proto.errors import RETRYABLE, ErrorCode

__all__ = [
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
    "error_class",
    "error_from_code",
]


class FelixError(Exception):
    """Base class of every error the client raises for a failed Felix operation.

    Attributes:
        code: the :class:`ErrorCode` (``None`` never; unknown numeric codes map here with
            ``code`` set to the raw int wrapped as far as possible).
        message: the human-readable explanation (the broker's, or a local one).
        retryable: whether retrying the same request later may succeed.
        details: machine-readable extras from the broker (e.g. ``first_offset``).
    """

    code: ClassVar[ErrorCode | int] = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # Only used for codes this client does not know: keep the raw number visible.
            self.code = code  # type: ignore[misc]
        self.retryable = (self.code in RETRYABLE) if retryable is None else retryable
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else f"code {self.code}"
        return f"{name}: {self.message}"


class BadFrameError(FelixError):
    """The peer found a frame or its msgpack payload malformed (``BAD_FRAME``)."""

    code = ErrorCode.BAD_FRAME


class UnsupportedVersionError(FelixError):
    """The broker does not speak our protocol version (``UNSUPPORTED_VERSION``)."""

    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownMessage(FelixError):
    """The broker does not know a message type we sent (``UNKNOWN_MESSAGE``)."""

    code = ErrorCode.UNKNOWN_MESSAGE


class UnexpectedMessage(FelixError):
    """A message was sent in a state or on a stream where it is not allowed."""

    code = ErrorCode.UNEXPECTED_MESSAGE


class Unauthenticated(FelixError):
    """The token is missing or invalid (``UNAUTHENTICATED``)."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(FelixError):
    """The principal may not perform this operation (``FORBIDDEN``)."""

    code = ErrorCode.FORBIDDEN


class NotFound(FelixError):
    """The tenant, namespace, stream, queue, cache or subscription does not exist."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(FelixError):
    """A resource with that name exists already (``ALREADY_EXISTS``)."""

    code = ErrorCode.ALREADY_EXISTS


class InvalidArgument(FelixError):
    """A field value is outside what the operation accepts (``INVALID_ARGUMENT``)."""

    code = ErrorCode.INVALID_ARGUMENT


class LimitExceeded(FelixError):
    """A configured count limit would be exceeded (``LIMIT_EXCEEDED``)."""

    code = ErrorCode.LIMIT_EXCEEDED


class TooLarge(FelixError):
    """A frame, payload, key or value is larger than allowed (``TOO_LARGE``)."""

    code = ErrorCode.TOO_LARGE


class CursorTooOld(FelixError):
    """The requested offset was trimmed by retention; ``details['first_offset']`` says where
    the retained range starts (``CURSOR_TOO_OLD``)."""

    code = ErrorCode.CURSOR_TOO_OLD

    @property
    def first_offset(self) -> int | None:
        """The oldest retained offset, when the broker said."""
        value = self.details.get("first_offset")
        return value if isinstance(value, int) else None


class Conflict(FelixError):
    """A conditional operation's condition did not hold (``CONFLICT``)."""

    code = ErrorCode.CONFLICT


class RequestTimeout(FelixError, TimeoutError):
    """The request's deadline passed before the reply arrived (``TIMEOUT``, local)."""

    code = ErrorCode.TIMEOUT


class Overloaded(FelixError):
    """The broker refuses new work for now (``OVERLOADED``); retry after a delay."""

    code = ErrorCode.OVERLOADED


class ShuttingDown(FelixError):
    """The broker is draining (``SHUTTING_DOWN``); reconnect elsewhere or later."""

    code = ErrorCode.SHUTTING_DOWN


class InternalError(FelixError):
    """A bug in the broker (``INTERNAL``); the request may or may not have taken effect."""

    code = ErrorCode.INTERNAL


class ConnectionLost(FelixError, ConnectionError):
    """The connection closed before the reply arrived (``CONNECTION_LOST``, local)."""

    code = ErrorCode.CONNECTION_LOST


class StorageFull(FelixError):
    """The broker's disk is full; the write was not taken (``STORAGE_FULL``, retryable)."""

    code = ErrorCode.STORAGE_FULL


class StorageFailed(FelixError):
    """The resource's storage failed; it refuses writes (``STORAGE_FAILED``)."""

    code = ErrorCode.STORAGE_FAILED


_BY_CODE: dict[int, type[FelixError]] = {
    cls.code: cls
    for cls in (
        BadFrameError,
        UnsupportedVersionError,
        UnknownMessage,
        UnexpectedMessage,
        Unauthenticated,
        Forbidden,
        NotFound,
        AlreadyExists,
        InvalidArgument,
        LimitExceeded,
        TooLarge,
        CursorTooOld,
        Conflict,
        RequestTimeout,
        Overloaded,
        ShuttingDown,
        InternalError,
        ConnectionLost,
        StorageFull,
        StorageFailed,
    )
}


def error_class(code: int) -> type[FelixError]:
    """Return the exception class for a numeric error code (:class:`FelixError` if unknown)."""
    return _BY_CODE.get(code, FelixError)


def error_from_code(
    code: int,
    message: str,
    *,
    retryable: bool | None = None,
    details: dict[str, Any] | None = None,
) -> FelixError:
    """Build the typed exception for an error the broker reported.

    Args:
        code: the numeric code from the ``Error`` frame.
        message: its human-readable message.
        retryable: the frame's ``retryable`` flag (``None``: derive from the code).
        details: the frame's ``details`` map.

    Returns:
        An instance of the matching :class:`FelixError` subclass; an unknown code gives a
        plain :class:`FelixError` whose ``code`` is the raw number.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return FelixError(message, retryable=bool(retryable), details=details, code=code)
    return cls(message, retryable=retryable, details=details)
