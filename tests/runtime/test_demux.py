"""``FelixServer.datagram_received`` finds a short-header packet's connection by the bytes
after its first one (the fast path) and leaves every other datagram to the full header
parse; what the parse drops must still be dropped and counted, never handed to a session.
"""

from __future__ import annotations

from pathlib import Path

from felix_proto import events as fe

from .memory_net import MemoryNet


def _known_cid(net: MemoryNet) -> bytes:
    (cid, _) = next(iter(net.server._by_cid.items()))
    return cid


def test_only_well_formed_short_headers_of_known_connections_reach_a_session(
    tmp_path: Path,
) -> None:
    net = MemoryNet(tmp_path)
    client = net.client()
    session = net.session(client)
    cid = _known_cid(net)
    assert len(cid) == 8
    received: list[bytes] = []
    feed = session.datagram_received
    session.datagram_received = lambda data, addr, now: (
        received.append(data),
        feed(data, addr, now),
    )  # type: ignore[method-assign]
    stats = net.server.stats
    cases = [
        bytes([0x41]) + b"\x99" * 8 + b"\0" * 40,  # short header, unknown CID
        bytes([0x01]) + cid + b"\0" * 40,  # known CID, fixed bit zero
        bytes([0x41]) + cid[:7],  # known CID cut short
        b"",  # nothing at all
    ]
    for i, data in enumerate(cases, start=1):
        net.server.datagram_received(data, client.addr, net.now)
        assert stats.dropped_datagrams == i, data
    assert received == []
    # A datagram of the client still goes to its session by the fast path.
    assert client.felix is not None
    client.felix.ping(now=net.now)
    net.until(lambda: bool(client.of(fe.PongReceived)))
    assert received
