"""The order of a loop pass for one record: the publish's delivery leaves before the
publisher's answer is written. The subscriber's connection transmits first
(``FelixServer.datagrams_to_send``), and the publish's ``PublishAck`` waits in the router's
mailbox until the publisher's connection transmits (or its next request is read), so
nothing but the delivery's own work stands between the publish datagram and the
subscriber's datagram.
"""

from __future__ import annotations

from pathlib import Path

from felix_proto import events as fe
from felix_proto import messages as m
from felix_server.observer import ServerObserver

from .memory_net import MemoryNet, N, T


class _Order(ServerObserver):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def request_finished(self, token: object, kind: str, error_code: int) -> None:
        self.seen.append(f"finished {kind}")

    def delivered(self, source: str, records: int, nbytes: int) -> None:
        self.seen.append(f"delivered {source}")


def test_the_delivery_is_written_and_sent_before_the_publish_is_answered(
    tmp_path: Path,
) -> None:
    order = _Order()
    net = MemoryNet(tmp_path, observer=order)
    pub, sub = net.client(), net.client()
    assert pub.felix is not None and sub.felix is not None
    pub.felix.admin(m.AdminCreate, now=net.now, kind="stream", tenant=T, namespace=N, name="s")
    net.until(lambda: bool(pub.of(fe.AdminReplied)))
    sub.felix.subscribe(T, N, "s", now=net.now)
    net.until(lambda: bool(sub.of(fe.SubscriptionStarted)))
    net.settle()
    order.seen.clear()

    pub.felix.publish(T, N, "s", b"x" * 100, now=net.now)
    pub.pump()
    server, now = net.server, net.now
    for data, _ in pub.quic.datagrams_to_send(now=now):
        server.datagram_received(data, pub.addr, now)
    assert order.seen == []  # read and appended; nothing written yet
    handed: list[tuple[tuple[str, int], list[str]]] = []

    def send(datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        for _, addr in datagrams:
            handed.append((addr, list(order.seen)))

    server.datagrams_to_send(now, send)
    assert handed[0] == (sub.addr, ["delivered stream"])
    assert (pub.addr, ["delivered stream", "finished publish"]) in handed
