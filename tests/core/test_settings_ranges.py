"""Every integer resource setting has a documented range (docs/wire-protocol.md §6.7): a value
outside it, a bool or a non-integer is InvalidArgument naming the setting; every value inside
it is stored as given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_core.errors import InvalidArgument
from felix_core.limits import BrokerConfig
from felix_core.settings import (
    MAX_BATCH_EVENTS,
    MAX_DURATION_MS,
    MAX_FSYNC_INTERVAL_MS,
    MAX_INT,
    MAX_PREFETCH,
    SettingsSchema,
    cache_schema,
    queue_schema,
    stream_schema,
)
from felix_proto.errors import ErrorCode
from felix_proto.messages import MAX_DURATION_MS as WIRE_MAX_DURATION_MS

CONFIG = BrokerConfig()
SCHEMAS: dict[str, SettingsSchema] = {
    "stream": stream_schema(CONFIG),
    "queue": queue_schema(CONFIG),
    "cache": cache_schema(CONFIG),
}
PATH = ("t", "n", "x")

# (kind, setting, lowest, highest, may be null)
RANGES: list[tuple[str, str, int, int, bool]] = [
    ("stream", "retention_max_records", 1, MAX_INT, True),
    ("stream", "retention_max_bytes", 1, CONFIG.stream_max_retention_bytes, False),
    ("stream", "retention_max_age_ms", 1, MAX_DURATION_MS, True),
    ("stream", "batch_max_events", 1, MAX_BATCH_EVENTS, False),
    ("stream", "batch_max_bytes", 1, 1 << 30, False),
    ("stream", "batch_max_delay_us", 0, 10**7, False),
    ("queue", "max_records", 1, MAX_INT, True),
    ("queue", "max_bytes", 1, MAX_INT, True),
    ("queue", "visibility_timeout_ms", 1, MAX_DURATION_MS, False),
    ("queue", "max_attempts", 1, MAX_INT, True),
    ("queue", "max_prefetch", 1, MAX_PREFETCH, False),
    ("cache", "default_ttl_ms", 0, MAX_DURATION_MS, False),
    ("cache", "max_entries", 1, MAX_INT, True),
    ("cache", "max_bytes", 1, MAX_INT, True),
    ("cache", "max_value_bytes", 1, CONFIG.max_payload_bytes, False),
    ("cache", "feed_retention_max_records", 1, MAX_INT, True),
    ("cache", "feed_retention_max_bytes", 1, CONFIG.stream_max_retention_bytes, False),
    ("cache", "sweep_batch", 1, 1 << 20, False),
    *(
        (kind, "fsync_interval_ms", 1, MAX_FSYNC_INTERVAL_MS, False)
        for kind in ("stream", "queue", "cache")
    ),
]
IDS = [f"{kind}.{name}" for kind, name, *_ in RANGES]
FEW = settings(max_examples=25)


def apply(kind: str, new: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    return SCHEMAS[kind](PATH, new, current)


def test_durations_share_the_wire_bound() -> None:
    assert MAX_DURATION_MS == WIRE_MAX_DURATION_MS == 10**12
    assert MAX_BATCH_EVENTS == 1 << 14 and MAX_PREFETCH == 1 << 18


def test_every_integer_setting_is_listed() -> None:
    for kind in SCHEMAS:
        full = apply(kind, {}, None)
        ints = {k for k, v in full.items() if isinstance(v, int) or v is None}
        listed = {name for k, name, *_ in RANGES if k == kind}
        assert ints - {"dead_letter_queue"} == listed


@pytest.mark.parametrize(("kind", "name", "lo", "hi", "nullable"), RANGES, ids=IDS)
@FEW
@given(data=st.data())
def test_out_of_range_is_invalid_argument_naming_the_setting(
    kind: str, name: str, lo: int, hi: int, nullable: bool, data: st.DataObject
) -> None:
    bad = data.draw(
        st.integers(max_value=lo - 1)
        | st.integers(min_value=hi + 1, max_value=1 << 64)
        | st.booleans()
        | st.floats(allow_nan=False)
        | st.text(max_size=3)
        | st.lists(st.integers(lo, hi), max_size=2)
        | (st.nothing() if nullable else st.none())
    )
    for current in (None, apply(kind, {}, None)):  # on create and on update
        with pytest.raises(InvalidArgument) as info:
            apply(kind, {name: bad}, current)
        err = info.value
        assert err.code == ErrorCode.INVALID_ARGUMENT and err.details == {"field": name}
        assert name in err.message


@pytest.mark.parametrize(("kind", "name", "lo", "hi", "nullable"), RANGES, ids=IDS)
@FEW
@given(data=st.data())
def test_in_range_is_stored_as_given(
    kind: str, name: str, lo: int, hi: int, nullable: bool, data: st.DataObject
) -> None:
    good = data.draw(st.sampled_from([lo, hi]) | st.integers(lo, hi))
    created = apply(kind, {name: good}, None)
    assert created[name] == good
    assert apply(kind, {}, created) == created  # and it survives an update of nothing


def test_visibility_timeout_of_2_63_minus_1_is_refused() -> None:
    """Formerly accepted: a deadline 292 million years away."""
    with pytest.raises(InvalidArgument) as info:
        apply("queue", {"visibility_timeout_ms": MAX_INT}, None)
    assert info.value.details == {"field": "visibility_timeout_ms"}
