"""AckBatches.add_ack: the natural loop's ack buffered without the general path, only when
nothing else is needed (no I/O: the buffer alone)."""

from __future__ import annotations

from felix_client._acks import AckBatches, SentBatch

LIVE = {("con", 1): object(), ("con", 2): object()}


def batches(**kw: object) -> AckBatches:
    acks = AckBatches(5.0, feeds=LIVE, **kw)  # type: ignore[arg-type]
    acks.early.update({1: 8, 2: 8})
    return acks


def test_an_ack_joins_the_plain_acks_the_consumer_has_buffered() -> None:
    acks = batches()
    assert not acks.add_ack(1, 10)  # nothing buffered yet: the general path (wakes the flusher)
    assert acks.add(1, [10], True, 0)
    assert acks.add_ack(1, 11) and acks.add_ack(1, 12)
    assert acks.buffered == {(1, True, 0, False): [10, 11, 12]}
    assert acks.count == 3 and acks.queued[1] == {10, 11, 12}


def test_it_declines_whatever_the_general_path_must_handle() -> None:
    acks = batches(max_buffered=5)
    acks.add(1, [10], True, 0)
    assert not acks.add_ack(1, 10)  # settled twice: the general path raises NotFound
    acks.add(2, [20], False, 0)  # a nack buffered is not a plain ack
    assert not acks.add_ack(2, 21)
    acks.add(1, [30], True, 0, committed=True)  # nor is a committed one
    assert acks.add_ack(1, 31)
    assert acks.buffered[(1, True, 0, True)] == [30]
    assert acks.buffered[(1, True, 0, False)] == [10, 31]
    assert not acks.add_ack(1, 32)  # the fifth id fills the buffer: written out at once
    assert acks.count == 4


def test_it_declines_at_half_the_prefetch_an_ended_consumer_and_back_pressure() -> None:
    acks = batches()
    acks.early[1] = 3
    acks.add(1, [10], True, 0)
    assert acks.add_ack(1, 11)
    assert not acks.add_ack(1, 12)  # the third of 3: sent at once by the general path
    gone = AckBatches(5.0, feeds={})  # the consumer's feed ended (or the connection did)
    gone.early[1] = 8
    gone.add(1, [10], True, 0)
    assert not gone.add_ack(1, 11)
    busy = batches(max_unconfirmed=1)
    busy.add(1, [10], True, 0)
    busy.sent[7] = SentBatch(1, True, [9])  # as many frames await answers as allowed
    assert not busy.add_ack(1, 11)
    assert busy.count == 1 and gone.count == 1
