"""The wire replies of the hot request paths (``felix_server.requests.reply_to``).

``CacheValue``, ``CachePutResult`` and ``PublishAck`` are built by positional record
factories instead of the frozen keyword ``__init__``; they must be the very objects the
keyword constructors make: equal, hashable, frozen, and encoded byte for byte alike.
"""

from __future__ import annotations

import dataclasses

import pytest

from felix_core import events as ce
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_server.requests import reply_to

GET = m.CacheGet(request_id=7, tenant="t", namespace="n", cache="c", key="k")
PUT = m.CachePut(request_id=8, tenant="t", namespace="n", cache="c", key="k", value=b"v")
PUBLISH = m.Publish(request_id=9, tenant="t", namespace="n", stream="s", payload=b"p")

CASES = [
    (
        GET,
        ce.CacheRead(connection_id=1, request=1, value=b"v", version=3, ttl_remaining_ms=250),
        m.CacheValue(request_id=7, found=True, value=b"v", version=3, ttl_remaining_ms=250),
    ),
    (
        GET,
        ce.CacheRead(connection_id=1, request=1, value=b"v", version=3, ttl_remaining_ms=None),
        m.CacheValue(request_id=7, found=True, value=b"v", version=3),
    ),
    (
        GET,
        ce.CacheRead(connection_id=1, request=1, value=None, version=None, ttl_remaining_ms=None),
        m.CacheValue(request_id=7, found=False),
    ),
    (
        PUT,
        ce.CacheStored(connection_id=1, request=1, stored=True, version=4),
        m.CachePutResult(request_id=8, stored=True, version=4),
    ),
    (
        PUT,
        ce.CacheStored(connection_id=1, request=1, stored=False, version=None),
        m.CachePutResult(request_id=8, stored=False),
    ),
    (
        PUBLISH,
        ce.Appended(connection_id=1, request=1, first_offset=10, last_offset=10),
        m.PublishAck(request_id=9, first_offset=10, last_offset=10),
    ),
]


@pytest.mark.parametrize(("request_msg", "done", "expected"), CASES)
def test_hot_replies_are_the_keyword_constructors_objects(
    request_msg: m.Message, done: ce.RequestCompleted, expected: m.Message
) -> None:
    reply = reply_to(request_msg, done)
    assert type(reply) is type(expected)
    assert reply == expected
    assert hash(reply) == hash(expected)
    assert repr(reply) == repr(expected)
    assert encode(reply) == encode(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(reply, "request_id", 0)  # noqa: B010 - a frozen field


def test_an_unacknowledged_publish_gets_no_reply() -> None:
    publish = dataclasses.replace(PUBLISH, ack=m.AckMode.NONE.value)
    done = ce.Appended(connection_id=1, request=1, first_offset=0, last_offset=0)
    assert reply_to(publish, done) is None
