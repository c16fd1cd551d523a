"""Metadata: tenants, namespaces and the settings of streams, queues and caches.

Theory of operation
-------------------
Resources form a tree: tenants hold namespaces, and a namespace holds streams, queues and
caches (each kind has its own names, so a stream and a queue may share a name). Every
resource is a :class:`ResourceRecord`: its path, its validated settings as a plain mapping
(so that it serialises as-is into the wire's ``AdminResource`` and, later, into etcd), a
``uid`` that tells a re-created resource from the deleted one of the same name, and a
``generation`` that grows with every update.

Records live in a :class:`MetadataStore`, a deliberately small interface shaped like a
key-value store with atomic create-if-absent, compare-and-swap by generation, and delete, so
that a later issue can put it in etcd; :class:`MemoryMetadataStore` implements it in memory.
Nothing here assumes it is the only writer: the :class:`Catalog` checks parents, names, count
limits and settings, then performs one conditional store operation, and the broker builds its
in-memory engines lazily from whatever records the store holds.

Settings are validated per kind by a *schema*: a function
``(new_settings, current_settings_or_None) -> full_settings`` that raises
:class:`~felix_core.errors.InvalidArgument`. Stream settings are :class:`StreamSettings`
(defined here); the queue and cache engines provide their own schemas, which the broker
registers.

Deleting a tenant or a namespace that still holds anything is refused with ``Conflict``;
delete the contents first. (The broker ends the subscriptions and consumers of a deleted
stream, queue or cache with reason ``deleted``.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from felix_core.errors import AlreadyExists, Conflict, InvalidArgument, LimitExceeded, NotFound
from felix_core.limits import BrokerConfig
from felix_core.log import Retention
from felix_core.names import validate_name

__all__ = [
    "BatchPolicy",
    "Catalog",
    "Durability",
    "Kind",
    "MemoryMetadataStore",
    "MetadataStore",
    "ResourceRecord",
    "SettingsSchema",
    "SlowConsumerPolicy",
    "StreamSettings",
    "choice_setting",
    "int_setting",
    "required_int",
]

MAX_INT = (1 << 63) - 1


class Kind(StrEnum):
    """The kinds of resource (same values as the wire's ``ResourceKind``)."""

    TENANT = "tenant"
    NAMESPACE = "namespace"
    STREAM = "stream"
    QUEUE = "queue"
    CACHE = "cache"


LEAF_KINDS = (Kind.STREAM, Kind.QUEUE, Kind.CACHE)
"""The kinds that live in a namespace."""


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
    """Storage class of a stream (the durable log is a later issue)."""

    EPHEMERAL = "ephemeral"
    DURABLE = "durable"


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

    KEYS = (
        "retention_max_records",
        "retention_max_bytes",
        "retention_max_age_ms",
        "slow_consumer",
        "batch_max_events",
        "batch_max_bytes",
        "batch_max_delay_us",
        "durability",
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
            max_age_ms=int_setting(merged, "retention_max_age_ms", lo=1),
        )
        batch = BatchPolicy(
            max_events=required_int(merged, "batch_max_events", lo=1, hi=1 << 20),
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
    )


def stream_schema(config: BrokerConfig) -> SettingsSchema:
    """The settings schema of streams under ``config``.

    Args:
        config: the engine configuration.

    Returns:
        A schema: ``(new, current_or_None) -> full settings mapping``.
    """

    def schema(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
        base = StreamSettings.from_mapping(current, config) if current is not None else None
        return StreamSettings.from_mapping(new, config, base).to_mapping()

    return schema


def _description_schema(kind: str) -> SettingsSchema:
    def schema(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
        check_known(kind, new, ("description",))
        merged = {"description": "", **(current or {}), **new}
        if not isinstance(merged["description"], str) or len(merged["description"]) > 1024:
            raise InvalidArgument(
                "description must be a string of at most 1024 characters",
                details={"field": "description"},
            )
        return merged

    return schema


# -- records and the store -----------------------------------------------------------------

SettingsSchema = Callable[[Mapping[str, Any], Mapping[str, Any] | None], dict[str, Any]]
"""Validates settings: ``(new, current_or_None) -> full settings``; raises InvalidArgument."""

Path = tuple[str, str, str]
"""``(tenant, namespace, name)``; unused parts are empty strings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceRecord:
    """One resource as the metadata store holds it."""

    kind: Kind
    """What it is."""
    tenant: str
    """The tenant (the tenant's own name for a tenant)."""
    namespace: str = ""
    """The namespace; empty for a tenant."""
    name: str = ""
    """The resource name; empty for tenants and namespaces."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The full validated settings."""
    uid: int = 0
    """Unique for the store's lifetime; a re-created resource gets a new one."""
    generation: int = 1
    """1 at creation, +1 on every update."""
    created_ms: int = 0
    """Creation time, ms since the epoch."""
    updated_ms: int = 0
    """Last update time, ms since the epoch."""

    @property
    def path(self) -> Path:
        """``(tenant, namespace, name)``."""
        return (self.tenant, self.namespace, self.name)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain mapping (the wire's ``AdminResource.resource``)."""
        return {
            "kind": self.kind.value,
            "tenant": self.tenant,
            "namespace": self.namespace,
            "name": self.name,
            "settings": dict(self.settings),
            "uid": self.uid,
            "generation": self.generation,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }


class MetadataStore(Protocol):
    """Where resource records live. In memory now; etcd later."""

    def get(self, kind: Kind, path: Path) -> ResourceRecord | None:
        """The record at ``path``, or None."""
        ...

    def list(self, kind: Kind, tenant: str = "", namespace: str = "") -> list[ResourceRecord]:
        """The records of ``kind`` under a parent, sorted by path."""
        ...

    def create(self, record: ResourceRecord) -> None:
        """Store a new record; raise AlreadyExists when its path is taken."""
        ...

    def replace(self, record: ResourceRecord, expected_generation: int) -> None:
        """Replace a record if its stored generation is ``expected_generation``.

        Raises NotFound when absent and Conflict when the generation differs.
        """
        ...

    def delete(self, kind: Kind, path: Path) -> ResourceRecord:
        """Remove and return a record; raise NotFound when absent."""
        ...

    def next_uid(self) -> int:
        """A fresh uid (a counter; etcd would use its revision)."""
        ...


def _parent(kind: Kind, path: Path) -> tuple[str, str]:
    tenant, namespace, _ = path
    if kind is Kind.TENANT:
        return ("", "")
    if kind is Kind.NAMESPACE:
        return (tenant, "")
    return (tenant, namespace)


class MemoryMetadataStore:
    """A :class:`MetadataStore` in two dicts."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._records: dict[tuple[Kind, Path], ResourceRecord] = {}
        self._children: dict[tuple[Kind, str, str], dict[Path, ResourceRecord]] = {}
        self._uid = 0

    def get(self, kind: Kind, path: Path) -> ResourceRecord | None:
        """The record at ``path``, or None."""
        return self._records.get((kind, path))

    def list(self, kind: Kind, tenant: str = "", namespace: str = "") -> list[ResourceRecord]:
        """The records of ``kind`` under ``(tenant, namespace)``, sorted by path."""
        children = self._children.get((kind, tenant, namespace), {})
        return [children[p] for p in sorted(children)]

    def create(self, record: ResourceRecord) -> None:
        """Store a new record.

        Raises:
            AlreadyExists: a record of that kind exists at that path.
        """
        key = (record.kind, record.path)
        if key in self._records:
            raise AlreadyExists(
                f"{record.kind.value} {'/'.join(p for p in record.path if p)} exists already"
            )
        self._records[key] = record
        parent = _parent(record.kind, record.path)
        self._children.setdefault((record.kind, *parent), {})[record.path] = record

    def replace(self, record: ResourceRecord, expected_generation: int) -> None:
        """Replace a record whose stored generation is ``expected_generation``.

        Raises:
            NotFound: no record at that path.
            Conflict: the stored generation differs (a concurrent update).
        """
        key = (record.kind, record.path)
        current = self._records.get(key)
        if current is None:
            raise NotFound(f"{record.kind.value} not found")
        if current.generation != expected_generation:
            raise Conflict(
                "the resource was changed concurrently",
                details={"generation": current.generation},
            )
        self._records[key] = record
        self._children[(record.kind, *_parent(record.kind, record.path))][record.path] = record

    def delete(self, kind: Kind, path: Path) -> ResourceRecord:
        """Remove and return a record.

        Raises:
            NotFound: no record at that path.
        """
        record = self._records.pop((kind, path), None)
        if record is None:
            raise NotFound(f"{kind.value} not found")
        parent_key = (kind, *_parent(kind, path))
        children = self._children[parent_key]
        del children[path]
        if not children:
            del self._children[parent_key]
        return record

    def next_uid(self) -> int:
        """A fresh uid from a counter."""
        self._uid += 1
        return self._uid


# -- the catalog ---------------------------------------------------------------------------


class Catalog:
    """Validated create / describe / list / update / delete over a :class:`MetadataStore`."""

    def __init__(
        self,
        store: MetadataStore,
        config: BrokerConfig,
        schemas: Mapping[Kind, SettingsSchema] | None = None,
    ) -> None:
        """Create a catalog.

        Args:
            store: where records live.
            config: count limits and stream defaults.
            schemas: settings schemas by kind; tenants, namespaces and streams have
                built-in ones, queues and caches accept no settings unless given one.
        """
        self.store = store
        self.config = config
        self.schemas: dict[Kind, SettingsSchema] = {
            Kind.TENANT: _description_schema("tenant"),
            Kind.NAMESPACE: _description_schema("namespace"),
            Kind.STREAM: stream_schema(config),
            Kind.QUEUE: _description_schema("queue"),
            Kind.CACHE: _description_schema("cache"),
        }
        if schemas:
            self.schemas.update(schemas)

    @staticmethod
    def parse_kind(kind: str) -> Kind:
        """Check a kind name.

        Raises:
            InvalidArgument: not one of :class:`Kind`.
        """
        try:
            return Kind(kind)
        except ValueError:
            raise InvalidArgument(
                f"unknown resource kind {kind!r}", details={"field": "kind"}
            ) from None

    @staticmethod
    def check_path(kind: Kind, tenant: str, namespace: str, name: str) -> Path:
        """Validate the path parts a kind uses; the unused ones must be empty.

        Returns:
            ``(tenant, namespace, name)``.

        Raises:
            InvalidArgument: a bad name, or a non-empty unused part.
        """
        validate_name("tenant", tenant)
        if kind is Kind.TENANT:
            used = 1
        elif kind is Kind.NAMESPACE:
            used = 2
        else:
            used = 3
        if used >= 2:
            validate_name("namespace", namespace)
        elif namespace:
            raise InvalidArgument("a tenant path has no namespace", details={"field": "namespace"})
        if used == 3:
            validate_name(kind.value, name)
        elif name:
            raise InvalidArgument(f"a {kind.value} path has no name", details={"field": "name"})
        return (tenant, namespace, name)

    def _require_parent(self, kind: Kind, path: Path) -> None:
        tenant, namespace, _ = path
        if kind is Kind.TENANT:
            return
        if self.store.get(Kind.TENANT, (tenant, "", "")) is None:
            raise NotFound(f"tenant {tenant} not found", details={"kind": "tenant"})
        if kind is Kind.NAMESPACE:
            return
        if self.store.get(Kind.NAMESPACE, (tenant, namespace, "")) is None:
            raise NotFound(
                f"namespace {tenant}/{namespace} not found", details={"kind": "namespace"}
            )

    def _check_count(self, kind: Kind, path: Path) -> None:
        tenant, namespace, _ = path
        store = self.store
        if kind is Kind.TENANT:
            count, limit = len(store.list(Kind.TENANT)), self.config.max_tenants
        elif kind is Kind.NAMESPACE:
            count = len(store.list(Kind.NAMESPACE, tenant))
            limit = self.config.max_namespaces_per_tenant
        else:
            count = sum(len(store.list(k, tenant, namespace)) for k in LEAF_KINDS)
            limit = self.config.max_resources_per_namespace
        if count >= limit:
            raise LimitExceeded(
                f"at most {limit} {kind.value}s may exist here", details={"limit": limit}
            )

    def create(
        self,
        kind: Kind,
        path: Path,
        settings: Mapping[str, Any],
        now: float,
    ) -> ResourceRecord:
        """Create a resource.

        Args:
            kind: what to create.
            path: ``(tenant, namespace, name)`` with unused parts empty.
            settings: the wire settings (validated by the kind's schema).
            now: the current time.

        Returns:
            The stored record.

        Raises:
            InvalidArgument: a bad path or bad settings.
            NotFound: the parent tenant or namespace does not exist.
            AlreadyExists: the path is taken.
            LimitExceeded: the parent holds as many as the config allows.
        """
        path = self.check_path(kind, *path)
        self._require_parent(kind, path)
        if self.store.get(kind, path) is not None:
            raise AlreadyExists(f"{kind.value} {'/'.join(p for p in path if p)} exists already")
        self._check_count(kind, path)
        full = self.schemas[kind](settings, None)
        now_ms = int(now * 1000)
        record = ResourceRecord(
            kind=kind,
            tenant=path[0],
            namespace=path[1],
            name=path[2],
            settings=full,
            uid=self.store.next_uid(),
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        self.store.create(record)
        return record

    def describe(self, kind: Kind, path: Path) -> ResourceRecord:
        """Look a resource up.

        Raises:
            InvalidArgument: a bad path.
            NotFound: no such resource.
        """
        path = self.check_path(kind, *path)
        record = self.store.get(kind, path)
        if record is None:
            raise NotFound(
                f"{kind.value} {'/'.join(p for p in path if p)} not found",
                details={"kind": kind.value},
            )
        return record

    def list(self, kind: Kind, tenant: str = "", namespace: str = "") -> list[ResourceRecord]:
        """List the resources of a kind under a parent.

        Args:
            kind: the kind listed.
            tenant: the tenant (ignored for tenants).
            namespace: the namespace (only for streams, queues and caches).

        Returns:
            The records, sorted by path.

        Raises:
            InvalidArgument: a bad parent name.
            NotFound: the parent does not exist.
        """
        if kind is Kind.TENANT:
            return self.store.list(Kind.TENANT)
        parent_kind = Kind.TENANT if kind is Kind.NAMESPACE else Kind.NAMESPACE
        parent = self.describe(parent_kind, (tenant, namespace if kind in LEAF_KINDS else "", ""))
        return self.store.list(kind, parent.tenant, parent.namespace)

    def update(
        self, kind: Kind, path: Path, settings: Mapping[str, Any], now: float
    ) -> ResourceRecord:
        """Change some settings of a resource.

        Args:
            kind: the kind.
            path: the resource.
            settings: the settings to change; absent ones keep their value.
            now: the current time.

        Returns:
            The updated record (``generation`` + 1).

        Raises:
            InvalidArgument: a bad path or bad settings.
            NotFound: no such resource.
            Conflict: a concurrent update won.
        """
        current = self.describe(kind, path)
        full = self.schemas[kind](settings, current.settings)
        record = replace(
            current,
            settings=full,
            generation=current.generation + 1,
            updated_ms=int(now * 1000),
        )
        self.store.replace(record, current.generation)
        return record

    def delete(self, kind: Kind, path: Path) -> ResourceRecord:
        """Delete a resource.

        Returns:
            The deleted record.

        Raises:
            InvalidArgument: a bad path.
            NotFound: no such resource.
            Conflict: a tenant or namespace that still holds resources.
        """
        record = self.describe(kind, path)
        tenant, namespace, _ = record.path
        if kind is Kind.TENANT and self.store.list(Kind.NAMESPACE, tenant):
            raise Conflict(f"tenant {tenant} still has namespaces")
        if kind is Kind.NAMESPACE and any(
            self.store.list(k, tenant, namespace) for k in LEAF_KINDS
        ):
            raise Conflict(f"namespace {tenant}/{namespace} is not empty")
        return self.store.delete(kind, record.path)
