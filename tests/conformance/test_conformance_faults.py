"""The suite must fail, naming the right check, against deliberately faulty brokers.

Each fault is slipped into our real broker: between the engine and the sessions (a filter
on ``Broker.drain_outputs``) or between the sessions and QUIC (a QUIC connection whose
``send_stream_data`` rewrites the Felix frames the broker writes). A check that can never
fail is a defect; these tests show the main ones can.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection
from conformance_broker import OutputFilter, Running, broker

from conformance.checks import all_checks
from conformance.registry import select
from conformance.runner import Outcome, Result, run_checks, summary_line
from felix_core.events import EngineEvent, MessagesDelivered, RecordsDelivered
from felix_proto import messages as m
from felix_proto.codec import decode, encode
from felix_proto.errors import ErrorCode
from felix_proto.frames import HEADER_SIZE, parse_header
from felix_server.quic import FelixQuicConnection

pytestmark = pytest.mark.anyio


async def _run(running: Running, expr: str) -> dict[str, Result]:
    results = await run_checks(select(all_checks(), expr), running.options())
    return {r.check.name: r for r in results}


def _explain(results: dict[str, Result]) -> str:
    return (
        "\n".join(r.line() for r in results.values()) + "\n" + summary_line(list(results.values()))
    )


# -- faults in the engine's outputs ----------------------------------------------------------


def reorder_records(outputs: list[EngineEvent]) -> list[EngineEvent]:
    """Swap the first two records of every event batch (payloads only, offsets kept)."""
    out: list[EngineEvent] = []
    for item in outputs:
        if isinstance(item, RecordsDelivered) and len(item.slice.payloads) >= 2:
            p = list(item.slice.payloads)
            p[0], p[1] = p[1], p[0]
            out.append(dataclasses.replace(item, slice=dataclasses.replace(item.slice, payloads=p)))
        else:
            out.append(item)
    return out


def drop_offset(offset: int) -> OutputFilter:
    """Never deliver the queue message at ``offset`` (though it was acked to the producer)."""

    def fault(outputs: list[EngineEvent]) -> list[EngineEvent]:
        out: list[EngineEvent] = []
        for item in outputs:
            if isinstance(item, MessagesDelivered):
                kept = [d for d in item.deliveries if d.offset != offset]
                if not kept:
                    continue
                out.append(dataclasses.replace(item, deliveries=kept))
            else:
                out.append(item)
        return out

    return fault


async def test_reordered_records_fail_pubsub_order(tmp_path: Path) -> None:
    async with broker(tmp_path, outputs=reorder_records) as running:
        results = await _run(running, "pubsub.order,pubsub.offsets")
    assert results["pubsub.order"].outcome is Outcome.FAIL, _explain(results)
    assert "delivered" in results["pubsub.order"].reason
    assert results["pubsub.offsets"].outcome is Outcome.PASS, _explain(results)


async def test_a_dropped_acked_message_fails_queue_deliver_ack(tmp_path: Path) -> None:
    async with broker(tmp_path, outputs=drop_offset(3)) as running:
        results = await _run(running, "queue.deliver-ack,queue.nack")
    assert results["queue.deliver-ack"].outcome is Outcome.FAIL, _explain(results)
    assert "deliveries" in results["queue.deliver-ack"].reason
    assert results["queue.nack"].outcome is Outcome.PASS, _explain(results)


def ignore_ttl(engine: Any) -> None:
    """Store every cache entry without a TTL."""
    put = engine.cache_put
    engine.cache_put = lambda *a, **kw: put(*a, **{**kw, "ttl_ms": 0})


def ignore_cas(engine: Any) -> None:
    """Drop the compare-and-set condition of cache puts."""
    put = engine.cache_put
    engine.cache_put = lambda *a, **kw: put(*a, **{**kw, "if_version": None})


@pytest.mark.parametrize(
    ("fault", "fails", "passes"),
    [(ignore_ttl, "cache.ttl", "cache.cas"), (ignore_cas, "cache.cas", "cache.ttl")],
)
async def test_cache_faults_fail_the_cache_checks(
    tmp_path: Path, fault: Callable[[Any], None], fails: str, passes: str
) -> None:
    async with broker(tmp_path, engine=fault) as running:
        results = await _run(running, f"{fails},{passes}")
    assert results[fails].outcome is Outcome.FAIL, _explain(results)
    assert results[passes].outcome is Outcome.PASS, _explain(results)


# -- faults on the wire ------------------------------------------------------------------------


def rewriting(rewrite: Callable[[m.Message], m.Message]) -> Callable[..., QuicConnection]:
    """A QUIC connection factory whose connections pass every complete Felix frame the
    broker writes through ``rewrite`` (frames split across writes pass unchanged)."""

    class Faulty(FelixQuicConnection):
        def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
            super().send_stream_data(stream_id, _rewrite_frames(data, rewrite), end_stream)

    return Faulty


def _rewrite_frames(data: bytes, rewrite: Callable[[m.Message], m.Message]) -> bytes:
    out = bytearray()
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        try:
            header = parse_header(data[pos:])
        except Exception:
            break
        end = pos + HEADER_SIZE + header.length
        if header.version != 2 or end > len(data):
            break
        try:
            out += encode(rewrite(decode(data[pos + HEADER_SIZE : end])))
        except Exception:
            out += data[pos:end]
        pos = end
    return bytes(out + data[pos:])


def wrong_code(msg: m.Message) -> m.Message:
    """Answer framing and payload errors with UNKNOWN_MESSAGE instead of BAD_FRAME."""
    if isinstance(msg, m.Error) and msg.code == ErrorCode.BAD_FRAME:
        return dataclasses.replace(msg, code=int(ErrorCode.UNKNOWN_MESSAGE))
    return msg


def wrong_nonce(msg: m.Message) -> m.Message:
    """Echo a different nonce in Pong."""
    if isinstance(msg, m.Pong):
        return m.Pong(nonce=(msg.nonce + 1) % (1 << 64))
    return msg


async def test_wrong_error_code_fails_the_framing_checks(tmp_path: Path) -> None:
    async with broker(tmp_path, connection_factory=rewriting(wrong_code)) as running:
        results = await _run(running, "framing.bad-magic,payload.truncated,framing.oversize")
    for name in ("framing.bad-magic", "payload.truncated"):
        assert results[name].outcome is Outcome.FAIL, _explain(results)
        assert "expected Error 100" in results[name].reason
    assert results["framing.oversize"].outcome is Outcome.PASS, _explain(results)


async def test_wrong_pong_nonce_fails_session_ping(tmp_path: Path) -> None:
    async with broker(tmp_path, connection_factory=rewriting(wrong_nonce)) as running:
        results = await _run(running, "session.ping")
    assert results["session.ping"].outcome is Outcome.FAIL, _explain(results)


def test_rewriting_touches_only_whole_frames() -> None:
    ping, pong = encode(m.Ping(nonce=1)), encode(m.Pong(nonce=1))
    assert _rewrite_frames(ping + pong, wrong_nonce) == ping + encode(m.Pong(nonce=2))
    assert _rewrite_frames(pong[:5], wrong_nonce) == pong[:5]
    assert _rewrite_frames(ping + pong[:-1], wrong_nonce) == ping + pong[:-1]
