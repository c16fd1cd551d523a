"""Checks of §1 Transport, §5 Session and §4 Streams: ALPN, handshake, versions, ping,
request streams and GoAway."""

from __future__ import annotations

import asyncio

from conformance.context import Context
from conformance.registry import Skip, check
from conformance.wire import CONTROL, describe, expect
from felix_proto import ALPN
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

U64_MAX = (1 << 64) - 1
NO_APPLICATION_PROTOCOL = 0x100 + 120
"""QUIC CRYPTO_ERROR for the TLS ``no_application_protocol`` alert (RFC 9001 §4.8)."""

S1 = "§1 Transport"
S4 = "§4 Streams"
S5 = "§5 Session"


@check("transport.alpn", S1, "offering felix/2 negotiates felix/2")
async def alpn(ctx: Context) -> None:
    conn = await ctx.connect()
    expect(conn.alpn == ALPN, f"negotiated ALPN {conn.alpn!r}, expected {ALPN!r}")


@check("transport.no-alpn", S1, "a client offering no ALPN is accepted (Hello -> Welcome)")
async def no_alpn(ctx: Context) -> None:
    await ctx.connect(alpn=[])


@check("transport.wrong-alpn", S1, "offering only other ALPNs fails TLS: no_application_protocol")
async def wrong_alpn(ctx: Context) -> None:
    try:
        conn = await ctx.raw(alpn=["felix/999", "h3"])
    except ConnectionError as exc:
        expect(
            f"{NO_APPLICATION_PROTOCOL:#x}" in str(exc),
            f"{exc}; expected the TLS alert no_application_protocol ({NO_APPLICATION_PROTOCOL:#x})",
        )
        return
    end = await conn.ended()
    expect(
        end.error_code == NO_APPLICATION_PROTOCOL,
        f"handshake completed with ALPN {conn.alpn!r}; the connection then ended with code "
        f"{end.error_code:#x}, expected the TLS alert no_application_protocol "
        f"({NO_APPLICATION_PROTOCOL:#x}) during the handshake",
    )


@check("session.welcome", S5, "Hello [2] gets Welcome: version 2, server_id, limits.max_frame_size")
async def welcome(ctx: Context) -> None:
    conn = await ctx.connect()
    w = conn.welcome
    assert w is not None
    expect(w.version == 2, f"Welcome.version is {w.version}, expected 2")
    expect(bool(w.server_id), "Welcome.server_id is empty")
    expect("max_frame_size" in w.limits, f"Welcome.limits lacks max_frame_size: {w.limits}")


@check("session.version-choice", S5, "Hello [7, 2] (unknown version preferred) gets version 2")
async def version_choice(ctx: Context) -> None:
    conn = await ctx.connect(versions=[7, 2])
    assert conn.welcome is not None
    expect(conn.welcome.version == 2, f"Welcome.version is {conn.welcome.version}")


@check(
    "session.no-common-version",
    S5,
    "Hello [7] gets Error 101 with details.supported_versions [2], then the close",
)
async def no_common_version(ctx: Context) -> None:
    conn = await ctx.raw()
    reply = await conn.hello(versions=[7], token=ctx.options.token)
    expect(
        isinstance(reply, m.Error) and reply.code == ErrorCode.UNSUPPORTED_VERSION,
        f"Hello [7] answered {describe(reply)}, expected Error 101",
    )
    assert isinstance(reply, m.Error)
    versions = reply.details.get("supported_versions")
    expect(
        isinstance(versions, list) and 2 in versions,
        f"details.supported_versions is {versions!r}, expected a list containing 2",
    )
    await conn.ended()
    await ctx.healthy()


@check("session.capabilities", S5, "Welcome.capabilities is a subset of Hello.capabilities")
async def capabilities(ctx: Context) -> None:
    offered = ["conformance.no-such-feature"]
    conn = await ctx.connect(capabilities=offered)
    assert conn.welcome is not None
    extra = set(conn.welcome.capabilities) - set(offered)
    expect(not extra, f"Welcome offers capabilities the client did not list: {sorted(extra)}")


@check(
    "session.request-before-hello",
    S4,
    "a request before Welcome: Error 103 with its id; the connection stays usable",
)
async def request_before_hello(ctx: Context) -> None:
    conn = await ctx.raw()
    sid = conn.new_stream()
    req = m.AdminList(request_id=77, kind="tenant")
    err = await conn.expect_error(req, ErrorCode.UNEXPECTED_MESSAGE, sid)
    expect(err.request_id == 77, f"Error carries request_id {err.request_id}, expected 77")
    reply = await conn.hello(token=ctx.options.token)
    expect(isinstance(reply, m.Welcome), f"Hello after the refusal got {describe(reply)}")
    # the working tenant's namespaces: what a tenant's own token may list (§5.6)
    again = m.AdminList(request_id=78, kind="namespace", tenant=ctx.tenant)
    await conn.expect(again, m.AdminResources, sid)


@check(
    "session.ping-before-hello",
    S5,
    "Ping as the first control message: Error 103, then the connection closes",
)
async def ping_before_hello(ctx: Context) -> None:
    conn = await ctx.raw()
    conn.send(m.Ping(nonce=1), CONTROL)
    err = await conn.message(CONTROL, m.Error, what="Error on the control stream")
    expect(err.code == ErrorCode.UNEXPECTED_MESSAGE, f"got {describe(err)}, expected 103")
    await conn.ended()
    await ctx.healthy()


@check("session.ping", S5, "Ping{nonce} is answered Pong with the same nonce (2^64-1 too)")
async def ping(ctx: Context) -> None:
    conn = await ctx.connect()
    for nonce in (0, 12345, U64_MAX):
        conn.send(m.Ping(nonce=nonce), CONTROL)
        pong = await conn.message(CONTROL, m.Pong, what="Pong")
        expect(pong.nonce == nonce, f"Pong.nonce is {pong.nonce}, expected {nonce}")
        conn.log(CONTROL).messages.remove(pong)


@check("session.bad-token", S5, "a wrong token gets Error 110 and the connection closes")
async def bad_token(ctx: Context) -> None:
    if ctx.options.token is None:
        raise Skip("no --token given: the broker is assumed not to require authentication")
    conn = await ctx.raw()
    reply = await conn.hello(token="conformance-" + ctx.unique("wrong"))
    expect(
        isinstance(reply, m.Error) and reply.code == ErrorCode.UNAUTHENTICATED,
        f"Hello with a wrong token answered {describe(reply)}, expected Error 110",
    )
    await conn.ended()


@check("streams.control-carries-requests", S4, "a request on the control stream is answered there")
async def control_requests(ctx: Context) -> None:
    conn = await ctx.connect()
    await conn.expect(
        m.AdminList(request_id=conn.rid(), kind="namespace", tenant=ctx.tenant),
        m.AdminResources,
        CONTROL,
    )


@check(
    "streams.pipelined",
    S4,
    "requests pipelined on one stream and on two streams are each answered by id",
)
async def pipelined(ctx: Context) -> None:
    conn = await ctx.connect()
    a, b = conn.new_stream(), conn.new_stream()
    ids = {a: [conn.rid() for _ in range(5)], b: [conn.rid() for _ in range(5)]}
    for sid, rids in ids.items():
        for rid in rids:
            conn.send(m.AdminList(request_id=rid, kind="namespace", tenant=ctx.tenant), sid)
    for sid, rids in ids.items():
        for rid in rids:
            reply = await conn.reply(sid, rid)
            expect(isinstance(reply, m.AdminResources), f"request {rid}: {describe(reply)}")
    other = {x.request_id for x in conn.log(a).messages if hasattr(x, "request_id")}
    expect(other == set(ids[a]), f"stream {a} carried replies for {sorted(other)}")


@check("streams.fin", S4, "after the client's FIN the broker sends the owed replies, then FINs")
async def fin(ctx: Context) -> None:
    conn = await ctx.connect()
    sid = conn.new_stream()
    rids = [conn.rid() for _ in range(3)]
    for i, rid in enumerate(rids):
        conn.send(
            m.AdminList(request_id=rid, kind="namespace", tenant=ctx.tenant),
            sid,
            end=i == len(rids) - 1,
        )
    log = conn.log(sid)
    await conn.until(lambda: log.ended, f"the broker's FIN on stream {sid}", None)
    got = [x.request_id for x in log.of(m.AdminResources)]
    expect(sorted(got) == rids, f"replies before FIN were for {got}, expected {rids}")
    expect(log.reset is None, f"the broker reset stream {sid} (code {log.reset}) instead of FIN")


@check(
    "session.goaway",
    S5,
    "GoAway{deadline_ms, code 501}; new requests get 501; the close follows the deadline",
    timeout=20.0,
    last=True,
)
async def goaway(ctx: Context) -> None:
    trigger = ctx.options.hooks.goaway
    if trigger is None:
        raise Skip(
            "a client cannot make a broker send GoAway; the in-process self-test "
            "(tests/conformance) runs this check with a shutdown hook"
        )
    conn = await ctx.connect()
    await trigger()
    ga = await conn.message(CONTROL, m.GoAway, what="GoAway on the control stream")
    expect(ga.code == ErrorCode.SHUTTING_DOWN, f"GoAway.code is {ga.code}, expected 501")
    loop = asyncio.get_running_loop()
    seen = loop.time()
    await conn.expect_error(
        m.AdminList(request_id=conn.rid(), kind="namespace", tenant=ctx.tenant),
        ErrorCode.SHUTTING_DOWN,
    )
    end = await conn.ended(wait=ga.deadline_ms / 1000 + 3.0)
    expect(
        loop.time() - seen <= ga.deadline_ms / 1000 + 2.0,
        f"the connection closed {loop.time() - seen:.1f}s after GoAway "
        f"(deadline_ms {ga.deadline_ms})",
    )
    _ = end
