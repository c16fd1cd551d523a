"""Settings of every resource kind: validated types and the schemas that check wire mappings.

Every integer setting has a range and an out-of-range, boolean or non-integer value is
:class:`~felix_core.errors.InvalidArgument` with ``details["field"]`` naming the setting:
durations (``*_ms``) are at most ``MAX_DURATION_MS`` (10**12 ms, as TTLs on the wire, so
that ``now`` plus any of them never overflows a field it is encoded in), counts and sizes at
most ``MAX_INT`` or a tighter cap named where the setting is read.

A *schema* is a function ``(path, new_settings, current_settings_or_None) -> full_settings``
that raises :class:`~felix_core.errors.InvalidArgument`; the metadata
:class:`~felix_core.metadata.Catalog` runs the kind's schema on create and update and stores
the full mapping it returns (plain values, so it serialises as-is). Absent settings keep
their current value on update and take the :class:`~felix_core.limits.BrokerConfig` default
on create. The setting names of each kind are listed in ``docs/engine.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from felix_core.cache import CacheConfig
from felix_core.errors import InvalidArgument
from felix_core.limits import BrokerConfig
from felix_core.log import Retention
from felix_core.names import validate_name
from felix_core.queue_types import QueueConfig
from felix_proto.messages import MAX_DURATION_MS

__all__ = [
    "FSYNC_KEYS",
    "MAX_BATCH_EVENTS",
    "MAX_DURATION_MS",
    "MAX_FSYNC_INTERVAL_MS",
    "MAX_INT",
    "MAX_PREFETCH",
    "BatchPolicy",
    "Durability",
    "FsyncPolicy",
    "Path",
    "SettingsSchema",
    "SlowConsumerPolicy",
    "StreamSettings",
    "cache_config",
    "cache_schema",
    "check_known",
    "choice_setting",
    "description_schema",
    "fsync_settings",
    "int_setting",
    "queue_config",
    "queue_schema",
    "required_int",
    "stream_schema",
]

MAX_INT = (1 << 63) - 1
"""Largest integer setting that is not bounded more tightly (counts and byte sizes)."""
MAX_BATCH_EVENTS = 1 << 14
"""Largest ``batch_max_events``: an ``EventBatch`` of that many records with timestamps,
keys and 13 headers each holds fewer msgpack values than a frame may
(``felix_proto.codec.MAX_VALUES``, 524,288)."""
MAX_PREFETCH = 1 << 18
"""Largest ``max_prefetch`` of a queue: one ``Ack`` or ``Nack`` of a whole window of
deliveries (262,144 ids) still fits ``MAX_VALUES``."""

Path = tuple[str, str, str]
"""``(tenant, namespace, name)``; unused parts are empty strings."""

SettingsSchema = Callable[[Path, Mapping[str, Any], Mapping[str, Any] | None], dict[str, Any]]
"""Validates settings: ``(path, new, current_or_None) -> full settings``; InvalidArgument."""


# -- setting helpers (also used by the queue and cache schemas) ----------------------------


def int_setting(
    settings: Mapping[str, Any], name: str, *, lo: int, hi: int = MAX_INT
) -> int | None:
    """Read an optional integer setting.

    Args:
        settings: the mapping.
        name: the setting name.
        lo: the smallest value accepted.
        hi: the largest value accepted.

    Returns:
        The value, or None when absent or null.

    Raises:
        InvalidArgument: not an integer (booleans are not), or out of range.
    """
    value = settings.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(
            f"setting {name} must be an integer in [{lo}, {hi}]", details={"field": name}
        )
    return value


def required_int(settings: Mapping[str, Any], name: str, *, lo: int, hi: int = MAX_INT) -> int:
    """Read an integer setting that may not be null.

    Raises:
        InvalidArgument: absent, null, not an integer, or out of range.
    """
    value = int_setting(settings, name, lo=lo, hi=hi)
    if value is None:
        raise InvalidArgument(f"setting {name} may not be null", details={"field": name})
    return value


def choice_setting(settings: Mapping[str, Any], name: str, choices: type[StrEnum]) -> str:
    """Read a setting that must be one of an enum's values.

    Raises:
        InvalidArgument: the value is not one of ``choices``.
    """
    value = settings.get(name)
    allowed = [c.value for c in choices]
    if value not in allowed:
        raise InvalidArgument(f"setting {name} must be one of {allowed}", details={"field": name})
    return str(value)


def check_known(kind: str, settings: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Refuse setting names a kind does not know.

    Raises:
        InvalidArgument: ``settings`` has a name not in ``known``.
    """
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise InvalidArgument(f"unknown {kind} settings {unknown}", details={"field": unknown[0]})


# -- stream settings -----------------------------------------------------------------------


class SlowConsumerPolicy(StrEnum):
    """What a stream does when a subscriber falls behind its retention."""

    DROP_OLDEST = "drop_oldest"
    """Trim anyway; the lagging cursor jumps to the oldest retained record with a gap."""
    BLOCK = "block"
    """Refuse publishes (retryable Overloaded) that would trim records a cursor has not read."""
    DISCONNECT = "disconnect"
    """Trim anyway; the lagging subscription ends with reason ``lagged``."""


class Durability(StrEnum):
    """Storage class of a stream, queue or cache."""

    EPHEMERAL = "ephemeral"
    """In memory: nothing survives a restart (the resource's definition does)."""
    DURABLE = "durable"
    """In a log on disk under the broker's data directory: acknowledged records survive."""


class FsyncPolicy(StrEnum):
    """When a durable resource's log is fsynced (a committed publish always waits for it)."""

    INTERVAL = "interval"
    """Every ``fsync_interval_ms`` while there are unsynced bytes, and at once when a
    committed publish waits (one fsync for every waiting publish: group commit)."""
    NONE = "none"
    """Only when a committed publish waits; otherwise the operating system writes back."""


MAX_FSYNC_INTERVAL_MS = 60_000
"""The longest ``fsync_interval_ms`` accepted (one minute)."""

FSYNC_KEYS = ("fsync", "fsync_interval_ms")
"""The fsync setting names streams, queues and caches all accept."""


def fsync_settings(merged: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the fsync settings of a merged settings mapping.

    Args:
        merged: the current settings with the new ones over them.

    Returns:
        ``{"fsync": ..., "fsync_interval_ms": ...}``.

    Raises:
        InvalidArgument: not a :class:`FsyncPolicy`, or an interval outside
            1..:data:`MAX_FSYNC_INTERVAL_MS`.
    """
    return {
        "fsync": choice_setting(merged, "fsync", FsyncPolicy),
        "fsync_interval_ms": required_int(
            merged, "fsync_interval_ms", lo=1, hi=MAX_FSYNC_INTERVAL_MS
        ),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    """How deliveries are batched."""

    max_events: int = 64
    """A pending run of this many records is delivered at once."""
    max_bytes: int = 64 * 1024
    """A pending run of this many record bytes is delivered at once."""
    max_delay_s: float = 0.00025
    """A smaller run waits at most this long for more records."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    """The validated settings of one stream."""

    retention: Retention
    """What the log keeps; ``max_bytes`` is always set, so a stream is always bounded."""
    slow_consumer: SlowConsumerPolicy
    """The slow-consumer policy."""
    batch: BatchPolicy
    """The delivery batching policy."""
    durability: Durability
    """Storage class."""
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    """When a durable stream's log is fsynced."""
    fsync_interval_ms: int = 100
    """The fsync interval with ``fsync=interval``, milliseconds."""

    KEYS = (
        "retention_max_records",
        "retention_max_bytes",
        "retention_max_age_ms",
        "slow_consumer",
        "batch_max_events",
        "batch_max_bytes",
        "batch_max_delay_us",
        "durability",
        *FSYNC_KEYS,
    )
    """The setting names a stream accepts."""

    @classmethod
    def defaults(cls, config: BrokerConfig) -> StreamSettings:
        """The settings of a stream created without any.

        Args:
            config: the engine configuration.

        Returns:
            Settings built from the config's defaults.
        """
        return cls.from_mapping({}, config)

    @classmethod
    def from_mapping(
        cls,
        settings: Mapping[str, Any],
        config: BrokerConfig,
        base: StreamSettings | None = None,
    ) -> StreamSettings:
        """Validate wire settings.

        Args:
            settings: setting name -> value (see :attr:`KEYS`); absent names keep the base.
            config: the engine configuration (defaults and caps).
            base: the current settings when updating; None when creating.

        Returns:
            The new settings.

        Raises:
            InvalidArgument: an unknown name, a wrong type or a value out of range.
        """
        check_known("stream", settings, cls.KEYS)
        cur = (base or _config_defaults(config)).to_mapping()
        merged = {**cur, **settings}
        retention = Retention(
            max_records=int_setting(merged, "retention_max_records", lo=1),
            max_bytes=required_int(
                merged, "retention_max_bytes", lo=1, hi=config.stream_max_retention_bytes
            ),
            max_age_ms=int_setting(merged, "retention_max_age_ms", lo=1, hi=MAX_DURATION_MS),
        )
        fsync = fsync_settings(merged)
        batch = BatchPolicy(
            max_events=required_int(merged, "batch_max_events", lo=1, hi=MAX_BATCH_EVENTS),
            max_bytes=required_int(merged, "batch_max_bytes", lo=1, hi=1 << 30),
            max_delay_s=required_int(merged, "batch_max_delay_us", lo=0, hi=10**7) / 1e6,
        )
        return cls(
            retention=retention,
            slow_consumer=SlowConsumerPolicy(
                choice_setting(merged, "slow_consumer", SlowConsumerPolicy)
            ),
            batch=batch,
            durability=Durability(choice_setting(merged, "durability", Durability)),
            fsync=FsyncPolicy(fsync["fsync"]),
            fsync_interval_ms=fsync["fsync_interval_ms"],
        )

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a wire mapping (the inverse of :meth:`from_mapping`)."""
        return {
            "retention_max_records": self.retention.max_records,
            "retention_max_bytes": self.retention.max_bytes,
            "retention_max_age_ms": self.retention.max_age_ms,
            "slow_consumer": self.slow_consumer.value,
            "batch_max_events": self.batch.max_events,
            "batch_max_bytes": self.batch.max_bytes,
            "batch_max_delay_us": round(self.batch.max_delay_s * 1e6),
            "durability": self.durability.value,
            "fsync": self.fsync.value,
            "fsync_interval_ms": self.fsync_interval_ms,
        }


def _config_defaults(config: BrokerConfig) -> StreamSettings:
    return StreamSettings(
        retention=Retention(
            max_records=config.stream_retention_max_records,
            max_bytes=config.stream_retention_max_bytes,
            max_age_ms=config.stream_retention_max_age_ms,
        ),
        slow_consumer=SlowConsumerPolicy(config.slow_consumer_policy),
        batch=BatchPolicy(
            max_events=config.batch_max_events,
            max_bytes=config.batch_max_bytes,
            max_delay_s=config.batch_max_delay_us / 1e6,
        ),
        durability=Durability(config.durability),
        fsync=FsyncPolicy(config.fsync),
        fsync_interval_ms=config.fsync_interval_ms,
    )


def stream_schema(config: BrokerConfig) -> SettingsSchema:
    """The settings schema of streams under ``config``.

    Args:
        config: the engine configuration.

    Returns:
        A schema: ``(path, new, current_or_None) -> full settings mapping``.
    """

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        base = StreamSettings.from_mapping(current, config) if current is not None else None
        return StreamSettings.from_mapping(new, config, base).to_mapping()

    return schema


def description_schema(kind: str) -> SettingsSchema:
    """The schema of kinds whose only setting is a free ``description`` (<= 1024 chars)."""

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known(kind, new, ("description",))
        merged = {"description": "", **(current or {}), **new}
        if not isinstance(merged["description"], str) or len(merged["description"]) > 1024:
            raise InvalidArgument(
                "description must be a string of at most 1024 characters",
                details={"field": "description"},
            )
        return merged

    return schema


# -- queue settings ----------------------------------------------------------------------------

_QUEUE_KEYS = (
    "max_records",
    "max_bytes",
    "visibility_timeout_ms",
    "max_attempts",
    "dead_letter_queue",
    "max_prefetch",
    "durability",
    *FSYNC_KEYS,
)


def queue_schema(config: BrokerConfig) -> SettingsSchema:
    """Queue settings: the wire mapping of :class:`~felix_core.queues.QueueConfig`."""
    defaults = QueueConfig()

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known("queue", new, _QUEUE_KEYS)
        base = current or {
            "max_records": defaults.max_records,
            "max_bytes": defaults.max_bytes,
            "visibility_timeout_ms": round(defaults.visibility_timeout_s * 1000),
            "max_attempts": defaults.max_attempts,
            "dead_letter_queue": defaults.dead_letter_queue,
            "max_prefetch": defaults.max_prefetch,
            "durability": config.durability,
            "fsync": config.fsync,
            "fsync_interval_ms": config.fsync_interval_ms,
        }
        merged = {**base, **new}
        full = {
            "max_records": int_setting(merged, "max_records", lo=1),
            "max_bytes": int_setting(merged, "max_bytes", lo=1),
            "visibility_timeout_ms": required_int(
                merged, "visibility_timeout_ms", lo=1, hi=MAX_DURATION_MS
            ),
            "max_attempts": int_setting(merged, "max_attempts", lo=1),
            "dead_letter_queue": merged["dead_letter_queue"],
            "max_prefetch": required_int(merged, "max_prefetch", lo=1, hi=MAX_PREFETCH),
            "durability": choice_setting(merged, "durability", Durability),
            **fsync_settings(merged),
        }
        target = full["dead_letter_queue"]
        if target is not None:
            validate_name("dead_letter_queue", target)
        queue_config(full).validate(path[2])
        return full

    return schema


def queue_config(settings: Mapping[str, Any]) -> QueueConfig:
    """The queue engine's config from a full queue settings mapping."""
    return QueueConfig(
        max_records=settings["max_records"],
        max_bytes=settings["max_bytes"],
        visibility_timeout_s=settings["visibility_timeout_ms"] / 1000,
        max_attempts=settings["max_attempts"],
        dead_letter_queue=settings["dead_letter_queue"],
        max_prefetch=settings["max_prefetch"],
    )


# -- cache settings ------------------------------------------------------------------------

_CACHE_KEYS = (
    "default_ttl_ms",
    "max_entries",
    "max_bytes",
    "max_value_bytes",
    "feed_retention_max_records",
    "feed_retention_max_bytes",
    "sweep_batch",
    "durability",
    *FSYNC_KEYS,
)


def cache_schema(config: BrokerConfig) -> SettingsSchema:
    """Cache settings: the wire mapping of :class:`~felix_core.cache.CacheConfig`.

    ``default_ttl_ms`` 0 means entries never expire by default; ``max_value_bytes`` may not
    exceed the config's ``max_payload_bytes``.
    """
    defaults = CacheConfig()

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known("cache", new, _CACHE_KEYS)
        base = current or {
            "default_ttl_ms": round(defaults.default_ttl_s * 1000),
            "max_entries": defaults.max_entries,
            "max_bytes": defaults.max_bytes,
            "max_value_bytes": min(defaults.max_value_bytes, config.max_payload_bytes),
            "feed_retention_max_records": defaults.feed_retention.max_records,
            "feed_retention_max_bytes": config.stream_retention_max_bytes,
            "sweep_batch": defaults.sweep_batch,
            "durability": config.durability,
            "fsync": config.fsync,
            "fsync_interval_ms": config.fsync_interval_ms,
        }
        merged = {**base, **new}
        full = {
            "default_ttl_ms": required_int(merged, "default_ttl_ms", lo=0, hi=MAX_DURATION_MS),
            "max_entries": int_setting(merged, "max_entries", lo=1),
            "max_bytes": int_setting(merged, "max_bytes", lo=1),
            "max_value_bytes": required_int(
                merged, "max_value_bytes", lo=1, hi=config.max_payload_bytes
            ),
            "feed_retention_max_records": int_setting(merged, "feed_retention_max_records", lo=1),
            "feed_retention_max_bytes": required_int(
                merged, "feed_retention_max_bytes", lo=1, hi=config.stream_max_retention_bytes
            ),
            "sweep_batch": required_int(merged, "sweep_batch", lo=1, hi=1 << 20),
            "durability": choice_setting(merged, "durability", Durability),
            **fsync_settings(merged),
        }
        cache_config(full).validate()
        return full

    return schema


def cache_config(settings: Mapping[str, Any]) -> CacheConfig:
    """The cache engine's config from a full cache settings mapping."""
    return CacheConfig(
        default_ttl_s=settings["default_ttl_ms"] / 1000,
        max_entries=settings["max_entries"],
        max_bytes=settings["max_bytes"],
        max_value_bytes=settings["max_value_bytes"],
        feed_retention=Retention(
            max_records=settings["feed_retention_max_records"],
            max_bytes=settings["feed_retention_max_bytes"],
        ),
        sweep_batch=settings["sweep_batch"],
    )
