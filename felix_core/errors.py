"""Typed errors raised by the engine.

Every refusal the engine makes is an :class:`EngineError` carrying one
:class:`~felix_proto.errors.ErrorCode` from the one registry in ``felix_proto``. The server
glue turns each into an ``Error`` frame 1:1: ``code``, ``message`` and ``details`` go on the
wire unchanged, and ``retryable`` tells the client whether trying again later may succeed.

The subclasses exist so that callers (and tests) can catch one kind of refusal by type; each
fixes its code at class level, so ``NotFound("no such stream")`` is enough.

Engine errors are *not* bugs: they are answers to requests. A bug in the engine surfaces as
any other exception and the glue maps it to ``INTERNAL``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from felix_proto.errors import RETRYABLE, ErrorCode

__all__ = [
    "AlreadyExists",
    "Conflict",
    "CursorTooOld",
    "EngineError",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "ShuttingDown",
    "StorageFailed",
    "StorageFull",
    "TooLarge",
]


class EngineError(Exception):
    """A request the engine refuses, with a stable wire error code.

    Attributes:
        code: the :class:`ErrorCode` to put on the wire.
        message: a human-readable explanation.
        details: machine-readable extra fields (e.g. ``first_offset`` for a too-old cursor).
        retryable: whether the same request may succeed if retried later; derived from
            ``felix_proto.errors.RETRYABLE``.
    """

    code: ErrorCode

    def __init__(
        self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        """Create an error.

        Args:
            code: the wire error code.
            message: a human-readable explanation.
            details: optional machine-readable fields; defaults to an empty dict.
        """
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details) if details else {}

    @property
    def retryable(self) -> bool:
        """Whether the client may retry the same request after a delay."""
        return self.code in RETRYABLE

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.code.name}, {self.message!r}, details={self.details!r})"


class _FixedCodeError(EngineError):
    """Base of the convenience subclasses: the code is a class attribute."""

    fixed_code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(self.fixed_code, message, details=details)


class NotFound(_FixedCodeError):
    """The tenant, namespace, resource, subscription, consumer or delivery does not exist."""

    fixed_code = ErrorCode.NOT_FOUND


class AlreadyExists(_FixedCodeError):
    """A resource with that name exists already."""

    fixed_code = ErrorCode.ALREADY_EXISTS


class InvalidArgument(_FixedCodeError):
    """A name, setting or argument is outside what the operation accepts."""

    fixed_code = ErrorCode.INVALID_ARGUMENT


class LimitExceeded(_FixedCodeError):
    """A configured count limit (subscriptions, resources, prefetch ...) would be exceeded."""

    fixed_code = ErrorCode.LIMIT_EXCEEDED


class TooLarge(_FixedCodeError):
    """A payload, key, value or batch is larger than the configured maximum."""

    fixed_code = ErrorCode.TOO_LARGE


class CursorTooOld(_FixedCodeError):
    """The requested offset was trimmed by retention; ``details['first_offset']`` is the oldest."""

    fixed_code = ErrorCode.CURSOR_TOO_OLD


class Conflict(_FixedCodeError):
    """A conditional operation's condition does not hold (compare-and-set, put-if-absent)."""

    fixed_code = ErrorCode.CONFLICT


class Overloaded(_FixedCodeError):
    """The engine refuses new work for now (memory budget, blocking slow consumer). Retryable."""

    fixed_code = ErrorCode.OVERLOADED


class ShuttingDown(_FixedCodeError):
    """The engine is draining and accepts no new work. Retryable elsewhere or later."""

    fixed_code = ErrorCode.SHUTTING_DOWN


class StorageFull(_FixedCodeError):
    """The disk holding a durable resource is full; the write left nothing behind. Retryable."""

    fixed_code = ErrorCode.STORAGE_FULL


class StorageFailed(_FixedCodeError):
    """A durable resource's storage failed (I/O error, failed fsync, damaged files): it
    refuses writes. Not retryable."""

    fixed_code = ErrorCode.STORAGE_FAILED
