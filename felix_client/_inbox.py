"""The inbox of one subscription or consumer: the connection's loop puts, one task reads.

anyio's memory object stream is built for many senders and receivers, with cancellation
checks on both sides: every ``receive`` first yields to the event loop (a whole loop pass,
even with an item waiting) and a wait allocates an event, a receiver record holding the
task's description, and a set entry. A feed has exactly one writer (the connection's loop,
which never waits: the inbox is unbounded, credit bounds it) and one reader (the
subscription's or consumer's task), so :class:`Inbox` is a deque and at most one waiter: an
item already there is taken without yielding, and a wait is one event of the running
backend (a bare future on asyncio). The reader API is anyio's
(``receive``, ``receive_nowait``, ``anyio.EndOfStream`` once closed and drained,
``anyio.WouldBlock``), so either kind can feed a subscription (:class:`FeedReader`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio

__all__ = ["FeedReader", "Inbox", "Waker"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Waker(Protocol):
    """A one-shot event: ``anyio.Event``, or the connection's bare future on asyncio."""

    def set(self) -> None: ...
    def wait(self) -> Awaitable[object]: ...


class FeedReader(Protocol[T_co]):
    """What a subscription or a consumer reads its feed from (an :class:`Inbox`, or an
    anyio memory object receive stream)."""

    def receive_nowait(self) -> T_co:
        """The next item.

        Raises:
            anyio.WouldBlock: none is waiting.
            anyio.EndOfStream: the feed is closed and drained.
        """
        ...

    async def receive(self) -> T_co:
        """The next item, waiting for it.

        Raises:
            anyio.EndOfStream: the feed is closed and drained.
        """
        ...


class Inbox(Generic[T]):
    """An unbounded single-reader queue for one feed; see the module docstring.

    Args:
        new_waker: makes the event a waiting reader waits on (one per wait).
    """

    __slots__ = ("_closed", "_items", "_new_waker", "_waker")

    def __init__(self, new_waker: Callable[[], Waker]) -> None:
        self._items: deque[T] = deque()
        self._closed = False
        self._new_waker = new_waker
        self._waker: Waker | None = None

    def __len__(self) -> int:
        return len(self._items)

    # ------------------------------------------------------------------ the writer

    def send_nowait(self, item: T) -> None:
        """Append ``item`` and wake the reader if it waits.

        Raises:
            anyio.ClosedResourceError: the inbox was closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        waker = self._waker
        if waker is not None:
            self._waker = None
            waker.set()

    def close(self) -> None:
        """No more items: the reader gets what is left, then ``anyio.EndOfStream``."""
        self._closed = True
        waker = self._waker
        if waker is not None:
            self._waker = None
            waker.set()

    # ------------------------------------------------------------------ the reader

    def receive_nowait(self) -> T:
        """The next item (see :class:`FeedReader`)."""
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        """The next item, waiting for it: without yielding when one is there."""
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            self._waker = waker = self._new_waker()
            try:
                await waker.wait()
            finally:
                if self._waker is waker:  # cancelled: the next send need not wake it
                    self._waker = None
        return self._items.popleft()
