"""A dispatch's deliveries as ``DeliveryBatch`` columns (felix_server.batches): the frame is
the one the per-field lists made, keys and headers are left out only when every delivery
has none, the counted size is each delivery's, and halves keep the order."""

from __future__ import annotations

import pytest

from felix_core.queue_types import QueueDelivery
from felix_proto import messages as m
from felix_proto.codec import decode, encode, encode_delivery_batch
from felix_proto.errors import LocalProtocolError
from felix_proto.frames import HEADER_SIZE
from felix_server.batches import SMALL_FRAME, delivery_columns, delivery_size


def _d(i: int, key: bytes | None = None, headers: dict[str, bytes] | None = None) -> QueueDelivery:
    return QueueDelivery(100 + i, 1 + i % 3, 7 + i, b"p" * (i + 1), key, headers, 50 + i, 9.0)


def _per_field(ds: list[QueueDelivery]) -> m.DeliveryBatch:
    """The batch as built one list at a time (the reference)."""
    return m.DeliveryBatch(
        delivery_ids=[d.delivery_id for d in ds],
        attempts=[d.attempt for d in ds],
        offsets=[d.offset for d in ds],
        payloads=[d.payload for d in ds],
        timestamps_ms=[d.timestamp_ms for d in ds],
        keys=None if all(d.key is None for d in ds) else [d.key for d in ds],
        headers=None if all(d.headers is None for d in ds) else [d.headers for d in ds],
    )


def test_columns_make_the_frame_the_per_field_lists_made() -> None:
    cases = [
        [_d(i) for i in range(5)],
        [_d(0), _d(1, key=b"k"), _d(2)],
        [_d(0), _d(1, headers={"h": b"v"}), _d(2, key=b"kk", headers={})],
    ]
    for ds in cases:
        ((columns, size),) = delivery_columns(ds)
        assert columns.message() == _per_field(ds)
        assert columns.frame() == encode(_per_field(ds))
        assert size == sum(map(delivery_size, ds))
        assert columns.payload_bytes == sum(len(d.payload) for d in ds)
        assert list(columns.deliveries) == ds


def test_a_plain_dispatch_sends_no_keys_or_headers_and_counts_its_framing() -> None:
    ds = [_d(i) for i in range(4)]
    ((columns, size),) = delivery_columns(ds)
    assert columns.keys is None and columns.headers is None
    assert size == 4 * SMALL_FRAME + sum(len(d.payload) for d in ds)


def test_halves_keep_every_column_in_order() -> None:
    ds = [
        _d(i, key=b"k" if i == 3 else None, headers={"a": b"b"} if i == 0 else None)
        for i in range(5)
    ]
    ((columns, _),) = delivery_columns(ds)
    first, second = columns.halves()
    assert list(first.deliveries) == ds[:2] and list(second.deliveries) == ds[2:]
    # each half leaves out the keys or headers none of its own deliveries has
    assert first.message() == _per_field(ds[:2]) and first.keys is None
    assert second.message() == _per_field(ds[2:]) and second.headers is None
    assert first.frame() == encode(_per_field(ds[:2]))
    assert second.frame() == encode(_per_field(ds[2:]))
    assert first.payload_bytes + second.payload_bytes == columns.payload_bytes


def test_the_encoder_takes_tuples_and_refuses_columns_of_other_lengths() -> None:
    frame = encode_delivery_batch((1, 2), (1, 1), (5, 6), (b"a", b"b"), (0, 0), (None, b"k"))
    assert decode(frame[HEADER_SIZE:]) == m.DeliveryBatch(
        delivery_ids=[1, 2],
        attempts=[1, 1],
        offsets=[5, 6],
        payloads=[b"a", b"b"],
        timestamps_ms=[0, 0],
        keys=[None, b"k"],
    )
    with pytest.raises(LocalProtocolError, match=r"DeliveryBatch.offsets: 1 entries for 2"):
        encode_delivery_batch([1, 2], [1, 1], [5], [b"a", b"b"])
