"""The shutdown drain of ``FelixServer`` on the sans-IO pair of ``test_fuzz_session.py``
(fake clock, no sockets): a connection is closed once its feeds have caught up and the
client has acknowledged what was written to it, and no earlier; a queue consumer has caught
up when its group has nothing waiting and it holds no unsettled delivery; the engine's
backlog figures are what the end-of-grace report uses."""

from __future__ import annotations

from engine_calls import ThroughRouter

from felix_proto import messages as m
from felix_proto.codec import encode
from felix_server.drain import DRAIN_POLL_S

from .test_fuzz_session import N, T, _Pair, certs  # noqa: F401 - the fixture

GRACE = 5.0


def _pair(cert_files: tuple[str, str]) -> _Pair:
    pair = _Pair(cert_files)
    assert pair.server.config.shutdown_grace_s == GRACE  # the default
    pair.exchange()
    pair.peer.send(0, encode(m.Hello(versions=[2])))
    pair.exchange()
    assert any(isinstance(msg, m.Welcome) for _, msg in pair.peer.received)
    return pair


def _of(pair: _Pair, kind: type[m.Message]) -> list[m.Message]:
    return [msg for _, msg in pair.peer.received if isinstance(msg, kind)]


def _tick(pair: _Pair, seconds: float = DRAIN_POLL_S) -> None:
    pair.now += seconds
    pair._fire_timers()
    pair.exchange()


def test_a_connection_without_feeds_closes_at_once(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _pair(certs)
    start = pair.now
    pair.server.begin_shutdown(pair.now)
    for _ in range(20):
        if pair.peer.terminated:
            break
        _tick(pair)
    assert pair.peer.terminated and pair.now < start + 1.0  # not at the grace deadline
    assert _of(pair, m.GoAway)
    for _ in range(200):  # QUIC's closing period, then the server is done
        if pair.server.finished:
            break
        _tick(pair, 0.05)
    assert pair.server.finished


def test_a_consumer_that_acks_is_drained_then_closed(certs: tuple[str, str]) -> None:  # noqa: F811
    pair = _pair(certs)
    broker = pair.server.broker
    calls = ThroughRouter(pair.server.router)
    calls.create("queue", T, N, "q", now=pair.now)
    pair.peer.send(4, encode(m.Consume(request_id=1, tenant=T, namespace=N, queue="q", prefetch=5)))
    pair.exchange()
    (consuming,) = _of(pair, m.Consuming)
    assert isinstance(consuming, m.Consuming)
    calls.enqueue(0, T, N, "q", [b"job-%d" % i for i in range(20)], now=pair.now)
    pair.exchange()
    assert len(_of(pair, m.Delivery)) == 5  # its prefetch; 15 wait in the queue
    (conn_id,) = [s.conn_id for s in pair.server.sessions]
    (feed,) = broker.backlog(conn_id)
    assert (feed.kind, feed.resource, feed.undelivered, feed.unacked) == (
        "queue",
        (T, N, "q"),
        15,
        5,
    )
    start = pair.now
    pair.server.begin_shutdown(pair.now)
    acked = 0
    for _ in range(100):  # it settles what it holds; the broker hands it the rest
        deliveries = _of(pair, m.Delivery)
        if len(deliveries) > acked:
            ids = [d.delivery_id for d in deliveries[acked:] if isinstance(d, m.Delivery)]
            pair.peer.send(0, encode(m.Ack(consumer_id=consuming.consumer_id, delivery_ids=ids)))
            acked = len(deliveries)
            _tick(pair, 0.001)
        if pair.peer.terminated:
            break
        assert not _of(pair, m.ConsumerEnded) or acked == 20  # not ended before it caught up
        _tick(pair)
    assert acked == 20
    (ended,) = _of(pair, m.ConsumerEnded)
    assert isinstance(ended, m.ConsumerEnded) and ended.reason == "shutdown"
    assert pair.peer.terminated and pair.now < start + GRACE
    assert broker.stats()["consumers"] == 0


def test_unacknowledged_bytes_hold_the_close(certs: tuple[str, str]) -> None:  # noqa: F811
    """Caught up in the engine is not enough: what was written must be acknowledged."""
    pair = _pair(certs)
    broker = pair.server.broker
    calls = ThroughRouter(pair.server.router)
    calls.create("stream", T, N, "s", now=pair.now)
    pair.peer.send(4, encode(m.Subscribe(request_id=1, tenant=T, namespace=N, stream="s")))
    pair.exchange()
    calls.publish(0, T, N, "s", [b"x" * 1000] * 50, now=pair.now)
    pair.server.begin_shutdown(pair.now)
    session = pair.server.sessions[0]
    pair.now += 0.001
    pair._fire_timers()
    for _ in pair.server.datagrams_to_send(pair.now):
        pass  # the datagrams are lost: nothing is acknowledged
    conn_id = session.conn_id
    assert broker.pending(conn_id) == 0  # every record was handed to the session
    pair.now += DRAIN_POLL_S
    pair.server.handle_timer(pair.now)
    assert not _of(pair, m.SubscriptionEnded) and broker.stats()["subscriptions"] == 1
    assert session in pair.server.sessions  # still draining: the client has not got them
    for _ in range(400):  # QUIC retransmits; once acknowledged the feed ends, then the close
        if pair.peer.terminated:
            break
        _tick(pair, 0.05)
    (ended,) = _of(pair, m.SubscriptionEnded)
    assert isinstance(ended, m.SubscriptionEnded) and ended.next_offset == 50
    payloads = [
        p for _, msg in pair.peer.received if isinstance(msg, m.EventBatch) for p in msg.payloads
    ]
    assert len(payloads) == 50
    assert pair.peer.terminated
