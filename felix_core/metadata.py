"""Metadata: tenants, namespaces and the settings of streams, queues and caches.

Theory of operation
-------------------
Resources form a tree: tenants hold namespaces, and a namespace holds streams, queues and
caches (each kind has its own names, so a stream and a queue may share a name). Every
resource is a :class:`ResourceRecord`: its path, its validated settings as a plain mapping
(so that it serialises as-is into the wire's ``AdminResource`` and into a store), a ``uid``
that tells a re-created resource from the deleted one of the same name, and a
``generation`` that grows with every update.

The engine does no I/O, so it never asks a store for a record. It keeps a
:class:`MetadataView`: the records it has been *fed* (``Broker.metadata_changed``), which is
all it reads. An admin request is validated against the view by the :class:`Catalog`
(names, parents, count limits, settings) and becomes a :class:`WriteOp` on one record: the
engine emits it (:class:`~felix_core.events.MetadataWrite`) and completes the request when
the store's answer comes back (``Broker.metadata_written``), at once or later. A store is
shaped like a key-value store with create-if-absent, compare-and-swap by generation and
delete, so that an etcd transaction can implement it; :class:`MemoryMetadataStore` is the
in-memory one, applied by the glue at once. Whoever writes (this broker or another), the
store reports every change and the glue feeds it to every engine: nothing assumes one
writer, and a store's checks (a name taken meanwhile, a concurrent update) are the last
word.

Settings are validated per kind by a *schema* from :mod:`felix_core.settings`: a function
``(path, new_settings, current_settings_or_None) -> full_settings`` that raises
:class:`~felix_core.errors.InvalidArgument`.

A tenant also holds the RBAC *roles* and *bindings* of its principals
(:data:`ACCESS_KINDS`, path ``(tenant, "", name)``, settings checked by
:mod:`felix_core.rbac`).

Deleting a tenant or a namespace that still holds anything is refused with ``Conflict``;
delete the contents first. (The broker ends the subscriptions and consumers of a deleted
stream, queue or cache with reason ``deleted``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from felix_core.errors import AlreadyExists, Conflict, InvalidArgument, LimitExceeded, NotFound
from felix_core.limits import BrokerConfig
from felix_core.names import validate_name
from felix_core.quotas import tenant_schema
from felix_core.rbac import binding_schema, role_schema
from felix_core.settings import (
    Path,
    SettingsSchema,
    cache_schema,
    description_schema,
    queue_schema,
    stream_schema,
)

__all__ = [
    "ACCESS_KINDS",
    "LEAF_KINDS",
    "MAX_ACCESS_RECORDS",
    "Catalog",
    "Kind",
    "MemoryMetadataStore",
    "MetadataChange",
    "MetadataStore",
    "MetadataView",
    "Path",
    "PreparedWrite",
    "ResourceRecord",
    "StagedMetadataStore",
    "WriteOp",
]


class Kind(StrEnum):
    """The kinds of resource (same values as the wire's ``ResourceKind``)."""

    TENANT = "tenant"
    NAMESPACE = "namespace"
    STREAM = "stream"
    QUEUE = "queue"
    CACHE = "cache"
    ROLE = "role"
    BINDING = "binding"


LEAF_KINDS = (Kind.STREAM, Kind.QUEUE, Kind.CACHE)
"""The kinds that live in a namespace."""
ACCESS_KINDS = (Kind.ROLE, Kind.BINDING)
"""The kinds that live directly in a tenant, path ``(tenant, "", name)``: RBAC roles and
bindings (:mod:`felix_core.rbac`)."""
MAX_ACCESS_RECORDS = 1024
"""Most roles, and most bindings, one tenant may hold."""

# -- records -------------------------------------------------------------------------------


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


class WriteOp(StrEnum):
    """A change the engine asks its metadata store to make."""

    CREATE = "create"
    """Store a new record; the store gives it its ``uid`` (refused: AlreadyExists)."""
    REPLACE = "replace"
    """Replace a record whose stored generation is the expected one (refused: NotFound,
    Conflict)."""
    DELETE = "delete"
    """Remove a record (refused: NotFound)."""


MetadataChange = tuple[Kind, Path, "ResourceRecord | None"]
"""One change a store reports: the record now at ``(kind, path)``, or None (deleted)."""


def _parent(kind: Kind, path: Path) -> tuple[str, str]:
    tenant, namespace, _ = path
    if kind is Kind.TENANT:
        return ("", "")
    if kind is Kind.NAMESPACE or kind in ACCESS_KINDS:
        return (tenant, "")
    return (tenant, namespace)


class MetadataView:
    """The records the engine has been fed: what it validates against and describes.

    Fed with :meth:`apply` (one change at a time, idempotent: a record the view holds
    already, same uid and generation, changes nothing; an older generation of the same
    resource is ignored).
    """

    def __init__(self) -> None:
        """Create an empty view."""
        self._records: dict[tuple[Kind, Path], ResourceRecord] = {}
        self._children: dict[tuple[Kind, str, str], dict[Path, ResourceRecord]] = {}

    def get(self, kind: Kind, path: Path) -> ResourceRecord | None:
        """The record at ``path``, or None."""
        return self._records.get((kind, path))

    def records(self) -> list[ResourceRecord]:
        """Every record the view holds."""
        return list(self._records.values())

    def list(self, kind: Kind, tenant: str = "", namespace: str = "") -> list[ResourceRecord]:
        """The records of ``kind`` under ``(tenant, namespace)``, sorted by path."""
        children = self._children.get((kind, tenant, namespace), {})
        return [children[p] for p in sorted(children)]

    def count(self, kind: Kind, tenant: str = "", namespace: str = "") -> int:
        """How many records of ``kind`` are under ``(tenant, namespace)``."""
        return len(self._children.get((kind, tenant, namespace), ()))

    def apply(self, kind: Kind, path: Path, record: ResourceRecord | None) -> bool:
        """Take one change in. Returns whether the view changed."""
        key = (kind, path)
        current = self._records.get(key)
        parent_key = (kind, *_parent(kind, path))
        if record is None:
            if current is None:
                return False
            del self._records[key]
            children = self._children[parent_key]
            del children[path]
            if not children:
                del self._children[parent_key]
            return True
        if (
            current is not None
            and current.uid == record.uid
            and record.generation <= current.generation
        ):
            return False
        self._records[key] = record
        self._children.setdefault(parent_key, {})[path] = record
        return True


class MetadataStore(Protocol):
    """Where resource records live: applied by the glue, never called by the engine.

    In memory now (:class:`MemoryMetadataStore`); a file-backed store or an etcd view later.
    A store applies :class:`WriteOp` changes atomically with their condition, and reports
    every change (its own writes and other writers') for the glue to feed the engines.
    """

    def apply(
        self, op: WriteOp, record: ResourceRecord, expected_generation: int | None
    ) -> ResourceRecord:
        """Make one change and return the record as stored (a create gets its ``uid``; a
        delete returns the deleted record).

        Raises:
            AlreadyExists: a create whose path is taken.
            NotFound: a replace or delete of a record that is not there.
            Conflict: a replace whose stored generation differs from the expected one.
        """
        ...

    def records(self) -> list[ResourceRecord]:
        """Every record, parents before children (what an engine is fed at start)."""
        ...

    def take_changes(self) -> list[MetadataChange]:
        """The changes since the last call, in order."""
        ...


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A checked change, not yet written (:meth:`StagedMetadataStore.prepare`)."""

    op: WriteOp
    record: ResourceRecord
    """The record as it will be stored (a create's with its new uid)."""
    current: ResourceRecord | None
    """The record stored now (None for a create)."""
    uid_limit: int | None = None
    """A new uid high-water mark the store writes first (None: the current one covers it)."""


@runtime_checkable
class StagedMetadataStore(MetadataStore, Protocol):
    """A :class:`MetadataStore` whose writes can be made in three steps, so that the glue
    runs the slow middle one (files, fsyncs) off the event loop. At most one change is
    between its :meth:`prepare` and its :meth:`commit` at a time."""

    def prepare(
        self, op: WriteOp, record: ResourceRecord, expected_generation: int | None
    ) -> PreparedWrite:
        """Check one change (the checks of :meth:`MetadataStore.apply`); nothing changes.

        Raises:
            AlreadyExists, NotFound, Conflict: as :meth:`MetadataStore.apply`.
        """
        ...

    def write(self, prepared: PreparedWrite) -> None:
        """Make the change durable (thread-safe: may run on a worker thread).

        Raises:
            StorageFull: the disk is full (retryable; commit nothing).
            StorageFailed: any other failure (commit nothing).
        """
        ...

    def commit(self, prepared: PreparedWrite) -> ResourceRecord:
        """Apply a written change to the store's state and its changes; return the record
        as stored (a delete: the deleted record)."""
        ...


class MemoryMetadataStore:
    """A :class:`MetadataStore` in one dict (and a list of the changes not yet taken)."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._records: dict[tuple[Kind, Path], ResourceRecord] = {}
        self._changes: list[MetadataChange] = []
        self._uid = 0

    def get(self, kind: Kind, path: Path) -> ResourceRecord | None:
        """The record at ``path``, or None."""
        return self._records.get((kind, path))

    def apply(
        self, op: WriteOp, record: ResourceRecord, expected_generation: int | None
    ) -> ResourceRecord:
        """Make one change; see :meth:`MetadataStore.apply`."""
        key = (record.kind, record.path)
        current = self._records.get(key)
        name = f"{record.kind.value} {'/'.join(p for p in record.path if p)}"
        if op is WriteOp.CREATE:
            if current is not None:
                raise AlreadyExists(f"{name} exists already")
            self._uid += 1
            record = replace(record, uid=self._uid)
        elif current is None:
            raise NotFound(f"{name} not found", details={"kind": record.kind.value})
        elif op is WriteOp.REPLACE and current.generation != expected_generation:
            raise Conflict(
                "the resource was changed concurrently",
                details={"generation": current.generation},
            )
        if op is WriteOp.DELETE:
            assert current is not None
            del self._records[key]
            self._changes.append((record.kind, record.path, None))
            return current
        self._records[key] = record
        self._changes.append((record.kind, record.path, record))
        return record

    def records(self) -> list[ResourceRecord]:
        """Every record, parents before children."""
        order = {Kind.TENANT: 0, Kind.NAMESPACE: 1}
        return sorted(self._records.values(), key=lambda r: (order.get(r.kind, 2), r.path))

    def take_changes(self) -> list[MetadataChange]:
        """The changes since the last call, in order."""
        out, self._changes = self._changes, []
        return out


# -- the catalog ---------------------------------------------------------------------------


class Catalog:
    """Admin requests validated against a :class:`MetadataView`: each write becomes the
    record to store (the store's answer is the last word); reads answer from the view."""

    def __init__(
        self,
        view: MetadataView,
        config: BrokerConfig,
        schemas: Mapping[Kind, SettingsSchema] | None = None,
    ) -> None:
        """Create a catalog.

        Args:
            view: the records the engine was fed.
            config: count limits and stream defaults.
            schemas: settings schemas by kind, replacing the built-in ones from
                :mod:`felix_core.settings`.
        """
        self.view = view
        self.config = config
        self.schemas: dict[Kind, SettingsSchema] = {
            Kind.TENANT: tenant_schema(),
            Kind.NAMESPACE: description_schema("namespace"),
            Kind.STREAM: stream_schema(config),
            Kind.QUEUE: queue_schema(config),
            Kind.CACHE: cache_schema(config),
            Kind.ROLE: role_schema(),
            Kind.BINDING: binding_schema(),
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
        if used >= 2 and kind not in ACCESS_KINDS:
            validate_name("namespace", namespace)
        elif namespace:
            raise InvalidArgument(
                f"a {kind.value} path has no namespace", details={"field": "namespace"}
            )
        if used == 3:
            validate_name(kind.value, name)
        elif name:
            raise InvalidArgument(f"a {kind.value} path has no name", details={"field": "name"})
        return (tenant, namespace, name)

    def _require_parent(self, kind: Kind, path: Path) -> None:
        tenant, namespace, _ = path
        if kind is Kind.TENANT:
            return
        if self.view.get(Kind.TENANT, (tenant, "", "")) is None:
            raise NotFound(f"tenant {tenant} not found", details={"kind": "tenant"})
        if kind is Kind.NAMESPACE or kind in ACCESS_KINDS:
            return
        if self.view.get(Kind.NAMESPACE, (tenant, namespace, "")) is None:
            raise NotFound(
                f"namespace {tenant}/{namespace} not found", details={"kind": "namespace"}
            )

    def _check_count(self, kind: Kind, path: Path) -> None:
        tenant, namespace, _ = path
        view = self.view
        if kind is Kind.TENANT:
            count, limit = view.count(Kind.TENANT), self.config.max_tenants
            what = f"at most {limit} tenants may exist"
        elif kind is Kind.NAMESPACE:
            count = view.count(Kind.NAMESPACE, tenant)
            limit = self.config.max_namespaces_per_tenant
            what = f"at most {limit} namespaces may exist in tenant {tenant}"
        elif kind in ACCESS_KINDS:
            count, limit = view.count(kind, tenant), MAX_ACCESS_RECORDS
            what = f"at most {limit} {kind.value}s may exist in tenant {tenant}"
        else:
            count = sum(view.count(k, tenant, namespace) for k in LEAF_KINDS)
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
        """The record a create stores (``uid`` 0: the store gives it one).

        Args:
            kind: what to create.
            path: ``(tenant, namespace, name)`` with unused parts empty.
            settings: the wire settings (validated by the kind's schema).
            now: the current time.

        Returns:
            The record to store with :attr:`WriteOp.CREATE`.

        Raises:
            InvalidArgument: a bad path or bad settings.
            NotFound: the parent tenant or namespace does not exist.
            AlreadyExists: the path is taken.
            LimitExceeded: the parent holds as many as the config allows.
        """
        path = self.check_path(kind, *path)
        self._require_parent(kind, path)
        if self.view.get(kind, path) is not None:
            raise AlreadyExists(f"{kind.value} {'/'.join(p for p in path if p)} exists already")
        self._check_count(kind, path)
        full = self.schemas[kind](path, settings, None)
        now_ms = int(now * 1000)
        return ResourceRecord(
            kind=kind,
            tenant=path[0],
            namespace=path[1],
            name=path[2],
            settings=full,
            uid=0,
            created_ms=now_ms,
            updated_ms=now_ms,
        )

    def describe(self, kind: Kind, path: Path) -> ResourceRecord:
        """Look a resource up.

        Raises:
            InvalidArgument: a bad path.
            NotFound: no such resource.
        """
        path = self.check_path(kind, *path)
        record = self.view.get(kind, path)
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
            return self.view.list(Kind.TENANT)
        parent_kind = Kind.NAMESPACE if kind in LEAF_KINDS else Kind.TENANT
        parent = self.describe(parent_kind, (tenant, namespace if kind in LEAF_KINDS else "", ""))
        return self.view.list(kind, parent.tenant, parent.namespace)

    def update(
        self, kind: Kind, path: Path, settings: Mapping[str, Any], now: float
    ) -> ResourceRecord:
        """The record an update stores (with :attr:`WriteOp.REPLACE`, expecting the current
        generation: the returned record's ``generation`` minus one).

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
        """
        current = self.describe(kind, path)
        full = self.schemas[kind](current.path, settings, current.settings)
        return replace(
            current,
            settings=full,
            generation=current.generation + 1,
            updated_ms=int(now * 1000),
        )

    def delete(self, kind: Kind, path: Path) -> ResourceRecord:
        """The record a delete removes (with :attr:`WriteOp.DELETE`).

        Returns:
            The record to delete.

        Raises:
            InvalidArgument: a bad path.
            NotFound: no such resource.
            Conflict: a tenant or namespace that still holds resources.
        """
        record = self.describe(kind, path)
        tenant, namespace, _ = record.path
        if kind is Kind.TENANT:
            for child in (Kind.NAMESPACE, *ACCESS_KINDS):
                if self.view.count(child, tenant):
                    raise Conflict(f"tenant {tenant} still has {child.value}s")
        if kind is Kind.NAMESPACE and any(
            self.view.count(k, tenant, namespace) for k in LEAF_KINDS
        ):
            raise Conflict(f"namespace {tenant}/{namespace} is not empty")
        return record
