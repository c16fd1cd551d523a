"""The ``token-exchange`` capability (§5.3): forged identity tokens are refused with
``UNAUTHENTICATED`` and a reason, and a connection that logs in by exchange is served
nothing before it has. Skipped when the broker does not offer ``token-exchange`` (a broker
offers it only when it is configured with external issuers)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from conformance.context import Context
from conformance.registry import Skip, check
from conformance.wire import CheckFailed, Conn, describe, expect
from felix_proto import messages as m
from felix_proto.connection import TOKEN_EXCHANGE
from felix_proto.errors import ErrorCode

S53 = "§5.3 Capabilities"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forgeries() -> dict[str, str]:
    """Identity tokens no broker may accept: ``alg: none``, HMAC-signed, not a JWT."""
    now = int(time.time())
    claims = {"iss": "https://forged.example", "sub": "x", "aud": "felix", "exp": now + 600}
    body = _b64(json.dumps(claims).encode())
    none = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    mac = hmac.new(b"guessable", f"{head}.{body}".encode(), hashlib.sha256).digest()
    return {"alg none": none, "HS256": f"{head}.{body}.{_b64(mac)}", "garbage": "not-a-jwt"}


async def _offering(ctx: Context) -> Conn:
    """A connection with the operator's credential that agreed to ``token-exchange``."""
    conn = await ctx.connect(capabilities=[TOKEN_EXCHANGE])
    assert conn.welcome is not None
    if TOKEN_EXCHANGE not in conn.welcome.capabilities:
        raise Skip(f"the broker does not offer {TOKEN_EXCHANGE}")
    return conn


def _refused(reply: m.Message, what: str) -> None:
    expect(
        isinstance(reply, m.Error)
        and reply.code == ErrorCode.UNAUTHENTICATED
        and isinstance(reply.details.get("reason"), str),
        f"TokenExchange with {what} answered {describe(reply)}, expected Error "
        "UNAUTHENTICATED with details.reason",
    )


@check(
    "exchange.forgeries-refused",
    S53,
    "TokenExchange with alg none, an HMAC-signed or a malformed token is UNAUTHENTICATED "
    "with a reason, and the connection's rights stand",
)
async def forgeries_refused(ctx: Context) -> None:
    conn = await _offering(ctx)
    for what, token in _forgeries().items():
        _refused(await conn.request(m.TokenExchange(request_id=conn.rid(), id_token=token)), what)
    await conn.expect(
        m.AdminList(
            request_id=conn.rid(), kind="stream", tenant=ctx.tenant, namespace=ctx.namespace
        ),
        m.AdminResources,
    )


@check(
    "exchange.login-first",
    S53,
    "a Hello without a token listing token-exchange is welcomed; requests before the exchange "
    "are UNAUTHENTICATED (missing); a refused exchange then closes the connection (110)",
)
async def login_first(ctx: Context) -> None:
    await _offering(ctx)
    conn = await ctx.connect(token=None, capabilities=[TOKEN_EXCHANGE])
    before = await conn.request(
        m.AdminList(
            request_id=conn.rid(), kind="stream", tenant=ctx.tenant, namespace=ctx.namespace
        )
    )
    expect(
        isinstance(before, m.Error)
        and before.code == ErrorCode.UNAUTHENTICATED
        and before.details.get("reason") == "missing",
        f"a request before the login answered {describe(before)}, expected Error "
        "UNAUTHENTICATED with details.reason missing",
    )
    token = _forgeries()["garbage"]
    _refused(await conn.request(m.TokenExchange(request_id=conn.rid(), id_token=token)), "garbage")
    ended = await conn.ended()
    if ended.error_code != ErrorCode.UNAUTHENTICATED:
        raise CheckFailed(
            f"a refused login closed the connection with code {ended.error_code}, expected 110"
        )
