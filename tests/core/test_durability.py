"""durability=durable is refused while the log store keeps nothing across a restart: a
setting that did nothing would promise what nobody keeps (issue 16)."""

from __future__ import annotations

import pytest
from engine_calls import Calls

from felix_core import Broker, BrokerConfig
from felix_core.errors import InvalidArgument


@pytest.mark.parametrize("kind", ["stream", "queue", "cache"])
def test_a_memory_broker_refuses_durable_resources(kind: str) -> None:
    b = Calls(Broker(BrokerConfig(), now=0.0))
    with pytest.raises(InvalidArgument) as info:
        b.create(kind, "default", "default", "r", {"durability": "durable"}, now=0.0)
    assert info.value.details == {"field": "durability"}
    assert "nothing survives a restart" in info.value.message
    assert b.list(kind, "default", "default") == []
    b.create(kind, "default", "default", "r", {"durability": "ephemeral"}, now=0.0)
    with pytest.raises(InvalidArgument):
        b.update(kind, "default", "default", "r", {"durability": "durable"}, now=0.0)
    assert b.describe(kind, "default", "default", "r", now=0.0)["settings"]["durability"] == (
        "ephemeral"
    )


def test_a_memory_broker_refuses_a_durable_default() -> None:
    with pytest.raises(InvalidArgument):
        Broker(BrokerConfig(durability="durable"), now=0.0)
