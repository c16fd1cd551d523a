"""What a publish costs on the wire and in which order a pass sends, in memory
(:mod:`.memory_net`, through the whole server, no timer fired).

* The datagrams of a pass go first to the connections that only receive in it (a record's
  subscribers), then to those that sent its input (the publisher's ack): a reader is woken
  first.
* With ``send``, each connection's datagrams are handed to the adapter as soon as that
  connection has transmitted: the reader's datagram is on its way before the publisher's
  ack is built.
* A reply carries the ACK of the request it answers: aioquic would hold that ACK for its
  1 ms ack delay and then send it alone, a second datagram per request.
"""

from __future__ import annotations

from pathlib import Path

from aioquic import tls
from aioquic.quic.connection import QuicConnection

from felix_proto import events as fe
from felix_server.quic import ack_with_data
from felix_server.quic_engine import ACK_WITH_DATA_INTERVAL, AckWithData

from .memory_net import SERVER_ADDR, MemoryClient, MemoryNet, N, T


def setup(tmp_path: Path) -> tuple[MemoryNet, MemoryClient, MemoryClient]:
    net = MemoryNet(tmp_path)
    net.broker.create("stream", T, N, "s", {}, now=net.now)
    sub, pub = net.client(), net.client()
    assert sub.felix is not None and pub.felix is not None
    sub.felix.subscribe(T, N, "s", credit_messages=1000, credit_bytes=1 << 20, now=net.now)
    net.until(lambda: bool(sub.of(fe.SubscriptionStarted)))
    net.settle()
    return net, sub, pub


def publish_one_pass(net: MemoryNet, pub: MemoryClient) -> list[tuple[bytes, object]]:
    """The publisher publishes one record; the server takes its datagrams and ends the pass.
    Returns what the server sends, in order (not delivered yet)."""
    assert pub.felix is not None
    net.now += 0.0001
    pub.felix.publish(T, N, "s", b"record", now=net.now)
    pub.pump()
    for data, _ in pub.quic.datagrams_to_send(now=net.now):
        net.server.datagram_received(data, pub.addr, net.now)
    return list(net.server.datagrams_to_send(net.now))


def test_send_takes_each_connections_datagrams_as_soon_as_they_are_built(
    tmp_path: Path,
) -> None:
    net, sub, pub = setup(tmp_path)
    assert pub.felix is not None
    steps: list[object] = []
    session = net.session(pub)
    transmit = session.transmit

    def spy(now: float) -> list[tuple[bytes, object]]:
        steps.append("publisher's session transmits")
        return transmit(now)  # type: ignore[return-value]

    session.transmit = spy  # type: ignore[method-assign]
    net.now += 0.0001
    pub.felix.publish(T, N, "s", b"record", now=net.now)
    pub.pump()
    for data, _ in pub.quic.datagrams_to_send(now=net.now):
        net.server.datagram_received(data, pub.addr, net.now)
    sent: list[tuple[bytes, object]] = []

    def send(datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        steps.append({addr for _, addr in datagrams})
        sent.extend(datagrams)

    assert net.server.datagrams_to_send(net.now, send=send) == []
    assert steps == [{sub.addr}, "publisher's session transmits", {pub.addr}]
    deliver(net, sent)
    assert len(pub.of(fe.PublishAcked)) == 1
    assert [e.batch.payloads for e in sub.of(fe.EventsReceived)] == [[b"record"]]


def deliver(net: MemoryNet, out: list[tuple[bytes, object]]) -> None:
    for data, addr in out:
        client = net.clients[addr]  # type: ignore[index]
        client.quic.receive_datagram(data, SERVER_ADDR, net.now)
        client.pump()


def test_the_subscribers_datagram_leaves_before_the_publishers_ack(tmp_path: Path) -> None:
    net, sub, pub = setup(tmp_path)
    for _ in range(3):
        out = publish_one_pass(net, pub)
        addresses = [addr for _, addr in out]
        assert sub.addr in addresses and pub.addr in addresses
        assert addresses.index(sub.addr) < addresses.index(pub.addr)
        deliver(net, out)
    assert len(pub.of(fe.PublishAcked)) == 3
    assert sum(len(e.batch.payloads) for e in sub.of(fe.EventsReceived)) == 3


def test_the_publish_ack_carries_the_ack_and_no_ack_only_datagram_follows(
    tmp_path: Path,
) -> None:
    net, _sub, pub = setup(tmp_path)
    out = publish_one_pass(net, pub)
    assert [addr for _, addr in out].count(pub.addr) == 1  # the PublishAck
    deliver(net, out)
    assert len(pub.of(fe.PublishAcked)) == 1
    # Past aioquic's ack delay: the broker has no ACK left to send the publisher, and the
    # publisher's request is acknowledged (nothing of it in flight).
    net.now += 0.005
    timer = net.server.get_timer()
    if timer is not None and timer <= net.now:
        net.server.handle_timer(net.now)
    later = [addr for _, addr in net.server.datagrams_to_send(net.now)]
    assert pub.addr not in later
    assert pub.quic._loss.bytes_in_flight == 0


def test_ack_with_data_only_moves_an_ack_that_is_pending(tmp_path: Path) -> None:
    net, _sub, pub = setup(tmp_path)
    quic = net.session(pub).quic
    assert isinstance(quic, QuicConnection)
    space = quic._spaces[tls.Epoch.ONE_RTT]
    assert space.ack_at is None  # settled: nothing to acknowledge
    assert not ack_with_data(quic, net.now)
    assert space.ack_at is None  # no ACK invented
    space.ack_at = net.now + 0.001
    assert ack_with_data(quic, net.now)
    assert space.ack_at == net.now
    space.ack_at = net.now - 0.5
    assert ack_with_data(quic, net.now)
    assert space.ack_at == net.now - 0.5  # already due: left as it is


def test_acks_go_early_at_most_once_per_interval(tmp_path: Path) -> None:
    """Flat out, no more ACKs go with data than aioquic's timer would send alone."""
    net, _sub, pub = setup(tmp_path)
    quic = net.session(pub).quic
    assert isinstance(quic, QuicConnection)
    space = quic._spaces[tls.Epoch.ONE_RTT]
    acks = AckWithData()
    now = net.now
    space.ack_at = now + 0.001
    acks.data_written(quic, now)
    assert space.ack_at == now and acks.sent_at == now
    later = now + ACK_WITH_DATA_INTERVAL / 2
    space.ack_at = later + 0.001  # another request arrived: its ACK waits
    acks.data_written(quic, later)
    assert space.ack_at == later + 0.001 and acks.sent_at == now
    later = now + ACK_WITH_DATA_INTERVAL
    acks.data_written(quic, later)  # the interval has passed: it goes now
    assert space.ack_at == later and acks.sent_at == later
    space.ack_at = None
    acks.data_written(quic, later + 1)  # nothing pending: nothing sent, nothing noted
    assert space.ack_at is None and acks.sent_at == later
