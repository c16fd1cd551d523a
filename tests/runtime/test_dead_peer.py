"""Dead-peer detection: the broker's QUIC idle timeout (issue 8, item 3)."""

from __future__ import annotations

import pytest

from felix_core.queues import QueueConfig
from felix_server.config import TransportConfig

from .conftest import Connect

pytestmark = pytest.mark.anyio


async def test_broker_announces_an_idle_timeout_below_the_visibility_timeout(
    connect: Connect,
) -> None:
    """A killed client is dropped after the idle timeout, which the broker announces in
    QUIC's max_idle_timeout transport parameter. With the defaults it must be found (and
    its deliveries returned to live consumers) before the deliveries' visibility timeout
    runs out; it was 60 s against a 30 s visibility timeout."""
    client = await connect()
    announced = client.quic._remote_max_idle_timeout
    assert announced == TransportConfig().idle_timeout_s == 15.0
    assert announced < QueueConfig().visibility_timeout_s
