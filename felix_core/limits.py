"""Engine limits: the configuration of every bound, and the global memory budget.

Theory of operation
-------------------
:class:`BrokerConfig` is one frozen record of every limit and default policy of the engine.
Resource settings (per stream, queue, cache) start from its defaults and may not exceed its
caps.

:class:`MemoryBudget` counts the bytes the engine holds: record bytes in stream and queue
logs, cache keys and values. The facade charges it by *delta*: before an operation that may
grow memory it asks :meth:`MemoryBudget.check` whether the growth fits, and after the
operation it reports the actual change of each part it touched with
:meth:`MemoryBudget.adjust`. Past the limit, new work is refused with a retryable
:class:`~felix_core.errors.Overloaded` instead of growing; work that frees memory (acks,
deletes, trims) always proceeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from felix_core.errors import InvalidArgument, Overloaded
from felix_proto.frames import DEFAULT_MAX_FRAME_SIZE

__all__ = [
    "DEAD_LETTER_HEADERS_MAX_BYTES",
    "ENVELOPE_MAX_BYTES",
    "MAX_RECORD_BYTES",
    "RECORD_HEADROOM",
    "BrokerConfig",
    "MemoryBudget",
    "encoded_record_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ENVELOPE_MAX_BYTES = 1 * KiB
"""The most a frame adds around one record's fields: a ``Delivery`` (delivery id, attempt,
offset, timestamp and the field names) or a one-record ``EventBatch``. About 100 bytes today;
``tests/core/test_queues_record_size.py`` measures it."""
DEAD_LETTER_HEADERS_MAX_BYTES = 2 * KiB
"""The most the six ``x-felix-*`` headers of a dead letter add to a record, encoded (they
replace headers of the same name, so a dead letter of a dead letter does not grow again).
Their values are bounded: fixed words, a queue name (128 characters), two decimal integers
and a group name (255 characters, at most 1020 UTF-8 bytes); about 1.4 KiB at worst."""
RECORD_HEADROOM = 64 * KiB
"""Room kept between the largest record and the protocol's default frame size (16 MiB) for
everything the broker wraps around or adds to a record (``ENVELOPE_MAX_BYTES`` +
``DEAD_LETTER_HEADERS_MAX_BYTES``, with room for more broker-added headers later)."""
MAX_RECORD_BYTES = DEFAULT_MAX_FRAME_SIZE - RECORD_HEADROOM
"""The largest ``max_record_bytes`` allowed (and its default): 16 MiB - 64 KiB."""


def _bin_size(n: int) -> int:
    return n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)


def _str_size(n: int) -> int:
    return n + (1 if n < 32 else 2 if n < 0x100 else 3 if n < 0x10000 else 5)


def encoded_record_size(
    payload: bytes, key: bytes | None = None, headers: Mapping[str, bytes] | None = None
) -> int:
    """The msgpack-encoded size of a record's fields, as a frame carries them.

    Args:
        payload: the payload (a msgpack bin).
        key: the key, if any (a bin).
        headers: the headers, if any (a map of str to bin).

    Returns:
        The bytes of the payload's, key's and header map's encodings: every length prefix
        counted, unlike :func:`~felix_core.log.record_size` (which is what memory bounds
        count).
    """
    size = _bin_size(len(payload))
    if key is not None:
        size += _bin_size(len(key))
    if headers:
        n = len(headers)
        size += 1 if n < 16 else 3 if n < 0x10000 else 5
        for name, value in headers.items():
            size += _str_size(len(name.encode())) + _bin_size(len(value))
    return size


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Every engine limit and default policy. Defaults follow the reference broker."""

    # -- defaults ----------------------------------------------------------------------
    create_defaults: bool = True
    """Create tenant ``default_tenant`` with namespace ``default_namespace`` at start."""
    default_tenant: str = "default"
    """Name of the tenant created when ``create_defaults`` is set."""
    default_namespace: str = "default"
    """Name of the namespace created in it."""

    # -- global -------------------------------------------------------------------------
    memory_limit_bytes: int = 1 * GiB
    """Bytes the engine may hold in logs and caches before refusing new work (Overloaded)."""
    max_payload_bytes: int = 8 * MiB
    """Largest single payload / cache value accepted (TooLarge)."""
    max_record_bytes: int = MAX_RECORD_BYTES
    """Largest single record accepted by publish / enqueue (TooLarge): payload, key and
    headers at their encoded size (:func:`encoded_record_size`). At most
    ``MAX_RECORD_BYTES``, so the record still fits a default-size frame with the broker's
    envelope and dead-letter headers."""
    max_key_bytes: int = 4 * KiB
    """Largest record key / cache key accepted (TooLarge)."""
    max_batch_records: int = 8192
    """Most records in one publish / enqueue (TooLarge)."""
    max_batch_bytes: int = 16 * MiB
    """Most record bytes in one publish / enqueue (TooLarge)."""

    # -- metadata counts ----------------------------------------------------------------
    max_tenants: int = 1024
    """Most tenants (LimitExceeded)."""
    max_namespaces_per_tenant: int = 1024
    """Most namespaces in one tenant (LimitExceeded)."""
    max_resources_per_namespace: int = 4096
    """Most streams + queues + caches in one namespace (LimitExceeded)."""

    # -- per-tenant quotas (felix_core.quotas; a tenant's settings override them) ---------
    tenant_publish_messages_per_s: int | None = None
    """Records per second one tenant may publish + enqueue, all its connections together
    (a token bucket holding one second of it); None: unlimited. Over it: OVERLOADED
    (retryable) with ``details['quota']``."""
    tenant_publish_bytes_per_s: int | None = None
    """Record bytes per second one tenant may publish + enqueue (as above); None: unlimited."""
    tenant_max_connections: int | None = None
    """Most open connections of one tenant, counted at the handshake of a connection whose
    credential names a tenant (an operator's are not counted); None: unlimited. Over it:
    the handshake is rejected LIMIT_EXCEEDED with ``details['quota']``."""
    tenant_max_resources: int | None = None
    """Most streams + queues + caches in one tenant, all its namespaces together; None:
    unlimited (each namespace is still bounded by ``max_resources_per_namespace``). Over
    it: create refused LIMIT_EXCEEDED with ``details['quota']``."""
    tenant_max_subscriptions: int | None = None
    """Most live subscriptions (stream subscriptions and cache change feeds) on one
    tenant's resources, all connections together; None: unlimited. Over it: subscribe
    refused LIMIT_EXCEEDED with ``details['quota']``."""
    tenant_max_consumers: int | None = None
    """Most live queue consumers on one tenant's queues, all connections together; None:
    unlimited. Over it: consume refused LIMIT_EXCEEDED with ``details['quota']``."""
    tenant_max_cache_bytes: int | None = None
    """Most bytes (key + value of every entry, ephemeral and durable caches together) one
    tenant's caches may hold; None: unlimited (each cache is still bounded by its own
    ``max_bytes``). A put that would go over it is refused LIMIT_EXCEEDED with
    ``details['quota']``."""
    tenant_max_inflight_bytes: int | None = None
    """Most payload + key bytes of one tenant's queue deliveries handed out and not yet
    settled (acked, nacked, timed out or returned), all its queues and consumers together;
    None: unlimited. Over it: back-pressure, not an error: the deliveries that do not fit
    wait until the tenant's consumers settle some (one delivery always goes when the tenant
    has none in flight)."""

    # -- connections ----------------------------------------------------------------------
    max_subscriptions_per_connection: int = 4096
    """Most live subscriptions one connection may hold (LimitExceeded)."""
    max_consumers_per_connection: int = 4096
    """Most live queue consumers one connection may hold (LimitExceeded)."""
    max_credit_messages: int = 1 << 30
    """Largest outstanding message credit of one subscription (larger grants are clamped)."""
    max_credit_bytes: int = 1 << 40
    """Largest outstanding byte credit of one subscription (larger grants are clamped)."""

    # -- stream defaults and caps ---------------------------------------------------------
    stream_retention_max_records: int | None = None
    """Default count retention of a stream (None, the default: bounded by bytes only; a
    count bound of 100,000 once dropped records of small messages that one subscriber
    reading flat out was about to read)."""
    stream_retention_max_bytes: int = 64 * MiB
    """Default byte retention of a stream; a stream is always bounded by bytes."""
    stream_retention_max_age_ms: int | None = None
    """Default age retention of a stream (None: no age limit)."""
    stream_max_retention_bytes: int = 1 * GiB
    """Largest ``retention_max_bytes`` a stream may ask for (InvalidArgument)."""
    slow_consumer_policy: str = "drop_oldest"
    """Default slow-consumer policy: ``drop_oldest``, ``block`` or ``disconnect``."""
    batch_max_events: int = 64
    """Default most records per delivered batch."""
    batch_max_bytes: int = 64 * KiB
    """Default most record bytes per delivered batch (one record may exceed it)."""
    batch_max_delay_us: int = 250
    """Default longest a partial batch waits for more records, microseconds."""
    durability: str = "ephemeral"
    """Default durability class: ``ephemeral`` or ``durable``."""
    fsync: str = "interval"
    """Default fsync policy of a durable resource: ``interval`` (every
    ``fsync_interval_ms``, and at once for a committed publish) or ``none`` (left to the
    operating system; a committed publish still waits for its fsync)."""
    fsync_interval_ms: int = 100
    """Default fsync interval of a durable resource with ``fsync=interval``, milliseconds."""

    def __post_init__(self) -> None:
        positive = (
            "memory_limit_bytes",
            "max_payload_bytes",
            "max_record_bytes",
            "max_key_bytes",
            "max_batch_records",
            "max_batch_bytes",
            "max_tenants",
            "max_namespaces_per_tenant",
            "max_resources_per_namespace",
            "max_subscriptions_per_connection",
            "max_consumers_per_connection",
            "max_credit_messages",
            "max_credit_bytes",
            "stream_retention_max_bytes",
            "stream_max_retention_bytes",
            "batch_max_events",
            "batch_max_bytes",
            "fsync_interval_ms",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidArgument(f"BrokerConfig.{name} must be >= 1")
        if self.max_record_bytes > MAX_RECORD_BYTES:
            raise InvalidArgument(
                f"BrokerConfig.max_record_bytes must be <= {MAX_RECORD_BYTES} (the 16 MiB "
                f"frame less {RECORD_HEADROOM} bytes of headroom)"
            )
        for name in (
            "tenant_publish_messages_per_s",
            "tenant_publish_bytes_per_s",
            "tenant_max_connections",
            "tenant_max_resources",
            "tenant_max_subscriptions",
            "tenant_max_consumers",
            "tenant_max_cache_bytes",
            "tenant_max_inflight_bytes",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidArgument(f"BrokerConfig.{name} must be >= 1 or None")
        if self.batch_max_delay_us < 0:
            raise InvalidArgument("BrokerConfig.batch_max_delay_us must be >= 0")
        if self.fsync not in ("interval", "none"):
            raise InvalidArgument("BrokerConfig.fsync must be 'interval' or 'none'")
        if self.fsync_interval_ms > 60_000:
            raise InvalidArgument("BrokerConfig.fsync_interval_ms must be <= 60000")
        if self.stream_retention_max_bytes > self.stream_max_retention_bytes:
            raise InvalidArgument(
                "BrokerConfig.stream_retention_max_bytes exceeds stream_max_retention_bytes"
            )


class MemoryBudget:
    """Counts the bytes the engine holds against one limit. See the module docstring."""

    __slots__ = ("_high_water", "_limit", "_refused", "_used")

    def __init__(self, limit_bytes: int) -> None:
        """Create an empty budget.

        Args:
            limit_bytes: the most bytes the engine may hold.

        Raises:
            InvalidArgument: ``limit_bytes`` < 1.
        """
        if limit_bytes < 1:
            raise InvalidArgument("memory limit must be >= 1 byte")
        self._limit = limit_bytes
        self._used = 0
        self._high_water = 0
        self._refused = 0

    @property
    def limit(self) -> int:
        """The configured limit in bytes."""
        return self._limit

    @property
    def used(self) -> int:
        """Bytes currently held."""
        return self._used

    @property
    def available(self) -> int:
        """Bytes that may still be added (0 when at or past the limit)."""
        return max(self._limit - self._used, 0)

    @property
    def high_water(self) -> int:
        """The most bytes ever held at once."""
        return self._high_water

    @property
    def refused(self) -> int:
        """How many operations :meth:`check` refused."""
        return self._refused

    def fits(self, growth: int) -> bool:
        """Say whether holding ``growth`` more bytes stays within the limit.

        Args:
            growth: bytes the operation would add (<= 0 always fits).

        Returns:
            True when the growth fits.
        """
        return growth <= 0 or self._used + growth <= self._limit

    def check(self, growth: int, what: str = "operation") -> None:
        """Refuse an operation whose growth does not fit.

        Args:
            growth: bytes the operation would add.
            what: what is refused, for the message.

        Raises:
            Overloaded: the growth does not fit (retryable); ``details`` carry ``limit``
                and ``used``.
        """
        if not self.fits(growth):
            self._refused += 1
            raise Overloaded(
                f"{what} refused: engine memory limit reached",
                details={"limit": self._limit, "used": self._used, "needed": growth},
            )

    def adjust(self, delta: int) -> None:
        """Record that the engine now holds ``delta`` more (or fewer) bytes.

        Args:
            delta: the change; negative when memory was freed.
        """
        used = self._used + delta
        self._used = used
        self._high_water = max(self._high_water, used)
