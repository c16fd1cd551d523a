"""Each slow-consumer policy with one stalled subscriber next to two healthy ones.

The stalled subscriber takes a window of 5 records and never grants more credit, so its
cursor stays behind while the stream (retention 50 records) moves on.
"""

from __future__ import annotations

import pytest

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.errors import ErrorCode

from .conftest import Connect
from .harness import N, RawClient, T, create, payloads

pytestmark = pytest.mark.anyio

TOTAL = 200


async def setup(
    connect: Connect, policy: str, name: str
) -> tuple[RawClient, list[RawClient], RawClient]:
    pub = await connect()
    await create(pub, "stream", name, slow_consumer=policy, retention_max_records=50)
    healthy = [await connect() for _ in range(2)]
    for h in healthy:
        rid = h.call(h.felix.subscribe, T, N, name, start=m.StartKind.EARLIEST)
        assert isinstance(await h.reply(rid), fe.SubscriptionStarted)
    stalled = await connect(auto_credit=None)
    rid = stalled.call(
        stalled.felix.subscribe, T, N, name, start=m.StartKind.EARLIEST, credit_messages=5
    )
    assert isinstance(await stalled.reply(rid), fe.SubscriptionStarted)
    return pub, healthy, stalled


async def publish_all(pub: RawClient, name: str) -> list[fe.Event]:
    """Publish TOTAL records one by one, waiting for each reply (keeps healthy ones up)."""
    replies = []
    for i in range(TOTAL):
        rid = pub.call(pub.felix.publish, T, N, name, b"%d" % i)
        replies.append(await pub.reply(rid))
    return replies


@pytest.mark.parametrize("policy", ["drop_oldest", "disconnect"])
async def test_healthy_subscribers_lose_nothing(connect: Connect, policy: str, name: str) -> None:
    pub, healthy, stalled = await setup(connect, policy, name)
    replies = await publish_all(pub, name)
    assert all(isinstance(r, fe.PublishAcked) for r in replies)
    for h in healthy:
        await h.until(lambda h=h: len(payloads(h)) == TOTAL)
        assert payloads(h) == [b"%d" % i for i in range(TOTAL)]
    assert payloads(stalled) == [b"%d" % i for i in range(5)]
    if policy == "disconnect":
        ended = await stalled.wait(fe.SubscriptionEnded)
        assert ended.reason == "lagged"
    else:
        # Granting credit again shows the gap: the trimmed records are skipped, counted.
        sub = stalled.of(fe.SubscriptionStarted)[0].subscription_id
        stalled.felix.credit(sub, 1000, 1 << 20)
        stalled.transmit()
        gap = await stalled.wait(fe.GapReported)
        assert gap.missed > 0
        await stalled.until(lambda: len(payloads(stalled)) + gap.missed == TOTAL)
        assert payloads(stalled)[-1] == b"%d" % (TOTAL - 1)


async def test_block_policy_refuses_publishes_retryably(connect: Connect, name: str) -> None:
    pub, healthy, stalled = await setup(connect, "block", name)
    replies = await publish_all(pub, name)
    acked = [r for r in replies if isinstance(r, fe.PublishAcked)]
    refused = [r for r in replies if isinstance(r, fe.RequestFailed)]
    assert len(acked) == 50 + 5  # retention plus what the stalled one already took
    assert refused and all(r.code == ErrorCode.OVERLOADED and r.retryable for r in refused)
    for h in healthy:
        await h.until(lambda h=h: len(payloads(h)) == len(acked))
    assert len(payloads(stalled)) == 5
