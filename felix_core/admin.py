"""Resource metadata: the view the engine is fed, and the admin requests that write it.

Theory of operation
-------------------
The engine never calls a metadata store. It is *fed* every record that appears, changes
or goes (:meth:`Admin.changed`, whoever wrote it): the :class:`~felix_core.metadata.MetadataView`
follows, and so does the registry's partition of a stream, queue or cache (built,
reconfigured, or closed with its feeds). An admin request is validated against the view by
the :class:`~felix_core.metadata.Catalog` and becomes a
:class:`~felix_core.events.MetadataWrite` event; the store's answer comes back as
:meth:`Admin.written`, which feeds the record and completes the request (or refuses it with
the store's error). Reads (describe, list) complete at once from the view.

Roles and bindings (:mod:`felix_core.rbac`) are records like any other; the view keeps them
and so does :attr:`Admin.rbac`, the book authorization resolves principals with. A change
to what a tenant's roles and bindings grant is announced with
:class:`~felix_core.events.AccessChanged` for the glue to resolve that tenant's
connections again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from felix_core.completion import completes
from felix_core.connections import Connections
from felix_core.errors import EngineError, InvalidArgument
from felix_core.events import (
    AccessChanged,
    EngineEvent,
    MetadataWrite,
    RequestCompleted,
    RequestRefused,
    ResourceDescribed,
    ResourcesListed,
)
from felix_core.limits import BrokerConfig
from felix_core.log import LogStore
from felix_core.metadata import (
    LEAF_KINDS,
    Catalog,
    Kind,
    MetadataView,
    Path,
    ResourceRecord,
    WriteOp,
)
from felix_core.quotas import TenantQuotas
from felix_core.rbac import RoleBook
from felix_core.registry import Registry

__all__ = ["Admin"]


class Admin:
    """The metadata view, the catalog that validates against it, and the writes in flight.

    Args:
        config: the limits and defaults.
        logs: the log store (whether ``durability=durable`` can be honoured).
        registry: the partitions, which follow the records.
        connections: the attached connections (consumers of a deleted queue leave them).
        out: the engine's event stream.
        quotas: every tenant's quotas (their limits follow the tenant records fed here).
    """

    def __init__(
        self,
        config: BrokerConfig,
        logs: LogStore,
        registry: Registry,
        connections: Connections,
        out: list[EngineEvent],
        quotas: TenantQuotas,
    ) -> None:
        self._logs = logs
        self._registry = registry
        self._connections = connections
        self._out = out
        self.view = MetadataView()
        self.catalog = Catalog(self.view, config)
        self.rbac = RoleBook()
        self.quotas = quotas
        """Every tenant's quotas (limits follow the tenant records)."""
        """The roles and bindings of every tenant (fed with the records)."""
        self._writes: dict[int, tuple[int, int | None, WriteOp]] = {}  # id -> conn, request, op
        self._next_write = 1
        self.writes_in_flight = 0
        """How many writes wait for the store's answer (kept as a plain count: the server
        reads it on every pass to know whether any event is a write to apply)."""

    def create_defaults(self, tenant: str, namespace: str, now: float) -> None:
        """Ask the store for the default tenant and namespace (one that has them says so)."""
        for kind, path in (
            (Kind.TENANT, (tenant, "", "")),
            (Kind.NAMESPACE, (tenant, namespace, "")),
        ):
            record = ResourceRecord(
                kind=kind,
                tenant=path[0],
                namespace=path[1],
                settings=self.catalog.schemas[kind](Catalog.check_path(kind, *path), {}, None),
                created_ms=int(now * 1000),
                updated_ms=int(now * 1000),
            )
            self._write(0, None, WriteOp.CREATE, record, None)

    # -- what the world says -------------------------------------------------------------

    def changed(self, kind: Kind, path: Path, record: ResourceRecord | None, now: float) -> None:
        """A record appeared, changed or went; see :meth:`Broker.metadata_changed`."""
        if not self.view.apply(kind, path, record):
            return
        if kind is Kind.ROLE or kind is Kind.BINDING:
            tenant, _, name = path
            settings = None if record is None else record.settings
            book = self.rbac
            if (book.set_role if kind is Kind.ROLE else book.set_binding)(tenant, name, settings):
                self._out.append(AccessChanged(tenant=tenant))
            return
        if kind is Kind.TENANT:
            self.quotas.set_tenant(path[0], None if record is None else record.settings)
            self.quotas.apply_inflight_limit(path[0], now)
        self._connections.forget_consumers(self._registry.apply(kind, path, record, now))

    def written(self, write_id: int, outcome: ResourceRecord | EngineError, now: float) -> None:
        """The store's answer to a write; see :meth:`Broker.metadata_written`."""
        pending = self._writes.pop(write_id, None)
        if pending is None:
            return
        self.writes_in_flight = len(self._writes)
        conn_id, request, op = pending
        mark = len(self._out)
        if isinstance(outcome, EngineError):
            if request is not None:
                refused = RequestRefused(connection_id=conn_id, request=request, error=outcome)
                self._out.insert(mark, refused)
            return
        self.changed(outcome.kind, outcome.path, None if op is WriteOp.DELETE else outcome, now)
        if request is None:
            return
        done: RequestCompleted
        if op is WriteOp.DELETE:
            done = RequestCompleted(connection_id=conn_id, request=request)
        else:
            resource = self._describe(self.view.get(outcome.kind, outcome.path) or outcome, now)
            done = ResourceDescribed(connection_id=conn_id, request=request, resource=resource)
        self._out.insert(mark, done)

    # -- admin requests ------------------------------------------------------------------

    @completes
    def create(
        self,
        conn_id: int,
        request: int,
        kind: str,
        path: Path,
        settings: Mapping[str, Any] | None,
        now: float,
    ) -> None:
        """Create a resource; see :meth:`Broker.create`. Completes in :meth:`written`."""
        record = self.catalog.create(self._settable(kind, settings), path, settings or {}, now)
        if record.kind in LEAF_KINDS:
            view, tenant = self.view, record.tenant
            count = sum(
                view.count(leaf, tenant, ns.namespace)
                for ns in view.list(Kind.NAMESPACE, tenant)
                for leaf in LEAF_KINDS
            )
            self.quotas.check_resources(tenant, count)
        self._write(conn_id, request, WriteOp.CREATE, record, None)

    @completes
    def update(
        self,
        conn_id: int,
        request: int,
        kind: str,
        path: Path,
        settings: Mapping[str, Any] | None,
        now: float,
    ) -> None:
        """Change some settings; see :meth:`Broker.update`. Completes in :meth:`written`."""
        record = self.catalog.update(self._settable(kind, settings), path, settings or {}, now)
        self._write(conn_id, request, WriteOp.REPLACE, record, record.generation - 1)

    @completes
    def delete(self, conn_id: int, request: int, kind: str, path: Path) -> None:
        """Delete a resource; see :meth:`Broker.delete`. Completes in :meth:`written`."""
        record = self.catalog.delete(Catalog.parse_kind(kind), path)
        self._write(conn_id, request, WriteOp.DELETE, record, None)

    @completes
    def describe(
        self, conn_id: int, request: int, kind: str, path: Path, now: float
    ) -> ResourceDescribed:
        """Describe a resource; see :meth:`Broker.describe`."""
        record = self.catalog.describe(Catalog.parse_kind(kind), path)
        resource = self._describe(record, now)
        return ResourceDescribed(connection_id=conn_id, request=request, resource=resource)

    @completes
    def list(
        self, conn_id: int, request: int, kind: str, tenant: str, namespace: str
    ) -> ResourcesListed:
        """List the resources of a kind; see :meth:`Broker.list`."""
        k = Catalog.parse_kind(kind)
        resources = [r.to_dict() for r in self.catalog.list(k, tenant, namespace)]
        return ResourcesListed(connection_id=conn_id, request=request, resources=resources)

    def _settable(self, kind: str, settings: Mapping[str, Any] | None) -> Kind:
        """The kind of a create or update, once the engine accepts new work and the store
        can honour the settings' durability."""
        self._connections.check_accepting()
        k = Catalog.parse_kind(kind)
        self.check_durability(settings or {})
        return k

    def check_durability(self, settings: Mapping[str, Any]) -> None:
        """Refuse ``durability=durable`` unless the log store keeps logs across restarts.

        Raises:
            InvalidArgument: ``durable`` asked of a store that is not durable.
        """
        if settings.get("durability") == "durable" and not self._logs.durable:
            raise InvalidArgument(
                "durability 'durable' is not available: this broker keeps every resource in "
                "memory and nothing survives a restart",
                details={"field": "durability"},
            )

    def _describe(self, record: ResourceRecord, now: float) -> dict[str, Any]:
        out = record.to_dict()
        partition = self._registry.find(record.kind, record.path)
        if partition is not None:
            out["stats"] = partition.stats(now)
        return out

    def _write(
        self,
        conn_id: int,
        request: int | None,
        op: WriteOp,
        record: ResourceRecord,
        expected_generation: int | None,
    ) -> None:
        write_id = self._next_write
        self._next_write += 1
        self._writes[write_id] = (conn_id, request, op)
        self.writes_in_flight = len(self._writes)
        self._out.append(
            MetadataWrite(
                write_id=write_id, op=op, record=record, expected_generation=expected_generation
            )
        )
