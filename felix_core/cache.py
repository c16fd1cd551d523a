"""The cache: key -> latest value with TTL and LRU bounds, backed by its own change-feed log.

Theory of operation
-------------------
A :class:`Cache` is one ``(tenant, namespace, cache)``. Its table is an ``OrderedDict`` from
key (``str``, 1..1024 UTF-8 bytes) to an immutable :class:`CacheEntry` (value, version,
absolute expiry, accounted size), kept in least-recently-used order: a hit or a put moves the
key to the end, eviction pops from the front. Entries are never mutated, only replaced, so a
get returns the stored entry itself and allocates nothing (the hot path).

*Versions* come from one counter per cache: every mutation (put, delete, expiry, eviction)
takes the next number, so versions strictly increase and double as the change feed's
sequence. ``put(if_version=v)`` stores only if the live entry has version ``v`` and
``put(if_absent=True)`` only if there is no live entry. A failed condition is not an
exception but a :class:`WriteResult` with ``applied=False`` and the current version: the
wire has a reply for it (``CachePutResult(stored=False, version=...)``), and a conflict is an
answer, not an error. ``delete(if_version=v)`` works the same way.

*TTL*: ``ttl=None`` takes the cache's ``default_ttl_s``, except in a compare-and-set
(``if_version``), which keeps the replaced entry's absolute expiry (like Redis ``KEEPTTL``:
a 30 s entry stays a 30 s entry through CAS updates that say nothing about time); ``0`` means
the entry never expires; ``t > 0`` expires it at ``now + t``. An unconditional put and a
put-if-absent without ``ttl`` start afresh from the default (like Redis ``SET``), since they
state the whole new entry. Expiry is lazy (a read of an expired entry removes it and
misses) plus an active sweep: a heap of ``(deadline, version, key)`` drives
:meth:`Cache.get_timer`, and :meth:`Cache.handle_timer` pops at most ``sweep_batch`` heap
items per call; if more are due, the timer is already due again. The heap holds, for every
live entry that expires, an item of its key due no later than the entry's expiry. A put
whose key already expires no later than the new expiry pushes nothing (the key's item will
fire first): a key rewritten with a sliding TTL keeps one item instead of one per put. A
popped item whose key has since been given a later expiry pushes it again, for that
expiry; one whose key is gone or no longer expires is dropped. The heap is rebuilt from the
table when it holds more than twice as many items as the table has entries, so it stays
proportional to the table.

*Bounds*: ``max_entries`` and ``max_bytes`` (key bytes + value bytes per entry) per cache;
after a put the least-recently-used entries are evicted until both hold. A value above
``max_value_bytes`` or an entry above ``max_bytes`` is :class:`TooLarge`.

*Change feed*: every mutation appends one record to the cache's own
:class:`~felix_core.log.MemoryLog` (``Cache.changes``): key = the key's UTF-8 bytes, payload =
the value for a put and ``b""`` otherwise, headers ``op`` (``put``, ``delete``, ``expire``,
``evict``), ``version`` (decimal) and, for a put, ``ttl_ms`` (the time left in ms, at least
1; ``0`` = never) and, when it expires, ``expires_ms`` (absolute). The stream engine
follows that log like a stream (the facade pumps its fanout after each cache call whose
``changes.next_offset`` moved); the log is trimmed to ``feed_retention``.
:meth:`Cache.rebuild_from` replays such a log into a fresh cache (a durable cache at
start); the rebuild is exact for the records retained. Gets are not logged, so a rebuilt
cache's LRU order is the order of the last writes.

*Compaction* (``compact=True``, a durable cache): the log must hold every live entry
whatever ``feed_retention``, so before retention deletes records the entries whose last
put is among them are *carried forward* (their put written again, same version and
absolute expiry, header ``compacted: 1``), and the old records go only once the log has
committed the carried ones (:meth:`Cache._retain`; the engine reports commits through
:meth:`Cache.log_committed`). ``_written`` keeps the live keys in the order of the offsets
of their records, so finding the ones to carry costs only the ones carried.

Everything is pure: time arrives as ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from typing import NamedTuple

from felix_core.errors import InvalidArgument, StorageFailed, StorageFull, TooLarge
from felix_core.log import Log, LogSlice, MemoryLog, MemoryMeter, Retention

__all__ = [
    "CACHE_COUNTERS",
    "MAX_KEY_BYTES",
    "Cache",
    "CacheConfig",
    "CacheEntry",
    "CacheKey",
    "CacheStats",
    "CacheTotals",
    "WriteResult",
]

CacheKey = tuple[str, str, str]
"""``(tenant, namespace, cache name)``."""

MAX_KEY_BYTES = 1024
"""The longest key, in UTF-8 bytes."""
_NEVER = math.inf
_OP_PUT = b"put"
_OP_DELETE = b"delete"
_OP_EXPIRE = b"expire"
_OP_EVICT = b"evict"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """The settings of one cache (the facade maps metadata settings onto this).

    ``default_ttl_s`` applies to puts without a TTL (0: never expire). ``max_entries`` and
    ``max_bytes`` bound the table (None: unbounded), ``max_value_bytes`` one value.
    ``feed_retention`` bounds the change-feed log. ``sweep_batch`` caps the expiry work
    of one timer call.
    """

    default_ttl_s: float = 0.0
    max_entries: int | None = 1_000_000
    max_bytes: int | None = 64 * 1024 * 1024
    max_value_bytes: int = 1024 * 1024
    feed_retention: Retention = field(default_factory=lambda: Retention(max_records=100_000))
    sweep_batch: int = 256

    def validate(self) -> None:
        """Check the settings.

        Raises:
            InvalidArgument: a setting is out of range (``details['field']`` names it).
        """
        checks = (
            ("default_ttl_s", 0 <= self.default_ttl_s < math.inf),
            ("max_entries", self.max_entries is None or self.max_entries >= 1),
            ("max_bytes", self.max_bytes is None or self.max_bytes >= 1),
            ("max_value_bytes", self.max_value_bytes >= 1),
            ("sweep_batch", self.sweep_batch >= 1),
        )
        for name, ok in checks:
            if not ok:
                raise InvalidArgument(f"invalid cache setting {name}", details={"field": name})


class CacheEntry(NamedTuple):
    """A live value as :meth:`Cache.get` returns it (the stored object; immutable)."""

    value: bytes
    """The stored bytes."""
    version: int
    """The version the put that stored it received."""
    expires_at: float
    """Absolute expiry time in seconds; ``math.inf`` when it never expires."""
    size: int
    """Bytes accounted against ``max_bytes``: UTF-8 key length + value length."""

    def ttl_remaining(self, now: float) -> float | None:
        """Seconds left before expiry at ``now``, or None when the entry never expires."""
        return None if self.expires_at == _NEVER else self.expires_at - now


class WriteResult(NamedTuple):
    """Outcome of a put or delete (a NamedTuple: cheap to build on the put path)."""

    applied: bool
    """Whether the put stored / the delete removed. False: condition failed or key absent."""
    version: int | None
    """Applied: the new version (of the put, or of the delete record). Not applied: the
    current entry's version, or None when there is no live entry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    """Counters of one cache."""

    entries: int  #: Live entries (expired ones not yet swept included).
    bytes: int  #: Accounted bytes of the entries.
    hits: int  #: Gets that found a live entry.
    misses: int  #: Gets that found nothing (or an expired entry).
    puts: int  #: Puts that stored.
    deletes: int  #: Deletes that removed.
    expirations: int  #: Entries removed by expiry (lazy or swept).
    evictions: int  #: Entries removed by the LRU bounds.
    version: int  #: The last version handed out.
    feed_records: int  #: Records retained in the change feed.


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheTotals:
    """Figures over every cache of an engine, for metrics (the engine's ``totals``).

    The counters include caches deleted since the engine started, so they never decrease.
    """

    caches: int  #: Caches.
    entries: int  #: Live entries (expired ones not yet swept included).
    bytes: int  #: Accounted bytes of the entries.
    hits: int  #: Gets that found a live entry.
    misses: int  #: Gets that found nothing (or an expired entry).
    puts: int  #: Puts that stored.
    deletes: int  #: Deletes that removed.
    expirations: int  #: Entries removed by expiry (lazy or swept).
    evictions: int  #: Entries removed by the LRU bounds.


CACHE_COUNTERS = ("hits", "misses", "puts", "deletes", "expirations", "evictions")
"""The :class:`Cache` counters :class:`CacheTotals` sums."""


_tuple_new = tuple.__new__
"""``_tuple_new(CacheEntry, fields)`` builds on the put path the object ``CacheEntry(*fields)``
builds, without the Python frame of a NamedTuple's ``__new__`` (likewise WriteResult)."""


def key_bytes(key: str) -> bytes:
    """Validate a cache key and return its UTF-8 bytes.

    Args:
        key: the key.

    Returns:
        ``key.encode()``.

    Raises:
        InvalidArgument: empty, or not encodable as UTF-8 (a lone surrogate).
        TooLarge: longer than :data:`MAX_KEY_BYTES` bytes.
    """
    if not key:
        raise InvalidArgument("cache key must not be empty", details={"field": "key"})
    try:
        kb = key.encode()
    except UnicodeEncodeError:
        raise InvalidArgument("cache key is not valid UTF-8", details={"field": "key"}) from None
    if len(kb) > MAX_KEY_BYTES:
        raise TooLarge("cache key too long", details={"bytes": len(kb), "max_bytes": MAX_KEY_BYTES})
    return kb


def _check_ttl(ttl: float) -> None:
    if not 0 <= ttl < math.inf:
        raise InvalidArgument("ttl must be a finite number >= 0", details={"field": "ttl"})


class Cache:
    """One cache. Inputs: get/put/delete and the timer; outputs: results and ``changes``."""

    __slots__ = (
        "_bytes",
        "_compact",
        "_entries",
        "_expiry",
        "_meter",
        "_pending",
        "_version",
        "_written",
        "changes",
        "config",
        "deletes",
        "evictions",
        "expirations",
        "feed_records_kept",
        "feed_records_lost",
        "hits",
        "misses",
        "puts",
    )

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        changes: Log | None = None,
        meter: MemoryMeter | None = None,
        compact: bool = False,
    ):
        """Create an empty cache.

        Args:
            config: the settings; None for the defaults.
            changes: the change-feed log to append to; None for a new empty one (charging
                ``meter``).
            meter: charged with the bytes of the entries as they change (the change log
                charges its own).
            compact: keep every live entry in the change log whatever ``feed_retention``
                (a durable cache, rebuilt from its log at start): see :meth:`_retain`.

        Raises:
            InvalidArgument: a setting is out of range.
        """
        self.config = config or CacheConfig()
        self.config.validate()
        self.changes = changes if changes is not None else MemoryLog(meter=meter)
        self._meter = meter
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._expiry: list[tuple[float, int, str]] = []
        self._bytes = 0
        self._version = 0
        self._compact = compact
        self._written: OrderedDict[str, int] = OrderedDict()
        """Compacting: live key -> offset of the record holding its value, oldest first."""
        self._pending: tuple[int, int] | None = None
        """Compacting: ``(horizon, until)``: the records below ``horizon`` may go once
        every record below ``until`` (the entries carried forward) is committed."""
        self.hits = self.misses = self.puts = self.deletes = 0
        self.feed_records_kept = 0
        """Compacting: put records carried forward (``compacted: 1``) before retention."""
        self.feed_records_lost = 0
        """Expiry and eviction records a durable change feed refused (disk full or failed)."""
        self.expirations = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def byte_size(self) -> int:
        """Accounted bytes of the table plus the change feed (for global memory accounting)."""
        return self._bytes + self.changes.byte_size

    @property
    def entry_bytes(self) -> int:
        """Accounted bytes of the entries alone (key bytes + value bytes each)."""
        return self._bytes

    # -- reads --------------------------------------------------------------------------

    def get(self, key: str, now: float) -> CacheEntry | None:
        """Read a key; a hit becomes the most recently used entry.

        Args:
            key: the key.
            now: the current time.

        Returns:
            The live :class:`CacheEntry`, or None on a miss (an expired entry is removed).

        Raises:
            InvalidArgument: the key is empty or not UTF-8 (checked on misses only: a stored
                key is valid by construction).
            TooLarge: the key is too long (likewise).
        """
        entry = self._entries.get(key)
        if entry is None:
            key_bytes(key)
            self.misses += 1
            return None
        if entry.expires_at <= now:
            self._remove(key, entry, _OP_EXPIRE, now)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def peek(self, key: str, now: float) -> CacheEntry | None:
        """Like :meth:`get` but with no effect: no LRU move, no counters, no lazy expiry.

        Args:
            key: the key.
            now: the current time.

        Returns:
            The entry if it is live at ``now``, else None.
        """
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def stats(self) -> CacheStats:
        """Counters; see :class:`CacheStats`."""
        return CacheStats(
            entries=len(self._entries),
            bytes=self._bytes,
            hits=self.hits,
            misses=self.misses,
            puts=self.puts,
            deletes=self.deletes,
            expirations=self.expirations,
            evictions=self.evictions,
            version=self._version,
            feed_records=self.changes.record_count,
        )

    # -- writes -------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        now: float,
        *,
        ttl: float | None = None,
        if_absent: bool = False,
        if_version: int | None = None,
        admit: Callable[[int], object] | None = None,
    ) -> WriteResult:
        """Store a value (possibly conditionally), then evict down to the bounds.

        Args:
            key: the key.
            value: the value.
            now: the current time.
            ttl: seconds to live; 0: never expires; None: the cache's default, or with
                ``if_version`` the replaced entry's remaining time (its absolute expiry).
            if_absent: store only if there is no live entry.
            if_version: store only if the live entry has this version.
            admit: once the condition holds, called with the growth of
                :attr:`entry_bytes` the put would make before any eviction (the new entry's
                size less the live entry's it replaces); it raises to refuse the put, which
                then changes nothing (a per-tenant quota).

        Returns:
            ``WriteResult(True, new_version)``, or ``WriteResult(False, current_version)``
            when the condition does not hold (``current_version`` None: no live entry).

        Raises:
            InvalidArgument: bad key, negative or infinite ttl, or both conditions given.
            TooLarge: key, value or entry above the cache's limits.
        """
        kb = key_bytes(key)
        cfg = self.config
        if len(value) > cfg.max_value_bytes:
            raise TooLarge(
                "cache value too large",
                details={"bytes": len(value), "max_bytes": cfg.max_value_bytes},
            )
        size = len(kb) + len(value)
        if cfg.max_bytes is not None and size > cfg.max_bytes:
            raise TooLarge(
                "cache entry larger than the cache", details={"bytes": size, "max": cfg.max_bytes}
            )
        keep_expiry = ttl is None and if_version is not None
        if ttl is None:
            ttl = cfg.default_ttl_s
        else:
            _check_ttl(ttl)
        if if_absent and if_version is not None:
            raise InvalidArgument("if_absent and if_version exclude each other")
        current = self._entries.get(key)
        if current is not None and current.expires_at <= now:
            self._remove(key, current, _OP_EXPIRE, now)
            current = None
        if current is not None:
            if if_absent or (if_version is not None and current.version != if_version):
                return WriteResult(False, current.version)
        elif if_version is not None:
            return WriteResult(False, None)
        if admit is not None:
            admit(size if current is None else size - current.size)
        version = self._version + 1
        if keep_expiry:
            assert current is not None, "a compare-and-set stores over a live entry only"
            expires_at = current.expires_at
        else:
            expires_at = now + ttl if ttl > 0 else _NEVER
        # The change is logged first: a durable feed that refuses it (StorageFull,
        # StorageFailed) leaves the cache unchanged.
        offset = self.changes.append(
            value, round(now * 1000), kb, _put_headers(version, expires_at, now)
        )
        self._version = version
        entries = self._entries
        entries[key] = _tuple_new(CacheEntry, (value, version, expires_at, size))
        entries.move_to_end(key)
        if self._compact:
            self._wrote(key, offset)
        self._account(size if current is None else size - current.size)
        self.puts += 1
        if expires_at != _NEVER and (current is None or current.expires_at > expires_at):
            self._push_expiry(expires_at, version, key)
        self._retain(now)
        max_entries = cfg.max_entries
        max_bytes = cfg.max_bytes
        if (max_entries is not None and len(entries) > max_entries) or (
            max_bytes is not None and self._bytes > max_bytes
        ):
            self._enforce_bounds(now)
        return _tuple_new(WriteResult, (True, version))

    def delete(self, key: str, now: float, *, if_version: int | None = None) -> WriteResult:
        """Remove a key (possibly conditionally).

        Args:
            key: the key.
            now: the current time.
            if_version: remove only if the live entry has this version.

        Returns:
            ``WriteResult(True, version_of_the_delete)``; ``WriteResult(False, None)`` when
            there is no live entry; ``WriteResult(False, current_version)`` when the version
            does not match.

        Raises:
            InvalidArgument: the key is empty or not UTF-8.
            TooLarge: the key is too long.
        """
        key_bytes(key)
        current = self._live(key, now)
        if current is None:
            return WriteResult(False, None)
        if if_version is not None and current.version != if_version:
            return WriteResult(False, current.version)
        self.deletes += 1
        return WriteResult(True, self._remove(key, current, _OP_DELETE, now))

    def reconfigure(self, config: CacheConfig, now: float) -> None:
        """Apply new settings: evicts down to smaller bounds and trims the feed at once.

        Existing entries keep their expiry; the new default TTL applies to later puts.

        Args:
            config: the new settings.
            now: the current time.

        Raises:
            InvalidArgument: a setting is out of range.
        """
        config.validate()
        self.config = config
        self._enforce_bounds(now)
        self._retain(now)

    # -- time ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next expiry (possibly of a superseded entry) or feed age-out, or None."""
        t = self._expiry[0][0] if self._expiry else _NEVER
        max_age = self.config.feed_retention.max_age_ms
        first = self.changes.first_timestamp_ms
        if max_age is not None and first is not None:
            # The log drops records strictly older than max_age: one millisecond later.
            t = min(t, (first + max_age + 1) / 1000)
        return None if t == _NEVER else t

    def handle_timer(self, now: float) -> None:
        """Expire due entries (at most ``sweep_batch`` heap pops) and age out the feed.

        Args:
            now: the current time.
        """
        heap = self._expiry
        entries = self._entries
        budget = self.config.sweep_batch
        while heap and budget and heap[0][0] <= now:
            _, _, key = heappop(heap)
            budget -= 1
            entry = entries.get(key)
            if entry is None:
                continue
            expires_at = entry.expires_at
            if expires_at <= now:
                self._remove(key, entry, _OP_EXPIRE, now)
            elif expires_at != _NEVER:  # expires later now: the item follows it
                self._push_expiry(expires_at, entry.version, key)
        self._retain(now)

    # -- replay -------------------------------------------------------------------------

    @classmethod
    def rebuild_from(
        cls,
        log: Log,
        now: float,
        config: CacheConfig | None = None,
        *,
        meter: MemoryMeter | None = None,
        compact: bool = False,
    ) -> Cache:
        """Rebuild a cache by replaying its change feed; the cache then appends to ``log``.

        Entries come back with their values, versions and absolute expiry; ones already
        expired at ``now`` are removed by the usual lazy/active expiry (and logged then).
        The version counter resumes after the largest version seen. The bounds of
        ``config`` are enforced at the end (evictions are logged). A put carried forward
        by compaction (``compacted: 1``) replays like the put it repeats.

        Args:
            log: a change feed written by a :class:`Cache`.
            now: the current time.
            config: the settings; None for the defaults.
            meter: charged with the entries' bytes (the log charges its own).
            compact: the cache compacts its log (see :class:`Cache`).

        Returns:
            The rebuilt :class:`Cache`.

        Raises:
            ValueError: a record is not a cache change-feed record.
            InvalidArgument: a setting is out of range.
        """
        cache = cls(config, changes=log, meter=meter, compact=compact)
        entries = cache._entries
        written = cache._written
        offset = log.first_offset
        while offset < log.next_offset:
            sl = log.read(offset, 1024, 1 << 62)
            if not isinstance(sl, LogSlice):
                raise ValueError(f"offset {offset} cannot be read ({type(sl).__name__})")
            for i, payload in enumerate(sl.payloads):
                kb = sl.keys[i] if sl.keys is not None else None
                hdrs = sl.headers[i] if sl.headers is not None else None
                if kb is None or hdrs is None or "version" not in hdrs:
                    raise ValueError(f"offset {offset + i} is not a cache change-feed record")
                key = kb.decode()
                version = int(hdrs["version"])
                cache._version = max(cache._version, version)
                old = entries.pop(key, None)
                if old is not None:
                    cache._account(-old.size)
                    written.pop(key, None)
                op = hdrs.get("op")
                if op == _OP_PUT:
                    exp_ms = hdrs.get("expires_ms")
                    expires_at = int(exp_ms) / 1000 if exp_ms is not None else _NEVER
                    entry = CacheEntry(payload, version, expires_at, len(kb) + len(payload))
                    entries[key] = entry
                    if compact:
                        written[key] = offset + i
                    cache._account(entry.size)
                    if expires_at != _NEVER:
                        cache._push_expiry(expires_at, version, key)
                elif op not in (_OP_DELETE, _OP_EXPIRE, _OP_EVICT):
                    raise ValueError(f"offset {offset + i} has an unknown op {op!r}")
            offset = sl.next_offset
        cache._enforce_bounds(now)
        cache._retain(now)
        return cache

    def log_committed(self, now: float) -> None:
        """The change log committed more records: a compaction waiting for them may now
        let retention delete what it carried forward.

        Args:
            now: the current time.
        """
        if self._pending is not None:
            self._retain(now)

    # -- internals ----------------------------------------------------------------------

    def _live(self, key: str, now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            self._remove(key, entry, _OP_EXPIRE, now)
            return None
        return entry

    def _remove(self, key: str, entry: CacheEntry, op: bytes, now: float) -> int:
        """Drop an entry, count and log it; return the version of the log record.

        A delete is logged first (a durable feed that refuses it leaves the entry). An
        expiry or eviction happens whatever the feed says (time and memory bounds do not
        wait for a disk): if a durable feed refuses its record, it is counted in
        ``feed_records_lost`` and the removal stands.
        """
        version = self._version + 1
        record = {"op": op, "version": b"%d" % version}
        if op is _OP_DELETE:
            self._append(b"", key.encode(), record, now)
        del self._entries[key]
        self._written.pop(key, None)
        self._account(-entry.size)
        if op is _OP_EXPIRE:
            self.expirations += 1
        elif op is _OP_EVICT:
            self.evictions += 1
        self._version = version
        if op is not _OP_DELETE:
            try:
                self._append(b"", key.encode(), record, now)
            except (StorageFull, StorageFailed):
                self.feed_records_lost += 1
        self._retain(now)
        return version

    def _account(self, delta: int) -> None:
        """The entries hold ``delta`` more bytes (the meter is told at once)."""
        self._bytes += delta
        if self._meter is not None:
            self._meter.adjust(delta)

    def close(self) -> None:
        """The cache is gone: let go of its entries and its change log (the meter is
        credited)."""
        self._entries.clear()
        self._written.clear()
        self._pending = None
        self._expiry.clear()
        self._account(-self._bytes)
        self.changes.close()

    def _enforce_bounds(self, now: float) -> None:
        cfg = self.config
        entries = self._entries
        max_entries = cfg.max_entries if cfg.max_entries is not None else _NEVER
        max_bytes = cfg.max_bytes if cfg.max_bytes is not None else _NEVER
        while len(entries) > max_entries or self._bytes > max_bytes:
            key, entry = next(iter(entries.items()))
            self._remove(key, entry, _OP_EVICT, now)

    def _push_expiry(self, expires_at: float, version: int, key: str) -> None:
        heap = self._expiry
        heappush(heap, (expires_at, version, key))
        if len(heap) > 2 * len(self._entries) + 64:
            heap[:] = [
                (e.expires_at, e.version, k)
                for k, e in self._entries.items()
                if e.expires_at != _NEVER
            ]
            heapify(heap)

    def _append(self, payload: bytes, kb: bytes, headers: dict[str, bytes], now: float) -> int:
        return self.changes.append(payload, round(now * 1000), kb, headers)

    def _wrote(self, key: str, offset: int) -> None:
        """Compacting: the record at ``offset`` now holds ``key``'s live entry."""
        if self._compact:
            written = self._written
            written[key] = offset
            written.move_to_end(key)

    def _retain(self, now: float) -> None:
        """Apply ``feed_retention`` to the change log.

        Without compaction the log is trimmed like a stream's. With it (a durable cache),
        the log must always hold every live entry, so before retention may delete a record
        the entries it still holds are *carried forward*: their put is written again at the
        end of the log (same value, version and absolute expiry, header ``compacted: 1``).
        The records below the retention *horizon* are then deleted only once the log has
        committed everything written up to that point (the carried entries and every
        later change): a crash or power loss before that finds the old records still
        there, so nothing is lost at any instant. A carry the log refuses (disk full,
        failed log) leaves the old records in place; retention is tried again with the
        next change. An entry whose expiry has passed is not carried: its record may go
        (its expiry record follows from the sweep).
        """
        log = self.changes
        retention = self.config.feed_retention
        if not self._compact:
            log.apply_retention(retention, round(now * 1000))
            return
        pending = self._pending
        if pending is not None:
            horizon, until = pending
            if log.committed_offset < until:
                return
            self._pending = None
            log.truncate_before(horizon)
        drop = log.evictions_for(0, 0, retention)
        if drop <= 0:
            return
        horizon = log.first_offset + drop
        written = self._written
        entries = self._entries
        while written:
            key, offset = next(iter(written.items()))
            if offset >= horizon:
                break
            entry = entries[key]
            if entry.expires_at <= now:
                del written[key]
                continue
            headers = _put_headers(entry.version, entry.expires_at, now)
            headers["compacted"] = b"1"
            try:
                self._wrote(key, self._append(entry.value, key.encode(), headers, now))
            except (StorageFull, StorageFailed):
                return
            self.feed_records_kept += 1
        until = log.next_offset
        if log.committed_offset >= until:
            log.truncate_before(horizon)
            return
        self._pending = (horizon, until)
        request = getattr(log, "request_commit", None)
        if request is not None:
            request(until)


def _put_headers(version: int, expires_at: float, now: float) -> dict[str, bytes]:
    """The headers of a put record of an entry with ``version`` expiring at
    ``expires_at``, written at ``now``."""
    if expires_at == _NEVER:
        return {"op": _OP_PUT, "version": b"%d" % version, "ttl_ms": b"0"}
    # the time left, in whole ms and at least 1 (0 would read as "never")
    left = round((expires_at - now) * 1000)
    return {
        "op": _OP_PUT,
        "version": b"%d" % version,
        "ttl_ms": b"%d" % left if left > 0 else b"1",
        "expires_ms": b"%d" % round(expires_at * 1000),
    }
