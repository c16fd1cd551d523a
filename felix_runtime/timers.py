"""How the runtimes arm their one timer: whole milliseconds, never early.

Both adapters wait for the server's earliest deadline (a wall-clock time) on their event
loop's monotonic clock. asyncio's and trio's loops wait in whole milliseconds, rounded up
(their selectors' timeouts); uvloop (libuv) rounds a timer's delay *down* to the millisecond,
so a timer armed 0.3 ms ahead fires at once, before its deadline, and the adapter would hand
the server a ``now`` that the wall clock has not reached yet. :func:`timer_delay` rounds up
on every loop; a timer that still fires more than :data:`TIMER_SLACK` early is armed again
for the rest rather than handled.
"""

from __future__ import annotations

import math

__all__ = ["TIMER_SLACK", "timer_delay"]

TIMER_SLACK = 0.0001
"""How early (seconds, by the wall clock) the one timer may fire and still be handled with
its deadline as ``now``: the loop's monotonic clock and the wall clock drift apart a little."""


def timer_delay(deadline: float, now: float) -> float:
    """The delay to arm for ``deadline`` at ``now``: what is left, rounded up to a whole
    millisecond (0 once it passed)."""
    return math.ceil(max(deadline - now, 0.0) * 1000 - 1e-6) / 1000
