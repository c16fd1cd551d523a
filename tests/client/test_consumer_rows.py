"""A consumer reads a ``DeliveryBatch`` as rows of its columns (the machine's
``DeliveriesReceived``): each row is what the lone ``Delivery`` of ``unbatch`` holds, with
the optional columns (timestamps, keys, headers) absent or present."""

from __future__ import annotations

from felix_client._streams import _row, _rows
from felix_proto import messages as m
from felix_proto.client import unbatch

FULL = m.DeliveryBatch(
    delivery_ids=[5, 6, 7],
    attempts=[1, 2, 1],
    offsets=[10, 3, 11],
    payloads=[b"a", b"b", b"c"],
    timestamps_ms=[100, 90, 101],
    keys=[None, b"k", None],
    headers=[None, None, {"h": b"v"}],
)
BARE = m.DeliveryBatch(
    delivery_ids=[8, 9], attempts=[1, 3], offsets=[12, 13], payloads=[b"d", b"e"]
)


def test_rows_are_the_lone_deliveries_with_every_column() -> None:
    assert list(_rows(FULL)) == [_row(d) for d in unbatch(FULL)]
    assert list(_rows(FULL))[2] == (7, 1, 11, b"c", 101, None, {"h": b"v"})


def test_rows_fill_absent_columns_as_a_lone_delivery_does() -> None:
    assert list(_rows(BARE)) == [_row(d) for d in unbatch(BARE)]
    assert list(_rows(BARE)) == [(8, 1, 12, b"d", 0, None, None), (9, 3, 13, b"e", 0, None, None)]
