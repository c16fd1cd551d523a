"""The earliest of many deadlines, each owned by a key: one heap with lazy deletion.

Every sans-IO machine that owns timers for many things asks the same two questions: when is
the next deadline (``get_timer``), and which things are due now (``handle_timer``). A
:class:`Deadlines` answers both in O(log n) amortised. Setting a key's deadline pushes
``(deadline, sequence, key)`` and remembers the deadline as the key's current one; an entry
whose deadline is no longer its key's current one is stale and skipped when it reaches the
top. When stale entries outnumber live ones (plus a constant), the heap is rebuilt from the
current deadlines, so it stays proportional to the keys that have one.

Used by the broker engine (one deadline per partition), the server glue (one per connection)
and the client machine (one per pending request). Times are absolute, on the caller's clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

K = TypeVar("K", bound=Hashable)

_SLACK = 64
"""Stale entries tolerated beyond the number of live ones before the heap is rebuilt."""


class Deadlines(Generic[K]):
    """Deadlines by key. See the module docstring."""

    __slots__ = ("_current", "_heap", "_seq")

    def __init__(self) -> None:
        self._current: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0

    def __len__(self) -> int:
        """How many keys have a deadline."""
        return len(self._current)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def get(self, key: K) -> float | None:
        """The key's current deadline, or None."""
        return self._current.get(key)

    def set(self, key: K, deadline: float | None) -> None:
        """Give ``key`` a new deadline (None: none any more). Setting the current one again
        costs a dictionary lookup."""
        current = self._current
        if deadline is None:
            if current.pop(key, None) is not None and len(self._heap) > 2 * len(current) + _SLACK:
                self._rebuild()
            return
        if current.get(key) == deadline:
            return
        current[key] = deadline
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (deadline, self._seq, key))
        if len(heap) > 2 * len(current) + _SLACK:
            self._rebuild()

    def discard(self, key: K) -> None:
        """Forget ``key``'s deadline, if it has one."""
        current = self._current
        if current.pop(key, None) is not None and len(self._heap) > 2 * len(current) + _SLACK:
            self._rebuild()

    def earliest(self) -> float | None:
        """The earliest current deadline, or None."""
        heap, current = self._heap, self._current
        while heap:
            deadline, _, key = heap[0]
            if current.get(key) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the key's deadline moved, or it has none
        return None

    def pop_due(self, now: float) -> list[K]:
        """Take the keys whose deadline is at or before ``now``, earliest first; they no
        longer have a deadline (set a new one after handling them)."""
        heap, current = self._heap, self._current
        due: list[K] = []
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if current.get(key) == deadline:
                del current[key]
                due.append(key)
        if len(heap) > 2 * len(current) + _SLACK:
            self._rebuild()
        return due

    def _rebuild(self) -> None:
        """Rebuild the heap from the current deadlines (stale entries outnumber them)."""
        self._heap = [(deadline, i, key) for i, (key, deadline) in enumerate(self._current.items())]
        heapq.heapify(self._heap)
        self._seq = len(self._heap)
