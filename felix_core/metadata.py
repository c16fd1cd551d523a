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

Settings are validated per kind by a *schema* from :mod:`felix_core.settings`: a function
``(path, new_settings, current_settings_or_None) -> full_settings`` that raises
:class:`~felix_core.errors.InvalidArgument`.

Deleting a tenant or a namespace that still holds anything is refused with ``Conflict``;
delete the contents first. (The broker ends the subscriptions and consumers of a deleted
stream, queue or cache with reason ``deleted``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from felix_core.errors import AlreadyExists, Conflict, InvalidArgument, LimitExceeded, NotFound
from felix_core.limits import BrokerConfig
from felix_core.names import validate_name
from felix_core.settings import (
    Path,
    SettingsSchema,
    cache_schema,
    description_schema,
    queue_schema,
    stream_schema,
)

__all__ = [
    "LEAF_KINDS",
    "Catalog",
    "Kind",
    "MemoryMetadataStore",
    "MetadataStore",
    "Path",
    "ResourceRecord",
]


class Kind(StrEnum):
    """The kinds of resource (same values as the wire's ``ResourceKind``)."""

    TENANT = "tenant"
    NAMESPACE = "namespace"
    STREAM = "stream"
    QUEUE = "queue"
    CACHE = "cache"


LEAF_KINDS = (Kind.STREAM, Kind.QUEUE, Kind.CACHE)
"""The kinds that live in a namespace."""

# -- records and the store -----------------------------------------------------------------


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
            schemas: settings schemas by kind, replacing the built-in ones from
                :mod:`felix_core.settings`.
        """
        self.store = store
        self.config = config
        self.schemas: dict[Kind, SettingsSchema] = {
            Kind.TENANT: description_schema("tenant"),
            Kind.NAMESPACE: description_schema("namespace"),
            Kind.STREAM: stream_schema(config),
            Kind.QUEUE: queue_schema(config),
            Kind.CACHE: cache_schema(config),
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
            what = f"at most {limit} tenants may exist"
        elif kind is Kind.NAMESPACE:
            count = len(store.list(Kind.NAMESPACE, tenant))
            limit = self.config.max_namespaces_per_tenant
            what = f"at most {limit} namespaces may exist in tenant {tenant}"
        else:
            count = sum(len(store.list(k, tenant, namespace)) for k in LEAF_KINDS)
            limit = self.config.max_resources_per_namespace
            what = (
                f"at most {limit} resources (streams, queues and caches together) may exist "
                f"in namespace {tenant}/{namespace}"
            )
        if count >= limit:
            raise LimitExceeded(what, details={"limit": limit})

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
        full = self.schemas[kind](path, settings, None)
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
        full = self.schemas[kind](current.path, settings, current.settings)
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
