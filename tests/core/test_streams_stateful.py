"""Stateful test of a Stream against a model, under each slow-consumer policy.

Every subscriber must see its records in offset order with no gap, except where a
``RecordsSkipped`` reports exactly how many records it skipped (and only retention may cause one);
``block`` never loses anything and refuses publishes exactly when they would evict unread
records; ``disconnect`` ends exactly the lagging subscriptions. After the flush deadline,
every subscriber with credit has caught up: a slow one never holds the others back.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from felix_core.errors import Overloaded
from felix_core.events import EngineEvent, RecordsDelivered, RecordsSkipped, SubscriptionClosed
from felix_core.limits import BrokerConfig
from felix_core.settings import SlowConsumerPolicy, StreamSettings
from felix_core.streams import StartKind, Stream

MAX_RECORDS = 6


class StreamMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[EngineEvent] = []
        self.now = 1.0
        self.published: list[bytes] = []  # payload by offset
        self.expected: dict[int, int] = {}  # sub id -> next offset it must receive
        self.credit: dict[int, int] = {}  # sub id -> message credit left (model)
        self.next_id = 1

    @initialize(
        policy=st.sampled_from(list(SlowConsumerPolicy)),
        max_events=st.integers(1, 4),
        delay_us=st.sampled_from([0, 100]),
    )
    def setup(self, policy: SlowConsumerPolicy, max_events: int, delay_us: int) -> None:
        settings = StreamSettings.from_mapping(
            {
                "retention_max_records": MAX_RECORDS,
                "slow_consumer": policy.value,
                "batch_max_events": max_events,
                "batch_max_delay_us": delay_us,
            },
            BrokerConfig(),
        )
        self.policy = policy
        self.stream = Stream(settings, self.out)

    def _check_outputs(self) -> None:
        log = self.stream.log
        for o in self.out:
            if isinstance(o, RecordsDelivered):
                sid = o.subscription_id
                assert o.slice.base_offset == self.expected[sid], "gap without a RecordsSkipped"
                assert o.slice.payloads == self.published[o.slice.base_offset : o.slice.next_offset]
                assert len(o.slice) >= 1
                self.credit[sid] -= len(o.slice)
                assert self.credit[sid] >= 0, "delivered beyond credit"
                self.expected[sid] = o.slice.next_offset
            elif isinstance(o, RecordsSkipped):
                assert self.policy is not SlowConsumerPolicy.BLOCK, "block must never drop"
                sid = o.subscription_id
                assert o.missed == o.next_offset - self.expected[sid] > 0
                assert o.next_offset <= log.first_offset  # only trimmed records are skipped
                self.expected[sid] = o.next_offset
            else:
                assert isinstance(o, SubscriptionClosed)
                assert o.reason == "lagged"
                assert self.policy is SlowConsumerPolicy.DISCONNECT
                assert self.expected[o.subscription_id] < log.first_offset
                del self.expected[o.subscription_id]
                del self.credit[o.subscription_id]
        self.out.clear()

    @rule(credit=st.integers(0, 8), start=st.sampled_from([StartKind.LATEST, StartKind.EARLIEST]))
    def subscribe(self, credit: int, start: StartKind) -> None:
        sid = self.next_id
        self.next_id += 1
        first = self.stream.log.first_offset if start is StartKind.EARLIEST else len(self.published)
        self.expected[sid] = first
        self.credit[sid] = credit
        sub = self.stream.subscribe(sid, sid, start, None, credit, 1 << 30, self.now)
        assert sub.start_offset == first
        self._check_outputs()

    @rule(n=st.integers(1, 4))
    def publish(self, n: int) -> None:
        payloads = [b"%d" % (len(self.published) + i) for i in range(n)]
        log = self.stream.log
        evict = max(log.record_count + n - MAX_RECORDS, 0)
        cursors = [s.cursor for s in self.stream.subscriptions.values()]
        blocked = (
            self.policy is SlowConsumerPolicy.BLOCK
            and evict > 0
            and bool(cursors)
            and min(cursors) < log.first_offset + evict
        )
        try:
            first, last = self.stream.publish(payloads, None, None, self.now)
        except Overloaded:
            assert blocked
            return
        assert not blocked
        assert (first, last) == (len(self.published), len(self.published) + n - 1)
        self.published.extend(payloads)
        assert log.record_count <= MAX_RECORDS
        self._check_outputs()

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data(), more=st.integers(0, 8))
    def add_credit(self, data: st.DataObject, more: int) -> None:
        sid = data.draw(st.sampled_from(sorted(self.expected)))
        self.credit[sid] += more
        self.stream.add_credit(self.stream.subscriptions[sid], more, 0, self.now)
        self._check_outputs()

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data())
    def toggle_pause(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.expected)))
        sub = self.stream.subscriptions[sid]
        sub.paused = not sub.paused
        if not sub.paused:
            self.stream.pump(self.now, force=True)
        self._check_outputs()

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.expected)))
        self.stream.remove(sid, "unsubscribed")
        assert isinstance(self.out[-1], SubscriptionClosed)
        self.out.pop()
        self._check_outputs()
        del self.expected[sid]
        del self.credit[sid]

    @rule(dt=st.floats(0, 0.001))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.stream.handle_timer(self.now)
        self._check_outputs()

    @rule()
    def flush(self) -> None:
        deadline = self.stream.get_timer()
        if deadline is not None:
            self.now = max(self.now, deadline)
            self.stream.handle_timer(self.now)
        self._check_outputs()
        assert self.stream.get_timer() is None
        end = self.stream.log.next_offset
        for sid, sub in self.stream.subscriptions.items():
            if not sub.paused and self.credit[sid] > 0:
                assert sub.cursor == end, "a subscriber with credit is held back"

    @invariant()
    def cursors_match_model(self) -> None:
        assert set(self.stream.subscriptions) == set(self.expected)
        for sid, sub in self.stream.subscriptions.items():
            assert sub.cursor == self.expected[sid]
            assert sub.credit_messages == self.credit[sid]


TestStreamMachine = StreamMachine.TestCase
