"""Cache and admin handles of :class:`~felix_client.client.Client`.

They talk to the broker only through a small :class:`Backend` interface that the client
implements (as the feeds of :mod:`felix_client._streams` do), so they know nothing of how the
client pools its connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from felix_proto import events as ev
from felix_proto import messages as msgs
from felix_proto.client import ClientConnection
from felix_proto.messages import ResourceKind

from ._local import ttl_ms
from .errors import Conflict
from .types import CacheEntry

__all__ = ["Admin", "Backend", "Cache"]


class Backend(Protocol):
    """What the cache and admin handles need from the client."""

    timeout: float
    """Seconds a request may take when the call gives none."""

    def resource_path(self, tenant: str | None, namespace: str | None) -> tuple[str, str]:
        """``(tenant, namespace)`` with the defaults for the parts not given."""
        ...

    async def request(self, call: Callable[[ClientConnection, float], int]) -> ev.Event:
        """Make one request (``call(machine, now)`` returns its id); return its answer."""
        ...

    def cache_request(
        self,
        call: Callable[[ClientConnection, float, int | None], int],
        *,
        operation: str,
        path: dict[str, str],
    ) -> Awaitable[ev.Event]:
        """Make one cache request (``call(machine, now, stream_id)``); await its answer.
        ``operation`` (``get``, ``put`` ...) and ``path`` name it in traces."""
        ...


_MS = 1000.0


class Cache:
    """Operations on one cache. Values are bytes (``str`` is encoded as UTF-8)."""

    def __init__(self, backend: Backend, name: str, tenant: str, namespace: str) -> None:
        self._backend = backend
        self.name = name
        self._path = {"tenant": tenant, "namespace": namespace, "cache": name}

    async def get(self, key: str, *, timeout: float | None = None) -> CacheEntry | None:
        """Read a value; None on a miss."""
        c = self._backend
        reply = await c.cache_request(
            lambda m, now, sid: m.cache_get(
                key=key, now=now, stream_id=sid, timeout=timeout or c.timeout, **self._path
            ),
            operation="get",
            path=self._path,
        )
        assert isinstance(reply, ev.CacheValueReceived)
        if not reply.found or reply.value is None:
            return None
        ttl = None if reply.ttl_remaining_ms is None else reply.ttl_remaining_ms / _MS
        return CacheEntry(reply.value, reply.version or 0, ttl)

    async def _put(
        self,
        key: str,
        value: bytes | str,
        ttl: float | None,
        if_absent: bool,
        if_version: int | None,
        timeout: float | None,
    ) -> ev.CachePutCompleted:
        c = self._backend
        data = value.encode() if isinstance(value, str) else bytes(value)
        wire_ttl = ttl_ms(ttl)
        reply = await c.cache_request(
            lambda m, now, sid: m.cache_put(
                key=key,
                value=data,
                ttl_ms=wire_ttl,
                if_absent=if_absent,
                if_version=if_version,
                now=now,
                stream_id=sid,
                timeout=timeout or c.timeout,
                **self._path,
            ),
            operation="put",
            path=self._path,
        )
        assert isinstance(reply, ev.CachePutCompleted)
        return reply

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store a value (``ttl`` seconds; None: the cache's default; 0: never expires).

        A positive ``ttl`` is rounded to whole milliseconds but never below 1 ms, so a tiny
        TTL expires (almost) at once instead of becoming "never".

        Returns:
            The entry's new version.

        Raises:
            InvalidArgument: ``ttl`` is negative, infinite or NaN.
            TooLarge: the key or value is over the cache's limits.
        """
        reply = await self._put(key, value, ttl, False, None, timeout)
        return reply.version or 0

    async def put_if_absent(
        self,
        key: str,
        value: bytes | str,
        *,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Store only if the key holds no value. Returns whether it was stored."""
        reply = await self._put(key, value, ttl, True, None, timeout)
        return reply.stored

    async def compare_and_set(
        self,
        key: str,
        value: bytes | str,
        *,
        version: int,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store only if the entry's version is ``version``.

        Returns:
            The new version.

        Raises:
            Conflict: the version did not match (``details['version']`` is the current one).
        """
        reply = await self._put(key, value, ttl, False, version, timeout)
        if not reply.stored:
            raise Conflict(
                f"version of {key!r} is {reply.version}, not {version}",
                details={"version": reply.version},
            )
        return reply.version or 0

    async def delete(
        self, key: str, *, if_version: int | None = None, timeout: float | None = None
    ) -> bool:
        """Delete a value (only at ``if_version`` when given). Returns whether one was removed."""
        c = self._backend
        reply = await c.cache_request(
            lambda m, now, sid: m.cache_delete(
                key=key,
                if_version=if_version,
                now=now,
                stream_id=sid,
                timeout=timeout or c.timeout,
                **self._path,
            ),
            operation="delete",
            path=self._path,
        )
        assert isinstance(reply, ev.CacheDeleteCompleted)
        return reply.deleted


class Admin:
    """Create, describe, list, update and delete tenants, namespaces, streams, queues,
    caches, and the RBAC roles and bindings of a tenant. ``kind`` is a
    :class:`~felix_proto.messages.ResourceKind` or its string value.

    Path parts: a tenant needs only ``name``; a namespace, a role and a binding live in
    ``tenant``; streams, queues and caches live in ``tenant``/``namespace`` (the client's
    defaults when omitted).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _target(
        self, kind: str, name: str, tenant: str | None, namespace: str | None
    ) -> dict[str, str]:
        k = ResourceKind(kind)
        t, n = self._backend.resource_path(tenant, namespace)
        if k == ResourceKind.TENANT:
            return {"kind": k.value, "tenant": name, "namespace": "", "name": ""}
        if k == ResourceKind.NAMESPACE:
            return {"kind": k.value, "tenant": t, "namespace": name, "name": ""}
        if k in (ResourceKind.ROLE, ResourceKind.BINDING):
            return {"kind": k.value, "tenant": t, "namespace": "", "name": name}
        return {"kind": k.value, "tenant": t, "namespace": n, "name": name}

    async def _request(
        self, message: type[msgs.Message], timeout: float | None, **fields: Any
    ) -> ev.Event:
        """Send one admin request; return the event that answered it."""
        c = self._backend
        return await c.request(
            lambda m, now: m.admin(message, now=now, timeout=timeout or c.timeout, **fields)
        )

    async def _admin(
        self, message: type[msgs.Message], timeout: float | None, **fields: Any
    ) -> ev.AdminReplied:
        """Send an admin request answered by a resource (or a list of them)."""
        reply = await self._request(message, timeout, **fields)
        assert isinstance(reply, ev.AdminReplied)
        return reply

    async def create(
        self,
        kind: str,
        name: str,
        settings: dict[str, Any] | None = None,
        *,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create a resource; returns it as the broker describes it."""
        target = self._target(kind, name, tenant, namespace)
        reply = await self._admin(
            msgs.AdminCreate, timeout, settings=dict(settings or {}), **target
        )
        return reply.resource or {}

    async def describe(
        self,
        kind: str,
        name: str,
        *,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Describe one resource."""
        target = self._target(kind, name, tenant, namespace)
        reply = await self._admin(msgs.AdminDescribe, timeout, **target)
        return reply.resource or {}

    async def list(
        self,
        kind: str,
        *,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """List resources of a kind (under the tenant / namespace where that applies)."""
        k = ResourceKind(kind)
        t, n = self._backend.resource_path(tenant, namespace)
        if k == ResourceKind.TENANT:
            t, n = "", ""
        elif k in (ResourceKind.NAMESPACE, ResourceKind.ROLE, ResourceKind.BINDING):
            n = ""
        reply = await self._admin(msgs.AdminList, timeout, kind=k.value, tenant=t, namespace=n)
        return reply.resources or []

    async def update(
        self,
        kind: str,
        name: str,
        settings: dict[str, Any],
        *,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Change some settings of a resource; returns it as it now is."""
        target = self._target(kind, name, tenant, namespace)
        reply = await self._admin(msgs.AdminUpdate, timeout, settings=dict(settings), **target)
        return reply.resource or {}

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Delete a resource."""
        target = self._target(kind, name, tenant, namespace)
        await self._request(msgs.AdminDelete, timeout, **target)
