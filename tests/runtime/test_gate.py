"""felix_server.gate: the back-pressure table of one connection, walked state by state."""

from __future__ import annotations

import itertools

import pytest

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_server.gate import Flow, Gate, Move, Signal

LIMIT, RESUME, CAP, BOUND = 100, 40, 200, 100


def gate(state: Flow = Flow.OPEN) -> Gate:
    g = Gate(limit=LIMIT, resume=RESUME, cap=CAP, bound=BOUND)
    path = {  # how each state is reached
        Flow.OPEN: (),
        Flow.PAUSED: (Signal.OVER_LIMIT,),
        Flow.HOLDING: (Signal.OVER_CAP,),
    }
    for signal in path[state]:
        g.move(signal)
    assert g.state is state
    return g


EXPECTED = {
    (Flow.OPEN, Signal.OVER_CAP): (Flow.HOLDING, (Move.PAUSE_FEEDS, Move.HOLD_REQUESTS)),
    (Flow.PAUSED, Signal.OVER_CAP): (Flow.HOLDING, (Move.HOLD_REQUESTS,)),
    (Flow.OPEN, Signal.OVER_LIMIT): (Flow.PAUSED, (Move.PAUSE_FEEDS,)),
    (Flow.PAUSED, Signal.BELOW_RESUME): (Flow.OPEN, (Move.RESUME_FEEDS,)),
    (Flow.HOLDING, Signal.BELOW_LIMIT): (Flow.PAUSED, (Move.READ_REQUESTS,)),
    (Flow.HOLDING, Signal.BELOW_RESUME): (Flow.OPEN, (Move.RESUME_FEEDS, Move.READ_REQUESTS)),
}


@pytest.mark.parametrize(("state", "signal"), list(itertools.product(Flow, Signal)))
def test_every_state_and_signal(state: Flow, signal: Signal) -> None:
    g = gate(state)
    moves = g.move(signal)
    assert (g.state, moves) == EXPECTED.get((state, signal), (state, ()))
    assert g.reading == (g.state is not Flow.HOLDING)
    assert g.paused == (g.state is not Flow.OPEN)


def test_a_request_over_the_cap_holds_and_pauses() -> None:
    g = gate()
    assert g.before_request(CAP) == ()  # at the cap: still read
    assert g.before_request(CAP + 1) == (Move.PAUSE_FEEDS, Move.HOLD_REQUESTS)
    assert not g.reading and g.before_request(CAP + 1) == ()  # once


def test_settle_after_a_transmit() -> None:
    g = gate()
    assert g.settle(LIMIT, False) == ()  # within the limit: nothing to do
    assert g.settle(LIMIT, True) == (Move.PAUSE_FEEDS,)  # feed writes wait
    assert g.settle(RESUME, True) == ()  # they still wait: stay paused
    assert g.settle(RESUME, False) == (Move.RESUME_FEEDS,)
    g.before_request(CAP + 1)
    assert g.settle(LIMIT + 1, False) == ()  # holding until back at the limit
    assert g.settle(LIMIT, False) == (Move.READ_REQUESTS,) and g.state is Flow.PAUSED
    g.before_request(CAP + 1)
    assert g.settle(0, False) == (Move.RESUME_FEEDS, Move.READ_REQUESTS)
    assert g.state is Flow.OPEN


def test_room_for_a_feed_write() -> None:
    g = gate()
    assert g.room(RESUME, 10_000)  # at the resume level anything goes (a big frame too)
    assert g.room(RESUME + 1, LIMIT - RESUME - 1)
    assert not g.room(RESUME + 1, LIMIT - RESUME)
    assert g.feed_blocked() == (Move.PAUSE_FEEDS,) and g.feed_blocked() == ()


def test_held_bytes_count_what_waits_against_the_bound() -> None:
    g = gate(Flow.HOLDING)
    request = fe.RequestReceived(
        stream_id=4, message=m.CacheGet(request_id=1, tenant="t", namespace="n", cache="c", key="k")
    )
    size = len(encode(request.message))
    g.hold_request(request)
    g.hold_data(8, b"x" * 20, False)
    g.hold_data(8, b"y" * 5, True)
    g.hold_data(12, b"z" * 10, False)
    assert g.held_bytes == size + 35
    assert not g.overflowing() and size + 35 <= BOUND
    g.hold_data(12, b"z" * (BOUND - size - 35 + 1), False)
    assert g.overflowing()
    held = g.take_data(8)
    assert held is not None and bytes(held.data) == b"x" * 20 + b"y" * 5 and held.end
    assert g.take_data(8) is None and g.held_bytes == size + BOUND - size + 1 - 25
    assert g.next_request() is request and g.held_bytes == BOUND + 1 - 25 - size
    g.drop_held()
    assert g.held_bytes == 0 and not g.held and not g.held_data and not g.overflowing()
