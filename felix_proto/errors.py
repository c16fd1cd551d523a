"""The one registry of Felix error codes, and the exceptions of the protocol layer.

Error codes are stable numbers carried in the ``Error`` message on the wire. A code never
changes meaning once released; new codes are only ever added. ``RETRYABLE`` lists the codes
whose operations a client may retry unchanged after a delay.

Two kinds of exception live here (see ``STYLE.md``, habit 5):

* :class:`LocalProtocolError`: *our own* caller used the API wrongly (wrong state, bad
  argument). Raised at once, never sent to the peer.
* :class:`RemoteProtocolError` and its subclasses: the *peer* broke the protocol. Raised
  inside the decoder and the connection machines, caught at the one receive entry point and
  turned into an ``Error`` frame or a close plus a terminal event.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

__all__ = [
    "RETRYABLE",
    "BadFrame",
    "ErrorCode",
    "FelixProtoError",
    "FrameTooLarge",
    "InvalidField",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TooManyValues",
    "UnknownMessageType",
    "UnsupportedVersion",
]


class ErrorCode(IntEnum):
    """Stable numeric error codes. 1xx: framing and session; 2xx: requests; 5xx: broker."""

    BAD_FRAME = 100
    """The frame or its msgpack payload is malformed, or a field has the wrong type."""
    UNSUPPORTED_VERSION = 101
    """The frame header names a protocol version the receiver does not speak."""
    UNKNOWN_MESSAGE = 102
    """The payload names a message type the receiver does not know."""
    UNEXPECTED_MESSAGE = 103
    """A known message arrived in a state or on a stream where it is not allowed."""
    UNAUTHENTICATED = 110
    """The handshake's token is missing or invalid."""
    FORBIDDEN = 111
    """The authenticated principal may not perform this operation."""
    NOT_FOUND = 200
    """The tenant, namespace, stream, queue, cache, subscription or delivery does not exist."""
    ALREADY_EXISTS = 201
    """A resource with that name exists already."""
    INVALID_ARGUMENT = 202
    """A field value is outside what the operation accepts (name syntax, range, setting)."""
    LIMIT_EXCEEDED = 203
    """A configured count limit (subscriptions, resources, prefetch ...) would be exceeded."""
    TOO_LARGE = 204
    """A frame, payload, key or value is larger than the configured maximum."""
    CURSOR_TOO_OLD = 205
    """The requested offset has been trimmed by retention; details carry ``first_offset``."""
    CONFLICT = 206
    """A conditional operation's condition does not hold (compare-and-set, if-absent)."""
    TIMEOUT = 207
    """The request's deadline passed before it completed (raised locally by clients)."""
    OVERLOADED = 500
    """The broker refuses new work for now (memory, in-flight bytes, slow consumers)."""
    SHUTTING_DOWN = 501
    """The broker is draining; reconnect elsewhere or later."""
    INTERNAL = 502
    """A bug in the broker. The request may or may not have taken effect."""
    CONNECTION_LOST = 503
    """The connection closed before the reply arrived (raised locally by clients)."""
    STORAGE_FULL = 504
    """The broker's disk is full: the write was not taken (nothing of it was kept); it may
    succeed once space returns."""
    STORAGE_FAILED = 505
    """The resource's storage failed (an fsync or a write returned an I/O error, or its
    files are damaged): it refuses writes until an operator repairs it."""


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.OVERLOADED,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.TIMEOUT,
        ErrorCode.CONNECTION_LOST,
        ErrorCode.STORAGE_FULL,
    }
)


class FelixProtoError(Exception):
    """Base class of every exception raised by :mod:`felix_proto`."""


class LocalProtocolError(FelixProtoError):
    """The local caller used the API in a way the protocol does not allow."""


class RemoteProtocolError(FelixProtoError):
    """The peer sent something the protocol does not allow.

    Attributes:
        error_code: the code to put in the ``Error`` frame sent back.
        details: extra machine-readable fields for that frame.
        fatal: whether the stream (or connection) the bytes arrived on can no longer be
            parsed; when false, the receiver answers the one bad message and carries on.
    """

    error_code: ErrorCode = ErrorCode.BAD_FRAME
    fatal: bool = True

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        fatal: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.request_id = request_id
        if fatal is not None:
            self.fatal = fatal


class BadFrame(RemoteProtocolError):
    """Bad magic, unknown flag bits, malformed msgpack or wrong field types."""

    error_code = ErrorCode.BAD_FRAME


class FrameTooLarge(RemoteProtocolError):
    """A header declared a payload longer than the negotiated maximum frame size."""

    error_code = ErrorCode.TOO_LARGE


class UnsupportedVersion(RemoteProtocolError):
    """A header carried a protocol version we do not speak; ``details`` lists ours."""

    error_code = ErrorCode.UNSUPPORTED_VERSION

    def __init__(self, message: str, *, version: int, supported: tuple[int, ...]) -> None:
        super().__init__(message, details={"supported_versions": list(supported)})
        self.version = version
        self.supported = supported


class UnknownMessageType(RemoteProtocolError):
    """A well-formed frame named a message type we do not know. Not fatal."""

    error_code = ErrorCode.UNKNOWN_MESSAGE
    fatal = False


class InvalidField(RemoteProtocolError):
    """An integer field of a well-formed message is outside the range that field accepts
    (e.g. a TTL above ``MAX_DURATION_MS``). Not fatal; ``details["field"]`` names it."""

    error_code = ErrorCode.INVALID_ARGUMENT
    fatal = False


class TooManyValues(RemoteProtocolError):
    """A payload declares more msgpack values than a frame may expand into
    (``felix_proto.codec.MAX_VALUES``). Not fatal: the frame itself was intact."""

    error_code = ErrorCode.TOO_LARGE
    fatal = False
