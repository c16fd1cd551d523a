"""Plain records the client returns: published offsets, subscription events, cache entries,
start positions. They carry no connection state (queue messages, which do, live in
:mod:`felix_client._streams`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

from felix_proto.messages import AckMode, StartKind

__all__ = ["AckMode", "CacheEntry", "Event", "Headers", "PublishResult", "Start", "StartLike"]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a publish (or a batch, or an enqueue) landed: an inclusive offset range."""

    first_offset: int
    """Offset of the first record written."""
    last_offset: int
    """Offset of the last record written (equal to ``first_offset`` for one record)."""


class Headers(dict[str, bytes]):
    """A delivered record's headers: a read-only ``dict`` that hashes by value.

    It reads like the ``dict`` it is (``headers["h"]``, ``.items()``, ``== {"h": b"v"}``,
    ``json.dumps``), but every method that would change it raises ``TypeError``, so an
    :class:`Event` holding it can be hashed. ``dict(headers)`` gives a mutable copy.
    """

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]  # dict sets __hash__ = None
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (dict(self),))

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("record headers are read-only (dict(event.headers) is a mutable copy)")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


class Event(NamedTuple):
    """One record delivered by a subscription.

    A :class:`~typing.NamedTuple` (one is built per record, so it has to be cheap): its
    fields are read-only (assigning one raises ``AttributeError``), it compares and hashes by
    value (its ``headers`` are a read-only :class:`Headers`), and ``event._replace(...)``
    returns a modified copy.
    """

    offset: int
    """The record's offset in the stream's log."""
    payload: bytes
    """The record's payload."""
    timestamp_ms: int
    """Append time, milliseconds since the Unix epoch (0 when the broker did not say)."""
    key: bytes | None = None
    """The record's key, if it has one."""
    headers: Headers | None = None
    """The record's headers, if it has any (a read-only, hashable ``dict``)."""
    gap_before: int = 0
    """How many records the broker skipped just before this one (0: none). A gap means the
    subscription lagged out of the retained range or was trimmed; see ``Subscription.missed``."""

    @property
    def timestamp(self) -> float:
        """Append time in seconds since the Unix epoch."""
        return self.timestamp_ms / 1000.0


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cache hit."""

    value: bytes
    """The stored value."""
    version: int
    """The entry's version; pass it to ``compare_and_set`` or ``delete(if_version=...)``."""
    ttl_remaining: float | None
    """Seconds until the entry expires, or None when it never does."""


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts. Build one with the class methods, or pass a shorthand to
    ``subscribe``: ``"latest"``, ``"earliest"``, an ``int`` offset or a ``datetime``."""

    kind: StartKind
    """The wire start kind."""
    value: int | None = None
    """The offset, or the timestamp in ms, for ``OFFSET`` and ``TIMESTAMP``."""

    @classmethod
    def latest(cls) -> Start:
        """Only records appended after the subscription was made."""
        return cls(StartKind.LATEST)

    @classmethod
    def earliest(cls) -> Start:
        """The oldest retained record."""
        return cls(StartKind.EARLIEST)

    @classmethod
    def offset(cls, offset: int) -> Start:
        """The record at ``offset`` (``CursorTooOld`` if it was trimmed)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        return cls(StartKind.OFFSET, offset)

    @classmethod
    def timestamp(cls, when: datetime | float) -> Start:
        """The first record appended at or after ``when`` (a datetime, or epoch seconds)."""
        seconds = when.timestamp() if isinstance(when, datetime) else float(when)
        return cls(StartKind.TIMESTAMP, int(seconds * 1000))

    @classmethod
    def coerce(cls, start: StartLike) -> Start:
        """Turn a shorthand into a :class:`Start`.

        Raises:
            ValueError: an unknown string or a negative offset.
        """
        if isinstance(start, Start):
            return start
        if isinstance(start, datetime):
            return cls.timestamp(start)
        if isinstance(start, bool):
            raise ValueError(f"invalid start position {start!r}")
        if isinstance(start, int):
            return cls.offset(start)
        if start == "latest":
            return cls.latest()
        if start == "earliest":
            return cls.earliest()
        raise ValueError(f"invalid start position {start!r}: latest, earliest, offset or time")


StartLike = Start | str | int | datetime
"""What ``subscribe(start=...)`` accepts."""
