"""A subscription or queue consumer as the client machine keeps it.

One :class:`ClientFeed` per ``Subscribe`` or ``Consume`` request: its state in the client
feed tables of :mod:`felix_proto._state`, the frames that arrived before its reply, its
credit window and the deliveries awaiting settlement.
:class:`~felix_proto.client.ClientConnection` owns them;
:class:`~felix_proto._pending.PendingRequests` points a pending request at the feed it
opens.
"""

from __future__ import annotations

from . import messages as m
from ._state import CLIENT_CONSUMER, CLIENT_SUBSCRIPTION, FeedInput, FeedState, transition

__all__ = ["ClientFeed"]


class ClientFeed:
    """A client-side subscription (``is_sub``) or queue consumer."""

    __slots__ = (
        "awaiting",
        "buffered",
        "credit_bytes",
        "credit_messages",
        "failed",
        "feed_id",
        "is_sub",
        "remaining_bytes",
        "remaining_messages",
        "request_id",
        "state",
        "stream_id",
    )

    def __init__(self, *, is_sub: bool, request_id: int, messages: int = 0, nbytes: int = 0):
        self.is_sub = is_sub
        self.request_id = request_id
        self.state = FeedState.PENDING
        self.feed_id: int | None = None
        self.stream_id: int | None = None
        self.buffered: list[m.Message] = []
        self.failed = False
        self.credit_messages = self.remaining_messages = messages
        self.credit_bytes = self.remaining_bytes = nbytes
        self.awaiting: set[int] = set()

    def move(self, event: FeedInput, *, local: bool) -> None:
        table = CLIENT_SUBSCRIPTION if self.is_sub else CLIENT_CONSUMER
        what = f"{'subscription' if self.is_sub else 'consumer'} {self.feed_id}"
        self.state = transition(table, self.state, event, what=what, local=local)
