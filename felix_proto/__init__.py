"""felix_proto: the Felix wire protocol, version 2, as a sans-IO library.

Framing, the msgpack codec, every message as a frozen dataclass, the error-code registry
and the client/server connection state machines. Pure: no I/O, no clock; depends on
msgpack and the standard library only. ``felix_proto.testing`` (hypothesis strategies for
every message type) needs the ``testing`` extra. See ``docs/wire-protocol.md``.

The public API is what this module exports; the submodules group it:

* :mod:`felix_proto.messages`: the message dataclasses and their enums.
* :mod:`felix_proto.frames`: the 12-byte header and the bounded :class:`FrameDecoder`.
* :mod:`felix_proto.codec`: ``encode`` / ``decode`` / ``validate`` and the fast paths.
* :mod:`felix_proto.client`, :mod:`felix_proto.server`: the connection state machines.
* :mod:`felix_proto.events`: what the machines report.
* :mod:`felix_proto.errors`: error codes and exceptions.
"""

from typing import TYPE_CHECKING

from felix_proto._lazy import lazy_getattr

if TYPE_CHECKING:  # the same imports, done lazily at run time (felix_proto._lazy)
    from felix_proto import events, messages
    from felix_proto.client import ClientConnection
    from felix_proto.codec import (
        MessageDecoder,
        decode,
        encode,
        encode_event_batch,
        encode_v1_error,
        validate,
    )
    from felix_proto.errors import (
        RETRYABLE,
        BadFrame,
        ErrorCode,
        FelixProtoError,
        FrameTooLarge,
        LocalProtocolError,
        RemoteProtocolError,
        UnknownMessageType,
        UnsupportedVersion,
    )
    from felix_proto.frames import (
        DEFAULT_MAX_FRAME_SIZE,
        HEADER_SIZE,
        MAGIC,
        PROTOCOL_VERSION,
        SUPPORTED_VERSIONS,
        FrameDecoder,
        FrameHeader,
        encode_header,
        parse_header,
    )
    from felix_proto.messages import MESSAGE_TYPES, Message
    from felix_proto.server import ServerConnection

ALPN = "felix/2"
"""The ALPN identifier negotiated in the QUIC handshake for protocol version 2."""

__all__ = [
    "ALPN",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "RETRYABLE",
    "SUPPORTED_VERSIONS",
    "BadFrame",
    "ClientConnection",
    "ErrorCode",
    "FelixProtoError",
    "FrameDecoder",
    "FrameHeader",
    "FrameTooLarge",
    "LocalProtocolError",
    "Message",
    "MessageDecoder",
    "RemoteProtocolError",
    "ServerConnection",
    "UnknownMessageType",
    "UnsupportedVersion",
    "decode",
    "encode",
    "encode_event_batch",
    "encode_header",
    "encode_v1_error",
    "events",
    "messages",
    "parse_header",
    "validate",
]


_EXPORTS: dict[str, tuple[str, ...]] = {
    "felix_proto.events": ("events",),
    "felix_proto.messages": (
        "messages",
        "MESSAGE_TYPES",
        "Message",
    ),
    "felix_proto.client": ("ClientConnection",),
    "felix_proto.codec": (
        "MessageDecoder",
        "decode",
        "encode",
        "encode_event_batch",
        "encode_v1_error",
        "validate",
    ),
    "felix_proto.errors": (
        "RETRYABLE",
        "BadFrame",
        "ErrorCode",
        "FelixProtoError",
        "FrameTooLarge",
        "LocalProtocolError",
        "RemoteProtocolError",
        "UnknownMessageType",
        "UnsupportedVersion",
    ),
    "felix_proto.frames": (
        "DEFAULT_MAX_FRAME_SIZE",
        "HEADER_SIZE",
        "MAGIC",
        "PROTOCOL_VERSION",
        "SUPPORTED_VERSIONS",
        "FrameDecoder",
        "FrameHeader",
        "encode_header",
        "parse_header",
    ),
    "felix_proto.server": ("ServerConnection",),
}

if not TYPE_CHECKING:  # mypy checks the names above, not a catch-all
    __getattr__ = lazy_getattr(__name__, _EXPORTS)
