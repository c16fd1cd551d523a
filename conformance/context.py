"""What a check gets: connections, unique resources, cleanup and optional hooks.

The runner makes one :class:`Suite` per run (options, the tenant and namespace the checks
work in, an admin connection) and one :class:`Context` per check. Every connection a check
opens and every resource it creates through the context is closed or deleted when the
check ends, whatever its outcome.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.registry import Skip
from conformance.wire import CheckFailed, Conn, Endpoint, describe, open_conn
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

__all__ = ["Context", "Hooks", "Options", "Suite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """Things a client cannot make a broker do; given by in-process test runs only."""

    goaway: Callable[[], Awaitable[None]] | None = None
    """Start the broker's graceful shutdown (it must then send ``GoAway``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """A run's settings (the command line, or a test)."""

    endpoint: Endpoint
    """The broker."""
    token: str | None = None
    """Bearer token for ``Hello.token``."""
    tenant: str | None = None
    """Work in this tenant (created if missing, never deleted); default: a new one."""
    namespace: str | None = None
    """Work in this namespace (created if missing, never deleted); default: a new one."""
    other_token: str | None = None
    """A token of another tenant (the auth checks; skipped without it)."""
    other_tenant: str | None = None
    """That tenant's name."""
    restricted_token: str | None = None
    """A token of the working tenant whose only permission is ``subscribe`` on the streams
    ``ro-*`` of the working namespace (the ``rbac.*`` checks; skipped without it)."""
    restricted_subject: str | None = None
    """The subject of that token, for ``rbac.live-change`` (it binds a role to it)."""
    hooks: Hooks = field(default_factory=Hooks)
    """Optional in-process hooks."""


class Suite:
    """Per-run state: the working tenant and namespace, and their cleanup."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.tenant = options.tenant or f"conf-{secrets.token_hex(4)}"
        self.namespace = options.namespace or "ns"
        self._created: list[tuple[str, str, str]] = []
        self._stack = contextlib.AsyncExitStack()
        self.admin: Conn | None = None

    async def start(self) -> None:
        """Connect the admin connection and make sure the tenant and namespace exist.

        Raises:
            CheckFailed: the broker cannot be reached or refuses the setup.
        """
        try:
            conn = await self._stack.enter_async_context(open_conn(self.options.endpoint))
        except (ConnectionError, TimeoutError) as exc:
            raise CheckFailed(
                f"cannot connect to the broker: {str(exc) or type(exc).__name__}"
            ) from None
        welcome = await conn.hello(client_name="conformance-admin", token=self.options.token)
        if not isinstance(welcome, m.Welcome):
            raise CheckFailed(f"handshake refused: {describe(welcome)}")
        self.admin = conn
        for kind, ns in (("tenant", ""), ("namespace", self.namespace)):
            reply = await conn.request(
                m.AdminCreate(request_id=conn.rid(), kind=kind, tenant=self.tenant, namespace=ns)
            )
            if isinstance(reply, m.AdminResource):
                self._created.append((kind, ns, ""))
            elif not (isinstance(reply, m.Error) and reply.code == ErrorCode.ALREADY_EXISTS):
                raise CheckFailed(f"cannot create the {kind}: {describe(reply)}")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete one resource, ignoring any failure (best effort cleanup)."""
        conn = self.admin
        if conn is None or conn.terminated is not None:
            return
        with contextlib.suppress(CheckFailed):
            await conn.request(
                m.AdminDelete(
                    request_id=conn.rid(),
                    kind=kind,
                    tenant=self.tenant,
                    namespace=namespace,
                    name=name,
                ),
                wait=2.0,
            )

    async def close(self) -> None:
        """Delete what the run created (namespace, tenant) and close the admin connection."""
        for kind, ns, name in reversed(self._created):
            await self.delete(kind, ns, name)
        await self._stack.aclose()


class Context:
    """What one check works with. See the module docstring."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.options = suite.options
        self.endpoint = suite.options.endpoint
        self.tenant = suite.tenant
        self.namespace = suite.namespace
        self._stack = contextlib.AsyncExitStack()
        self._resources: list[tuple[str, str]] = []

    async def raw(self, alpn: list[str] | None = None) -> Conn:
        """Open a QUIC connection and send nothing (``alpn=[]``: offer none).

        Raises:
            ConnectionError: the handshake failed.
        """
        return await self._stack.enter_async_context(open_conn(self.endpoint, alpn))

    async def connect(self, alpn: list[str] | None = None, **hello: Any) -> Conn:
        """Open a connection and complete the Felix handshake.

        Raises:
            CheckFailed: the connection or the handshake failed.
        """
        try:
            conn = await self.raw(alpn)
        except (ConnectionError, TimeoutError) as exc:
            raise CheckFailed(f"QUIC connection failed: {str(exc) or type(exc).__name__}") from None
        hello.setdefault("client_name", "conformance")
        hello.setdefault("token", self.options.token)
        reply = await conn.hello(**hello)
        if not isinstance(reply, m.Welcome):
            raise CheckFailed(f"Hello answered {describe(reply)}, expected Welcome")
        return conn

    def unique(self, prefix: str) -> str:
        """A resource name nobody else uses."""
        return f"{prefix}-{secrets.token_hex(4)}"

    async def create(self, kind: str, prefix: str, settings: dict[str, Any] | None = None) -> str:
        """Create a resource in the working namespace; deleted when the check ends.

        Args:
            kind: ``stream``, ``queue`` or ``cache``.
            prefix: the start of its name.
            settings: settings to create it with. Setting names are not part of the wire
                protocol; if the broker refuses them (``INVALID_ARGUMENT``) the check is
                skipped with the broker's reason.

        Returns:
            The new resource's name.
        """
        admin = self.suite.admin
        assert admin is not None
        name = self.unique(prefix)
        reply = await admin.request(
            m.AdminCreate(
                request_id=admin.rid(),
                kind=kind,
                tenant=self.tenant,
                namespace=self.namespace,
                name=name,
                settings=settings or {},
            )
        )
        if isinstance(reply, m.Error) and settings and reply.code == ErrorCode.INVALID_ARGUMENT:
            raise Skip(f"broker refuses {kind} settings {sorted(settings)}: {reply.message}")
        if not isinstance(reply, m.AdminResource):
            raise CheckFailed(f"AdminCreate {kind} answered {describe(reply)}")
        self._resources.append((kind, name))
        return name

    async def healthy(self) -> None:
        """A second, fresh connection is served: handshake, ``Ping``, an admin request.

        Raises:
            CheckFailed: it is not.
        """
        conn = await self.connect(client_name="conformance-health")
        conn.send(m.Ping(nonce=4242), 0)
        await conn.message(0, m.Pong, lambda p: p.nonce == 4242, "Pong from a fresh connection")
        await conn.expect(
            m.AdminList(request_id=conn.rid(), kind="namespace", tenant=self.tenant),
            m.AdminResources,
        )

    async def close(self) -> None:
        """Close the check's connections, then delete its resources."""
        await self._stack.aclose()
        for kind, name in reversed(self._resources):
            await self.suite.delete(kind, self.namespace, name)
