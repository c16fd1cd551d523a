"""What a session tells a tracing observer: appends, deliveries and settlements, by name.

The observer's trace hooks (:meth:`~felix_server.observer.ServerObserver.appended`,
:meth:`~felix_server.observer.ServerObserver.dispatched`,
:meth:`~felix_server.observer.ServerObserver.settled`) want the resource a record went to or
came from, and the records' headers (their W3C trace context). A delivery names only its
feed (a subscription or consumer id), so :class:`FeedTraces` remembers each feed's
resource when the feed opens. A session makes one only when its observer traces
(``observer.traces``); an untraced session holds None and each hook costs one ``is None``
test.

Memory: one entry per feed opened on the connection; entries of feeds that are no longer
open are swept when the table doubles, so it stays within twice the open feeds (plus a
small constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from felix_core.log import LogSlice
from felix_core.queue_types import QueueDelivery
from felix_proto import messages as m
from felix_server.observer import ServerObserver
from felix_server.outbox import FeedKey

__all__ = ["FeedTraces"]

_SWEEP_MIN = 16
"""The table is never swept below this many entries."""


class FeedTraces:
    """One connection's trace reports to a tracing observer.

    Args:
        observer: the observer, with ``traces`` set.
        is_open: whether a feed (``(True, subscription_id)`` or ``(False, consumer_id)``)
            is still open; entries of closed feeds are swept.
    """

    __slots__ = ("_is_open", "_names", "_observer", "_sweep_at")

    def __init__(self, observer: ServerObserver, is_open: Callable[[FeedKey], bool]) -> None:
        self._observer = observer
        self._is_open = is_open
        self._names: dict[FeedKey, tuple[str, str, str]] = {}
        self._sweep_at = _SWEEP_MIN

    def __len__(self) -> int:
        """How many feeds' resources are remembered."""
        return len(self._names)

    def request_done(self, msg: m.Message, reply: m.Message | None) -> None:
        """A request was accepted (``reply``: its answer, if any): report an append or a
        settlement, remember an opened feed's resource."""
        observer = self._observer
        if isinstance(msg, m.Publish):
            observer.appended("stream", msg.tenant, msg.namespace, msg.stream, [msg.headers])
        elif isinstance(msg, m.PublishBatch):
            headers = msg.headers or [None] * len(msg.payloads)
            observer.appended("stream", msg.tenant, msg.namespace, msg.stream, headers)
        elif isinstance(msg, m.Enqueue):
            headers = msg.headers or [None] * len(msg.payloads)
            observer.appended("queue", msg.tenant, msg.namespace, msg.queue, headers)
        elif isinstance(msg, m.Ack | m.Nack):
            names = self._names.get((False, msg.consumer_id))
            if names is not None:
                operation = "ack" if type(msg) is m.Ack else "nack"
                observer.settled(operation, *names, len(msg.delivery_ids))
        elif isinstance(reply, m.Subscribed) and isinstance(msg, m.Subscribe):
            self._remember((True, reply.subscription_id), msg.tenant, msg.namespace, msg.stream)
        elif isinstance(reply, m.Consuming) and isinstance(msg, m.Consume):
            self._remember((False, reply.consumer_id), msg.tenant, msg.namespace, msg.queue)

    def stream_batch(self, subscription_id: int, sl: LogSlice) -> None:
        """An event batch was written to a subscription."""
        names = self._names.get((True, subscription_id))
        if names is not None:
            self._observer.dispatched(
                "stream", *names, sl.headers or [None] * len(sl.payloads), sl.base_offset
            )

    def queue_batch(self, consumer_id: int, deliveries: Sequence[QueueDelivery]) -> None:
        """Deliveries were written to a consumer (one ``Delivery`` or ``DeliveryBatch``)."""
        names = self._names.get((False, consumer_id))
        if names is not None and deliveries:
            headers = [d.headers for d in deliveries]
            self._observer.dispatched("queue", *names, headers, deliveries[0].offset)

    def _remember(self, key: FeedKey, tenant: str, namespace: str, name: str) -> None:
        names = self._names
        if len(names) >= self._sweep_at:
            is_open = self._is_open
            self._names = names = {k: v for k, v in names.items() if is_open(k)}
            self._sweep_at = max(_SWEEP_MIN, 2 * len(names))
        names[key] = (tenant, namespace, name)
