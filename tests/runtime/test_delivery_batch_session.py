"""The session's delivery write path, in memory through the whole server (QUIC, the session,
the engine), read as raw frames: the deliveries one dispatch hands a consumer go in one
``DeliveryBatch`` to a client that agreed to ``delivery-batch`` and one ``Delivery`` each
to one that did not; over the client's ``max_frame_size`` the batch is split into frames
that fit, in order, and a delivery that fits no frame ends the consumer after the ones
before it (docs/wire-protocol.md §5.3, §5.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from felix_core.queue_types import QueueDelivery
from felix_proto import messages as m
from felix_proto._expansion import check_values
from felix_proto.client import DELIVERY_BATCH, unbatch
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import TooManyValues
from felix_proto.frames import HEADER_SIZE
from felix_server.batches import delivery_columns

from .memory_net import MemoryClient, MemoryNet, N, T


def consumer_frames(
    net: MemoryNet, capabilities: list[str], *, until: int, max_frame_size: int | None = None
) -> tuple[MemoryClient, list[m.Message], list[int]]:
    """A raw client consuming queue ``q`` (prefetch 16): its consumer stream's messages once
    ``until`` deliveries (or the end) arrived, and each frame's payload length."""
    raw = net.client(raw=True)
    hello = m.Hello(versions=[2], capabilities=capabilities, max_frame_size=max_frame_size)
    raw.quic.send_stream_data(0, encode(hello))
    net.until(lambda: bool(raw.received.get(0)))
    consume = m.Consume(request_id=1, tenant=T, namespace=N, queue="q", prefetch=16)
    raw.quic.send_stream_data(4, encode(consume))

    def decoded() -> tuple[list[m.Message], list[int]]:
        data = b"".join(bytes(v) for k, v in raw.received.items() if k % 4 == 3)
        decoder, out, sizes, pos = MessageDecoder(), [], [], 0
        while pos + HEADER_SIZE <= len(data):
            sizes.append(int.from_bytes(data[pos + 8 : pos + 12], "big"))
            pos += HEADER_SIZE + sizes[-1]
        decoder.feed(data)
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
        return out, sizes

    def arrived() -> bool:
        msgs, _ = decoded()
        if any(isinstance(x, m.ConsumerEnded) for x in msgs):
            return True
        return len(deliveries(msgs)) >= until

    net.until(arrived)
    msgs, sizes = decoded()
    return raw, msgs, sizes


def deliveries(msgs: list[m.Message]) -> list[m.Delivery]:
    out: list[m.Delivery] = []
    for msg in msgs:
        if isinstance(msg, m.Delivery):
            out.append(msg)
        elif isinstance(msg, m.DeliveryBatch):
            out.extend(unbatch(msg))
    return out


@pytest.mark.parametrize("agreed", [True, False], ids=["delivery-batch", "without"])
def test_one_dispatch_is_one_frame_only_with_the_capability(tmp_path: Path, agreed: bool) -> None:
    net = MemoryNet(tmp_path)
    net.broker.create("queue", T, N, "q", now=net.now)
    payloads = [f"job-{i}".encode() for i in range(10)]
    net.broker.enqueue(999, T, N, "q", payloads, now=net.now)
    _, msgs, _ = consumer_frames(net, [DELIVERY_BATCH] if agreed else [], until=10)
    data = [x for x in msgs if isinstance(x, m.Delivery | m.DeliveryBatch)]
    if agreed:
        assert [type(x) for x in data] == [m.DeliveryBatch]
    else:
        assert [type(x) for x in data] == [m.Delivery] * 10
    got = deliveries(msgs)
    assert [d.payload for d in got] == payloads
    assert [d.offset for d in got] == list(range(10))
    assert all(d.attempt == 1 for d in got) and len({d.delivery_id for d in got}) == 10


def test_a_lone_delivery_still_goes_as_delivery(tmp_path: Path) -> None:
    net = MemoryNet(tmp_path)
    net.broker.create("queue", T, N, "q", now=net.now)
    net.broker.enqueue(999, T, N, "q", [b"one"], now=net.now)
    _, msgs, _ = consumer_frames(net, [DELIVERY_BATCH], until=1)
    assert [type(x) for x in msgs if not isinstance(x, m.ConsumerStreamStart)] == [m.Delivery]


def test_a_batch_over_max_frame_size_is_split_and_ends_before_what_fits_no_frame(
    tmp_path: Path,
) -> None:
    net = MemoryNet(tmp_path)
    net.broker.create("queue", T, N, "q", now=net.now)
    medium = [bytes([65 + i]) * 1500 for i in range(6)]
    net.broker.enqueue(999, T, N, "q", [*medium, b"x" * 6000, b"after"], now=net.now)
    _, msgs, sizes = consumer_frames(net, [DELIVERY_BATCH], until=99, max_frame_size=4096)
    assert max(sizes) <= 4096
    assert any(isinstance(x, m.DeliveryBatch) for x in msgs)  # pieces of 2 fit 4 KiB
    assert [d.payload for d in deliveries(msgs)] == medium
    end = msgs[-1]
    assert isinstance(end, m.ConsumerEnded) and end.reason == m.EndReason.ERROR
    assert "offset 6" in end.message and "max_frame_size 4096" in end.message


def _delivery(i: int, headers: int) -> QueueDelivery:
    hdrs = {f"h{j}": b"" for j in range(headers)} if headers else None
    return QueueDelivery(i, 1, i, b"p", None, hdrs, 0, 0.0)


def test_a_dispatch_is_cut_where_a_batch_would_exceed_the_value_budget() -> None:
    plain = [_delivery(i, 0) for i in range(1000)]
    assert [list(c.deliveries) for c, _ in delivery_columns(plain)] == [plain]
    heavy = [_delivery(i, 3000) for i in range(200)]  # 6,007 values each
    groups = [list(c.deliveries) for c, _ in delivery_columns(heavy)]
    assert [d for g in groups for d in g] == heavy
    assert [len(g) for g in groups] == [87, 87, 26]
    check_values(_batch_payload(groups[0]))  # raises TooManyValues over the budget
    with pytest.raises(TooManyValues):
        check_values(_batch_payload(heavy[:88]))


def _batch_payload(group: list[QueueDelivery]) -> bytes:
    batch = m.DeliveryBatch(
        delivery_ids=[d.delivery_id for d in group],
        attempts=[1] * len(group),
        offsets=[d.offset for d in group],
        payloads=[d.payload for d in group],
        timestamps_ms=[0] * len(group),
        keys=[None] * len(group),
        headers=[d.headers for d in group],
    )
    return encode(batch)[HEADER_SIZE:]
