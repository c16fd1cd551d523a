"""Decoding limits on the wire, against every runtime: an integer above its field's maximum is
INVALID_ARGUMENT, a frame that would expand past the value budget is TOO_LARGE, each answered
with the request id, and the stream goes on. Frames are written raw (the felix_proto client
refuses to send them)."""

from __future__ import annotations

import struct

import msgpack
import pytest

from felix_proto import messages as m
from felix_proto.codec import MAX_VALUES, MessageDecoder, encode
from felix_proto.errors import ErrorCode
from felix_proto.frames import encode_header

from .conftest import Connect
from .harness import N, RawClient, T

pytestmark = pytest.mark.anyio

REQUESTS = 4
"""The raw client's first request stream."""


def frame(payload: bytes) -> bytes:
    return encode_header(len(payload)) + payload


async def handshake(c: RawClient) -> None:
    c.quic.send_stream_data(0, encode(m.Hello(versions=[2])))
    c.transmit()
    await c.until(lambda: c.stream_bytes(0) != b"")


async def replies(c: RawClient, count: int) -> dict[int, m.Message]:
    """The first ``count`` replies on the request stream, by request id (replies may come
    in any order)."""
    decoded: dict[int, m.Message] = {}

    def enough() -> bool:
        decoder = MessageDecoder()
        decoder.feed(c.stream_bytes(REQUESTS))
        decoded.clear()
        while (msg := decoder.next_message()) is not None:
            decoded[getattr(msg, "request_id", None) or 0] = msg
        return len(decoded) >= count

    await c.until(enough)
    return decoded


def send(c: RawClient, data: bytes) -> None:
    c.quic.send_stream_data(REQUESTS, data)
    c.transmit()


async def test_cache_put_with_ttl_2_64_minus_1_is_invalid_argument(
    connect: Connect, name: str
) -> None:
    """Formerly stored; every CacheGet of the key then went unanswered (the reply's
    ttl_remaining_ms overflowed a uint64 when encoded)."""
    c = await connect(raw=True)
    await handshake(c)
    create = m.AdminCreate(request_id=1, kind="cache", tenant=T, namespace=N, name=name)
    fields = {
        "request_id": 2,
        "tenant": T,
        "namespace": N,
        "cache": name,
        "key": "k",
        "value": b"v",
        "ttl_ms": (1 << 64) - 1,
    }
    put = frame(msgpack.packb([m.CachePut.TYPE, fields]))
    get = m.CacheGet(request_id=3, tenant=T, namespace=N, cache=name, key="k")
    send(c, encode(create))
    await replies(c, 1)
    send(c, put + encode(get))
    got = await replies(c, 3)
    assert isinstance(got[1], m.AdminResource)
    error = got[2]
    assert isinstance(error, m.Error), error
    assert (error.code, error.request_id) == (ErrorCode.INVALID_ARGUMENT, 2)
    assert error.details == {"field": "ttl_ms"} and "ttl_ms" in error.message
    assert got[3] == m.CacheValue(request_id=3, found=False)


async def test_frame_expanding_past_the_value_budget_is_too_large(
    connect: Connect, name: str
) -> None:
    c = await connect(raw=True)
    await handshake(c)
    create = m.AdminCreate(request_id=1, kind="stream", tenant=T, namespace=N, name=name)
    fields = {"request_id": 2, "tenant": T, "namespace": N, "stream": name, "payload": b"x"}
    head = msgpack.packb([m.Publish.TYPE, {**fields, "ignored": []}])[:-1]  # ... "ignored":
    n = MAX_VALUES + 1
    hostile = frame(head + b"\xdd" + struct.pack(">I", n) + b"\x80" * n)  # n empty maps
    publish = m.Publish(request_id=3, tenant=T, namespace=N, stream=name, payload=b"ok")
    send(c, encode(create))
    await replies(c, 1)
    send(c, hostile + encode(publish))
    got = await replies(c, 3)
    error = got[2]
    assert isinstance(error, m.Error), error
    assert (error.code, error.request_id) == (ErrorCode.TOO_LARGE, 2)
    assert error.details == {"max_values": MAX_VALUES}
    assert got[3] == m.PublishAck(request_id=3, first_offset=0, last_offset=0)
