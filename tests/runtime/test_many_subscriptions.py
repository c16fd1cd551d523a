"""Many subscriptions on one connection whose peer stopped reading cannot get around the
per-connection buffer bound.

The engine hands every subscription its batch (the same encoded frame for all of them) and
aioquic copies each write into the stream's own send buffer, so before the fix N
subscriptions held N copies of a batch: 100 subscriptions and one 4 MiB record cost
~400 MiB for one connection. Now the session writes a feed's batch only while the
connection has room under ``connection_buffer_limit`` and holds the rest back as references
to the shared frame (counted once), pausing the connection's deliveries; held writes go out,
in order, as the peer acknowledges what it was sent.

What the connection holds is measured here from outside the session's own accounting: the
bytes in aioquic's stream send buffers (``len`` of each stream's bytearray), the Felix
writes not yet handed to QUIC, and the distinct frames held back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from felix_proto import events as fe
from felix_server.config import TransportConfig
from felix_server.session import Session

from .memory_net import MemoryClient, MemoryNet, N, T

LIMIT, RESUME, CAP = 256 * 1024, 64 * 1024, 512 * 1024
RECORD = 100 * 1024
RECORDS = 3


def received(client: MemoryClient, subscription_id: int) -> list[bytes]:
    return [
        p
        for e in client.of(fe.EventsReceived)
        if e.subscription_id == subscription_id
        for p in e.batch.payloads
    ]


def held_by(session: Session) -> int:
    quic = sum(len(stream.sender._buffer) for stream in session.quic._streams.values())
    return quic + session.felix.buffered_bytes() + session.held_feed_bytes


@pytest.mark.parametrize("subscriptions", [1, 16, 64])
def test_a_frozen_connection_holds_at_most_its_cap_whatever_its_subscriptions(
    tmp_path: Path, subscriptions: int
) -> None:
    transport = TransportConfig(
        connection_buffer_limit=LIMIT, connection_buffer_resume=RESUME, connection_buffer_cap=CAP
    )
    net = MemoryNet(tmp_path, transport)
    net.broker.create("stream", T, N, "s", {"retention_max_bytes": 16 << 20}, now=net.now)
    sub, pub = net.client(), net.client()
    assert sub.felix is not None and pub.felix is not None
    for _ in range(subscriptions):  # credit for one record each (the next may overdraw it)
        sub.felix.subscribe(T, N, "s", credit_messages=16, credit_bytes=RECORD, now=net.now)
    net.until(lambda: len(sub.of(fe.SubscriptionStarted)) == subscriptions)
    session = net.session(sub)

    sub.frozen = True  # a stopped process: reads nothing, acknowledges nothing
    acks = [pub.felix.publish(T, N, "s", bytes([i]) * RECORD, now=net.now) for i in range(RECORDS)]
    peak = 0
    for _ in range(3000):
        net.step()
        peak = max(peak, held_by(session))
    assert len(pub.of(fe.PublishAcked)) == len(acks)
    assert session.paused == (subscriptions * 2 * RECORD > LIMIT)
    assert peak <= CAP, f"{peak} bytes held for one connection ({subscriptions} subscriptions)"
    assert session.buffered_bytes <= CAP

    sub.frozen = False  # it reads again: every subscription gets its records, in order
    started = sub.of(fe.SubscriptionStarted)
    expected = [bytes([0]) * RECORD, bytes([1]) * RECORD]  # the second overdraws the credit
    net.until(lambda: all(len(received(sub, s.subscription_id)) >= 2 for s in started), 200_000)
    for s in started:
        assert received(sub, s.subscription_id)[:2] == expected
    net.settle()
    assert held_by(session) == 0 and session.buffered_bytes == 0
    assert not session.paused
