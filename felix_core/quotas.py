"""Per-tenant quotas: publish rate (messages and bytes per second) as token buckets,
connections, resources, subscriptions, consumers and cache bytes.

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

Subscriptions (stream subscriptions and cache change feeds) and queue consumers are counted
per tenant of the resource they follow: the engine checks :meth:`TenantQuotas.check_feeds`
before opening one and registers it with :meth:`TenantQuotas.add_feed` after. A feed ends
in many places (unsubscribe, cancel, its connection lost, its resource deleted, a lagging
subscription cut, a drain, a narrowed permission); every one of them marks the feed
``closed``, so the quota keeps the feed objects themselves and drops the closed ones when it
looks (when the list reaches the limit, or has doubled since it was last pruned: memory stays
proportional to the live feeds). A slot is thus free as soon as its feed ended, whatever
ended it, without a hook in each of those places.

Cache bytes (``max_cache_bytes``) are the key + value bytes of every entry of the tenant's
caches, the figure each cache accounts against its own ``max_bytes``: the caches charge a
:class:`TenantCacheMeter` (which forwards to the engine's memory budget) as entries come
and go (put, overwrite, delete, expiry, eviction, a deleted cache; a durable cache rebuilt at
start charges what it replays). A put that would take the tenant over its limit is refused
LIMIT_EXCEEDED (:meth:`TenantQuotas.check_cache_put`), like a Redis ``maxmemory`` with
``noeviction`` answers an OOM error rather than dropping other keys: it succeeds again once
entries are deleted or expire, not by waiting a set time. Deletes are always admitted.

In-flight bytes (``max_inflight_bytes``) are the payload + key bytes of the tenant's queue
deliveries handed to a consumer and not yet settled: acked, nacked, timed out, or returned
because the consumer, its connection, its group or its queue went. While the tenant has a
limit, every queue of the tenant charges and releases one :class:`InflightBytes` as it
hands out and settles deliveries (without one nothing is counted, so the queue hot paths of
an unlimited tenant stay as they were; a limit set later counts what is in flight then).
Going over it is not an error but back-pressure: a consumer group holds back the deliveries
that do not fit (a tenant with nothing in flight still gets one delivery, however large, so
a message larger than the limit is not stuck) and waits on the tenant's
:class:`InflightBytes`; room released by any of the tenant's queues (or a raised limit)
dispatches the waiting groups again. Each time a group is held back is counted in
:attr:`TenantQuotas.held_back` (``felix_quota_held_back_total{tenant,quota}``). Stream
subscriptions and change feeds are not counted: their credit (messages and bytes) already
bounds what the broker runs ahead of each reader.

Refusals are counted per ``(tenant, quota)`` in :attr:`TenantQuotas.refused`, which the
runtime exports as ``felix_quota_refused_total{tenant,quota}``; :meth:`TenantQuotas.usage`
gives what each tenant holds (``felix_quota_used{tenant,quota}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from felix_core.errors import InvalidArgument, LimitExceeded, Overloaded
from felix_core.limits import BrokerConfig
from felix_core.log import MemoryMeter
from felix_core.settings import Path, SettingsSchema, check_known, int_setting

__all__ = [
    "MAX_CACHE_BYTES",
    "MAX_CONNECTIONS",
    "MAX_CONSUMERS",
    "MAX_INFLIGHT_BYTES",
    "MAX_RESOURCES",
    "MAX_SUBSCRIPTIONS",
    "PUBLISH_BYTES",
    "PUBLISH_MESSAGES",
    "QUOTA_KEYS",
    "Feed",
    "InflightBytes",
    "TenantCacheMeter",
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
MAX_SUBSCRIPTIONS = "max_subscriptions"
"""The quota (and tenant setting) of live stream subscriptions + cache change feeds on one
tenant's resources."""
MAX_CONSUMERS = "max_consumers"
"""The quota (and tenant setting) of live queue consumers on one tenant's queues."""
MAX_CACHE_BYTES = "max_cache_bytes"
"""The quota (and tenant setting) of key + value bytes held by one tenant's caches."""
MAX_INFLIGHT_BYTES = "max_inflight_bytes"
"""The quota (and tenant setting) of payload + key bytes of one tenant's unsettled queue
deliveries."""
QUOTA_KEYS = (
    PUBLISH_MESSAGES,
    PUBLISH_BYTES,
    MAX_CONNECTIONS,
    MAX_RESOURCES,
    MAX_SUBSCRIPTIONS,
    MAX_CONSUMERS,
    MAX_CACHE_BYTES,
    MAX_INFLIGHT_BYTES,
)
"""The quota settings a tenant record may carry."""

_FIRST_PRUNE = 64  # feeds registered before a tenant's list is first pruned


class Feed(Protocol):
    """A subscription or consumer as the feed quotas see it: ended once ``closed``."""

    @property
    def closed(self) -> bool:
        """True once the feed ended (for whatever reason)."""
        ...


class Holder(Protocol):
    """A queue of the tenant, as its in-flight bytes see it."""

    def inflight_payload_bytes(self) -> int:
        """Payload + key bytes of its deliveries not settled yet."""
        ...


class Waiter(Protocol):
    """A consumer group held back by its tenant's in-flight bytes."""

    def wake(self, now: float) -> None:
        """Room was released: hand out what waited (and wait again if it still does not
        fit)."""
        ...


class InflightBytes:
    """One tenant's bytes of unsettled queue deliveries against its ``max_inflight_bytes``.

    While the tenant has a limit, its queues add to :attr:`held` as they hand deliveries out
    and call :meth:`release` as they are settled; a group that held deliveries back waits
    in :attr:`waiting` until :meth:`release` (or :meth:`set_limit`) makes room. Without a
    limit nothing is counted (the hot paths of an unlimited tenant pay one ``is None``
    test), so a limit set later counts what the tenant's queues (:attr:`holders`) hold at
    that moment.

    Args:
        limit: the most bytes (None: unlimited).
    """

    __slots__ = ("held", "held_back", "holders", "limit", "waiting")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held = 0
        """Payload + key bytes of the deliveries not settled yet (0 while unlimited)."""
        self.holders: dict[Holder, None] = {}
        """The tenant's queues (each registers itself while it exists)."""
        self.held_back = 0
        """How many times a group held deliveries back for lack of room."""
        self.waiting: dict[Waiter, None] = {}
        """The groups held back, in the order they were (woken in that order)."""

    def admits(self, nbytes: int) -> bool:
        """Whether one more delivery of ``nbytes`` may go out now: under the limit, or the
        tenant has nothing in flight (a delivery larger than the limit still goes alone)."""
        limit = self.limit
        return limit is None or self.held == 0 or self.held + nbytes <= limit

    def hold_back(self, group: Waiter) -> None:
        """``group`` holds deliveries back until room is released."""
        self.waiting[group] = None
        self.held_back += 1

    def release(self, nbytes: int, now: float) -> None:
        """Deliveries of ``nbytes`` were settled (counted while limited, ignored
        otherwise); the waiting groups are woken."""
        if self.limit is None:
            return
        self.held -= nbytes
        if self.waiting:
            self.wake(now)

    def set_limit(self, limit: int | None, now: float) -> None:
        """A new limit, applied at once: a first one counts what is in flight now, none
        stops counting, a raised one wakes the waiting groups."""
        if limit is None:
            self.held = 0
        elif self.limit is None:
            self.held = sum(holder.inflight_payload_bytes() for holder in self.holders)
        self.limit = limit
        if self.waiting:
            self.wake(now)

    def wake(self, now: float) -> None:
        """Dispatch every waiting group again, in the order they wait (each waits again if
        it still does not fit). The group woken first, if it waits again, goes last: the
        groups take turns at being first to the room."""
        waiting = list(self.waiting)
        if not waiting:
            return
        self.waiting.clear()
        for group in waiting:
            group.wake(now)
        first = waiting[0]
        if first in self.waiting and len(self.waiting) > 1:
            del self.waiting[first]
            self.waiting[first] = None


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

    __slots__ = (
        "_buckets",
        "_cache_meters",
        "_config",
        "_defaults",
        "_feeds",
        "_inflight",
        "_overrides",
        "_prune_at",
        "cache_limited",
        "connections",
        "refused",
    )

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config
        self._defaults: dict[str, int | None] = {
            quota: getattr(config, f"tenant_{quota}") for quota in QUOTA_KEYS
        }
        self._overrides: dict[str, dict[str, int]] = {}
        self.cache_limited = self._defaults[MAX_CACHE_BYTES] is not None
        """Whether some tenant's cache bytes are limited (a put asks
        :meth:`cache_admission` only then: the put path of a broker without the quota pays
        one attribute test)."""
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._feeds: dict[tuple[str, str], list[Feed]] = {}
        self._prune_at: dict[tuple[str, str], int] = {}
        self.refused: dict[tuple[str, str], int] = {}
        """Refusals per ``(tenant, quota)`` since start."""
        self.connections: dict[str, int] = {}
        """Open connections per tenant (tenants with none are absent)."""
        self._cache_meters: dict[str, TenantCacheMeter] = {}
        self._inflight: dict[str, InflightBytes] = {}

    def limit(self, tenant: str, quota: str) -> int | None:
        """The limit of one quota for one tenant (None: unlimited)."""
        overrides = self._overrides.get(tenant)
        if overrides is not None:
            override = overrides.get(quota)
            if override is not None:
                return override
        return self._defaults[quota]

    def set_tenant(self, tenant: str, settings: Mapping[str, Any] | None) -> None:
        """Apply a tenant record's settings (None: the tenant went).

        A changed limit takes effect at once: the tenant's buckets start again, full, at
        the new rate on their next use. A gone tenant's buckets, meters and feed lists go
        with it (those still in use, by resources not yet removed here, stay), so memory
        does not grow with tenant churn.
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
        self.cache_limited = self._defaults[MAX_CACHE_BYTES] is not None or any(
            MAX_CACHE_BYTES in o for o in self._overrides.values()
        )
        for quota in QUOTA_KEYS:
            self._buckets.pop((tenant, quota), None)
        if settings is None:
            self._forget(tenant)

    def _forget(self, tenant: str) -> None:
        cache = self._cache_meters.get(tenant)
        if cache is not None and cache.held == 0:
            del self._cache_meters[tenant]
        inflight = self._inflight.get(tenant)
        if inflight is not None and not inflight.holders:
            del self._inflight[tenant]
        for quota in (MAX_SUBSCRIPTIONS, MAX_CONSUMERS):
            if (tenant, quota) in self._feeds:
                self._prune((tenant, quota))

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

    # -- subscriptions and consumers -------------------------------------------------------

    def check_feeds(self, tenant: str, quota: str) -> None:
        """Refuse opening one more subscription (``quota`` :data:`MAX_SUBSCRIPTIONS`) or
        consumer (:data:`MAX_CONSUMERS`) on ``tenant``'s resources when its live ones are at
        the limit.

        Raises:
            LimitExceeded: at the limit; nothing is counted. ``details``: ``tenant``,
                ``quota``, ``limit``.
        """
        limit = self.limit(tenant, quota)
        if limit is None:
            return
        key = (tenant, quota)
        feeds = self._feeds.get(key)
        if feeds is None or len(feeds) < limit or self._prune(key) < limit:
            return
        self.refused[key] = self.refused.get(key, 0) + 1
        what = "subscriptions" if quota == MAX_SUBSCRIPTIONS else "consumers"
        raise LimitExceeded(
            f"tenant {tenant} has {limit} live {what}, its {quota} quota",
            details={"tenant": tenant, "quota": quota, "limit": limit},
        )

    def add_feed(self, tenant: str, quota: str, feed: Feed) -> None:
        """Count a feed :meth:`check_feeds` admitted; it is let go once ``feed.closed``."""
        key = (tenant, quota)
        feeds = self._feeds.get(key)
        if feeds is None:
            feeds = self._feeds[key] = []
        feeds.append(feed)
        if len(feeds) >= self._prune_at.get(key, _FIRST_PRUNE):
            self._prune(key)

    def feeds(self, tenant: str, quota: str) -> int:
        """The live subscriptions (consumers) on ``tenant``'s resources."""
        key = (tenant, quota)
        return self._prune(key) if key in self._feeds else 0

    def _prune(self, key: tuple[str, str]) -> int:
        live = [feed for feed in self._feeds[key] if not feed.closed]
        if live:
            self._feeds[key] = live
            self._prune_at[key] = max(2 * len(live), _FIRST_PRUNE)
        else:
            del self._feeds[key]
            self._prune_at.pop(key, None)
        return len(live)

    # -- cache bytes --------------------------------------------------------------------

    def cache_meter(self, tenant: str, budget: MemoryMeter) -> TenantCacheMeter:
        """The meter the caches of ``tenant`` charge (forwarding to ``budget``)."""
        meter = self._cache_meters.get(tenant)
        if meter is None:
            meter = self._cache_meters[tenant] = TenantCacheMeter(budget)
        return meter

    @property
    def cache_bytes(self) -> dict[str, int]:
        """Key + value bytes of every tenant's cache entries (tenants with none are
        absent)."""
        return {tenant: m.held for tenant, m in self._cache_meters.items() if m.held}

    def cache_admission(self, tenant: str) -> Callable[[int], None] | None:
        """What a cache put in ``tenant`` asks before it grows the entries
        (:meth:`check_cache_put` for the tenant), or None when its cache bytes are
        unlimited."""
        if self.limit(tenant, MAX_CACHE_BYTES) is None:
            return None
        return partial(self.check_cache_put, tenant)

    def check_cache_put(self, tenant: str, growth: int) -> None:
        """Refuse a cache put that would make ``tenant``'s entries ``growth`` bytes larger
        than its ``max_cache_bytes`` allows (a put that does not grow them always passes).

        Raises:
            LimitExceeded: over the limit; ``details``: ``tenant``, ``quota``, ``limit``,
                ``used`` (the bytes held now) and ``bytes`` (the growth asked for).
        """
        if growth <= 0:
            return
        limit = self.limit(tenant, MAX_CACHE_BYTES)
        if limit is None:
            return
        meter = self._cache_meters.get(tenant)
        used = 0 if meter is None else meter.held
        if used + growth <= limit:
            return
        key = (tenant, MAX_CACHE_BYTES)
        self.refused[key] = self.refused.get(key, 0) + 1
        raise LimitExceeded(
            f"tenant {tenant}'s caches hold {used} bytes: {growth} more would exceed its "
            f"{MAX_CACHE_BYTES} quota",
            details={
                "tenant": tenant,
                "quota": MAX_CACHE_BYTES,
                "limit": limit,
                "used": used,
                "bytes": growth,
            },
        )

    # -- in-flight bytes ----------------------------------------------------------------

    def inflight(self, tenant: str) -> InflightBytes:
        """The in-flight bytes every queue of ``tenant`` charges (one per tenant, kept while
        the engine runs: tenants are bounded by ``max_tenants``)."""
        meter = self._inflight.get(tenant)
        if meter is None:
            meter = self._inflight[tenant] = InflightBytes(self.limit(tenant, MAX_INFLIGHT_BYTES))
        return meter

    def apply_inflight_limit(self, tenant: str, now: float) -> None:
        """Give ``tenant``'s in-flight bytes its current limit (after :meth:`set_tenant`);
        groups held back by a lower one are dispatched again."""
        meter = self._inflight.get(tenant)
        if meter is not None:
            meter.set_limit(self.limit(tenant, MAX_INFLIGHT_BYTES), now)

    @property
    def held_back(self) -> dict[tuple[str, str], int]:
        """Times a consumer group held deliveries back, per ``(tenant, quota)``."""
        return {
            (tenant, MAX_INFLIGHT_BYTES): meter.held_back
            for tenant, meter in self._inflight.items()
            if meter.held_back
        }

    # -- figures ------------------------------------------------------------------------

    def usage(self) -> dict[tuple[str, str], int]:
        """What each tenant holds now, per ``(tenant, quota)``: connections, subscriptions,
        consumers, cache bytes and in-flight bytes (only non-zero figures)."""
        used = {(tenant, MAX_CONNECTIONS): n for tenant, n in self.connections.items()}
        for key in list(self._feeds):
            count = self._prune(key)
            if count:
                used[key] = count
        used.update(((t, MAX_CACHE_BYTES), n) for t, n in self.cache_bytes.items())
        used.update(((t, MAX_INFLIGHT_BYTES), m.held) for t, m in self._inflight.items() if m.held)
        return used

    def _bucket(self, tenant: str, quota: str, now: float) -> TokenBucket | None:
        bucket = self._buckets.get((tenant, quota))
        if bucket is None:
            rate = self.limit(tenant, quota)
            if rate is None:
                return None
            bucket = self._buckets[(tenant, quota)] = TokenBucket(rate, rate, now)
        return bucket


class TenantCacheMeter:
    """What one tenant's caches charge (all of them, one meter): counts their entry bytes
    and forwards every change to the engine's memory budget.

    Args:
        budget: the engine's memory budget.
    """

    __slots__ = ("_budget", "held")

    def __init__(self, budget: MemoryMeter) -> None:
        self._budget = budget
        self.held = 0
        """Key + value bytes of the tenant's cache entries."""

    def adjust(self, delta: int) -> None:
        """The tenant's caches now hold ``delta`` more bytes (fewer when negative)."""
        self.held += delta
        self._budget.adjust(delta)


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
