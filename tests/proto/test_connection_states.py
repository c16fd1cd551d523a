"""State x input walks over every connection state machine table, and random walks of a
client/server pair checking that nothing is ever left dangling."""

from __future__ import annotations

import contextlib
import itertools
from enum import Enum
from typing import Any

import pytest
from helpers import Pair, drain, feed, server_credit
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto._state import (
    CLIENT_CONNECTION,
    CLIENT_CONSUMER,
    CLIENT_SUBSCRIPTION,
    SERVER_CONNECTION,
    SERVER_FEED,
    ConnInput,
    ConnState,
    FeedInput,
    FeedState,
    ServerFeedState,
    UnexpectedMessage,
    transition,
)
from felix_proto.codec import encode_event_batch
from felix_proto.errors import LocalProtocolError

TABLES: list[tuple[str, dict[Any, Any], type[Enum], type[Enum]]] = [
    ("client_connection", CLIENT_CONNECTION, ConnState, ConnInput),
    ("server_connection", SERVER_CONNECTION, ConnState, ConnInput),
    ("client_subscription", CLIENT_SUBSCRIPTION, FeedState, FeedInput),
    ("client_consumer", CLIENT_CONSUMER, FeedState, FeedInput),
    ("server_feed", SERVER_FEED, ServerFeedState, FeedInput),
]


@pytest.mark.parametrize(("name", "table", "states", "inputs"), TABLES, ids=[t[0] for t in TABLES])
def test_every_state_input_pair(
    name: str, table: dict[Any, Any], states: type[Enum], inputs: type[Enum]
) -> None:
    for state, event in itertools.product(states, inputs):
        if (state, event) in table:
            assert transition(table, state, event, what=name, local=True) is table[(state, event)]
            assert transition(table, state, event, what=name, local=False) is table[(state, event)]
        else:
            with pytest.raises(LocalProtocolError):
                transition(table, state, event, what=name, local=True)
            with pytest.raises(UnexpectedMessage) as info:
                transition(table, state, event, what=name, local=False)
            assert info.value.fatal is False


@pytest.mark.parametrize(("name", "table", "states", "inputs"), TABLES, ids=[t[0] for t in TABLES])
def test_closed_states_are_terminal(
    name: str, table: dict[Any, Any], states: type[Enum], inputs: type[Enum]
) -> None:
    terminal = {s for s in states if s.name in ("CLOSED", "ENDED", "CANCELLED")}
    assert terminal
    assert not [key for key in table if key[0] in terminal]
    reachable = {states(next(iter(states)).value)} | set(table.values())
    assert reachable >= terminal  # every terminal state is reached by some move


@settings(max_examples=200, deadline=None)
@given(
    start=st.sampled_from(list(ConnState)),
    walk=st.lists(st.sampled_from(list(ConnInput)), max_size=12),
)
def test_random_walks_stay_inside_the_tables(start: ConnState, walk: list[ConnInput]) -> None:
    for table in (CLIENT_CONNECTION, SERVER_CONNECTION):
        state = start
        for event in walk:
            try:
                state = transition(table, state, event, what="c", local=True)
            except LocalProtocolError:
                continue
            assert state in ConnState


# ---------------------------------------------------------------- machine-level random walks

ACTIONS = [
    "publish",
    "publish_none",
    "subscribe",
    "consume",
    "cache",
    "ping",
    "unsubscribe",
    "cancel",
    "ack",
    "credit",
    "reply_all",
    "fail_one",
    "open_feeds",
    "send_data",
    "end_feeds",
    "tick",
    "goaway",
    "transfer_client",
    "transfer_server",
    "reset_feed",
    "lose",
]


class _Walker:
    def __init__(self, split: bool, reorder: bool) -> None:
        self.pair = Pair(split=split, reorder=reorder, client={"default_timeout": 5.0})
        self.pair.handshake()
        self.issued: set[int] = set()
        self.outcomes: dict[int, int] = {}
        self.started_subs: set[int] = set()
        self.ended_subs: set[int] = set()
        self.started_cons: set[int] = set()
        self.ended_cons: set[int] = set()
        self.server_requests: list[ev.RequestReceived] = []
        self.server_feeds: dict[int, bool] = {}
        self.next_feed = 1
        self.deliveries: dict[int, list[int]] = {}
        self.now = 0.0
        self.client_events: list[ev.Event] = []

    def client_call(self, fn: Any, *args: Any, **kw: Any) -> None:
        try:
            rid = fn(*args, **kw)
        except LocalProtocolError:
            return
        if isinstance(rid, int):
            self.issued.add(rid)

    def absorb(self) -> None:
        p = self.pair
        for e in drain(p.client):
            self.client_events.append(e)
            rid = getattr(e, "request_id", None)
            if isinstance(
                e,
                (
                    ev.RequestFailed,
                    ev.RequestTimedOut,
                    ev.RequestSucceeded,
                    ev.PublishAcked,
                    ev.CacheValueReceived,
                    ev.SubscriptionStarted,
                    ev.ConsumerStarted,
                ),
            ):
                assert rid is not None
                self.outcomes[rid] = self.outcomes.get(rid, 0) + 1
            if isinstance(e, ev.PongReceived):
                self.outcomes[e.nonce] = self.outcomes.get(e.nonce, 0) + 1
            if isinstance(e, ev.SubscriptionStarted):
                self.started_subs.add(e.subscription_id)
            if isinstance(e, ev.SubscriptionEnded):
                assert e.subscription_id in self.started_subs
                self.ended_subs.add(e.subscription_id)
            if isinstance(e, ev.ConsumerStarted):
                self.started_cons.add(e.consumer_id)
            if isinstance(e, ev.ConsumerEnded):
                assert e.consumer_id in self.started_cons
                self.ended_cons.add(e.consumer_id)
            if isinstance(e, ev.DeliveryReceived):
                self.deliveries.setdefault(e.consumer_id, []).append(e.delivery.delivery_id)
        for e in drain(p.server):
            if isinstance(e, ev.RequestReceived) and getattr(e.message, "request_id", None):
                self.server_requests.append(e)
            if isinstance(e, (ev.SubscriptionCancelled, ev.ConsumerCancelled)):
                fid = getattr(e, "subscription_id", None) or getattr(e, "consumer_id", 0)
                self.server_feeds.pop(fid, None)

    def step(self, action: str) -> None:
        p, c, s, now = self.pair, self.pair.client, self.pair.server, self.now
        if action == "publish":
            self.client_call(c.publish, "t", "n", "s", b"x", now=now)
        elif action == "publish_none":
            c.publish(
                "t", "n", "s", b"x", ack=m.AckMode.NONE, now=now
            ) if not c.closed and c.state is ConnState.READY else None
        elif action == "subscribe":
            self.client_call(
                c.subscribe, "t", "n", "s", credit_messages=4, credit_bytes=64, now=now
            )
        elif action == "consume":
            self.client_call(c.consume, "t", "n", "q", now=now)
        elif action == "cache":
            self.client_call(c.cache_get, "t", "n", "c", "k", now=now, timeout=1.0)
        elif action == "ping":
            self.client_call(c.ping, now=now, timeout=1.0)
        elif action == "unsubscribe":
            for sub in sorted(self.started_subs - self.ended_subs):
                self.client_call(c.unsubscribe, sub, now=now)
        elif action == "cancel":
            for con in sorted(self.started_cons - self.ended_cons):
                self.client_call(c.cancel_consume, con, now=now)
        elif action == "ack":
            for con, ids in self.deliveries.items():
                if ids:
                    self.client_call(c.ack, con, [ids.pop()], now=now)
        elif action == "credit":
            for sub in sorted(self.started_subs - self.ended_subs):
                self.client_call(c.credit, sub, 1, 1)
        elif action in ("reply_all", "fail_one", "open_feeds"):
            for req in list(self.server_requests):
                msg: Any = req.message
                try:
                    if action == "fail_one":
                        s.send_error(msg.request_id, 404, "nope")
                    elif isinstance(msg, m.Subscribe) and action == "open_feeds":
                        fid = self.next_feed = self.next_feed + 1
                        s.open_subscription(msg.request_id, fid)
                        self.server_feeds[fid] = True
                        s.send_reply(
                            m.Subscribed(
                                request_id=msg.request_id, subscription_id=fid, first_offset=0
                            )
                        )
                    elif isinstance(msg, m.Consume) and action == "open_feeds":
                        fid = self.next_feed = self.next_feed + 1
                        s.open_consumer(msg.request_id, fid)
                        self.server_feeds[fid] = False
                        s.send_reply(m.Consuming(request_id=msg.request_id, consumer_id=fid))
                    elif isinstance(msg, (m.Unsubscribe, m.CancelConsume, m.Ack)):
                        s.send_reply(m.Ok(request_id=msg.request_id))
                    elif isinstance(msg, m.Publish):
                        s.send_reply(
                            m.PublishAck(request_id=msg.request_id, first_offset=0, last_offset=0)
                        )
                    elif isinstance(msg, m.CacheGet):
                        s.send_reply(m.CacheValue(request_id=msg.request_id, found=False))
                    else:
                        continue
                except LocalProtocolError:
                    pass
                self.server_requests.remove(req)
                if action == "fail_one":
                    break
        elif action == "send_data":
            for fid, is_sub in list(self.server_feeds.items()):
                try:
                    if is_sub:
                        msgs, nbytes = server_credit(s, fid)
                        if msgs and nbytes > 0:
                            s.send_event_frame(
                                fid, encode_event_batch(0, [b"e"]), count=1, payload_bytes=1
                            )
                    else:
                        s.send_delivery(
                            fid,
                            m.Delivery(
                                delivery_id=self.next_feed * 100 + len(self.client_events),
                                attempt=1,
                                offset=0,
                                payload=b"",
                            ),
                        )
                except LocalProtocolError:
                    self.server_feeds.pop(fid)
        elif action == "end_feeds":
            for fid, is_sub in list(self.server_feeds.items())[:1]:
                self.server_feeds.pop(fid)
                with contextlib.suppress(LocalProtocolError):
                    (s.end_subscription if is_sub else s.end_consumer)(fid, "unsubscribed")
        elif action == "tick":
            self.now += 0.7
            c.handle_timer(self.now)
            s.handle_timer(self.now)
            timer = c.get_timer()
            assert timer is None or timer > self.now
        elif action == "goaway":
            with contextlib.suppress(LocalProtocolError):
                s.goaway("bye", 10_000, now=now)
        elif action == "transfer_client":  # absorb() below takes the events
            feed(c, s.data_to_send(), split=p.split, reorder=p.reorder)
        elif action == "transfer_server":
            feed(s, c.data_to_send(), split=p.split, reorder=p.reorder)
        elif action == "reset_feed":
            for fid in list(self.server_feeds)[:1]:
                sid = next(
                    (st.stream_id for st in s._by_stream.values() if st.feed_id == fid), None
                )
                if sid is not None:
                    s.stream_reset(sid, 0)
        elif action == "lose":
            c.connection_lost()
            s.connection_lost()
        self.absorb()


@settings(max_examples=60, deadline=None)
@given(
    actions=st.lists(st.sampled_from(ACTIONS), max_size=40),
    split=st.booleans(),
    reorder=st.booleans(),
)
def test_random_pair_walks_leave_nothing_dangling(
    actions: list[str], split: bool, reorder: bool
) -> None:
    w = _Walker(split, reorder)
    for action in actions:
        w.step(action)
    w.step("lose")
    assert isinstance(w.client_events[-1], ev.ConnectionTerminated)
    violations = [e for e in w.client_events if isinstance(e, ev.ProtocolViolation)]
    assert violations == []  # a correct broker never trips the client
    # Every request issued got exactly one outcome; every started feed ended.
    assert {rid: w.outcomes.get(rid, 0) for rid in w.issued} == dict.fromkeys(w.issued, 1)
    assert w.started_subs == w.ended_subs
    assert w.started_cons == w.ended_cons
    assert w.pair.client.get_timer() is None and w.pair.server.get_timer() is None
