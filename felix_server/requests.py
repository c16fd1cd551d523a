"""Wire requests and their answers: the kind of each request, and the reply a completion
becomes.

A request leaves a session as a :mod:`felix_proto.messages` record and comes back as a
completion event of :mod:`felix_core.events` (from the local engine, or from a peer broker
through its route: either way the same events). :func:`reply_to` turns a completion into the
wire reply for the request; :func:`request_kind` names a request for metrics.

The replies made on every request of the hot paths (``CacheValue``, ``CachePutResult``,
``PublishAck``) are built by positional record factories
(:func:`felix_proto._schema.make_record_factory`): the same frozen objects as the keyword
constructors make, for about a fifth of the cost of the frozen ``__init__`` (~0.6 us per
reply; ``benchmarks/cache_path.py``). Their values come from the engine's completion,
already of the fields' types; the encoder checks ranges as for any reply.
"""

from __future__ import annotations

from felix_core import events as ce
from felix_proto import messages as m
from felix_proto._schema import make_record_factory

__all__ = ["REQUEST_KINDS", "reply_to", "request_kind"]

_KINDS: dict[type[m.Message], str] = {
    m.Publish: "publish",
    m.PublishBatch: "publish_batch",
    m.Enqueue: "enqueue",
    m.Subscribe: "subscribe",
    m.Unsubscribe: "unsubscribe",
    m.Consume: "consume",
    m.CancelConsume: "cancel_consume",
    m.Ack: "ack",
    m.Nack: "nack",
    m.CachePut: "cache_put",
    m.CacheGet: "cache_get",
    m.CacheDelete: "cache_delete",
    m.AdminCreate: "admin_create",
    m.AdminDescribe: "admin_describe",
    m.AdminUpdate: "admin_update",
    m.AdminList: "admin_list",
    m.AdminDelete: "admin_delete",
    m.Reauthenticate: "reauthenticate",
    m.TokenExchange: "token_exchange",
}

_ACK_NONE = m.AckMode.NONE.value
"""As an int: comparing with the enum member costs its lookup on the enum class too."""
_CACHE_VALUE = make_record_factory(m.CacheValue)
_CACHE_PUT_RESULT = make_record_factory(m.CachePutResult)
_PUBLISH_ACK = make_record_factory(m.PublishAck)

REQUEST_KINDS: tuple[str, ...] = tuple(_KINDS.values())
"""Every request kind name (the ``kind`` label of request metrics)."""


def request_kind(msg: m.Message) -> str:
    """The metric-safe kind name of a request (``other`` for a type that is no request)."""
    return _KINDS.get(type(msg), "other")


def reply_to(msg: m.Message, done: ce.RequestCompleted) -> m.Message | None:
    """The wire reply to ``msg`` for its completion ``done``.

    Args:
        msg: the request.
        done: its completion (the subclass matching the request).

    Returns:
        The reply, or None when none is due: a publish or enqueue with ``ack=NONE``, an
        ``Ack`` or ``Nack`` without a request id.

    Raises:
        TypeError: ``done`` does not answer ``msg`` (a bug in a route).
    """
    rid = getattr(msg, "request_id", None)
    if rid is None:
        return None
    if type(done) is ce.CacheRead:  # the hot replies first, by exact type
        if done.value is None:
            return _CACHE_VALUE(rid, False, None, None, None)
        return _CACHE_VALUE(rid, True, done.value, done.version, done.ttl_remaining_ms)
    if type(done) is ce.CacheStored:
        return _CACHE_PUT_RESULT(rid, done.stored, done.version)
    if isinstance(done, ce.Appended):
        if getattr(msg, "ack", None) == _ACK_NONE:
            return None
        return _PUBLISH_ACK(rid, done.first_offset, done.last_offset)
    if isinstance(done, ce.SubscriptionOpened):
        return m.Subscribed(
            request_id=rid, subscription_id=done.subscription_id, first_offset=done.first_offset
        )
    if isinstance(done, ce.ConsumerOpened):
        return m.Consuming(request_id=rid, consumer_id=done.consumer_id)
    if isinstance(done, ce.CacheRemoved):
        return m.CacheDeleted(request_id=rid, deleted=done.deleted)
    if isinstance(done, ce.ResourceDescribed):
        return m.AdminResource(request_id=rid, resource=done.resource)
    if isinstance(done, ce.ResourcesListed):
        return m.AdminResources(request_id=rid, resources=done.resources)
    if type(done) is ce.RequestCompleted:
        return m.Ok(request_id=rid)
    raise TypeError(f"{type(done).__name__} does not answer {type(msg).__name__}")
