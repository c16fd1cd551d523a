"""Throttling a connection over its tenant's publish rate, the pure pieces: which refusals
throttle and until when (``throttle_deadline``), and the gate's throttle, alone and
together with the buffer-cap table."""

from __future__ import annotations

import pytest

from felix_core.errors import LimitExceeded, Overloaded
from felix_core.limits import BrokerConfig
from felix_core.quotas import MAX_CONNECTIONS, PUBLISH_BYTES, PUBLISH_MESSAGES, TenantQuotas
from felix_server.gate import MAX_THROTTLE_S, Flow, Gate, Move, Signal, throttle_deadline

NOW = 1000.0


def gate() -> Gate:
    return Gate(limit=100, resume=40, cap=200, bound=100)


def over(quota: str, retry_after_ms: int) -> Overloaded:
    details = {"tenant": "a", "quota": quota, "limit": 10, "retry_after_ms": retry_after_ms}
    return Overloaded("over", details=details)


@pytest.mark.parametrize("quota", [PUBLISH_MESSAGES, PUBLISH_BYTES])
def test_a_publish_rate_refusal_throttles_until_the_bucket_holds_enough(quota: str) -> None:
    assert throttle_deadline(over(quota, 250), NOW) == NOW + 0.25
    limit_ms = int(MAX_THROTTLE_S * 1000)
    assert throttle_deadline(over(quota, limit_ms), NOW) == NOW + MAX_THROTTLE_S


def test_other_refusals_are_answered() -> None:
    limit_ms = int(MAX_THROTTLE_S * 1000)
    assert throttle_deadline(over(PUBLISH_MESSAGES, limit_ms + 1), NOW) is None  # too long
    assert throttle_deadline(Overloaded("memory budget"), NOW) is None  # not a quota
    refused = LimitExceeded("x", details={"tenant": "a", "quota": MAX_CONNECTIONS, "limit": 1})
    assert throttle_deadline(refused, NOW) is None


def test_the_refusal_of_a_real_bucket_throttles_for_its_wait() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_publish_messages_per_s=100))
    quotas.charge_publish("a", 100, 100, NOW)  # the bucket is empty
    with pytest.raises(Overloaded) as caught:
        quotas.charge_publish("a", 10, 10, NOW)
    assert throttle_deadline(caught.value, NOW) == pytest.approx(NOW + 0.1)


def test_throttle_holds_requests_until_its_deadline() -> None:
    g = gate()
    assert g.throttle(NOW + 1) == (Move.HOLD_REQUESTS,)
    assert not g.reading and g.throttled_until == NOW + 1
    assert g.throttle(NOW + 2) == ()  # already holding: the later deadline wins
    assert g.throttle(NOW + 0.5) == ()
    assert g.throttled_until == NOW + 2
    assert g.unthrottle(NOW + 1.9) == ()  # not due
    assert not g.reading
    assert g.unthrottle(NOW + 2) == (Move.READ_REQUESTS,)
    assert g.reading and g.throttled_until is None
    assert g.unthrottle(NOW + 3) == ()  # once


def test_a_throttle_ending_over_the_cap_keeps_holding() -> None:
    g = gate()
    g.move(Signal.OVER_CAP)
    assert g.throttle(NOW + 1) == ()  # credit is held already
    assert g.unthrottle(NOW + 1) == ()  # over the cap still
    assert not g.reading
    assert g.move(Signal.BELOW_LIMIT) == (Move.READ_REQUESTS,)
    assert g.reading


def test_the_cap_does_not_end_a_throttle() -> None:
    g = gate()
    g.throttle(NOW + 1)
    assert g.move(Signal.OVER_CAP) == (Move.PAUSE_FEEDS, Move.HOLD_REQUESTS)
    assert g.move(Signal.BELOW_RESUME) == (Move.RESUME_FEEDS,)  # not READ_REQUESTS
    assert g.state is Flow.OPEN and not g.paused and not g.reading
    assert g.unthrottle(NOW + 1) == (Move.READ_REQUESTS,)
    assert g.reading
