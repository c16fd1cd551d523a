"""Requests to engine calls: one function per request kind, each returning the reply.

:func:`dispatch` maps a decoded request (a :mod:`felix_proto.messages` record) to the one
:class:`~felix_core.broker.Broker` call that serves it and builds the success reply. It
decides nothing about connections: refusals come back as
:class:`~felix_core.errors.EngineError` raised by the engine, which the session turns into an
``Error`` frame 1:1. ``Subscribe`` and ``Consume`` return :class:`FeedOpened` because the
session must open the feed's stream before the reply goes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from felix_core.broker import Broker
from felix_proto import messages as m

__all__ = ["REQUEST_KINDS", "FeedOpened", "Reply", "dispatch", "request_kind"]


@dataclass(frozen=True, slots=True)
class FeedOpened:
    """A subscription or consumer was created; open its stream, then send ``reply``."""

    subscription: bool
    """True for a subscription, False for a queue consumer."""
    feed_id: int
    """The subscription or consumer id."""
    reply: m.Subscribed | m.Consuming
    """The reply to send once the stream is open."""


Reply = m.Message | FeedOpened | None
"""What a handler returns: the reply, a feed to open, or None (no reply is due)."""

_Handler = Callable[[Broker, int, Any, float], Reply]


def _publish(b: Broker, conn: int, msg: m.Publish, now: float) -> Reply:
    first, last = b.publish(
        conn, msg.tenant, msg.namespace, msg.stream, [msg.payload],
        keys=None if msg.key is None else [msg.key],
        headers=None if msg.headers is None else [msg.headers],
        now=now,
    )  # fmt: skip
    return _ack(msg.request_id, msg.ack, first, last)


def _publish_batch(b: Broker, conn: int, msg: m.PublishBatch, now: float) -> Reply:
    first, last = b.publish(
        conn, msg.tenant, msg.namespace, msg.stream, msg.payloads,
        keys=msg.keys, headers=msg.headers, now=now,
    )  # fmt: skip
    return _ack(msg.request_id, msg.ack, first, last)


def _enqueue(b: Broker, conn: int, msg: m.Enqueue, now: float) -> Reply:
    first, last = b.enqueue(
        conn, msg.tenant, msg.namespace, msg.queue, msg.payloads,
        keys=msg.keys, headers=msg.headers, now=now,
    )  # fmt: skip
    return _ack(msg.request_id, msg.ack, first, last)


def _ack(request_id: int, mode: int, first: int, last: int) -> Reply:
    if mode == m.AckMode.NONE:
        return None
    return m.PublishAck(request_id=request_id, first_offset=first, last_offset=last)


def _subscribe(b: Broker, conn: int, msg: m.Subscribe, now: float) -> Reply:
    sub_id, first = b.subscribe(
        conn, msg.tenant, msg.namespace, msg.stream,
        start=msg.start, start_value=msg.start_value,
        credit_messages=msg.credit_messages, credit_bytes=msg.credit_bytes,
        source=msg.source, now=now,
    )  # fmt: skip
    reply = m.Subscribed(request_id=msg.request_id, subscription_id=sub_id, first_offset=first)
    return FeedOpened(True, sub_id, reply)


def _unsubscribe(b: Broker, conn: int, msg: m.Unsubscribe, now: float) -> Reply:
    b.unsubscribe(conn, msg.subscription_id, now=now)
    return m.Ok(request_id=msg.request_id)


def _consume(b: Broker, conn: int, msg: m.Consume, now: float) -> Reply:
    consumer_id = b.consume(
        conn, msg.tenant, msg.namespace, msg.queue, group=msg.group, prefetch=msg.prefetch,
        now=now,
    )  # fmt: skip
    return FeedOpened(False, consumer_id, m.Consuming(request_id=msg.request_id,
                                                      consumer_id=consumer_id))  # fmt: skip


def _cancel_consume(b: Broker, conn: int, msg: m.CancelConsume, now: float) -> Reply:
    b.cancel_consumer(conn, msg.consumer_id, now=now)
    return m.Ok(request_id=msg.request_id)


def _settle(b: Broker, conn: int, msg: m.Ack, now: float) -> Reply:
    b.ack(conn, msg.consumer_id, msg.delivery_ids, now=now)
    return None if msg.request_id is None else m.Ok(request_id=msg.request_id)


def _nack(b: Broker, conn: int, msg: m.Nack, now: float) -> Reply:
    b.nack(conn, msg.consumer_id, msg.delivery_ids, delay_ms=msg.delay_ms, now=now)
    return None if msg.request_id is None else m.Ok(request_id=msg.request_id)


def _cache_put(b: Broker, conn: int, msg: m.CachePut, now: float) -> Reply:
    stored, version = b.cache_put(
        msg.tenant, msg.namespace, msg.cache, msg.key, msg.value,
        ttl_ms=msg.ttl_ms, if_absent=msg.if_absent, if_version=msg.if_version, now=now,
    )  # fmt: skip
    return m.CachePutResult(request_id=msg.request_id, stored=stored, version=version)


def _cache_get(b: Broker, conn: int, msg: m.CacheGet, now: float) -> Reply:
    entry = b.cache_get(msg.tenant, msg.namespace, msg.cache, msg.key, now=now)
    if entry is None:
        return m.CacheValue(request_id=msg.request_id, found=False)
    ttl = entry.ttl_remaining(now)
    return m.CacheValue(
        request_id=msg.request_id, found=True, value=entry.value, version=entry.version,
        ttl_remaining_ms=None if ttl is None else max(int(ttl * 1000), 0),
    )  # fmt: skip


def _cache_delete(b: Broker, conn: int, msg: m.CacheDelete, now: float) -> Reply:
    deleted = b.cache_delete(
        msg.tenant, msg.namespace, msg.cache, msg.key, if_version=msg.if_version, now=now
    )
    return m.CacheDeleted(request_id=msg.request_id, deleted=deleted)


def _admin_create(b: Broker, conn: int, msg: m.AdminCreate, now: float) -> Reply:
    resource = b.create(msg.kind, msg.tenant, msg.namespace, msg.name, msg.settings, now=now)
    return m.AdminResource(request_id=msg.request_id, resource=resource)


def _admin_describe(b: Broker, conn: int, msg: m.AdminDescribe, now: float) -> Reply:
    resource = b.describe(msg.kind, msg.tenant, msg.namespace, msg.name, now=now)
    return m.AdminResource(request_id=msg.request_id, resource=resource)


def _admin_update(b: Broker, conn: int, msg: m.AdminUpdate, now: float) -> Reply:
    resource = b.update(msg.kind, msg.tenant, msg.namespace, msg.name, msg.settings, now=now)
    return m.AdminResource(request_id=msg.request_id, resource=resource)


def _admin_list(b: Broker, conn: int, msg: m.AdminList, now: float) -> Reply:
    resources = b.list(msg.kind, msg.tenant, msg.namespace)
    return m.AdminResources(request_id=msg.request_id, resources=resources)


def _admin_delete(b: Broker, conn: int, msg: m.AdminDelete, now: float) -> Reply:
    b.delete(msg.kind, msg.tenant, msg.namespace, msg.name, now=now)
    return m.Ok(request_id=msg.request_id)


_HANDLERS: dict[type[m.Message], tuple[str, _Handler]] = {
    m.Publish: ("publish", _publish),
    m.PublishBatch: ("publish_batch", _publish_batch),
    m.Enqueue: ("enqueue", _enqueue),
    m.Subscribe: ("subscribe", _subscribe),
    m.Unsubscribe: ("unsubscribe", _unsubscribe),
    m.Consume: ("consume", _consume),
    m.CancelConsume: ("cancel_consume", _cancel_consume),
    m.Ack: ("ack", _settle),
    m.Nack: ("nack", _nack),
    m.CachePut: ("cache_put", _cache_put),
    m.CacheGet: ("cache_get", _cache_get),
    m.CacheDelete: ("cache_delete", _cache_delete),
    m.AdminCreate: ("admin_create", _admin_create),
    m.AdminDescribe: ("admin_describe", _admin_describe),
    m.AdminUpdate: ("admin_update", _admin_update),
    m.AdminList: ("admin_list", _admin_list),
    m.AdminDelete: ("admin_delete", _admin_delete),
}

REQUEST_KINDS: tuple[str, ...] = tuple(kind for kind, _ in _HANDLERS.values())
"""Every request kind name (the ``kind`` label of request metrics)."""


def request_kind(msg: m.Message) -> str:
    """The metric-safe kind name of a request (``other`` for a type with no handler)."""
    entry = _HANDLERS.get(type(msg))
    return entry[0] if entry is not None else "other"


def dispatch(broker: Broker, conn_id: int, msg: m.Message, now: float) -> Reply:
    """Serve one request.

    Args:
        broker: the engine.
        conn_id: the requesting connection (attached to the broker).
        msg: the request.
        now: the current time.

    Returns:
        The success reply, a :class:`FeedOpened`, or None when no reply is due.

    Raises:
        EngineError: the engine refused the request (becomes an ``Error`` frame).
        KeyError: ``msg`` is not a request (a bug in the caller).
    """
    return _HANDLERS[type(msg)][1](broker, conn_id, msg, now)
