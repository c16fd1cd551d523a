"""The async Felix client, for asyncio and trio applications (built on anyio).

::

    import felix_client

    async with felix_client.connect("quic://127.0.0.1:7447", ca_file="cert.pem") as client:
        await client.publish("orders", b"hello")
        async with client.subscribe("orders", start="earliest") as sub:
            async for event in sub:
                ...

A :class:`Client` owns one or more connections (``pool_size``) and the task group that
runs their transports, so it must be used as an async context manager. Every request is
bounded by ``timeout`` seconds (per call ``timeout=`` overrides it). With ``reconnect=True``
a lost connection is re-established on the next request, and subscriptions resume from the
last offset they handed out. Cache requests are spread over the pool's connections and,
inside each, over several request streams, so concurrent gets do not wait on each other.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from felix_proto import events as ev
from felix_proto.client import ClientConnection
from felix_proto.connection import DELIVERY_BATCH, TOKEN_EXCHANGE, TOKEN_REFRESH
from felix_proto.messages import AckMode, SourceKind
from felix_runtime.quic_engines import engine_from_env, load_engine

from . import _tracing
from ._acks import AckBatches
from ._connection import Connection
from ._inbox import FeedReader
from ._local import check_headers, delay_ms
from ._resources import Admin, Cache
from ._streams import Consumer, Publisher, RecordBatch, Subscription
from ._transport import TransportOptions
from ._url import BrokerAddress, default_url, parse_url
from .errors import ConnectionLost, FelixError, Forbidden, NotFound, UnexpectedMessage
from .types import PublishResult, Start, StartLike

__all__ = ["DEFAULT_PREFETCH", "Admin", "Cache", "Client", "connect", "token_tenant"]

_ACK_NONE = AckMode.NONE
"""A module global: every publish tests it, and an enum member looked up on its class costs
~0.1 us (see felix_proto.connection._CLOSED)."""


def _claims(token: str | None) -> dict[str, Any]:
    """A Felix token's claims, read WITHOUT checking anything (the broker checks them);
    empty for anything that is no JWT (a shared secret)."""
    if not token or token.count(".") != 2:
        return {}
    from felix_core.access import AuthError
    from felix_runtime.tokens import read_unverified  # PyJWT only for JWT-shaped tokens

    try:
        _, claims = read_unverified(token)
    except AuthError:  # malformed: the broker will say so at the handshake
        return {}
    return claims


def token_tenant(token: str | None) -> str | None:
    """The ``tenant`` claim of a Felix token (unchecked): the tenant a client acts in when
    none is given. None for anything that is no JWT or has no such claim."""
    tenant = _claims(token).get("tenant")
    return tenant if isinstance(tenant, str) and tenant else None


async def _exchange_on(conn: Connection, id_token: str) -> str:
    """Exchange ``id_token`` on ``conn`` and return the Felix token (``TokenExchange``).

    Raises:
        Unauthenticated: the broker refused the identity token (``details.reason``).
        UnexpectedMessage: the broker does not offer ``token-exchange``.
        FelixError: the connection failed.
    """
    if TOKEN_EXCHANGE not in conn.machine.capabilities:
        raise UnexpectedMessage(
            "the broker does not offer token-exchange (it exchanges no identity tokens)"
        )
    reply = await conn.request(lambda m, now: m.exchange_token(id_token, now=now))
    assert isinstance(reply, ev.TokenReceived)
    return reply.token


def token_expiry(token: str | None) -> float | None:
    """The ``exp`` claim of a Felix token (unchecked), or None."""
    return _number(_claims(token).get("exp"))


def token_issued(token: str | None) -> float | None:
    """The ``iat`` claim of a Felix token (unchecked), or None."""
    return _number(_claims(token).get("iat"))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


DEFAULT_PREFETCH = 256
"""A consumer's default ``prefetch``: unsettled deliveries the broker may hand it. Acks leave
coalesced, once per loop pass (or half a prefetch), so the prefetch is the window that keeps
the broker delivering while the consumer works; 64 left the natural loop waiting for the
broker between windows."""

CAPABILITIES: tuple[str, ...] = (TOKEN_REFRESH, DELIVERY_BATCH)
"""The capabilities every connection offers in its ``Hello`` (``token-exchange`` is added
when the client exchanges identity tokens): it renews its token and takes a dispatch's
deliveries in one ``DeliveryBatch`` frame (docs/wire-protocol.md §5.3)."""


class Client:
    """A connection (or a small pool of them) to one Felix broker.

    Args:
        url: ``quic://host:port``; when omitted, ``$FELIX_SERVER`` or ``DEFAULT_URL``
            (``quic://127.0.0.1:7447``).
        ca_file: PEM file of certificates to trust (the broker prints the path of its
            self-signed certificate at start).
        insecure: skip certificate verification (development only).
        cert_file, key_file: a PEM client certificate (chain) and its key, presented when
            the broker asks for one (mutual TLS); when omitted, ``$FELIX_CERT`` and
            ``$FELIX_CERT_KEY``.
        server_name: TLS server name, when it differs from the URL's host.
        token: bearer token for the handshake.
        token_provider: returns a fresh token (a function, or a coroutine function). With
            it, a Felix token is renewed on the live connections before it expires (one
            fifth of its lifetime ahead, at most 60 s ahead: :meth:`refresh_token`), and
            a connection opened later uses the latest token. Without ``token``, the first
            token comes from it too.
        id_token: an identity token of an external issuer (an OIDC ID token, a Kubernetes
            service-account token) to exchange for a Felix token at connect (``TokenExchange``,
            capability ``token-exchange``): the first connection logs in with it, the others
            present the Felix token. The Felix token is renewed before it expires by another
            exchange (and a reconnect after its expiry logs in again).
        id_token_provider: returns a fresh identity token (a function or a coroutine
            function), called for every exchange; for identity tokens that expire or rotate,
            such as a projected service-account token read from its file.
        tenant, namespace: defaults for every call (each call may override them). The
            tenant defaults to the tenant the broker assigned to the connection
            (``Welcome.tenant``: a token's or a client certificate's), else to the
            ``tenant`` claim of a Felix ``token``, else ``default``.
        timeout: seconds every request (and the connect) may take.
        reconnect: re-establish lost connections and resume subscriptions.
        pool_size: how many QUIC connections to open (cache and publish requests are
            spread over them).
        request_streams: request streams per connection that concurrent requests use.
        client_name: sent in ``Hello`` for the broker's logs.
        max_datagram_size: QUIC datagram size (1452 suits loopback and most LANs).
        idle_timeout: seconds without traffic after which QUIC drops a connection (the
            smaller of this and the broker's applies).
        keepalive: send a QUIC PING after this many seconds without sending anything (at
            most ``idle_timeout / 3``), so an idle connection stays up; ``None``: never.
            Keep it under a third of the broker's idle timeout too.
        quic_engine: the QUIC implementation, ``aioquic`` or ``qh3`` (the extra
            ``felix[qh3]``); when omitted, ``$FELIX_QUIC_ENGINE`` or ``aioquic``. Either
            engine connects to a broker of either.

    Raises:
        ValueError: the URL is malformed, an argument is out of range or the engine is
            unknown.
        ImportError: the engine is not installed (``EngineMissing``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        ca_file: str | None = None,
        insecure: bool = False,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        token: str | None = None,
        token_provider: Callable[[], str | Awaitable[str]] | None = None,
        id_token: str | None = None,
        id_token_provider: Callable[[], str | Awaitable[str]] | None = None,
        tenant: str | None = None,
        namespace: str = "default",
        timeout: float = 10.0,
        reconnect: bool = False,
        pool_size: int = 1,
        request_streams: int = 4,
        client_name: str = "felix-python",
        max_datagram_size: int = 1452,
        idle_timeout: float = 60.0,
        keepalive: float | None = 5.0,
        quic_engine: str | None = None,
    ) -> None:
        if pool_size < 1 or request_streams < 1:
            raise ValueError("pool_size and request_streams must be at least 1")
        if timeout <= 0 or idle_timeout <= 0:
            raise ValueError("timeout and idle_timeout must be positive")
        if keepalive is not None and keepalive < 0:
            raise ValueError("keepalive must be positive (or None: no keep-alive)")
        cert_file = cert_file or os.environ.get("FELIX_CERT") or None
        key_file = key_file or os.environ.get("FELIX_CERT_KEY") or None
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together (FELIX_CERT, FELIX_CERT_KEY)")
        self.address: BrokerAddress = parse_url(url or default_url())
        self._tenant_given = tenant is not None
        self.tenant = tenant or token_tenant(token) or "default"
        self.namespace = namespace
        self.timeout = timeout
        self._reconnect = reconnect
        self.pool_size = pool_size
        self.request_streams = request_streams
        if (id_token is not None or id_token_provider is not None) and (token_provider is not None):
            raise ValueError("give token_provider or an id token, not both")
        self._token = token
        self._token_provider = token_provider
        self._id_token = id_token
        self._id_token_provider = id_token_provider
        self._exchanges = id_token is not None or id_token_provider is not None
        if self._exchanges:  # renewals are exchanges too
            self._token_provider = self._exchange_token
        self._client_name = client_name
        self._options = TransportOptions(
            ca_file=ca_file,
            insecure=insecure,
            cert_file=cert_file,
            key_file=key_file,
            server_name=server_name,
            max_datagram_size=max_datagram_size,
            idle_timeout=idle_timeout,
            keepalive=keepalive,
            quic_engine=load_engine(quic_engine or engine_from_env()).name,
        )
        self._conns: list[Connection | None] = [None] * pool_size
        self._locks = [anyio.Lock() for _ in range(pool_size)]
        self._rr = itertools.count()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        self.admin = Admin(self)
        """Administrative calls (create, describe, list, update, delete)."""
        self.tracer = _tracing.tracer()
        """The OpenTelemetry tracer of this client's spans; None (no tracing, no cost) without
        ``opentelemetry-api`` or a configured tracer provider (see ``docs/client.md``)."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            if self._exchanges:
                await self._connection(0)  # logs in by exchange: the token is known then
                self.tenant = self.tenant if self._tenant_given else self._default_tenant()
            elif self._token is None and self._token_provider is not None:
                self._token = await self._new_token()
                self.tenant = self.tenant if self._tenant_given else self._default_tenant()
            for i in range(self.pool_size):
                conn = await self._connection(i)
            assigned = conn.welcome.tenant if conn.welcome is not None else None
            if assigned and not self._tenant_given:
                self.tenant = assigned  # the broker said which (a client certificate's)
        except BaseException:
            await self._close_task_group()
            raise
        if self._token_provider is not None:
            self._tg.start_soon(self._renew_tokens)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close_task_group()

    # ----------------------------------------------------------------------- tokens

    async def refresh_token(self, token: str | None = None) -> None:
        """Give every open connection a new token (``Reauthenticate``, capability
        ``token-refresh``) and use it for connections opened later.

        Args:
            token: the new token; default: one from ``token_provider``.

        Raises:
            Unauthenticated: the broker refused the token (the old one's rights stand
                until it expires).
            Forbidden: the token names another tenant or subject.
            FelixError: the broker does not offer ``token-refresh`` (``UnexpectedMessage``),
                or the connection failed.
        """
        if token is None:
            token = await self._new_token()
        self._token = token
        for conn in list(self._conns):
            if conn is not None and conn.is_open:
                await conn.request(lambda m, now: m.reauthenticate(token, now=now))

    async def _new_token(self) -> str:
        if self._token_provider is None:
            raise ValueError("no token given and no token_provider")
        token = self._token_provider()
        if not isinstance(token, str):
            token = await token
        return token

    async def _new_id_token(self) -> str:
        if self._id_token_provider is None:
            assert self._id_token is not None
            return self._id_token
        token = self._id_token_provider()
        if not isinstance(token, str):
            token = await token
        return token

    async def _exchange_token(self) -> str:
        """A Felix token for a fresh identity token, exchanged on an open connection
        (whose rights become the new token's)."""
        id_token = await self._new_id_token()
        conn = await self._connection()
        return await _exchange_on(conn, id_token)

    def _needs_login(self) -> bool:
        """Whether a new connection logs in by exchange (no Felix token, or an expired
        one)."""
        if not self._exchanges:
            return False
        expires = token_expiry(self._token)
        return self._token is None or (expires is not None and expires <= time.time())

    def _default_tenant(self) -> str:
        return token_tenant(self._token) or "default"

    async def _renew_tokens(self) -> None:
        """Renew the token ahead of its expiry, for as long as the client is open. A
        renewal that fails is tried again after a while (the connection ends at expiry,
        with ``Unauthenticated``, if it never succeeds)."""
        while not self._closed:
            expires = token_expiry(self._token)
            if expires is None:
                return  # a shared secret, or no exp: nothing to renew
            issued = token_issued(self._token) or time.time()
            ahead = min(60.0, max(1.0, (expires - issued) / 5))
            await anyio.sleep(max(0.0, expires - ahead - time.time()))
            try:
                await self.refresh_token()
            except (FelixError, ValueError, OSError):
                await anyio.sleep(max(0.5, ahead / 4))

    async def _close_task_group(self) -> None:
        # The transport tasks never raise (they turn failures into a closed connection),
        # so the group is closed cleanly and the caller's own exception passes unwrapped.
        await self.aclose()
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Close every connection (pending requests fail with ``ConnectionLost``)."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            for conn in self._conns:
                if conn is not None:
                    await conn.aclose()

    @property
    def token(self) -> str | None:
        """The credential new connections present: the Felix token (the latest one, after
        a renewal or an exchange), a shared secret, or None."""
        return self._token

    @property
    def reconnect(self) -> bool:
        """Whether lost connections are re-established (and subscriptions resumed)."""
        return self._reconnect

    @property
    def server_id(self) -> str | None:
        """The id of the broker the first connection talks to."""
        conn = self._conns[0]
        return conn.welcome.server_id if conn is not None and conn.welcome else None

    def _next_open(self) -> tuple[int, Connection | None]:
        """The next slot round-robin and its connection when that is open: the hot path of
        every request, without the coroutine :meth:`_connection` costs."""
        i = next(self._rr) % self.pool_size
        conn = self._conns[i]
        return i, conn if conn is not None and conn.is_open else None

    async def _connection(self, index: int | None = None) -> Connection:
        """An open connection: slot ``index`` or the next one round-robin."""
        i = next(self._rr) % self.pool_size if index is None else index
        conn = self._conns[i]
        if conn is not None and conn.is_open:
            return conn
        if self._tg is None or self._closed:
            raise ConnectionLost("the client is not open (use 'async with')")
        async with self._locks[i]:
            conn = self._conns[i]
            if conn is not None and conn.is_open:
                return conn
            if conn is not None and not self._reconnect:
                conn.check_open()  # raises: ShuttingDown after GoAway, else the close error
                raise AssertionError("a connection that is not open raises")
            if conn is not None:
                await conn.aclose()
            self._conns[i] = conn = await self._open_with_retry()
            return conn

    async def _open_with_retry(self) -> Connection:
        assert self._tg is not None
        delay, attempts = 0.1, 8 if self._reconnect and any(self._conns) else 1
        capabilities = (*CAPABILITIES, TOKEN_EXCHANGE) if self._exchanges else CAPABILITIES
        for attempt in range(attempts):
            try:
                login = self._needs_login()
                conn = await Connection.open(
                    self._tg,
                    self.address.host,
                    self.address.port,
                    options=self._options,
                    token=None if login else self._token,
                    client_name=self._client_name,
                    timeout=self.timeout,
                    capabilities=capabilities,
                )
                if login:
                    try:
                        self._token = await _exchange_on(conn, await self._new_id_token())
                    except BaseException:
                        await conn.aclose()
                        raise
                return conn
            except FelixError as exc:
                if attempt + 1 >= attempts or not exc.retryable:
                    raise
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def resource_path(self, tenant: str | None, namespace: str | None) -> tuple[str, str]:
        """``(tenant, namespace)`` with the client's defaults for the parts not given."""
        return (tenant or self.tenant, namespace or self.namespace)

    async def request(self, call: Callable[[ClientConnection, float], int]) -> ev.Event:
        """A request on the next connection of the pool; ``call`` passes the timeout to the
        machine, which keeps the deadline (the admin handle's backend)."""
        i, conn = self._next_open()
        if conn is None:
            conn = await self._connection(i)
        return await conn.request(call)

    def cache_request(
        self,
        call: Callable[[ClientConnection, float, int | None], int],
        *,
        operation: str,
        path: dict[str, str],
    ) -> Awaitable[ev.Event]:
        """A cache request on the next connection of the pool and the next of its
        ``request_streams`` streams, so concurrent requests do not queue behind each other
        (the cache handle's backend). ``operation`` and ``path`` name its span.

        Returns:
            What to await for the reply: on the hot path (an open connection, no tracer)
            the connection's own request coroutine, so that a cache call's task resumes
            through one coroutine frame less (0.15-0.3 us per request).
        """
        i, conn = self._next_open()
        if conn is None or self.tracer is not None:
            return self._cache_request(i, conn, call, operation, path)
        sid = conn.cache_stream(self.request_streams)
        return conn.request(lambda m, now: call(m, now, sid))

    async def _cache_request(
        self,
        i: int,
        conn: Connection | None,
        call: Callable[[ClientConnection, float, int | None], int],
        operation: str,
        path: dict[str, str],
    ) -> ev.Event:
        """:meth:`cache_request` opening slot ``i``'s connection first, or traced."""
        if conn is None:
            conn = await self._connection(i)
        sid = conn.cache_stream(self.request_streams)
        if self.tracer is None:
            return await conn.request(lambda m, now: call(m, now, sid))
        span = _tracing.operation_span(
            self.tracer, operation, None, path["cache"], path["tenant"], path["namespace"]
        )
        try:
            reply = await conn.request(lambda m, now: call(m, now, sid))
        except BaseException as exc:
            _tracing.finish(span, exc)
            raise
        if isinstance(reply, ev.CacheValueReceived):
            span.set_attribute("felix.cache.hit", reply.found)
        _tracing.finish(span, None)
        return reply

    async def _append(
        self, call: Callable[[ClientConnection, float], int], ack: AckMode
    ) -> PublishResult | None:
        """A publish or enqueue: sent without waiting under ``AckMode.NONE``, else awaited
        for its offset range."""
        i, conn = self._next_open()
        if conn is None:
            conn = await self._connection(i)
        if ack == _ACK_NONE:
            await conn.send(call)
            return None
        reply = await conn.request(call)
        assert isinstance(reply, ev.PublishAcked)
        return PublishResult(reply.first_offset, reply.last_offset)

    async def _traced_append(
        self, span: Any, call: Callable[[ClientConnection, float], int], ack: AckMode
    ) -> PublishResult | None:
        """:meth:`_append` inside a producer span (ended with the outcome)."""
        try:
            result = await self._append(call, ack)
        except BaseException as exc:
            _tracing.finish(span, exc)
            raise
        _tracing.finish(span, None, None if result is None else result.first_offset)
        return result

    # ---------------------------------------------------------------- publish

    async def publish(
        self,
        stream: str,
        payload: bytes | str,
        *,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
        ack: AckMode = AckMode.ACCEPTED,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult | None:
        """Append one record to a stream.

        Returns:
            The record's offset range (None under ``AckMode.NONE``).

        Raises:
            FelixError: ``NotFound`` (no such stream), ``TooLarge``, ``RequestTimeout`` ...
        """
        return await self.publish_batch(
            stream,
            [payload],
            keys=None if key is None else [key],
            headers=None if headers is None else [headers],
            ack=ack,
            tenant=tenant,
            namespace=namespace,
            timeout=timeout,
        )

    async def publish_batch(
        self,
        stream: str,
        payloads: Sequence[bytes | str],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[dict[str, bytes] | None] | None = None,
        ack: AckMode = AckMode.ACCEPTED,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult | None:
        """Append records atomically; they get consecutive offsets.

        Returns:
            The batch's offset range (None under ``AckMode.NONE``).
        """
        data = [p.encode() if isinstance(p, str) else bytes(p) for p in payloads]
        kl = list(keys) if keys is not None else None
        hl = list(headers) if headers is not None else None
        if hl is not None:
            for h in hl:
                check_headers(h)
        return await self._publish_records(stream, data, kl, hl, ack, tenant, namespace, timeout)

    async def _publish_records(
        self,
        stream: str,
        data: list[bytes],
        kl: list[bytes | None] | None,
        hl: list[dict[str, bytes] | None] | None,
        ack: AckMode,
        tenant: str | None,
        namespace: str | None,
        timeout: float | None,
    ) -> PublishResult | None:
        """:meth:`publish_batch` once its records are checked (a publisher's batch is:
        bytes payloads, checked headers), as lists the call may keep."""
        t, n = self.resource_path(tenant, namespace)
        span = None
        if self.tracer is not None:  # the producer's trace context goes into the headers
            span, hl = _tracing.send_span(self.tracer, "publish", stream, t, n, hl, len(data))
        if len(data) == 1:

            def call(m: ClientConnection, now: float) -> int:
                return m.publish(
                    tenant=t,
                    namespace=n,
                    stream=stream,
                    payload=data[0],
                    key=kl[0] if kl else None,
                    headers=hl[0] if hl else None,
                    ack=ack,
                    now=now,
                    timeout=timeout or self.timeout,
                )
        else:

            def call(m: ClientConnection, now: float) -> int:
                return m.publish_batch(
                    tenant=t,
                    namespace=n,
                    stream=stream,
                    payloads=data,
                    keys=kl,
                    headers=hl,
                    ack=ack,
                    now=now,
                    timeout=timeout or self.timeout,
                )

        if span is None:
            return await self._append(call, ack)
        return await self._traced_append(span, call, ack)

    def publisher(
        self,
        stream: str,
        *,
        ack: AckMode = AckMode.ACCEPTED,
        max_batch_records: int = 512,
        max_batch_bytes: int = 256 * 1024,
        max_in_flight_bytes: int = 8 << 20,
        linger: float = 0.002,
        overload_retries: int = 8,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Publisher:
        """A batching publisher for one stream (use it with ``async with``).

        ``timeout`` bounds each batch's request (default: the client's ``timeout``); a batch
        that times out fails the publisher like any other error.
        """

        async def send(batch: RecordBatch, mode: AckMode) -> PublishResult | None:
            return await self._publish_records(
                stream, batch.payloads, batch.keys, batch.headers, mode, tenant, namespace, timeout
            )

        return Publisher(
            send,
            ack=ack,
            max_batch_records=max_batch_records,
            max_batch_bytes=max_batch_bytes,
            max_in_flight_bytes=max_in_flight_bytes,
            linger=linger,
            overload_retries=overload_retries,
        )

    # -------------------------------------------------------------- subscribe

    def subscribe(
        self,
        stream: str,
        *,
        start: StartLike = "latest",
        credit_messages: int = 8192,
        credit_bytes: int = 1 << 20,
        cache_feed: bool = False,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Follow a stream (or, with ``cache_feed``, a cache's change feed).

        Args:
            stream: the stream (or cache) name.
            start: ``"latest"``, ``"earliest"``, an offset, a ``datetime`` or a
                :class:`~felix_client.types.Start`.
            credit_messages, credit_bytes: how far the broker may run ahead of the reader
                (the client returns credit as the application reads). A feed moves at most
                one window per round trip, and round trips grow under load: the 1 MiB
                bounds the memory, and 8192 records let a feed of small records use it
                (the wire's default, when Subscribe omits them, is 1024 records).
            timeout: seconds that subscribing (and each resume) may take (default: the
                client's ``timeout``); waiting for records is not bounded by it.

        Returns:
            A :class:`Subscription`; it subscribes on ``async with`` or the first read.
        """
        t, n = self.resource_path(tenant, namespace)
        spec: dict[str, Any] = {
            "tenant": t,
            "namespace": n,
            "stream": stream,
            "credit_messages": credit_messages,
            "credit_bytes": credit_bytes,
            "source": SourceKind.CACHE if cache_feed else SourceKind.STREAM,
            "timeout": timeout or self.timeout,
        }
        return Subscription(self, spec, Start.coerce(start))

    # ------------------------------------------------------------------- queues

    async def enqueue(
        self,
        queue: str,
        payload: bytes | str | Sequence[bytes | str],
        *,
        ack: AckMode = AckMode.ACCEPTED,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult | None:
        """Append one message (or a list of them) to a queue.

        Returns:
            The messages' offset range (None under ``AckMode.NONE``).
        """
        t, n = self.resource_path(tenant, namespace)
        items = [payload] if isinstance(payload, bytes | str) else list(payload)
        data = [p.encode() if isinstance(p, str) else bytes(p) for p in items]
        span, hl = None, None
        if self.tracer is not None:  # the producer's trace context goes into the headers
            span, hl = _tracing.send_span(self.tracer, "enqueue", queue, t, n, None, len(data))

        def call(m: ClientConnection, now: float) -> int:
            return m.enqueue(
                tenant=t,
                namespace=n,
                queue=queue,
                payloads=data,
                headers=hl,
                ack=ack,
                now=now,
                timeout=timeout or self.timeout,
            )

        if span is None:
            return await self._append(call, ack)
        return await self._traced_append(span, call, ack)

    def consume(
        self,
        queue: str,
        *,
        group: str = "default",
        prefetch: int = DEFAULT_PREFETCH,
        tenant: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Consumer:
        """Join a queue's consumer group; iterate the result for messages.

        ``timeout`` bounds joining the group (default: the client's ``timeout``), not the
        wait for messages.
        """
        t, n = self.resource_path(tenant, namespace)
        spec: dict[str, Any] = {
            "tenant": t,
            "namespace": n,
            "queue": queue,
            "group": group,
            "prefetch": prefetch,
            "timeout": timeout or self.timeout,
        }
        return Consumer(self, spec)

    # -------------------------------------------------------------------- cache

    def cache(self, name: str, *, tenant: str | None = None, namespace: str | None = None) -> Cache:
        """A handle on one cache (cheap; make as many as you like)."""
        t, n = self.resource_path(tenant, namespace)
        return Cache(self, name, t, n)

    # ------------------------------------------------- Backend (feeds, settle)

    async def open_feed(
        self, kind: str, spec: dict[str, Any]
    ) -> tuple[object, ev.Event, FeedReader[object]]:
        """Subscribe (``kind="sub"``) or consume (``"con"``) on one connection."""
        conn = await self._connection()
        s = dict(spec)
        timeout = s.pop("timeout", None) or self.timeout
        if kind == "sub":
            start = s.pop("start")
            assert isinstance(start, Start)

            def call(m: ClientConnection, now: float) -> int:
                return m.subscribe(
                    start=start.kind, start_value=start.value, now=now, timeout=timeout, **s
                )
        else:

            def call(m: ClientConnection, now: float) -> int:
                return m.consume(now=now, timeout=timeout, **s)

        reply = await conn.request(call)
        assert isinstance(reply, ev.SubscriptionStarted | ev.ConsumerStarted)
        ident = (
            reply.subscription_id
            if isinstance(reply, ev.SubscriptionStarted)
            else reply.consumer_id
        )
        inbox: FeedReader[Any] = conn.feed(kind, ident)
        if kind == "con":  # its acks leave early once half its prefetch is settled
            conn.acks.early[ident] = max(1, int(s["prefetch"]) // 2)
        return conn, reply, inbox

    async def credit(self, conn: object, sub_id: int, messages: int, nbytes: int) -> None:
        """Grant more credit on a subscription."""
        assert isinstance(conn, Connection)
        await conn.send(lambda m, now: m.credit(sub_id, messages, nbytes))

    async def close_feed(self, conn: object, kind: str, ident: int) -> None:
        """Unsubscribe or cancel a consumer; errors are ignored (the feed is gone anyway)."""
        assert isinstance(conn, Connection)
        if not conn.is_open:
            conn.forget_feed(kind, ident)
            return
        try:
            if kind == "sub":
                await conn.request(
                    lambda m, now: m.unsubscribe(ident, now=now, timeout=self.timeout)
                )
            else:
                await conn.request(
                    lambda m, now: m.cancel_consume(ident, now=now, timeout=self.timeout)
                )
        except FelixError:
            pass
        finally:
            conn.forget_feed(kind, ident)

    def settle(
        self,
        conn: object,
        consumer_id: int,
        delivery_ids: Sequence[int],
        ack: bool,
        delay: float,
        wait: bool,
        committed: bool = False,
    ) -> Awaitable[None]:
        """Ack or nack deliveries: buffered until the loop pass ends and sent in one frame
        per consumer; with ``wait``, sent now and confirmed (see ``felix_client._acks``);
        ``committed`` acks are answered once the broker has them on disk.

        Raises:
            NotFound: the consumer has ended (its queue was deleted, it was closed, its
                connection was lost) or a delivery is no longer awaiting settlement.
            InvalidArgument: a negative, infinite or NaN ``delay``.
            FelixError: with ``wait``, the broker's refusal or ``RequestTimeout``.
        """
        assert isinstance(conn, Connection)
        wait_ms = 0 if ack else delay_ms(delay)
        if conn.closed_error is not None:
            raise NotFound(
                f"consumer {consumer_id} has ended (connection lost): its deliveries "
                f"cannot be settled"
            )
        return conn.settle(
            consumer_id, delivery_ids, ack=ack, delay_ms=wait_ms, wait=wait, committed=committed
        )

    async def flush_acks(self, conn: object, consumer_id: int) -> None:
        """Send a consumer's buffered settlements and wait for the broker's answers."""
        assert isinstance(conn, Connection)
        await conn.flush_acks(consumer_id)

    def take_ack_error(self, conn: object, consumer_id: int) -> FelixError | None:
        """The first failure of a consumer's unawaited settlements, once."""
        assert isinstance(conn, Connection)
        return conn.acks.take_error(consumer_id)

    def ack_batches(self, conn: object) -> AckBatches:
        """The connection's settlement buffer (consumers use its fast path)."""
        assert isinstance(conn, Connection)
        return conn.acks

    async def log_identity(self, spec: dict[str, Any]) -> tuple[int, int] | None:
        """The followed stream's (or cache's) ``(uid, created_ms)`` from ``describe``: a
        re-created resource of the same name has a new uid (the broker's counter) and, after
        a restart that reset the counter, a new creation time.

        Returns:
            The pair, or None when the broker's description lacks it or describing is
            forbidden to this client.

        Raises:
            NotFound: the resource does not exist.
        """
        kind = "cache" if spec["source"] == SourceKind.CACHE else "stream"
        try:
            resource = await self.admin.describe(
                kind,
                spec["stream"],
                tenant=spec["tenant"],
                namespace=spec["namespace"],
                timeout=spec.get("timeout"),
            )
        except Forbidden:
            return None
        uid, created = resource.get("uid"), resource.get("created_ms")
        if isinstance(uid, int) and isinstance(created, int):
            return (uid, created)
        return None


def connect(url: str | None = None, **kwargs: Any) -> Client:
    """Make a :class:`Client`; use it as ``async with connect(url, ...) as client:``.

    Keyword arguments are those of :class:`Client`.
    """
    return Client(url, **kwargs)
