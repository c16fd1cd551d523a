"""``DeliveryBatch`` (capability ``delivery-batch``) between the two connection machines:
each entry reaches the client as the ``DeliveryReceived`` a lone ``Delivery`` frame would
give; neither side uses it without the capability; a bad batch is a protocol violation."""

from __future__ import annotations

import msgpack
import pytest
from helpers import Pair, drain, only, single

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto.client import DELIVERY_BATCH, unbatch
from felix_proto.codec import decode, encode
from felix_proto.errors import BadFrame, ErrorCode, LocalProtocolError
from felix_proto.frames import HEADER_SIZE

BATCH = m.DeliveryBatch(
    delivery_ids=[5, 6, 7],
    attempts=[1, 2, 1],
    offsets=[10, 3, 11],
    payloads=[b"a", b"b", b"c"],
    timestamps_ms=[100, 90, 101],
    keys=[None, b"k", None],
    headers=[None, None, {"h": b"v"}],
)


def consuming(*, client: list[str], server: list[str]) -> tuple[Pair, int, int]:
    """A ready pair with consumer 9 open (its reply not yet sent): (pair, request id,
    the consumer stream's id)."""
    pair = Pair(client={"capabilities": client}, server={"capabilities": server})
    pair.handshake()
    rid = pair.client.consume("t", "n", "q", prefetch=8, now=pair.now)
    pair.request()
    sid = pair.server.open_consumer(rid, 9)
    return pair, rid, sid


def test_each_entry_arrives_as_the_delivery_it_stands_for() -> None:
    pair, rid, _ = consuming(client=[DELIVERY_BATCH], server=[DELIVERY_BATCH])
    assert pair.client.capabilities == [DELIVERY_BATCH]
    assert pair.server.send_delivery_batch(9, BATCH)  # before the reply: buffered
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=9))
    later = m.DeliveryBatch(
        delivery_ids=[8, 9], attempts=[1, 1], offsets=[12, 13], payloads=[b"d", b"e"]
    )
    assert pair.server.send_delivery_batch(9, later)
    got = [e.delivery for e in only(pair.to_client(), ev.DeliveryReceived)]
    assert got == [
        m.Delivery(delivery_id=5, attempt=1, offset=10, payload=b"a", timestamp_ms=100),
        m.Delivery(delivery_id=6, attempt=2, offset=3, payload=b"b", timestamp_ms=90, key=b"k"),
        m.Delivery(
            delivery_id=7, attempt=1, offset=11, payload=b"c", timestamp_ms=101, headers={"h": b"v"}
        ),
        m.Delivery(delivery_id=8, attempt=1, offset=12, payload=b"d"),
        m.Delivery(delivery_id=9, attempt=1, offset=13, payload=b"e"),
    ]
    assert pair.client.pending_deliveries(9) == {5, 6, 7, 8, 9}
    pair.client.ack(9, [5, 6, 7, 8, 9], now=pair.now)
    ack = single(pair.to_server(), ev.RequestReceived).message
    assert isinstance(ack, m.Ack) and ack.delivery_ids == [5, 6, 7, 8, 9]


def test_batch_deliveries_gives_one_event_per_frame_and_the_same_ids_await() -> None:
    pair = Pair(
        client={"capabilities": [DELIVERY_BATCH], "batch_deliveries": True},
        server={"capabilities": [DELIVERY_BATCH]},
    )
    pair.handshake()
    rid = pair.client.consume("t", "n", "q", prefetch=8, now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 9)
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=9))
    assert pair.server.send_delivery_batch(9, BATCH)
    events = pair.to_client()
    assert not [e for e in events if isinstance(e, ev.DeliveryReceived)]
    (got,) = only(events, ev.DeliveriesReceived)
    assert got.consumer_id == 9
    assert got.batch == BATCH
    assert pair.client.pending_deliveries(9) == {5, 6, 7}
    pair.client.ack(9, [5, 6, 7], now=pair.now)
    assert pair.client.pending_deliveries(9) == set()


def test_unbatch_is_the_lone_deliveries() -> None:
    assert unbatch(BATCH) == [
        m.Delivery(
            delivery_id=i,
            attempt=a,
            offset=o,
            payload=p,
            timestamp_ms=t,
            key=k,
            headers=h,
        )
        for i, a, o, p, t, k, h in zip(
            BATCH.delivery_ids,
            BATCH.attempts,
            BATCH.offsets,
            BATCH.payloads,
            BATCH.timestamps_ms or [],
            BATCH.keys or [],
            BATCH.headers or [],
            strict=True,
        )
    ]
    bare = m.DeliveryBatch(delivery_ids=[1], attempts=[1], offsets=[0], payloads=[b"x"])
    assert unbatch(bare) == [m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b"x")]


@pytest.mark.parametrize(
    ("client", "server"),
    [([], [DELIVERY_BATCH]), ([DELIVERY_BATCH], []), ([], [])],
    ids=["client-did-not-offer", "broker-did-not-offer", "neither"],
)
def test_the_broker_machine_refuses_a_batch_not_agreed(
    client: list[str], server: list[str]
) -> None:
    pair, _, _ = consuming(client=client, server=server)
    assert pair.client.capabilities == []
    with pytest.raises(LocalProtocolError, match="delivery-batch"):
        pair.server.send_delivery_batch(9, BATCH)
    assert pair.server.send_delivery(9, m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b""))


def test_a_batch_over_the_client_max_frame_size_is_not_written() -> None:
    pair = Pair(
        client={"capabilities": [DELIVERY_BATCH], "max_frame_size": 4096},
        server={"capabilities": [DELIVERY_BATCH]},
    )
    pair.handshake()
    rid = pair.client.consume("t", "n", "q", now=pair.now)
    pair.request()
    pair.server.open_consumer(rid, 9)
    pair.server.data_to_send()
    big = m.DeliveryBatch(
        delivery_ids=[1, 2], attempts=[1, 1], offsets=[0, 1], payloads=[b"x" * 2100] * 2
    )
    assert not pair.server.send_delivery_batch(9, big)
    assert pair.server.data_to_send() == []
    small = m.DeliveryBatch(
        delivery_ids=[1, 2], attempts=[1, 1], offsets=[0, 1], payloads=[b"x" * 2000] * 2
    )
    assert pair.server.send_delivery_batch(9, small)


def test_a_batch_the_client_did_not_agree_to_is_a_violation() -> None:
    pair, rid, sid = consuming(client=[], server=[DELIVERY_BATCH])
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=9))
    pair.to_client()
    pair.client.stream_data_received(sid, encode(BATCH), False)
    violation = single(drain(pair.client), ev.ProtocolViolation)
    assert violation.error_code == ErrorCode.UNEXPECTED_MESSAGE
    assert "delivery-batch" in violation.message


@pytest.mark.parametrize(
    "ids", [[5, 6, 5], [1, 6]], ids=["twice-in-the-batch", "already-awaiting-ack"]
)
def test_a_batch_repeating_a_delivery_id_is_a_violation(ids: list[int]) -> None:
    pair, rid, sid = consuming(client=[DELIVERY_BATCH], server=[DELIVERY_BATCH])
    pair.server.send_reply(m.Consuming(request_id=rid, consumer_id=9))
    pair.server.send_delivery(9, m.Delivery(delivery_id=1, attempt=1, offset=0, payload=b""))
    assert len(only(pair.to_client(), ev.DeliveryReceived)) == 1
    n = len(ids)
    bad = m.DeliveryBatch(delivery_ids=ids, attempts=[1] * n, offsets=[0] * n, payloads=[b""] * n)
    pair.client.stream_data_received(sid, encode(bad), False)
    events = drain(pair.client)
    assert single(events, ev.ProtocolViolation).error_code == ErrorCode.UNEXPECTED_MESSAGE
    assert not only(events, ev.DeliveryReceived)
    assert pair.client.pending_deliveries(9) == {1}


@pytest.mark.parametrize(
    "name", ["delivery_ids", "attempts", "offsets", "timestamps_ms", "keys", "headers"]
)
def test_a_list_of_another_length_is_a_bad_frame_naming_it(name: str) -> None:
    code, fields = msgpack.unpackb(encode(BATCH)[HEADER_SIZE:])
    fields[name] = fields[name][:2]
    with pytest.raises(BadFrame, match=f"^DeliveryBatch.{name}: expected 3 entries"):
        decode(msgpack.packb([code, fields]))
