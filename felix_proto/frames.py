"""Felix framing: the 12-byte header and an incremental, bounded frame decoder.

Theory of operation
-------------------

Every Felix frame is a 12-byte big-endian header followed by a payload::

    +----------------+-------------+-------------+------------------------+
    | magic (u32)    | version u16 | flags (u16) | payload length (u32)   |
    | 0x464C5831     | 2           | 0           | n                      |
    +----------------+-------------+-------------+------------------------+
    | payload: n bytes (for version 2, a msgpack document; see codec.py)  |
    +---------------------------------------------------------------------+

The header layout is the same as the reference implementation's version 1, so a receiver
*detects* which version a peer speaks instead of guessing. :class:`FrameDecoder` checks a
header as soon as its 12 bytes are buffered, in this order: magic, version, flags, length.
Every failure is fatal for the stream the bytes arrived on (the framing is lost):

* wrong magic -> :class:`~felix_proto.errors.BadFrame`;
* version 1 or any other version but 2 -> :class:`~felix_proto.errors.UnsupportedVersion`
  whose ``version`` is the one received and ``supported`` is :data:`SUPPORTED_VERSIONS`;
* a flag bit outside :data:`KNOWN_FLAGS` -> ``BadFrame`` (bits are rejected, never masked);
* a declared length above the decoder's ``max_frame_size`` -> ``FrameTooLarge``, raised
  before a single payload byte is buffered for it.

Because a declared length is checked before the payload is collected, the data buffered for
an incomplete frame never exceeds ``max_frame_size + HEADER_SIZE``, provided the caller
drains :meth:`FrameDecoder.next_frame` after each :meth:`FrameDecoder.feed` (the normal
loop). ``feed`` also refuses to buffer more than that while the buffered data holds no
complete frame.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import (
    BadFrame,
    FrameTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
    UnsupportedVersion,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "KNOWN_FLAGS",
    "MAGIC",
    "MAX_PAYLOAD_LENGTH",
    "MIN_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "V1_VERSION",
    "FrameDecoder",
    "FrameHeader",
    "encode_header",
    "parse_header",
]

MAGIC = 0x464C5831
"""The four bytes ``FLX1`` that open every frame of every version."""
PROTOCOL_VERSION = 2
"""The version this package speaks and writes into headers."""
SUPPORTED_VERSIONS: tuple[int, ...] = (2,)
"""Every version this package can decode, preferred first."""
V1_VERSION = 1
"""The reference implementation's version (JSON or binary payloads): recognised, not spoken."""
HEADER_SIZE = 12
"""Length of the frame header in bytes."""
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
"""Largest payload accepted unless the handshake announced another limit (16 MiB)."""
MIN_MAX_FRAME_SIZE = 4096
"""The smallest ``max_frame_size`` either side may announce (docs/wire-protocol.md §5.4).

A ``Hello`` announcing less is refused with ``Error(INVALID_ARGUMENT)`` and a close. 4 KiB
holds the ``Welcome``, every fixed-size frame (stream starts, gaps, acks, ``Ok``, credit
...) and every ``Error`` or end frame, whose human-readable text a sender clips to
:data:`~felix_proto.connection.MAX_TEXT_BYTES` when the frame would not fit otherwise."""
KNOWN_FLAGS = 0x0000
"""Flag bits version 2 defines: none yet. Any set bit is rejected."""
MAX_PAYLOAD_LENGTH = 0xFFFF_FFFF
"""Largest length the u32 header field can carry."""

_HEADER = struct.Struct(">IHHI")
_COMPACT_AT = 64 * 1024


class FrameHeader(NamedTuple):
    """A parsed frame header (magic already checked)."""

    version: int
    """The protocol version the sender speaks."""
    flags: int
    """The 16 flag bits, unmasked."""
    length: int
    """The declared payload length in bytes."""


def encode_header(length: int, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode a 12-byte frame header.

    Args:
        length: the payload length in bytes (0 to 2**32 - 1).
        flags: the 16 flag bits; version 2 defines none, so normally 0.
        version: the protocol version to write; normally :data:`PROTOCOL_VERSION`.

    Returns:
        The header bytes.

    Raises:
        LocalProtocolError: a value does not fit its header field.
    """
    if not 0 <= length <= MAX_PAYLOAD_LENGTH:
        raise LocalProtocolError(f"frame payload length {length} does not fit in a u32")
    if not 0 <= flags <= 0xFFFF:
        raise LocalProtocolError(f"frame flags {flags:#x} do not fit in a u16")
    if not 0 <= version <= 0xFFFF:
        raise LocalProtocolError(f"frame version {version} does not fit in a u16")
    return _HEADER.pack(MAGIC, version, flags, length)


def parse_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    """Parse the first 12 bytes of ``data`` as a frame header of any version.

    Only the magic is checked; version, flags and length are reported as received, so this
    also reads the reference implementation's version-1 headers.

    Args:
        data: at least :data:`HEADER_SIZE` bytes.

    Returns:
        The header's version, flags and declared length.

    Raises:
        BadFrame: fewer than 12 bytes, or the magic is not ``FLX1``.
    """
    if len(data) < HEADER_SIZE:
        raise BadFrame(f"frame header needs {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, flags, length = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise BadFrame(f"bad frame magic {magic:#010x}, expected {MAGIC:#010x}")
    return FrameHeader(version, flags, length)


def _check_header(magic: int, version: int, flags: int, length: int, max_size: int) -> None:
    """Raise the fatal error a version-2 receiver owes a header, or return if it is good."""
    if magic != MAGIC:
        raise BadFrame(f"bad frame magic {magic:#010x}, expected {MAGIC:#010x}")
    if version != PROTOCOL_VERSION:
        speaks = ", ".join(map(str, SUPPORTED_VERSIONS))
        if version == V1_VERSION:
            text = f"protocol version 1 (reference JSON framing) is not supported; speak {speaks}"
        else:
            text = f"protocol version {version} is not supported; speak {speaks}"
        raise UnsupportedVersion(text, version=version, supported=SUPPORTED_VERSIONS)
    if flags & ~KNOWN_FLAGS:
        raise BadFrame(f"unknown frame flag bits {flags & ~KNOWN_FLAGS:#06x}")
    if length > max_size:
        raise FrameTooLarge(
            f"frame declares {length} payload bytes, the limit is {max_size}",
            details={"length": length, "max_frame_size": max_size},
        )


class FrameDecoder:
    """Split a byte stream into version-2 frame payloads, strictly and within bounds.

    Feed bytes as they arrive with :meth:`feed`, then call :meth:`next_frame` until it
    returns ``None``. Every error it raises is a
    :class:`~felix_proto.errors.RemoteProtocolError` and fatal for the stream: after one,
    the decoder raises the same error again on every call. Any other exception is a bug.

    Args:
        max_frame_size: the largest payload length accepted; a larger declared length is
            :class:`~felix_proto.errors.FrameTooLarge`.
    """

    __slots__ = ("_buf", "_error", "_max_frame_size", "_pos")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 <= max_frame_size <= MAX_PAYLOAD_LENGTH:
            raise LocalProtocolError(f"max_frame_size {max_frame_size} out of range")
        self._buf = bytearray()
        self._pos = 0
        self._max_frame_size = max_frame_size
        self._error: RemoteProtocolError | None = None

    @property
    def max_frame_size(self) -> int:
        """The largest payload accepted; may be changed, e.g. after the handshake."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        if not 0 <= value <= MAX_PAYLOAD_LENGTH:
            raise LocalProtocolError(f"max_frame_size {value} out of range")
        self._max_frame_size = value

    @property
    def buffered(self) -> int:
        """How many received bytes are buffered and not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.

        Args:
            data: the next bytes of the stream, in order (may be empty).

        Raises:
            RemoteProtocolError: the decoder already failed (the same error again), or the
                buffer would hold more than ``max_frame_size + HEADER_SIZE`` bytes without
                a complete frame in it (``FrameTooLarge``; checked for the frame at the
                front of the buffer).
        """
        if self._error is not None:
            raise self._error
        if not data:
            return
        self._buf += data
        if len(self._buf) - self._pos > self._max_frame_size + HEADER_SIZE:
            # More than one frame's worth: only legal if the first frame is complete.
            # Validate its header now so that an oversize declaration is caught early.
            self._peek_header()

    def _peek_header(self) -> int:
        """Validate the header at the front of the buffer; return the full frame length."""
        magic, version, flags, length = _HEADER.unpack_from(self._buf, self._pos)
        try:
            _check_header(magic, version, flags, length, self._max_frame_size)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return HEADER_SIZE + int(length)

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        self._buf = bytearray()
        self._pos = 0

    def next_frame(self) -> bytes | None:
        """Return the payload of the next complete frame, or ``None`` if more bytes are needed.

        Returns:
            The payload bytes (without the header), or ``None``.

        Raises:
            BadFrame: bad magic or unknown flag bits.
            UnsupportedVersion: a version other than 2 (``version`` tells which; 1 is the
                reference implementation's framing).
            FrameTooLarge: the declared length exceeds ``max_frame_size``.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            return None
        end = pos + self._peek_header()
        if end > len(buf):
            return None
        with memoryview(buf) as view:
            payload = bytes(view[pos + HEADER_SIZE : end])  # the one copy
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end >= _COMPACT_AT:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return payload
