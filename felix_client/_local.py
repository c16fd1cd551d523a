"""The caller's own mistakes, raised as the typed errors the spec names.

The felix_proto machine refuses a request it cannot send with one exception class,
:class:`~felix_proto.errors.LocalProtocolError`, whatever the cause: a field out of range, a
value of the wrong type, a frame over the broker's ``max_frame_size``. This module is the one
place where such refusals become the :class:`~felix_client.errors.FelixError` subclass that
``docs/wire-protocol.md`` §8 names for the same mistake made on the wire, so a caller sees the
same class whether the client or the broker caught it:

* a value out of range or of the wrong type (a negative TTL, a ``str`` header value):
  :class:`InvalidArgument` (202);
* a record or frame larger than the broker accepts: :class:`TooLarge` (204).

Durations are converted here too: seconds to whole milliseconds, where a positive TTL never
becomes 0 (which the wire reads as "never expires").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from felix_proto.errors import LocalProtocolError

from .errors import FelixError, InvalidArgument, TooLarge

__all__ = ["check_headers", "delay_ms", "local_error", "ttl_ms"]

_MAX_MS = 2**64 - 1
"""The largest millisecond count the wire carries (uint64)."""
_FRAME_TOO_LARGE = "exceeds the peer's max_frame_size"
"""How the felix_proto machine words a request whose frame is over the broker's limit
(``felix_proto.connection.Connection._send``); pinned by a test of this client."""


def _ms(seconds: float, what: str) -> float:
    """Validate a duration in seconds and return it in (fractional) milliseconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, not {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, not {seconds!r}")
    value = seconds * 1000.0
    if value > _MAX_MS:
        raise InvalidArgument(f"{what} of {seconds!r} s is beyond what the protocol carries")
    return value


def ttl_ms(seconds: float | None) -> int | None:
    """A TTL in seconds as the wire's ``ttl_ms``.

    ``None`` stays ``None`` (the cache's default) and ``0`` stays ``0`` (never expires). A
    positive TTL is rounded to the nearest millisecond but is at least 1 ms, so that a very
    short TTL expires at once rather than never.

    Raises:
        InvalidArgument: a negative, infinite or NaN TTL, or one that is not a number.
    """
    if seconds is None:
        return None
    value = _ms(seconds, "ttl")
    if value == 0:
        return 0
    return max(1, round(value))


def delay_ms(seconds: float) -> int:
    """A nack delay in seconds as whole milliseconds (0: redeliver at once).

    Raises:
        InvalidArgument: a negative, infinite or NaN delay.
    """
    return round(_ms(seconds, "delay"))


def check_headers(headers: Mapping[str, bytes] | None) -> None:
    """Check that record headers map ``str`` names to ``bytes`` values.

    Raises:
        InvalidArgument: a header name that is not a ``str`` or a value that is not bytes.
    """
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise InvalidArgument(f"headers must be a mapping of str to bytes, not {headers!r}")
    for name, value in headers.items():
        if not isinstance(name, str):
            raise InvalidArgument(f"header name {name!r} must be a str")
        if not isinstance(value, bytes):
            raise InvalidArgument(
                f"header {name!r}: value must be bytes, not {type(value).__name__} "
                "(encode text values, e.g. value.encode())"
            )


def local_error(exc: LocalProtocolError) -> FelixError:
    """The typed error for a request the felix_proto machine refused to send.

    The connection was open when the request was made (the caller checks that first), so
    the refusal is about the request's contents: a frame over the broker's ``max_frame_size``
    is :class:`TooLarge`, anything else (a value out of range or of the wrong type) is
    :class:`InvalidArgument`.
    """
    message = str(exc)
    if _FRAME_TOO_LARGE in message:
        return TooLarge(message)
    return InvalidArgument(message)
