"""Per-tenant quotas: publish rate (messages and bytes per second) as token buckets, and
connections.

Theory of operation
-------------------
Every tenant has two :class:`TokenBucket` s, one counting messages and one counting record
bytes, shared by ``publish`` and ``enqueue`` of every connection of that tenant. A bucket
holds up to one second of its rate and refills continuously with time; time enters only as
``now`` (seconds, any monotonic origin), so the buckets are pure and tested with fake time.

A request is admitted when each bucket holds at least ``min(amount, capacity)`` tokens; it
then takes the whole amount once the records are appended, which may leave the bucket in
debt. A batch larger than one
second of rate is therefore admitted once the bucket is full and paid for afterwards,
instead of being refused for ever. A refused request takes nothing: it raises a retryable
:class:`~felix_core.errors.Overloaded` whose ``details`` name the tenant, the quota, its
limit and ``retry_after_ms`` (when the bucket will hold enough).

The limits come from the broker-wide defaults in :class:`~felix_core.limits.BrokerConfig`
(``tenant_publish_messages_per_s``, ``tenant_publish_bytes_per_s``; None: unlimited) and
may be overridden per tenant by the tenant's settings of the same names (a null setting
returns to the broker default). :func:`tenant_schema` validates those settings.

Connections are counted per tenant by the server glue at the handshake
(:meth:`TenantQuotas.connection_opened`, :meth:`TenantQuotas.connection_closed`): one over
``max_connections`` is refused LIMIT_EXCEEDED (not retryable as such: it succeeds only once
another connection of the tenant closes) with the same ``details`` but ``retry_after_ms``.
A lowered limit refuses new connections only; open ones stay. Resources (streams, queues
and caches of all the tenant's namespaces) are checked the same way when one is created
(:meth:`TenantQuotas.check_resources`).

Refusals are counted per ``(tenant, quota)`` in :attr:`TenantQuotas.refused`, which the
runtime exports as ``felix_quota_refused_total{tenant,quota}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from felix_core.errors import InvalidArgument, LimitExceeded, Overloaded
from felix_core.limits import BrokerConfig
from felix_core.settings import Path, SettingsSchema, check_known, int_setting

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_RESOURCES",
    "PUBLISH_BYTES",
    "PUBLISH_MESSAGES",
    "QUOTA_KEYS",
    "TenantQuotas",
    "TokenBucket",
    "tenant_schema",
]

PUBLISH_MESSAGES = "publish_messages_per_s"
"""The quota (and tenant setting) of published + enqueued records per second."""
PUBLISH_BYTES = "publish_bytes_per_s"
"""The quota (and tenant setting) of published + enqueued record bytes per second."""
MAX_CONNECTIONS = "max_connections"
"""The quota (and tenant setting) of open connections of one tenant."""
MAX_RESOURCES = "max_resources"
"""The quota (and tenant setting) of streams + queues + caches in one tenant."""
QUOTA_KEYS = (PUBLISH_MESSAGES, PUBLISH_BYTES, MAX_CONNECTIONS, MAX_RESOURCES)
"""The quota settings a tenant record may carry."""


class TokenBucket:
    """A token bucket of ``rate`` tokens per second holding at most ``capacity``.

    Args:
        rate: tokens added per second (> 0).
        capacity: the most tokens held (> 0); the bucket starts full.
        now: the current time.
    """

    __slots__ = ("_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise InvalidArgument("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = now

    def tokens(self, now: float) -> float:
        """The tokens held at ``now`` (negative while in debt)."""
        self._refill(now)
        return self._tokens

    def wait(self, amount: float, now: float) -> float:
        """Seconds until :meth:`take` of ``amount`` would succeed (0.0: it would now)."""
        self._refill(now)
        missing = min(amount, self.capacity) - self._tokens
        return max(missing / self.rate, 0.0)

    def take(self, amount: float) -> None:
        """Take ``amount`` tokens (after :meth:`wait` said 0.0 at the same ``now``)."""
        self._tokens -= amount

    def _refill(self, now: float) -> None:
        if now > self._stamp:  # a clock that steps back never adds tokens
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now


class TenantQuotas:
    """The quotas of every tenant: limits from config and tenant settings, buckets, counts.

    Args:
        config: the broker-wide defaults.
    """

    __slots__ = ("_buckets", "_config", "_overrides", "connections", "refused")

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config
        self._overrides: dict[str, dict[str, int]] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.refused: dict[tuple[str, str], int] = {}
        """Refusals per ``(tenant, quota)`` since start."""
        self.connections: dict[str, int] = {}
        """Open connections per tenant (tenants with none are absent)."""

    def limit(self, tenant: str, quota: str) -> int | None:
        """The limit of one quota for one tenant (None: unlimited)."""
        override = self._overrides.get(tenant, {}).get(quota)
        if override is not None:
            return override
        value: int | None = getattr(self._config, f"tenant_{quota}")
        return value

    def set_tenant(self, tenant: str, settings: Mapping[str, Any] | None) -> None:
        """Apply a tenant record's settings (None: the tenant went).

        A changed limit takes effect at once: the tenant's buckets start again, full, at
        the new rate on their next use.
        """
        overrides = {
            key: settings[key] for key in QUOTA_KEYS if settings and settings.get(key) is not None
        }
        if settings is not None and overrides == self._overrides.get(tenant, {}):
            return  # unchanged (a gone tenant's buckets go with it below)
        if overrides:
            self._overrides[tenant] = overrides
        else:
            self._overrides.pop(tenant, None)
        for quota in QUOTA_KEYS:
            self._buckets.pop((tenant, quota), None)

    def check_publish(self, tenant: str, messages: int, nbytes: int, now: float) -> None:
        """Refuse a publish or enqueue of ``messages`` records of ``nbytes`` bytes that the
        tenant's buckets cannot pay for; takes nothing (:meth:`take_publish` does, once the
        records are in).

        Raises:
            Overloaded: a bucket does not hold enough (retryable). ``details``: ``tenant``,
                ``quota``, ``limit``, ``retry_after_ms``.
        """
        for quota, amount in ((PUBLISH_MESSAGES, messages), (PUBLISH_BYTES, nbytes)):
            bucket = self._bucket(tenant, quota, now)
            if bucket is None:
                continue
            wait = bucket.wait(amount, now)
            if wait > 0.0:
                key = (tenant, quota)
                self.refused[key] = self.refused.get(key, 0) + 1
                raise Overloaded(
                    f"tenant {tenant} is over its {quota} quota",
                    details={
                        "tenant": tenant,
                        "quota": quota,
                        "limit": int(bucket.rate),
                        "retry_after_ms": max(int(wait * 1000 + 0.999), 1),
                    },
                )

    def take_publish(self, tenant: str, messages: int, nbytes: int) -> None:
        """Pay for records :meth:`check_publish` admitted at the same ``now``, once appended."""
        for quota, amount in ((PUBLISH_MESSAGES, messages), (PUBLISH_BYTES, nbytes)):
            bucket = self._buckets.get((tenant, quota))
            if bucket is not None:
                bucket.take(amount)

    def charge_publish(self, tenant: str, messages: int, nbytes: int, now: float) -> None:
        """:meth:`check_publish` then :meth:`take_publish`.

        Raises:
            Overloaded: as :meth:`check_publish`; nothing is taken.
        """
        self.check_publish(tenant, messages, nbytes, now)
        self.take_publish(tenant, messages, nbytes)

    def connection_opened(self, tenant: str) -> None:
        """Count a new connection of ``tenant``, or refuse it.

        Raises:
            LimitExceeded: the tenant holds ``max_connections`` already; nothing is counted.
                ``details``: ``tenant``, ``quota``, ``limit``.
        """
        open_now = self.connections.get(tenant, 0)
        limit = self.limit(tenant, MAX_CONNECTIONS)
        if limit is not None and open_now >= limit:
            key = (tenant, MAX_CONNECTIONS)
            self.refused[key] = self.refused.get(key, 0) + 1
            raise LimitExceeded(
                f"tenant {tenant} has {open_now} connections, its {MAX_CONNECTIONS} quota",
                details={"tenant": tenant, "quota": MAX_CONNECTIONS, "limit": limit},
            )
        self.connections[tenant] = open_now + 1

    def check_resources(self, tenant: str, count: int) -> None:
        """Refuse creating a resource in a tenant that holds ``count`` already.

        Raises:
            LimitExceeded: ``count`` is at ``max_resources``; ``details``: ``tenant``,
                ``quota``, ``limit``.
        """
        limit = self.limit(tenant, MAX_RESOURCES)
        if limit is not None and count >= limit:
            key = (tenant, MAX_RESOURCES)
            self.refused[key] = self.refused.get(key, 0) + 1
            raise LimitExceeded(
                f"tenant {tenant} has {count} streams, queues and caches, its "
                f"{MAX_RESOURCES} quota",
                details={"tenant": tenant, "quota": MAX_RESOURCES, "limit": limit},
            )

    def connection_closed(self, tenant: str) -> None:
        """A connection counted by :meth:`connection_opened` closed."""
        left = self.connections.get(tenant, 0) - 1
        if left > 0:
            self.connections[tenant] = left
        else:
            self.connections.pop(tenant, None)

    def _bucket(self, tenant: str, quota: str, now: float) -> TokenBucket | None:
        bucket = self._buckets.get((tenant, quota))
        if bucket is None:
            rate = self.limit(tenant, quota)
            if rate is None:
                return None
            bucket = self._buckets[(tenant, quota)] = TokenBucket(rate, rate, now)
        return bucket


def tenant_schema() -> SettingsSchema:
    """The schema of a tenant's settings: ``description`` and the quota overrides.

    Each quota setting is an integer >= 1 or null (the broker-wide default).
    """

    def schema(
        path: Path, new: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        check_known("tenant", new, ("description", *QUOTA_KEYS))
        merged = {"description": "", **(current or {}), **new}
        if not isinstance(merged["description"], str) or len(merged["description"]) > 1024:
            raise InvalidArgument(
                "description must be a string of at most 1024 characters",
                details={"field": "description"},
            )
        for key in QUOTA_KEYS:
            int_setting(merged, key, lo=1)
            if merged.get(key) is None:
                merged.pop(key, None)
        return merged

    return schema
