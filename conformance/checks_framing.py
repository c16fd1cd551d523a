"""Checks of §2 Framing, §3 Payload encoding and §13 version-1 interop, with the error
handling of §4 and §8: each bad input gets the right code, fatal errors end the stream (or,
on the control stream, the connection), and a second, healthy connection is served after."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack

from conformance.context import Context
from conformance.registry import check
from conformance.wire import CONTROL, CheckFailed, Conn, describe
from felix_proto import messages as m
from felix_proto.errors import ErrorCode
from felix_proto.frames import HEADER_SIZE, MAGIC, encode_header, parse_header

S2 = "§2 Framing"
S3 = "§3 Payload encoding"
S4 = "§4 Streams"
S13 = "§13 Version-1 interop"


def frame(payload: bytes, *, flags: int = 0, version: int = 2) -> bytes:
    """A frame around ``payload`` with the given header fields."""
    return encode_header(len(payload), flags, version) + payload


def packed(type_code: Any, fields: Any) -> bytes:
    """A msgpack ``[type, fields]`` payload, as is (no validation)."""
    return bytes(msgpack.packb([type_code, fields]))


def _listing(conn: Conn, tenant: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": conn.rid(), "kind": "namespace", "tenant": tenant, **extra}


async def _fatal_on_request_stream(ctx: Context, data: bytes, code: int) -> None:
    """Send ``data`` on a fresh request stream: expect Error ``code`` without request id,
    the stream ended by the broker, the connection alive, and a healthy second one."""
    conn = await ctx.connect()
    sid = conn.new_stream()
    conn.send_raw(sid, data)
    err = await conn.message(sid, m.Error, what=f"Error on request stream {sid}")
    if err.code != code:
        raise CheckFailed(f"got {describe(err)}, expected Error {code}")
    if err.request_id is not None:
        raise CheckFailed(f"a framing Error carries request_id {err.request_id}; it must not")
    log = conn.log(sid)
    await conn.until(lambda: log.ended, f"the broker ending stream {sid} (fatal error)", None)
    conn.send(m.Ping(nonce=9), CONTROL)
    await conn.message(CONTROL, m.Pong, what="Pong: the connection must survive a stream error")
    await ctx.healthy()


async def _not_fatal(
    ctx: Context,
    payload: bytes,
    code: int,
    request_id: int | tuple[int | None, ...] | None,
    field: str | None = None,
) -> None:
    """Send one bad message on a request stream: expect Error ``code`` (with ``request_id``
    when given, naming ``field`` when given), then the same stream keeps serving."""
    conn = await ctx.connect()
    sid = conn.new_stream()
    conn.send_raw(sid, frame(payload))
    err = await conn.message(sid, m.Error, what=f"Error on request stream {sid}")
    if err.code != code:
        raise CheckFailed(f"got {describe(err)}, expected Error {code}")
    allowed = request_id if isinstance(request_id, tuple) else (request_id,)
    if err.request_id not in allowed:
        raise CheckFailed(
            f"Error.request_id is {err.request_id}, expected {' or '.join(map(str, allowed))}"
        )
    if field is not None and field not in err.message:
        raise CheckFailed(f"the Error message {err.message!r} does not name the field {field!r}")
    good = m.AdminList(request_id=conn.rid(), kind="namespace", tenant=ctx.tenant)
    reply = await conn.request(good, sid)
    if not isinstance(reply, m.AdminResources):
        raise CheckFailed(
            f"the next request on the stream got {describe(reply)}; "
            "a bad message must not end the stream"
        )
    if conn.log(sid).ended:
        raise CheckFailed(f"the broker ended stream {sid} after a non-fatal error")
    await ctx.healthy()


# -- §2 framing: fatal for the stream ----------------------------------------------------


@check("framing.bad-magic", S2, "bad magic on a request stream: Error 100, stream ended")
async def bad_magic(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 1, "kind": "tenant"})
    data = struct.pack(">IHHI", MAGIC ^ 0x01010101, 2, 0, len(payload)) + payload
    await _fatal_on_request_stream(ctx, data, ErrorCode.BAD_FRAME)


@check("framing.unknown-flag", S2, "flags 0x0001 (no bits defined): Error 100, stream ended")
async def unknown_flag(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 1, "kind": "tenant"})
    await _fatal_on_request_stream(ctx, frame(payload, flags=0x0001), ErrorCode.BAD_FRAME)


@check("framing.high-flag", S2, "flags 0x8000: rejected, never masked (Error 100)")
async def high_flag(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 1, "kind": "tenant"})
    await _fatal_on_request_stream(ctx, frame(payload, flags=0x8000), ErrorCode.BAD_FRAME)


@check(
    "framing.unknown-version",
    S2,
    "header version 3: Error 101 with details.supported_versions [2], stream ended",
)
async def unknown_version(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 1, "kind": "tenant"})
    await _fatal_on_request_stream(ctx, frame(payload, version=3), ErrorCode.UNSUPPORTED_VERSION)


@check(
    "framing.oversize",
    S2,
    "declared length > limits.max_frame_size: Error 204 before any payload arrives",
)
async def oversize(ctx: Context) -> None:
    probe = await ctx.connect()
    assert probe.welcome is not None
    limit = int(probe.welcome.limits.get("max_frame_size", 16 * 1024 * 1024))
    if limit >= 0xFFFF_FFFF:
        raise CheckFailed(f"limits.max_frame_size {limit} leaves no oversize length to send")
    # Only the header is sent: the broker must refuse it without waiting for the payload.
    await _fatal_on_request_stream(ctx, encode_header(limit + 1), ErrorCode.TOO_LARGE)


@check("framing.split-header", S2, "a frame delivered in 1-byte pieces is reassembled and answered")
async def split_header(ctx: Context) -> None:
    conn = await ctx.connect()
    sid = conn.new_stream()
    rid = conn.rid()
    data = frame(packed(0x52, {"request_id": rid, "kind": "namespace", "tenant": ctx.tenant}))
    for i in range(len(data)):
        conn.send_raw(sid, data[i : i + 1])
    reply = await conn.reply(sid, rid)
    if not isinstance(reply, m.AdminResources):
        raise CheckFailed(f"got {describe(reply)}, expected AdminResources")


@check(
    "framing.control-stream-fatal",
    S4,
    "bad flags on the control stream: Error 100, then close with app code 100",
)
async def control_fatal(ctx: Context) -> None:
    conn = await ctx.connect()
    conn.send_raw(CONTROL, frame(packed(0x03, {"nonce": 1}), flags=0x0002))
    err = await conn.message(CONTROL, m.Error, what="Error on the control stream")
    if err.code != ErrorCode.BAD_FRAME:
        raise CheckFailed(f"got {describe(err)}, expected Error 100")
    end = await conn.ended()
    if end.error_code != ErrorCode.BAD_FRAME:
        raise CheckFailed(f"the connection closed with code {end.error_code}, expected 100")
    await ctx.healthy()


@check(
    "framing.unknown-version-first",
    S2,
    "a version-3 header as the first control frame: Error 101, then the close",
)
async def unknown_version_first(ctx: Context) -> None:
    conn = await ctx.raw()
    conn.send_raw(CONTROL, frame(packed(0x01, {"versions": [3]}), version=3))
    err = await conn.message(CONTROL, m.Error, what="Error on the control stream")
    if err.code != ErrorCode.UNSUPPORTED_VERSION:
        raise CheckFailed(f"got {describe(err)}, expected Error 101")
    versions = err.details.get("supported_versions")
    if not (isinstance(versions, list) and 2 in versions):
        raise CheckFailed(f"details.supported_versions is {versions!r}, expected [2]")
    await conn.ended()
    await ctx.healthy()


@check(
    "interop.v1-client", S13, "a version-1 first frame gets a v1 JSON error frame, then the close"
)
async def v1_client(ctx: Context) -> None:
    # Offers felix/2 so that this check does not depend on transport.no-alpn.
    conn = await ctx.raw()
    body = b'{"type":"ok"}'
    conn.send_raw(CONTROL, frame(body, version=1))
    log = conn.log(CONTROL)

    def complete() -> bool:
        if len(log.raw) < HEADER_SIZE:
            return False
        return len(log.raw) >= HEADER_SIZE + parse_header(bytes(log.raw)).length

    await conn.until(complete, "a complete answer frame on the control stream", None)
    header = parse_header(bytes(log.raw))
    if header.version != 1:
        raise CheckFailed(
            f"the answer's header version is {header.version}, expected 1 "
            "(a version-1 client cannot read a version-2 frame)"
        )
    text = bytes(log.raw[HEADER_SIZE : HEADER_SIZE + header.length])
    try:
        doc = json.loads(text)
    except ValueError:
        raise CheckFailed(f"the v1 answer is not JSON: {text[:80]!r}") from None
    if not (isinstance(doc, dict) and doc.get("type") == "error"):
        raise CheckFailed(f"the v1 answer is {doc!r}, expected {{'type': 'error', ...}}")
    if "2" not in str(doc.get("message", "")):
        raise CheckFailed(f"the v1 error message {doc.get('message')!r} does not name version 2")
    await conn.ended()
    await ctx.healthy()


# -- §3 payloads: not fatal --------------------------------------------------------------


@check("payload.truncated", S3, "truncated msgpack: Error 100 without id; the stream goes on")
async def truncated(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 5, "kind": "namespace", "tenant": ctx.tenant})
    await _not_fatal(ctx, payload[:-3], ErrorCode.BAD_FRAME, None)


@check("payload.trailing-bytes", S3, "a payload with trailing bytes: Error 100; stream goes on")
async def trailing(ctx: Context) -> None:
    payload = packed(0x52, {"request_id": 5, "kind": "namespace", "tenant": ctx.tenant})
    await _not_fatal(ctx, payload + b"\xc0", ErrorCode.BAD_FRAME, None)


@check("payload.not-array", S3, "a payload that is not [uint, map]: Error 100; stream goes on")
async def not_array(ctx: Context) -> None:
    await _not_fatal(ctx, bytes(msgpack.packb({"request_id": 5})), ErrorCode.BAD_FRAME, None)


@check("payload.ext-type", S3, "a msgpack ext value: Error 100 (ext types are not allowed)")
async def ext_type(ctx: Context) -> None:
    # The document itself is invalid: the request id may or may not come back.
    payload = packed(
        0x52, {"request_id": 6, "kind": "namespace", "tenant": msgpack.ExtType(1, b"x")}
    )
    await _not_fatal(ctx, payload, ErrorCode.BAD_FRAME, (None, 6))


@check("payload.unknown-type", S3, "unknown message type 0x7e: Error 102 with the request id")
async def unknown_type(ctx: Context) -> None:
    await _not_fatal(ctx, packed(0x7E, {"request_id": 11}), ErrorCode.UNKNOWN_MESSAGE, 11)


@check(
    "payload.wrong-field-type",
    S3,
    "Publish.stream as an int: Error 100 with the id, naming the field",
)
async def wrong_field_type(ctx: Context) -> None:
    fields = {
        "request_id": 12,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "stream": 5,
        "payload": b"x",
    }
    await _not_fatal(ctx, packed(0x10, fields), ErrorCode.BAD_FRAME, 12, "stream")


@check("payload.missing-field", S3, "Publish without payload: Error 100 with the id, naming it")
async def missing_field(ctx: Context) -> None:
    fields = {"request_id": 13, "tenant": ctx.tenant, "namespace": ctx.namespace, "stream": "s"}
    await _not_fatal(ctx, packed(0x10, fields), ErrorCode.BAD_FRAME, 13, "payload")


@check("payload.bool-for-int", S3, "true where a uint64 is due: Error 100 (a bool is no int)")
async def bool_for_int(ctx: Context) -> None:
    fields = {
        "request_id": 14,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "stream": "s",
        "credit_messages": True,
    }
    await _not_fatal(ctx, packed(0x13, fields), ErrorCode.BAD_FRAME, 14, "credit_messages")


@check("payload.int-for-bool", S3, "1 where a bool is due: Error 100 (an int is no bool)")
async def int_for_bool(ctx: Context) -> None:
    fields = {
        "request_id": 15,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "cache": "c",
        "key": "k",
        "value": b"v",
        "if_absent": 1,
    }
    await _not_fatal(ctx, packed(0x40, fields), ErrorCode.BAD_FRAME, 15, "if_absent")


@check("payload.negative-int", S3, "a negative uint64: Error 100 (out of range)")
async def negative(ctx: Context) -> None:
    fields = {
        "request_id": 16,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "stream": "s",
        "credit_bytes": -1,
    }
    await _not_fatal(ctx, packed(0x13, fields), ErrorCode.BAD_FRAME, 16, "credit_bytes")


@check("payload.bad-enum", S3, "Subscribe.start 9 (not a StartKind): Error 100")
async def bad_enum(ctx: Context) -> None:
    fields = {
        "request_id": 17,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "stream": "s",
        "start": 9,
    }
    await _not_fatal(ctx, packed(0x13, fields), ErrorCode.BAD_FRAME, 17, "start")


@check("payload.bad-kind", S3, "AdminCreate.kind 'widget' (not a ResourceKind): Error 100")
async def bad_kind(ctx: Context) -> None:
    fields = {"request_id": 18, "kind": "widget", "tenant": ctx.tenant}
    await _not_fatal(ctx, packed(0x50, fields), ErrorCode.BAD_FRAME, 18, "kind")


@check("payload.parallel-arrays", S3, "PublishBatch with 1 key for 2 payloads: Error 100")
async def parallel(ctx: Context) -> None:
    fields = {
        "request_id": 19,
        "tenant": ctx.tenant,
        "namespace": ctx.namespace,
        "stream": "s",
        "payloads": [b"a", b"b"],
        "keys": [b"k"],
    }
    await _not_fatal(ctx, packed(0x11, fields), ErrorCode.BAD_FRAME, 19, "keys")


@check("payload.unknown-field", S3, "unknown field names are ignored (forward compatibility)")
async def unknown_field(ctx: Context) -> None:
    conn = await ctx.connect()
    sid = conn.new_stream()
    fields = _listing(conn, ctx.tenant, x_conformance_future={"a": [1, 2]})
    conn.send_raw(sid, frame(packed(0x52, fields)))
    reply = await conn.reply(sid, fields["request_id"])
    if not isinstance(reply, m.AdminResources):
        raise CheckFailed(f"got {describe(reply)}, expected AdminResources")


@check("payload.nil-is-absent", S3, "an explicit nil optional field is treated as absent")
async def nil_absent(ctx: Context) -> None:
    conn = await ctx.connect()
    sid = conn.new_stream()
    fields = _listing(conn, ctx.tenant, namespace=None)
    conn.send_raw(sid, frame(packed(0x52, fields)))
    reply = await conn.reply(sid, fields["request_id"])
    if not isinstance(reply, m.AdminResources):
        raise CheckFailed(f"got {describe(reply)}, expected AdminResources")
