"""Unit tests of felix_core.streams: delivery, credit, batching, gaps and policies."""

from __future__ import annotations

from typing import Any

import pytest

from felix_core.errors import CursorTooOld, InvalidArgument, Overloaded, TooLarge
from felix_core.events import EngineEvent, RecordsDelivered, RecordsSkipped, SubscriptionClosed
from felix_core.limits import BrokerConfig
from felix_core.log import LogSlice, MemoryLog
from felix_core.settings import BatchPolicy, StreamSettings
from felix_core.streams import (
    Fanout,
    StartKind,
    Stream,
    batch_byte_size,
)

CFG = BrokerConfig()


def make(out: list[EngineEvent], **settings: Any) -> Stream:
    return Stream(StreamSettings.from_mapping(settings, CFG), out)


def batches(out: list[EngineEvent], sub_id: int | None = None) -> list[LogSlice]:
    return [
        o.slice
        for o in out
        if isinstance(o, RecordsDelivered) and (sub_id is None or o.subscription_id == sub_id)
    ]


def test_full_batch_goes_at_once_partial_waits_for_timer() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=3, batch_max_delay_us=1000)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    assert s.get_timer() is None
    assert s.publish([b"a", b"b", b"c", b"d"], None, None, 1.0) == (0, 3)
    assert [b.payloads for b in batches(out)] == [[b"a", b"b", b"c"]]
    assert s.get_timer() == pytest.approx(1.001)
    s.handle_timer(1.0005)  # not yet due
    assert len(batches(out)) == 1
    s.publish([b"e"], None, None, 1.0008)  # deadline is kept, not pushed back
    assert s.get_timer() == pytest.approx(1.001)
    s.handle_timer(1.001)
    assert [b.payloads for b in batches(out)][1:] == [[b"d", b"e"]]
    assert s.get_timer() is None


def test_single_publishes_fill_a_batch_that_goes_at_once() -> None:
    """One record a publish: the partial batch waits; the publish that fills it (counting
    the records waiting since the batch's start, not only its own) sends it at once, before
    the timer; the next record waits alone."""
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=3, batch_max_delay_us=5000)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a"], None, None, 1.0)
    s.publish([b"b"], None, None, 1.0)
    assert batches(out) == [] and s.get_timer() == pytest.approx(1.005)
    s.publish([b"c"], None, None, 1.0)
    assert [b.payloads for b in batches(out)] == [[b"a", b"b", b"c"]]
    assert s.get_timer() is None
    s.publish([b"d"], None, None, 1.001)
    assert len(batches(out)) == 1 and s.get_timer() == pytest.approx(1.006)
    s.handle_timer(1.006)
    assert [b.payloads for b in batches(out)][1:] == [[b"d"]] and s.get_timer() is None


def test_zero_delay_delivers_immediately() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=64, batch_max_delay_us=0)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a"], None, None, 1.0)
    assert len(batches(out)) == 1 and s.get_timer() is None


def test_byte_threshold_triggers_delivery() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=100, batch_max_bytes=5)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"abc", b"def"], None, None, 1.0)
    assert [b.payloads for b in batches(out)] == [[b"abc"]]  # 6 bytes > 5: one record first


def test_same_position_shares_one_slice_object() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=2)
    for i in range(5):
        s.subscribe(i, 100 + i, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a", b"b"], None, None, 1.0)
    got = batches(out)
    assert len(got) == 5
    assert all(g is got[0] for g in got)


def test_credit_limits_and_resumes() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=4, batch_max_delay_us=0)
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 2, 10**6, 0.0)
    other = s.subscribe(2, 11, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a", b"b", b"c", b"d", b"e"], None, None, 1.0)
    assert [b.payloads for b in batches(out, 1)] == [[b"a", b"b"]]
    assert [b.payloads for b in batches(out, 2)] == [[b"a", b"b", b"c", b"d"], [b"e"]]
    assert sub.credit_messages == 0 and sub.cursor == 2
    s.add_credit(sub, 10, 0, 2.0)
    assert [b.payloads for b in batches(out, 1)][1:] == [[b"c", b"d", b"e"]]
    assert other.cursor == 5
    with pytest.raises(InvalidArgument):
        s.add_credit(sub, -1, 0, 2.0)


def test_byte_credit_allows_one_oversized_record() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_delay_us=0)
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 100, 2, 0.0)
    s.publish([b"abcdef", b"g"], None, None, 1.0)
    assert [b.payloads for b in batches(out)] == [[b"abcdef"]]
    assert sub.credit_bytes == -4
    s.add_credit(sub, 0, 5, 2.0)  # back to 1 > 0
    assert [b.payloads for b in batches(out)][1:] == [[b"g"]]


def test_zero_credit_subscriber_gets_nothing() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_delay_us=0)
    s.subscribe(1, 10, StartKind.LATEST, None, 0, 0, 0.0)
    s.publish([b"a"], None, None, 1.0)
    assert out == []
    with pytest.raises(InvalidArgument):
        s.subscribe(2, 10, StartKind.LATEST, None, -1, 0, 0.0)


def test_paused_subscription_waits() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_delay_us=0)
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0, paused=True)
    s.publish([b"a"], None, None, 1.0)
    assert out == []
    sub.paused = False
    s.pump(2.0, force=True)
    assert len(batches(out)) == 1


def test_start_positions() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_delay_us=0, retention_max_records=3)
    s.publish([b"a", b"b"], None, None, 1.0)
    s.publish([b"c", b"d"], None, None, 2.0)  # offsets 1..3 retained
    assert s.start_offset(StartKind.LATEST, None) == 4
    assert s.start_offset(StartKind.EARLIEST, None) == 1
    assert s.start_offset(StartKind.OFFSET, 2) == 2
    assert s.start_offset(StartKind.OFFSET, 4) == 4
    assert s.start_offset(StartKind.TIMESTAMP, 1500) == 2
    assert s.start_offset(StartKind.TIMESTAMP, 0) == 1
    assert s.start_offset(StartKind.TIMESTAMP, 10**12) == 4
    with pytest.raises(CursorTooOld) as too_old:
        s.start_offset(StartKind.OFFSET, 0)
    assert too_old.value.details["first_offset"] == 1
    with pytest.raises(InvalidArgument):
        s.start_offset(StartKind.OFFSET, 5)
    with pytest.raises(InvalidArgument):
        s.start_offset(StartKind.OFFSET, None)
    with pytest.raises(InvalidArgument):
        s.start_offset(StartKind.TIMESTAMP, True)
    with pytest.raises(InvalidArgument):
        s.start_offset(9, 0)
    sub = s.subscribe(7, 1, StartKind.EARLIEST, None, 100, 10**6, 3.0)
    assert sub.start_offset == 1 and sub.cursor == 4
    assert [b.payloads for b in batches(out, 7)] == [[b"b", b"c", b"d"]]


def test_drop_oldest_reports_exact_gap() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_records=4, batch_max_delay_us=0, slow_consumer="drop_oldest")
    slow = s.subscribe(1, 10, StartKind.LATEST, None, 0, 10**6, 0.0)
    fast = s.subscribe(2, 11, StartKind.LATEST, None, 10**6, 10**6, 0.0)
    for i in range(10):
        s.publish([bytes([i])], None, None, 1.0)
    assert fast.cursor == 10
    s.add_credit(slow, 100, 0, 2.0)
    gaps = [o for o in out if isinstance(o, RecordsSkipped)]
    assert gaps == [RecordsSkipped(connection_id=10, subscription_id=1, missed=6, next_offset=6)]
    assert [b.payloads for b in batches(out, 1)] == [
        [bytes([6]), bytes([7]), bytes([8]), bytes([9])]
    ]
    assert s.gap_records == 6 and s.stats()["gap_records"] == 6


def test_disconnect_ends_lagging_subscription() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_records=2, batch_max_delay_us=0, slow_consumer="disconnect")
    s.subscribe(1, 10, StartKind.LATEST, None, 0, 10**6, 0.0)
    fast = s.subscribe(2, 11, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a", b"b"], None, None, 1.0)
    assert out[-1] == RecordsDelivered(connection_id=11, subscription_id=2, slice=batches(out)[0])
    s.publish([b"c"], None, None, 1.0)
    ended = [o for o in out if isinstance(o, SubscriptionClosed)]
    assert [(e.subscription_id, e.reason, e.next_offset) for e in ended] == [(1, "lagged", 0)]
    assert list(s.subscriptions) == [2] and fast.cursor == 3
    assert s.lagged == 1
    assert s.end_lagging() == 0


def test_block_refuses_publish_that_would_evict_unread() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_records=3, batch_max_delay_us=0, slow_consumer="block")
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 0, 10**6, 0.0)
    s.publish([b"a", b"b", b"c"], None, None, 1.0)
    with pytest.raises(Overloaded) as err:
        s.publish([b"d"], None, None, 1.0)
    assert err.value.retryable and err.value.details["slowest_offset"] == 0
    assert s.log.record_count == 3 and s.blocked == 1
    s.add_credit(sub, 1, 0, 2.0)  # reads offset 0
    assert s.publish([b"d"], None, None, 2.0) == (3, 3)
    assert s.log.first_offset == 1
    assert s.end_lagging() == 0  # only the disconnect policy ends anyone


def test_block_without_subscribers_trims_freely() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_records=2, slow_consumer="block")
    for _ in range(5):
        s.publish([b"x"], None, None, 1.0)
    assert s.log.record_count == 2


def test_publish_errors() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_records=2, retention_max_bytes=10)
    # the batch itself (empty, keys or headers of another length) is the engine's to check
    with pytest.raises(TooLarge):
        s.publish([b"a", b"b", b"c"], None, None, 1.0)
    with pytest.raises(TooLarge):
        s.publish([b"x" * 11], None, None, 1.0)


def test_age_retention_timer_trims_and_gaps() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_age_ms=1000, batch_max_delay_us=0)
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 0, 10**6, 0.0)
    assert s.get_timer() is None
    s.publish([b"a"], None, None, 1.0)
    s.publish([b"b"], None, None, 1.5)
    deadline = s.get_timer()
    assert deadline is not None and 2.001 <= deadline < 2.0025
    s.handle_timer(deadline)
    assert s.log.first_offset == 1
    assert s.get_timer() is not None
    s.handle_timer(3.0)
    assert s.log.record_count == 0 and s.get_timer() is None
    s.add_credit(sub, 10, 0, 3.0)
    assert next(o for o in out if isinstance(o, RecordsSkipped)).missed == 2
    assert s.trimmed_records == 2


def test_update_settings_applies_retention_and_batching() -> None:
    out: list[EngineEvent] = []
    s = make(out, batch_max_events=10)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a", b"b", b"c"], None, None, 1.0)
    assert batches(out) == []
    s.update_settings(StreamSettings.from_mapping({"retention_max_records": 1}, CFG), 1.0)
    assert s.log.record_count == 1
    assert out[0] == RecordsSkipped(connection_id=10, subscription_id=1, missed=2, next_offset=2)
    assert [b.payloads for b in batches(out)] == [[b"c"]]  # forced flush


def test_remove_and_end_all() -> None:
    out: list[EngineEvent] = []
    f = Fanout(MemoryLog(), out)
    subs = [
        f.subscribe(1, 10, StartKind.LATEST, None, 1, 1, 0.0),
        f.subscribe(2, 10, StartKind.LATEST, None, 1, 1, 0.0),
    ]
    assert f.remove(1, None) is not None and out == []
    assert f.remove(1, "unsubscribed") is None
    assert [s.id for s in f.end_all("deleted", "gone")] == [2]
    assert out == [
        SubscriptionClosed(
            connection_id=10, subscription_id=2, reason="deleted", message="gone", next_offset=0
        )
    ]
    assert [sub.closed for sub in subs] == [True, True]  # whoever indexes them sees it
    assert f.slowest_cursor() is None


def test_fanout_over_external_log_gaps_under_drop_oldest() -> None:
    out: list[EngineEvent] = []
    log = MemoryLog()
    f = Fanout(log, out, batch=BatchPolicy(max_events=2, max_bytes=100, max_delay_s=0.0))
    f.subscribe(1, 10, StartKind.EARLIEST, None, 100, 100, 0.0)
    log.append_batch([b"a", b"b", b"c"], 0)
    log.truncate_before(1)
    f.pump(1.0)
    assert out[0] == RecordsSkipped(connection_id=10, subscription_id=1, missed=1, next_offset=1)
    assert [b.payloads for b in batches(out)] == [[b"b", b"c"]]
    assert f.get_timer() is None
    f.handle_timer(5.0)  # nothing due: no-op


def test_disconnect_fanout_ends_on_read_of_trimmed() -> None:
    out: list[EngineEvent] = []
    s = make(out, slow_consumer="disconnect", batch_max_delay_us=0, retention_max_age_ms=10)
    s.subscribe(1, 10, StartKind.LATEST, None, 0, 10**6, 0.0)
    s.publish([b"a"], None, None, 1.0)
    s.handle_timer(2.0)  # age trim under disconnect ends the lagging subscription
    assert [o.reason for o in out if isinstance(o, SubscriptionClosed)] == ["lagged"]


def test_handle_trimmed_disconnect_path_on_read() -> None:
    out: list[EngineEvent] = []
    log = MemoryLog()
    s = make(out, slow_consumer="disconnect", batch_max_delay_us=0)
    f = Fanout(log, out, policy=s.policy, batch=s.batch)
    f.subscribe(1, 10, StartKind.EARLIEST, None, 0, 100, 0.0)
    log.append_batch([b"a", b"b"], 0)
    log.truncate_before(1)
    f.subscriptions[1].credit_messages = 5
    f.pump(1.0)
    assert [o.reason for o in out if isinstance(o, SubscriptionClosed)] == ["lagged"]


def test_batch_byte_size_and_repr() -> None:
    assert batch_byte_size([b"ab", b"c"], None, None) == 3
    assert batch_byte_size([b"ab", b"c"], [b"k", None], None) == 4
    assert batch_byte_size([b"ab"], None, [{"h": b"v"}]) == 4
    out: list[EngineEvent] = []
    s = make(out)
    sub = s.subscribe(1, 10, StartKind.LATEST, None, 1, 1, 0.0)
    assert "cursor=0" in repr(sub)


def test_timer_is_the_earlier_of_age_and_flush() -> None:
    out: list[EngineEvent] = []
    s = make(out, retention_max_age_ms=1, batch_max_events=10, batch_max_delay_us=10_000)
    s.subscribe(1, 10, StartKind.LATEST, None, 100, 10**6, 0.0)
    s.publish([b"a"], None, None, 1.0)
    assert s.get_timer() == pytest.approx(1.0025)  # age (1 ms + slack) before flush (10 ms)
    s.handle_timer(1.0025)
    assert s.log.record_count == 0
    assert s.get_timer() is None  # the waiting record itself aged out: nothing to flush
