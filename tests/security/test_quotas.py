"""Per-tenant publish-rate quotas, pure: the token bucket with fake time, the limits from
config and tenant settings, and the engine refusing one tenant while serving another."""

from __future__ import annotations

from typing import Any

import pytest
from engine_calls import Calls

from felix_core import Broker, BrokerConfig, InvalidArgument, LimitExceeded, Overloaded
from felix_core.quotas import (
    MAX_CONNECTIONS,
    MAX_RESOURCES,
    PUBLISH_BYTES,
    PUBLISH_MESSAGES,
    TenantQuotas,
    TokenBucket,
)


def test_bucket_starts_full_refills_with_time_and_caps_at_capacity() -> None:
    bucket = TokenBucket(10.0, 10.0, now=100.0)
    assert bucket.wait(10, 100.0) == 0.0
    bucket.take(10)
    assert bucket.wait(1, 100.0) == pytest.approx(0.1)
    assert bucket.tokens(100.5) == pytest.approx(5.0)
    assert bucket.tokens(1000.0) == pytest.approx(10.0)  # never above capacity


def test_bucket_ignores_a_clock_stepping_back() -> None:
    bucket = TokenBucket(10.0, 10.0, now=100.0)
    bucket.take(10)
    assert bucket.tokens(50.0) == 0.0
    assert bucket.tokens(100.2) == pytest.approx(2.0)


def test_bucket_admits_a_batch_over_capacity_when_full_and_goes_into_debt() -> None:
    bucket = TokenBucket(10.0, 10.0, now=0.0)
    assert bucket.wait(25, 0.0) == 0.0  # full: a batch of 2.5 s of rate is not refused forever
    bucket.take(25)
    assert bucket.tokens(0.0) == -15.0
    assert bucket.wait(1, 0.0) == pytest.approx(1.6)  # the debt is paid before the next one


def test_bucket_needs_positive_rate_and_capacity() -> None:
    with pytest.raises(InvalidArgument):
        TokenBucket(0.0, 1.0, now=0.0)
    with pytest.raises(InvalidArgument):
        TokenBucket(1.0, 0.0, now=0.0)


def test_quotas_limits_from_config_and_tenant_overrides() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_publish_messages_per_s=5))
    assert quotas.limit("a", PUBLISH_MESSAGES) == 5
    assert quotas.limit("a", PUBLISH_BYTES) is None
    quotas.set_tenant("a", {"description": "", PUBLISH_MESSAGES: 2, PUBLISH_BYTES: 100})
    assert quotas.limit("a", PUBLISH_MESSAGES) == 2 and quotas.limit("a", PUBLISH_BYTES) == 100
    assert quotas.limit("b", PUBLISH_MESSAGES) == 5
    quotas.set_tenant("a", None)
    assert quotas.limit("a", PUBLISH_MESSAGES) == 5


def test_refusal_names_the_quota_takes_nothing_and_is_counted() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_publish_messages_per_s=10))
    quotas.set_tenant("a", {PUBLISH_BYTES: 100})
    quotas.charge_publish("a", 5, 90, now=0.0)
    with pytest.raises(Overloaded) as caught:
        quotas.charge_publish("a", 5, 20, now=0.0)  # messages fit, bytes do not
    assert caught.value.retryable
    assert caught.value.details == {
        "tenant": "a",
        "quota": PUBLISH_BYTES,
        "limit": 100,
        "retry_after_ms": 100,
    }
    assert quotas.refused == {("a", PUBLISH_BYTES): 1}
    quotas.charge_publish("a", 5, 10, now=0.0)  # the refused request took no messages
    with pytest.raises(Overloaded, match=PUBLISH_MESSAGES):
        quotas.charge_publish("a", 1, 0, now=0.0)
    quotas.charge_publish("a", 1, 0, now=0.1)  # refilled
    quotas.charge_publish("b", 10, 10**9, now=0.0)  # another tenant has its own buckets
    assert quotas.refused == {("a", PUBLISH_BYTES): 1, ("a", PUBLISH_MESSAGES): 1}


def test_a_changed_limit_applies_at_once() -> None:
    quotas = TenantQuotas(BrokerConfig())
    quotas.charge_publish("a", 10**6, 0, now=0.0)  # unlimited by default
    quotas.set_tenant("a", {PUBLISH_MESSAGES: 3})
    quotas.charge_publish("a", 3, 0, now=0.0)
    with pytest.raises(Overloaded):
        quotas.charge_publish("a", 1, 0, now=0.0)
    quotas.set_tenant("a", {PUBLISH_MESSAGES: 3})  # unchanged: the bucket is kept
    with pytest.raises(Overloaded):
        quotas.charge_publish("a", 1, 0, now=0.0)
    quotas.set_tenant("a", {"description": "x"})
    quotas.charge_publish("a", 10**6, 0, now=0.0)


def test_a_deleted_tenant_leaves_no_buckets() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_publish_messages_per_s=1))
    quotas.charge_publish("gone", 1, 0, now=0.0)
    quotas.set_tenant("gone", None)
    quotas.charge_publish("gone", 1, 0, now=0.0)  # a tenant of the same name starts full


def test_config_refuses_a_zero_rate() -> None:
    with pytest.raises(InvalidArgument, match="tenant_publish_bytes_per_s"):
        BrokerConfig(tenant_publish_bytes_per_s=0)


def engine(**config: Any) -> Calls:
    b = Calls(Broker(BrokerConfig(**config)))
    b.attach(1, 0.0)
    for tenant in ("a", "b"):
        b.create("tenant", tenant, "", "", now=0.0)
        b.create("namespace", tenant, "ns", "", now=0.0)
        b.create("stream", tenant, "ns", "s", now=0.0)
        b.create("queue", tenant, "ns", "q", now=0.0)
    return b


def test_engine_refuses_one_tenant_over_its_rate_and_serves_another() -> None:
    b = engine(tenant_publish_messages_per_s=4)
    b.publish(1, "a", "ns", "s", [b"x", b"y"], now=1.0)
    b.enqueue(1, "a", "ns", "q", [b"x", b"y"], now=1.0)  # publish and enqueue share it
    with pytest.raises(Overloaded) as caught:
        b.publish(1, "a", "ns", "s", [b"z"], now=1.0)
    assert caught.value.details["quota"] == PUBLISH_MESSAGES
    with pytest.raises(Overloaded):
        b.enqueue(1, "a", "ns", "q", [b"z"], now=1.0)
    b.publish(1, "b", "ns", "s", [b"1", b"2", b"3", b"4"], now=1.0)
    b.publish(1, "a", "ns", "s", [b"z"], now=1.25)
    assert b.quotas.refused == {("a", PUBLISH_MESSAGES): 2}
    assert b.describe("stream", "a", "ns", "s", now=2.0)["stats"]["records"] == 3


def test_tenant_settings_override_the_broker_default() -> None:
    b = engine(tenant_publish_bytes_per_s=1000)
    described = b.update("tenant", "a", "", "", {PUBLISH_BYTES: 10}, now=0.0)
    assert described["settings"][PUBLISH_BYTES] == 10
    b.publish(1, "a", "ns", "s", [b"x" * 10], now=1.0)
    with pytest.raises(Overloaded, match=PUBLISH_BYTES):
        b.publish(1, "a", "ns", "s", [b"y"], now=1.0)
    b.publish(1, "b", "ns", "s", [b"x" * 500], now=1.0)
    b.update("tenant", "a", "", "", {PUBLISH_BYTES: None}, now=1.0)  # back to the default
    assert PUBLISH_BYTES not in b.describe("tenant", "a", "", "", now=1.0)["settings"]
    b.publish(1, "a", "ns", "s", [b"x" * 500], now=1.0)


@pytest.mark.parametrize("value", [0, -1, "10", 1.5, True])
def test_tenant_setting_must_be_a_positive_integer(value: object) -> None:
    b = engine()
    with pytest.raises(InvalidArgument):
        b.update("tenant", "a", "", "", {PUBLISH_MESSAGES: value}, now=0.0)
    with pytest.raises(InvalidArgument, match="unknown tenant settings"):
        b.update("tenant", "a", "", "", {"publish_rate": 1}, now=0.0)


def test_connection_quota_counts_refuses_and_releases() -> None:
    quotas = TenantQuotas(BrokerConfig(tenant_max_connections=2))
    quotas.connection_opened("a")
    quotas.connection_opened("a")
    with pytest.raises(LimitExceeded) as caught:
        quotas.connection_opened("a")
    assert not caught.value.retryable
    assert caught.value.details == {"tenant": "a", "quota": MAX_CONNECTIONS, "limit": 2}
    assert quotas.connections == {"a": 2} and quotas.refused == {("a", MAX_CONNECTIONS): 1}
    quotas.connection_opened("b")  # another tenant
    quotas.connection_closed("a")
    quotas.connection_opened("a")
    quotas.set_tenant("a", {MAX_CONNECTIONS: 1})  # lowered: open ones stay, new ones refused
    with pytest.raises(LimitExceeded):
        quotas.connection_opened("a")
    for _ in range(2):
        quotas.connection_closed("a")
    assert quotas.connections == {"b": 1}
    quotas.connection_opened("a")


def test_resources_per_tenant_across_namespaces() -> None:
    b = engine(tenant_max_resources=3)  # a and b hold a stream and a queue each
    b.create("namespace", "a", "other", "", now=0.0)
    b.create("cache", "a", "other", "c", now=0.0)  # 3: counted over every namespace
    for kind in ("stream", "queue", "cache"):
        with pytest.raises(LimitExceeded) as caught:
            b.create(kind, "a", "other", "more", now=0.0)
        assert caught.value.details == {"tenant": "a", "quota": MAX_RESOURCES, "limit": 3}
    b.create("namespace", "a", "third", "", now=0.0)  # namespaces are not resources
    b.create("cache", "b", "ns", "c", now=0.0)  # another tenant
    b.delete("cache", "a", "other", "c", now=0.0)
    b.create("stream", "a", "other", "more", now=0.0)
    b.update("tenant", "a", "", "", {MAX_RESOURCES: 10}, now=0.0)
    b.create("stream", "a", "third", "s", now=0.0)
    assert b.quotas.refused == {("a", MAX_RESOURCES): 3}


def test_a_publish_refused_for_another_reason_takes_nothing() -> None:
    b = engine(tenant_publish_messages_per_s=2, memory_limit_bytes=1000)
    for _ in range(3):  # over the memory budget: refused, the quota untouched
        with pytest.raises(Overloaded, match="memory"):
            b.publish(1, "a", "ns", "s", [b"x" * 2000], now=1.0)
    q = b.update("queue", "a", "ns", "q", {"max_records": 1}, now=1.0)
    assert q["settings"]["max_records"] == 1
    b.enqueue(1, "a", "ns", "q", [b"1"], now=1.0)
    with pytest.raises(Overloaded, match="full"):  # the queue is full: not charged either
        b.enqueue(1, "a", "ns", "q", [b"2"], now=1.0)
    b.publish(1, "a", "ns", "s", [b"y"], now=1.0)  # the second of two tokens
    with pytest.raises(Overloaded, match=PUBLISH_MESSAGES):
        b.publish(1, "a", "ns", "s", [b"z"], now=1.0)
