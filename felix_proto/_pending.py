"""What a client connection waits for: its requests, their deadlines, and late replies.

:class:`PendingRequests` numbers requests (ids shared with ping nonces), remembers each
pending one with the stream it went out on, keeps their deadlines in one
:class:`~felix_proto.deadlines.Deadlines` heap, and remembers the last
:data:`LATE_MEMORY` requests that stopped waiting (timed out, or sent with ``ack=NONE``) so
that a reply arriving for one of them is recognised rather than taken for a protocol
violation. It is part of :class:`~felix_proto.client.ClientConnection`, which decides what
each reply or timeout means.
"""

from __future__ import annotations

from collections import OrderedDict

from . import messages as m
from ._feeds import ClientFeed
from .deadlines import Deadlines

__all__ = ["LATE_MEMORY", "PendingRequest", "PendingRequests"]

LATE_MEMORY = 4096
"""How many requests that stopped waiting are remembered (their replies are dropped)."""


class PendingRequest:
    """A request waiting for its reply."""

    __slots__ = ("feed", "internal", "kind", "stream_id")

    def __init__(self, kind: type[m.Message], stream_id: int) -> None:
        self.kind = kind
        """The request's message type."""
        self.stream_id = stream_id
        """The stream it went out on (its reply must come back there)."""
        self.feed: ClientFeed | None = None
        """The subscription or consumer it opens, for ``Subscribe`` and ``Consume``."""
        self.internal = False
        """Made by the machine itself (undoing a late subscription): no event is due."""


class PendingRequests:
    """The requests of one connection. See the module docstring."""

    __slots__ = ("_deadlines", "_late", "_next_id", "_requests")

    def __init__(self) -> None:
        self._next_id = 1
        self._requests: dict[int, PendingRequest] = {}
        self._deadlines: Deadlines[int] = Deadlines()
        self._late: OrderedDict[int, tuple[type[m.Message], bool]] = OrderedDict()

    def allocate(self) -> int:
        """The next request id (also a ping's nonce)."""
        rid = self._next_id
        self._next_id += 1
        return rid

    def track(
        self, rid: int, kind: type[m.Message], stream_id: int, deadline: float | None
    ) -> PendingRequest:
        """Wait for the reply to request ``rid`` until ``deadline`` (None: for ever)."""
        req = self._requests[rid] = PendingRequest(kind, stream_id)
        if deadline is not None:
            self._deadlines.set(rid, deadline)
        return req

    def get(self, rid: int) -> PendingRequest | None:
        """The pending request ``rid``, or None."""
        return self._requests.get(rid)

    def take(self, rid: int) -> PendingRequest | None:
        """Stop waiting for request ``rid`` (its reply came); None if it was not pending."""
        req = self._requests.pop(rid, None)
        if req is not None:
            self._deadlines.discard(rid)
        return req

    def expired(self, now: float) -> list[tuple[int, PendingRequest]]:
        """Stop waiting for the requests whose deadline passed; a late reply is dropped."""
        out = []
        for rid in self._deadlines.pop_due(now):
            req = self._requests.pop(rid)
            self.forget_late(rid, req.kind, report=False)
            out.append((rid, req))
        return out

    def on_stream(self, stream_id: int) -> list[tuple[int, PendingRequest]]:
        """Stop waiting for every request sent on ``stream_id`` (it can no longer answer)."""
        gone = [(rid, req) for rid, req in self._requests.items() if req.stream_id == stream_id]
        for rid, _ in gone:
            del self._requests[rid]
            self._deadlines.discard(rid)
        return gone

    def clear(self) -> list[tuple[int, PendingRequest]]:
        """Stop waiting for everything (the connection ended)."""
        out = list(self._requests.items())
        self._requests.clear()
        self._deadlines = Deadlines()
        return out

    def earliest(self) -> float | None:
        """The earliest deadline of a pending request, or None."""
        return self._deadlines.earliest()

    def forget_late(self, rid: int, kind: type[m.Message], *, report: bool) -> None:
        """Remember that ``rid`` no longer waits: a reply for it is not a violation (an
        ``Error`` is still reported when ``report``: an ``ack=NONE`` publish)."""
        late = self._late
        late[rid] = (kind, report)
        if len(late) > LATE_MEMORY:
            late.popitem(last=False)

    def late(self, rid: int) -> tuple[type[m.Message], bool] | None:
        """Take what is remembered of a request that stopped waiting, or None."""
        return self._late.pop(rid, None)

    def is_late(self, rid: int) -> bool:
        """Whether ``rid`` is a request that stopped waiting (and is remembered)."""
        return rid in self._late
