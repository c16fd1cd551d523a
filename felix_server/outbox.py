"""Feed writes a session holds back while its connection is over its buffer limit.

Theory of operation
-------------------
The engine debits a subscription's credit and moves its cursor when it hands a batch out,
so a batch the session cannot write yet must be kept, not refused. Writing it at once is
what lets one connection get around its bound: aioquic copies every write into the
stream's own send buffer, so N subscriptions on one connection that receive the same batch
hold N copies of it. A :class:`FeedOutbox` keeps such writes instead, as *references*:
the encoded ``EventBatch`` frame (one ``bytes`` object shared by every subscription at that
position, on every connection) or a queue delivery (its payload is the engine's own), plus
the call that writes it. Nothing is copied until the write is released.

Order: writes wait per feed (a subscription or consumer, named by :data:`FeedKey`), first
in first out, so a feed's gap or end frame never overtakes its batches. Releases go round
robin over the feeds that wait, one write each, so no feed starves the others.

Accounting: :attr:`FeedOutbox.held_bytes` counts each distinct frame once however many
feeds reference it, plus the estimated size of the other writes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["FeedKey", "FeedOutbox"]

FeedKey = tuple[bool, int]
"""``(is_subscription, feed id)``: subscriptions and consumers have separate id spaces."""


class _Held:
    __slots__ = ("frame", "size", "write")

    def __init__(self, size: int, write: Callable[[], object], frame: bytes | None) -> None:
        self.size = size
        self.write = write
        self.frame = frame


class _Shared:
    __slots__ = ("frame", "refs")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame  # kept alive, so its id() is not reused while counted
        self.refs = 1


class FeedOutbox:
    """Per-feed queues of held-back writes (see the module docstring)."""

    def __init__(self) -> None:
        self._queues: OrderedDict[FeedKey, deque[_Held]] = OrderedDict()
        self._frames: dict[int, _Shared] = {}  # id(frame) -> the frame and its references
        self._held = 0
        self._count = 0

    def __len__(self) -> int:
        """How many writes wait."""
        return self._count

    @property
    def held_bytes(self) -> int:
        """Bytes the held writes stand for: each distinct frame once, plus the others."""
        return self._held

    def holds(self, key: FeedKey) -> bool:
        """Whether writes of this feed wait (a new one must then wait behind them)."""
        return key in self._queues

    def next_size(self) -> int:
        """The size of the write :meth:`pop` would return (0 when none waits)."""
        if not self._queues:
            return 0
        return next(iter(self._queues.values()))[0].size

    def hold(
        self, key: FeedKey, size: int, write: Callable[[], object], frame: bytes | None = None
    ) -> None:
        """Keep a write for later.

        Args:
            key: the feed it belongs to.
            size: the bytes it will queue when released (``len(frame)`` for a frame).
            write: the call that writes it.
            frame: the shared frame it writes, counted once however often it is held.
        """
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(_Held(size, write, frame))
        self._count += 1
        if frame is None:
            self._held += size
            return
        shared = self._frames.get(id(frame))
        if shared is None:
            self._frames[id(frame)] = _Shared(frame)
            self._held += len(frame)
        else:
            shared.refs += 1

    def pop(self) -> Callable[[], object] | None:
        """Take the next write, round robin over the feeds; None when none waits."""
        if not self._queues:
            return None
        key, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
        self._forget(item)
        return item.write

    def drop(self, key: FeedKey) -> None:
        """Forget every write of one feed (it was cancelled or ended)."""
        for item in self._queues.pop(key, ()):
            self._forget(item)

    def clear(self) -> None:
        """Forget every write (the connection is closing)."""
        self._queues.clear()
        self._frames.clear()
        self._held = 0
        self._count = 0

    def _forget(self, item: _Held) -> None:
        self._count -= 1
        frame = item.frame
        if frame is None:
            self._held -= item.size
            return
        shared = self._frames[id(frame)]
        shared.refs -= 1
        if not shared.refs:
            del self._frames[id(frame)]
            self._held -= len(frame)
