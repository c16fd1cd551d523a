"""Queue records: configuration, deliveries and statistics.

Plain data only; the behaviour lives in :mod:`felix_core.queues` (the engine and its theory
of operation), :mod:`felix_core.queue_state`, :mod:`felix_core.queue_delivery` and
:mod:`felix_core.queue_consumers`. Everything here is re-exported by
:mod:`felix_core.queues`, the public import path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from felix_core.errors import InvalidArgument

__all__ = [
    "DEAD_LETTER_RETRY_S",
    "MAX_RUN",
    "TRIM_EVERY",
    "GroupStats",
    "QueueConfig",
    "QueueDelivery",
    "QueueKey",
    "QueueStats",
]

QueueKey = tuple[str, str, str]
"""``(tenant, namespace, queue name)``."""

DEAD_LETTER_RETRY_S = 1.0
"""How long a parked dead letter waits before the engine tries its target again."""
TRIM_EVERY = 64
"""Finished messages between two opportunistic trims of a queue's log."""
MAX_RUN = 64
"""Most consecutive messages one dispatch hands a consumer before the next consumer's
turn (see :func:`run_length`)."""


def run_length(prefetch: int) -> int:
    """How many messages in a row dispatch hands a consumer with this prefetch before it
    moves on to the next consumer: a quarter of its prefetch, at least 1, at most
    :data:`MAX_RUN`.

    The deliveries one dispatch makes to a consumer leave in one frame, so handing out
    runs rather than one message each keeps the frames few when a group has several
    consumers (four consumers sharing bursts of 64 got frames of 16). A quarter of the
    prefetch bounds the cost: a consumer that accepts ``prefetch`` messages waiting behind
    the one it works on gets at most a quarter of that at once while another consumer has
    room; with ``prefetch`` below 8 dispatch stays one message each.
    """
    return max(1, min(MAX_RUN, prefetch // 4))


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """The settings of one queue (the facade maps metadata settings onto this).

    ``max_records`` / ``max_bytes`` bound the retained, unfinished messages (None: no bound;
    bytes as ``felix_core.log.record_size`` counts them). ``visibility_timeout_s`` is how
    long a delivery may stay unacknowledged. ``max_attempts`` is the number of charged attempts
    after which a message is dead-lettered (None: retry for ever; which failures are charged
    is in :mod:`felix_core.queues`). ``dead_letter_queue`` names a
    queue in the same tenant and namespace (None: dead letters are dropped).
    ``max_prefetch`` caps what a consumer may ask for.
    """

    max_records: int | None = 100_000
    max_bytes: int | None = 64 * 1024 * 1024
    visibility_timeout_s: float = 30.0
    max_attempts: int | None = 5
    dead_letter_queue: str | None = None
    max_prefetch: int = 1024

    def validate(self, name: str) -> None:
        """Check the settings.

        Args:
            name: the queue's own name (a queue may not dead-letter into itself).

        Raises:
            InvalidArgument: a setting is out of range (``details['field']`` names it).
        """
        checks = (
            ("max_records", self.max_records is None or self.max_records >= 1),
            ("max_bytes", self.max_bytes is None or self.max_bytes >= 1),
            ("visibility_timeout_s", 0 < self.visibility_timeout_s < math.inf),
            ("max_attempts", self.max_attempts is None or self.max_attempts >= 1),
            ("dead_letter_queue", self.dead_letter_queue != name),
            ("max_prefetch", self.max_prefetch >= 1),
        )
        for field, ok in checks:
            if not ok:
                raise InvalidArgument(f"invalid queue setting {field}", details={"field": field})


class QueueDelivery(NamedTuple):
    """One message handed to a consumer; finished by ``ack`` or returned by ``nack``.

    A NamedTuple rather than a frozen dataclass: it is built once per delivered message and
    a frozen dataclass costs about 4x as much to construct (measured 1.2 us vs 0.26 us).
    """

    delivery_id: int
    """Engine-wide unique id; acks and nacks name it."""
    attempt: int
    """The attempts charged to the message before this delivery, plus one: 1 at first, one
    more after a charged nack, timeout or lost consumer (see :mod:`felix_core.queues`)."""
    offset: int
    """The message's offset in the queue's log."""
    payload: bytes
    """The message payload."""
    key: bytes | None
    """The message key, if any."""
    headers: dict[str, bytes] | None
    """The message headers, if any (shared: do not mutate)."""
    timestamp_ms: int
    """Enqueue time, integer milliseconds since the epoch."""
    deadline: float
    """Absolute time (seconds) at which the delivery times out and is redelivered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStats:
    """Observable state of one consumer group."""

    consumers: int  #: Consumers currently in the group.
    suspected: int  #: Consumers a delivery timed out on that have not acked or nacked since.
    depth: int  #: Messages waiting to be (re)delivered: new, ready, delayed and parked.
    in_flight: int  #: Deliveries not yet acked or nacked.
    cursor: int  #: The next offset never handed out to this group.
    low_watermark: int  #: The oldest offset this group has not finished.
    delivered: int  #: Deliveries made, including redeliveries.
    redeliveries: int  #: Deliveries of a message handed out before (after a nack, timeout, loss).
    acked: int  #: Messages finished by an ack.
    nacked: int  #: Deliveries returned by a nack.
    timeouts: int  #: Deliveries whose visibility timeout ran out.
    dead_lettered: int  #: Messages that left the group as dead letters (moved or dropped).
    dead_letter_pending: int  #: Dead letters parked, waiting for their target.


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """Observable state of one queue."""

    records: int  #: Messages retained in the log (not yet finished by every group).
    bytes: int  #: Record bytes retained.
    enqueued: int  #: Messages accepted since creation.
    depth: int  #: Waiting messages of the slowest group; ``records`` when there is no group.
    in_flight: int  #: Unacknowledged deliveries over all groups.
    redeliveries: int  #: Redeliveries over all groups.
    dead_lettered: int  #: Dead letters over all groups.
    oldest_age_s: float | None  #: Age of the oldest unfinished message; None when none.
    groups: dict[str, GroupStats]  #: Per-group detail.


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueTotals:
    """Figures over every queue of an engine, for metrics (the engine's ``totals``)."""

    queues: int  #: Queues.
    records: int  #: Messages retained in the queues' logs.
    bytes: int  #: Record bytes retained.
    depth: int  #: The sum of every queue's ``depth`` (waiting messages of its slowest group).
    in_flight: int  #: Unacknowledged deliveries.
    oldest_age_s: float | None  #: Age of the oldest unfinished message; None when none.
    redeliveries: int  #: Redeliveries made since the engine started (deleted queues too).
    dead_lettered: int  #: Dead letters made since the engine started (deleted queues too).
