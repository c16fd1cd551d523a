"""A stream's partial batch leaves when the loop's pass ends, not on a sub-millisecond timer.

In memory (:mod:`.memory_net`), through the whole server. asyncio rounds any wait up to a
whole millisecond, so before the change the default 250 us batch delay cost more than 1 ms
per low-rate publish. Now the records published in one pass (every datagram fed before
``FelixServer.datagrams_to_send``) are delivered by that same call, in one batch, with no
timer fired; a delay the loop can honour (>= 1 ms) still waits for its timer.
"""

from __future__ import annotations

from pathlib import Path

from felix_proto import events as fe

from .memory_net import SERVER_ADDR, MemoryClient, MemoryNet, N, T


def batches(client: MemoryClient) -> list[list[bytes]]:
    return [list(e.batch.payloads) for e in client.of(fe.EventsReceived)]


def one_pass_without_timers(net: MemoryNet, publisher: MemoryClient, sub: MemoryClient) -> None:
    """Feed the publisher's datagrams to the server and end the pass: no ``handle_timer``."""
    net.now += 0.0001
    now = net.now
    publisher.pump()
    for data, _ in publisher.quic.datagrams_to_send(now=now):
        net.server.datagram_received(data, publisher.addr, now)
    for data, addr in net.server.datagrams_to_send(now):
        net.clients[addr].quic.receive_datagram(data, SERVER_ADDR, now)
    sub.pump()


def setup(tmp_path: Path, settings: dict[str, int]) -> tuple[MemoryNet, MemoryClient, MemoryClient]:
    net = MemoryNet(tmp_path)
    net.broker.create("stream", T, N, "s", settings, now=net.now)
    sub, pub = net.client(), net.client()
    assert sub.felix is not None and pub.felix is not None
    sub.felix.subscribe(T, N, "s", credit_messages=1000, credit_bytes=1 << 20, now=net.now)
    net.until(lambda: bool(sub.of(fe.SubscriptionStarted)))
    net.settle()
    return net, sub, pub


def test_records_of_one_pass_leave_in_one_batch_when_the_pass_ends(tmp_path: Path) -> None:
    net, sub, pub = setup(tmp_path, {})  # the defaults: 250 us, below what a loop can wait
    assert pub.felix is not None
    for payload in (b"a", b"b", b"c"):
        pub.felix.publish(T, N, "s", payload, now=net.now)
    one_pass_without_timers(net, pub, sub)
    assert batches(sub) == [[b"a", b"b", b"c"]]
    assert net.server.router.get_timer() is None  # nothing left to flush


def test_a_delay_the_loop_can_honour_still_waits_for_its_timer(tmp_path: Path) -> None:
    net, sub, pub = setup(tmp_path, {"batch_max_delay_us": 5000})
    assert pub.felix is not None
    pub.felix.publish(T, N, "s", b"a", now=net.now)
    one_pass_without_timers(net, pub, sub)
    assert batches(sub) == []
    timer = net.server.router.get_timer()
    assert timer is not None and timer > net.now
    net.until(lambda: bool(batches(sub)))
    assert batches(sub) == [[b"a"]]
