"""Fair turns between tenants (:mod:`felix_server.fair`): the pure turn, and in memory
(:mod:`.memory_net`) a victim's single publish served before a flooder's backlog read in
the same pass, which is then served in turns, in order, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from felix_core.access import ANONYMOUS, Principal
from felix_proto import events as fe
from felix_proto import messages as m
from felix_server.fair import ACTIVE_S, PASS_QUANTUM, FairShare, request_cost, turn_key

from .memory_net import MemoryNet

BATCH = 64
BATCHES = 8


NOW = 1000.0


def test_a_turn_admits_up_to_the_quantum_and_always_a_first_request() -> None:
    share = FairShare(quantum=100)
    assert share.admit("b", 1, NOW)  # another tenant is active
    assert share.admit("a", 60, NOW) and share.admit("a", 40, NOW)  # exactly the quantum
    assert not share.admit("a", 1, NOW)
    assert share.spent("a") == 100  # a refused request takes nothing
    assert share.admit("c", 1000, NOW)  # another tenant's first request, however large
    assert not share.admit("c", 1, NOW)
    share.new_pass()
    assert share.spent("a") == 0 and share.admit("a", 100, NOW)
    with pytest.raises(ValueError, match="quantum"):
        FairShare(quantum=0)


def test_a_tenant_alone_is_never_held_back() -> None:
    share = FairShare(quantum=100)
    assert all(share.admit("a", 64, NOW) for _ in range(10))  # nobody else: no turns
    assert share.admit("b", 1, NOW)
    assert not share.admit("a", 64, NOW + 0.5)  # b is active: a yields past its quantum
    share.new_pass()
    later = NOW + ACTIVE_S + 0.01  # b was last served over ACTIVE_S ago: alone again
    assert all(share.admit("a", 64, later) for _ in range(10))


def test_what_a_request_costs_and_whose_turn_it_takes() -> None:
    batch = m.PublishBatch(request_id=1, tenant="b", namespace="n", stream="s", payloads=[b"x"] * 5)
    assert request_cost(batch) == 5
    assert request_cost(m.Ping(nonce=1)) == 1
    tenant_a = Principal(subject="s", tenant="a", issuer="i")
    assert turn_key(tenant_a, batch) == "a"  # never the tenant a request names
    assert turn_key(ANONYMOUS, batch) == "b"  # an operator acts for the named tenant
    assert turn_key(None, m.Ping(nonce=1)) == ""


def test_a_victims_publish_is_not_served_behind_a_flooders_backlog(tmp_path: Path) -> None:
    net = MemoryNet(tmp_path)
    for tenant in ("a", "b"):
        net.broker.create("tenant", tenant, now=net.now)
        net.broker.create("namespace", tenant, "n", now=net.now)
        net.broker.create("stream", tenant, "n", "s", {}, now=net.now)
    flooder, victim = net.client(), net.client()
    assert flooder.felix is not None and victim.felix is not None
    served: list[tuple[str, int]] = []  # (tenant, records) in the order the engine sees them
    submit = net.server.router.submit

    def spy(conn_id: int, request: int, message: m.Message, now: float) -> None:
        if isinstance(message, m.PublishBatch):
            served.append((message.tenant, len(message.payloads)))
        submit(conn_id, request, message, now)

    victim.felix.publish_batch("b", "n", "s", [b"active"], now=net.now)  # b is active
    net.until(lambda: len(victim.of(fe.PublishAcked)) == 1)
    net.server.router.submit = spy  # type: ignore[method-assign]
    net.now += 0.001
    for i in range(BATCHES):
        payloads = [b"%d-%d" % (i, j) for j in range(BATCH)]
        flooder.felix.publish_batch("a", "n", "s", payloads, now=net.now)
    victim.felix.publish_batch("b", "n", "s", [b"victim"], now=net.now)
    for client in (flooder, victim):  # one pass: the flooder's datagrams are read first
        client.pump()
        for data, _ in client.quic.datagrams_to_send(now=net.now):
            net.server.datagram_received(data, client.addr, net.now)
    net.server.datagrams_to_send(net.now)
    ahead = sum(n for tenant, n in served[: served.index(("b", 1))] if tenant == "a")
    assert ahead <= PASS_QUANTUM < BATCH * BATCHES
    net.until(
        lambda: len(flooder.of(fe.PublishAcked)) == BATCHES and len(victim.of(fe.PublishAcked)) == 2
    )
    firsts = sorted(e.first_offset for e in flooder.of(fe.PublishAcked))
    assert firsts == [i * BATCH for i in range(BATCHES)]  # all served, none refused
    assert sum(n for tenant, n in served if tenant == "a") == BATCH * BATCHES
