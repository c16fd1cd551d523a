"""Consumer group names follow the naming rule of felix_core.names (spec §6.8)."""

from __future__ import annotations

import pytest
from engine_calls import Calls

from felix_core.broker import Broker, BrokerConfig
from felix_core.errors import InvalidArgument


@pytest.mark.parametrize("bad", ["", "g" * 129, "a/b", "-g", ".g", "é"])
def test_a_bad_group_name_is_invalid_argument_naming_the_field(bad: str) -> None:
    broker = Calls(Broker(BrokerConfig(), now=0.0))
    broker.create("queue", "default", "default", "q", now=0.0)
    broker.attach(1, 0.0)
    with pytest.raises(InvalidArgument) as info:
        broker.consume(1, "default", "default", "q", group=bad, prefetch=1, now=0.0)
    assert info.value.details == {"field": "group"}


def test_the_longest_group_name_is_accepted() -> None:
    broker = Calls(Broker(BrokerConfig(), now=0.0))
    broker.create("queue", "default", "default", "q", now=0.0)
    broker.attach(1, 0.0)
    assert broker.consume(1, "default", "default", "q", group="g" * 128, prefetch=1, now=0.0)
