"""The client side of a Felix connection, as a sans-IO state machine.

Theory of operation
-------------------

:class:`ClientConnection` speaks Felix over the QUIC streams of one connection. The glue
feeds it QUIC stream events and writes what it returns (see
:mod:`felix_proto.connection` for the inputs and outputs); the application calls the API
and reads :mod:`felix_proto.events`.

Handshake. :meth:`ClientConnection.connect` writes ``Hello`` on stream 0 and arms the
handshake deadline. ``Welcome`` moves the machine to ``READY`` (:class:`Welcomed`; the
broker's ``max_frame_size`` now bounds what we send); an ``Error`` instead ends the
connection (:class:`CloseRequested`, :class:`ConnectionTerminated` with the code). No
request can be made before ``READY`` (:class:`LocalProtocolError`).

Requests. Every request method allocates the next request id (1, 2, 3 ... shared with ping
nonces), writes the message and records an absolute deadline ``now + timeout`` (default
``default_timeout``). The reply is matched by id, must arrive on the stream the request
went out on, and must be of the kind the request expects; it becomes one event
(:class:`PublishAcked`, :class:`RequestSucceeded`, :class:`RequestFailed` ...). A request
whose deadline passes becomes :class:`RequestTimedOut`; its late reply is dropped (and a
late ``Subscribed``/``Consuming`` is undone with an internal unsubscribe/cancel). Publishes
with ``ack=NONE`` get no deadline: only an ``Error`` can come back for them.

Request streams. Unless the caller passes ``stream_id``, each kind of work has its own
lane, a bidirectional stream opened on first use: ``publish`` (publish, publish batch),
``queue`` (enqueue, consume, cancel, ack, nack), ``subscribe`` (subscribe, unsubscribe),
``cache`` and ``admin``; so a burst of publishes never queues a cache read behind it.
Pings and credit go on the control stream. :meth:`ClientConnection.open_request_stream`
opens a stream of one's own; :meth:`ClientConnection.end_request_stream` ends it.

Subscriptions and consumers follow the tables in :mod:`felix_proto._state`. A ``Subscribe``
creates a ``PENDING`` subscription; the broker's unidirectional stream may arrive before
the ``Subscribed`` reply (QUIC does not order streams), so its frames are buffered
(at most ``max_early_frames``) and replayed right after :class:`SubscriptionStarted`. Credit
is accounted per batch (records must fit the message credit; the byte credit must be
positive before a batch and may be overdrawn by it); with ``auto_credit`` the machine tops
the window back up once ``auto_credit`` of it is used. Deliveries are tracked until
``ack``/``nack``; settling an unknown or settled delivery id is a
:class:`LocalProtocolError`.

``GoAway`` gives :class:`GoAwayReceived`; new requests are then refused locally, while
acks, nacks, credit, unsubscribe and cancel still go out. On :meth:`connection_lost` (or
any close) every pending request fails with ``CONNECTION_LOST``, every started
subscription and consumer ends with an event, then :class:`ConnectionTerminated`.

Peer violations are handled at the one receive entry point
(:meth:`~felix_proto.connection.Connection.stream_data_received`): a bad message is answered
with ``Error`` and skipped; a broken request stream fails its requests and is ended; a
broken feed ends its subscription or consumer (``reason="error"``) and unsubscribes; a
broken control stream closes the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import messages as m
from ._client_base import _FINISHING, _LANES, ClientBase, _Feed
from ._state import ConnInput, FeedInput, FeedState
from .codec import validate
from .connection import CONTROL_STREAM_ID, REPLY_TYPES
from .errors import LocalProtocolError

__all__ = ["REPLY_TYPES", "ClientConnection"]


class ClientConnection(ClientBase):
    """The client side of one Felix connection (see the module docstring).

    Inputs: the API calls below, :meth:`stream_data_received`, :meth:`stream_reset`,
    :meth:`connection_lost`, :meth:`handle_timer`. Outputs: :meth:`next_event`,
    :meth:`data_to_send`, :meth:`get_timer`. Constructor arguments: see
    :class:`~felix_proto._client_base.ClientBase`.
    """

    # ------------------------------------------------------------------- handshake

    def connect(self, *, now: float, timeout: float | None = None) -> None:
        """Send ``Hello`` on the control stream and start the handshake deadline.

        Args:
            now: the current time (seconds).
            timeout: seconds to wait for ``Welcome``; default ``default_timeout``.

        Raises:
            LocalProtocolError: ``connect`` was already called.
        """
        self._transition(ConnInput.CONNECT, local=True)
        self._send(CONTROL_STREAM_ID, self._hello)
        self._handshake_deadline = self._deadline(now, timeout)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection: every pending thing ends with an event, then
        :class:`CloseRequested` and :class:`ConnectionTerminated`. No-op once closed.

        Args:
            error_code: the QUIC application error code (0: no error).
            reason: the reason phrase.
        """
        self._terminate(error_code, reason, by_peer=False, request_close=True)

    # -------------------------------------------------------------------- requests

    def open_request_stream(self) -> int:
        """Open a new request stream (allocating its id; nothing is sent yet).

        Returns:
            The stream id, to pass as ``stream_id`` to request methods.

        Raises:
            LocalProtocolError: the connection is not ``READY``.
        """
        self._transition(ConnInput.REQUEST, local=True)
        sid = self._next_stream
        self._next_stream += 4
        self._request_streams.add(sid)
        return sid

    def end_request_stream(self, stream_id: int) -> None:
        """End (FIN) a request stream; pending replies on it still arrive.

        Args:
            stream_id: a stream from :meth:`open_request_stream` or a lane.

        Raises:
            LocalProtocolError: not an open request stream.
        """
        if stream_id not in self._request_streams:
            raise LocalProtocolError(f"stream {stream_id} is not an open request stream")
        self._retire_stream(stream_id)
        self._end_stream(stream_id)

    def publish(
        self, tenant: str, namespace: str, stream: str, payload: bytes, *,
        key: bytes | None = None, headers: dict[str, bytes] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Append one record to a stream; answered by :class:`PublishAcked`.

        Args:
            tenant, namespace, stream: the target stream.
            payload: the record.
            key, headers: optional record key and headers.
            ack: when to acknowledge; with ``NONE`` only a failure is reported.
            now: the current time.
            timeout: seconds to wait for the reply; default ``default_timeout``.
            stream_id: the request stream to use; default: the ``publish`` lane.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: not ``READY`` (or going away), a bad argument, an unusable
                ``stream_id``, or a frame over the broker's ``max_frame_size``.
        """
        return self._request(
            m.Publish, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            stream=stream, payload=payload, key=key, headers=headers, ack=int(ack),
        )  # fmt: skip

    def publish_batch(
        self, tenant: str, namespace: str, stream: str, payloads: list[bytes], *,
        keys: list[bytes | None] | None = None,
        headers: list[dict[str, bytes] | None] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Append records atomically; answered by :class:`PublishAcked`. Args and Raises
        as :meth:`publish` (``keys``/``headers``: ``None`` or one entry per payload).

        Returns:
            The request id.
        """
        return self._request(
            m.PublishBatch, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            stream=stream, payloads=payloads, keys=keys, headers=headers, ack=int(ack),
        )  # fmt: skip

    def enqueue(
        self, tenant: str, namespace: str, queue: str, payloads: list[bytes], *,
        keys: list[bytes | None] | None = None,
        headers: list[dict[str, bytes] | None] | None = None,
        ack: m.AckMode = m.AckMode.ACCEPTED, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Append records to a queue; answered by :class:`PublishAcked`. Args and Raises as
        :meth:`publish_batch` (default lane: ``queue``).

        Returns:
            The request id.
        """
        return self._request(
            m.Enqueue, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            queue=queue, payloads=payloads, keys=keys, headers=headers, ack=int(ack),
        )  # fmt: skip

    def subscribe(
        self, tenant: str, namespace: str, stream: str, *,
        start: m.StartKind = m.StartKind.LATEST, start_value: int | None = None,
        credit_messages: int = 1024, credit_bytes: int = 1 << 20,
        source: m.SourceKind = m.SourceKind.STREAM, now: float,
        timeout: float | None = None, stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Follow a stream (or a cache's change feed); answered by
        :class:`SubscriptionStarted`, then :class:`EventsReceived` ... and finally
        :class:`SubscriptionEnded`; or by :class:`RequestFailed` / :class:`RequestTimedOut`.

        Args:
            tenant, namespace, stream: what to follow (``stream`` is the cache name when
                ``source`` is ``CACHE``).
            start, start_value: where to start.
            credit_messages, credit_bytes: the initial flow-control window (both > 0).
            source: stream or cache change feed.
            now, timeout, stream_id: as for :meth:`publish` (default lane ``subscribe``).

        Returns:
            The request id.

        Raises:
            LocalProtocolError: as for :meth:`publish`, or a window that is not positive.
        """
        if credit_messages <= 0 or credit_bytes <= 0:
            raise LocalProtocolError("credit_messages and credit_bytes must be positive")
        return self._request(
            m.Subscribe, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            stream=stream, start=int(start), start_value=start_value,
            credit_messages=credit_messages, credit_bytes=credit_bytes, source=str(source),
        )  # fmt: skip

    def unsubscribe(
        self, subscription_id: int, *, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """End an active subscription: :class:`RequestSucceeded`, then (after any frames
        still in flight) :class:`SubscriptionEnded`. Allowed while going away.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the subscription is unknown or not ``ACTIVE``.
        """
        feed = self._feed(self._subs, subscription_id, "subscription")
        feed.move(FeedInput.STOP, local=True)
        return self._request(
            m.Unsubscribe, now, timeout, stream_id, subscription_id=subscription_id
        )

    def credit(self, subscription_id: int, messages: int, nbytes: int) -> None:
        """Allow the broker ``messages`` more records and ``nbytes`` more payload bytes on
        an active subscription (a ``Credit`` on the control stream; it has no reply).

        Args:
            subscription_id: the subscription.
            messages: additional records (>= 0).
            nbytes: additional payload bytes (>= 0).

        Raises:
            LocalProtocolError: unknown or inactive subscription, or a negative amount.
        """
        if messages < 0 or nbytes < 0:
            raise LocalProtocolError("credit amounts must not be negative")
        feed = self._feed(self._subs, subscription_id, "subscription")
        self._transition(ConnInput.FINISH, local=True)
        feed.move(FeedInput.CREDIT, local=True)
        self._grant(feed, messages, nbytes)

    def subscription_credit(self, subscription_id: int) -> tuple[int, int]:
        """Return the remaining ``(messages, bytes)`` credit of a subscription.

        Raises:
            LocalProtocolError: unknown subscription.
        """
        feed = self._feed(self._subs, subscription_id, "subscription")
        return feed.remaining_messages, feed.remaining_bytes

    def consume(
        self, tenant: str, namespace: str, queue: str, *, group: str = "default",
        prefetch: int = 64, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Join a queue's consumer group: :class:`ConsumerStarted`, then
        :class:`DeliveryReceived` ... and finally :class:`ConsumerEnded`. Args and Raises as
        :meth:`publish` (default lane ``queue``).

        Returns:
            The request id.
        """
        return self._request(
            m.Consume, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            queue=queue, group=group, prefetch=prefetch,
        )  # fmt: skip

    def cancel_consume(
        self, consumer_id: int, *, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Leave the group: :class:`RequestSucceeded`, then :class:`ConsumerEnded`.

        Returns:
            The request id.

        Raises:
            LocalProtocolError: the consumer is unknown or not ``ACTIVE``.
        """
        feed = self._feed(self._consumers, consumer_id, "consumer")
        feed.move(FeedInput.STOP, local=True)
        return self._request(m.CancelConsume, now, timeout, stream_id, consumer_id=consumer_id)

    def ack(
        self, consumer_id: int, delivery_ids: Sequence[int], *, now: float,
        timeout: float | None = None, confirm: bool = True, stream_id: int | None = None,
    ) -> int | None:  # fmt: skip
        """Settle deliveries as done.

        Args:
            consumer_id: the consumer they were delivered to.
            delivery_ids: deliveries awaiting settlement (no duplicates).
            now, timeout, stream_id: as for :meth:`publish` (default lane ``queue``).
            confirm: ask for an ``Ok`` (:class:`RequestSucceeded`); else fire and forget.

        Returns:
            The request id, or ``None`` without ``confirm``.

        Raises:
            LocalProtocolError: unknown consumer, or a delivery id that is unknown, already
                settled or repeated.
        """
        return self._settle(m.Ack, consumer_id, delivery_ids, now, timeout, confirm, stream_id)

    def nack(
        self, consumer_id: int, delivery_ids: Sequence[int], *, delay_ms: int = 0,
        now: float, timeout: float | None = None, confirm: bool = True,
        stream_id: int | None = None,
    ) -> int | None:  # fmt: skip
        """Return deliveries for redelivery after ``delay_ms``. As :meth:`ack` otherwise.

        Returns:
            The request id, or ``None`` without ``confirm``.
        """
        return self._settle(
            m.Nack, consumer_id, delivery_ids, now, timeout, confirm, stream_id,
            delay_ms=delay_ms,
        )  # fmt: skip

    def pending_deliveries(self, consumer_id: int) -> frozenset[int]:
        """Return the delivery ids of a consumer that await ``ack``/``nack``.

        Raises:
            LocalProtocolError: unknown consumer.
        """
        return frozenset(self._feed(self._consumers, consumer_id, "consumer").awaiting)

    def cache_put(
        self, tenant: str, namespace: str, cache: str, key: str, value: bytes, *,
        ttl_ms: int | None = None, if_absent: bool = False, if_version: int | None = None,
        now: float, timeout: float | None = None, stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Store a value: :class:`CachePutCompleted`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CachePut, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            cache=cache, key=key, value=value, ttl_ms=ttl_ms, if_absent=if_absent,
            if_version=if_version,
        )  # fmt: skip

    def cache_get(
        self, tenant: str, namespace: str, cache: str, key: str, *, now: float,
        timeout: float | None = None, stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Read a value: :class:`CacheValueReceived`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CacheGet, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            cache=cache, key=key,
        )  # fmt: skip

    def cache_delete(
        self, tenant: str, namespace: str, cache: str, key: str, *,
        if_version: int | None = None, now: float, timeout: float | None = None,
        stream_id: int | None = None,
    ) -> int:  # fmt: skip
        """Delete a value: :class:`CacheDeleteCompleted`. Args and Raises as :meth:`publish`.

        Returns:
            The request id.
        """
        return self._request(
            m.CacheDelete, now, timeout, stream_id, tenant=tenant, namespace=namespace,
            cache=cache, key=key, if_version=if_version,
        )  # fmt: skip

    def admin(
        self, kind: type[m.Message], /, *, now: float, timeout: float | None = None,
        stream_id: int | None = None, **fields: Any,
    ) -> int:  # fmt: skip
        """Send an admin request: ``kind`` is :class:`~felix_proto.messages.AdminCreate`,
        ``AdminDescribe``, ``AdminList``, ``AdminUpdate`` or ``AdminDelete``; ``fields``
        its fields without ``request_id``. Answered by :class:`AdminReplied` (delete:
        :class:`RequestSucceeded`).

        Returns:
            The request id.

        Raises:
            LocalProtocolError: not an admin message, bad fields, or as :meth:`publish`.
        """
        if _LANES.get(kind) != "admin":
            raise LocalProtocolError(f"{kind.__name__} is not an admin request")
        return self._request(kind, now, timeout, stream_id, **fields)

    def ping(self, *, now: float, timeout: float | None = None) -> int:
        """Send a ``Ping`` on the control stream: :class:`PongReceived` or
        :class:`RequestTimedOut` (with the nonce as request id).

        Returns:
            The nonce.

        Raises:
            LocalProtocolError: the connection is not ``READY`` or going away.
        """
        self._transition(ConnInput.PING, local=True)
        nonce = self._allocate_id()
        self._send(CONTROL_STREAM_ID, m.Ping(nonce=nonce))
        self._track(nonce, m.Ping, CONTROL_STREAM_ID, self._deadline(now, timeout))
        return nonce

    # ------------------------------------------------------------- request helpers

    def _request(
        self,
        kind: type[m.Message],
        now: float,
        timeout: float | None,
        stream_id: int | None,
        /,
        **fields: Any,
    ) -> int:
        self._transition(ConnInput.FINISH if kind in _FINISHING else ConnInput.REQUEST, local=True)
        rid = self._allocate_id()
        try:
            factory: Any = kind
            msg = factory(request_id=rid, **fields)
        except TypeError as exc:
            raise LocalProtocolError(f"{kind.__name__}: {exc}") from None
        validate(msg)
        sid = self._request_stream(kind, stream_id)
        self._send(sid, msg)
        if getattr(msg, "ack", None) == m.AckMode.NONE:
            self._remember_late(rid, kind, report=True)
            return rid
        req = self._track(rid, kind, sid, self._deadline(now, timeout))
        if kind is m.Subscribe:
            assert isinstance(msg, m.Subscribe)
            req.feed = _Feed(
                is_sub=True, request_id=rid, messages=msg.credit_messages,
                nbytes=msg.credit_bytes,
            )  # fmt: skip
        elif kind is m.Consume:
            req.feed = _Feed(is_sub=False, request_id=rid)
        return rid

    def _settle(
        self,
        kind: type[m.Ack] | type[m.Nack],
        consumer_id: int,
        delivery_ids: Sequence[int],
        now: float,
        timeout: float | None,
        confirm: bool,
        stream_id: int | None,
        **extra: Any,
    ) -> int | None:
        feed = self._feed(self._consumers, consumer_id, "consumer")
        self._transition(ConnInput.FINISH, local=True)
        ids = list(delivery_ids)
        if not ids or len(set(ids)) != len(ids) or not feed.awaiting.issuperset(ids):
            raise LocalProtocolError(
                f"consumer {consumer_id}: deliveries {ids} are not all awaiting settlement"
            )
        feed.move(FeedInput.CREDIT, local=True)
        if confirm:
            rid = self._request(
                kind, now, timeout, stream_id, consumer_id=consumer_id, delivery_ids=ids, **extra
            )
        else:
            msg = kind(consumer_id=consumer_id, delivery_ids=ids, **extra)
            validate(msg)
            self._send(self._request_stream(kind, stream_id), msg)
            rid = None
        feed.awaiting.difference_update(ids)
        return rid

    def _feed(self, table: dict[int, _Feed], feed_id: int, what: str) -> _Feed:
        feed = table.get(feed_id)
        if feed is None or feed.state is FeedState.PENDING:
            raise LocalProtocolError(f"unknown {what} {feed_id}")
        return feed
