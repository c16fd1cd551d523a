"""How an engine request ends: one completion or one refusal, before what it caused.

Every request method of the engine takes the request's identity (the connection and the
caller's number for it) first. Written with :func:`completes`, the method says only what
the request does: it *returns* its completion (a :class:`~felix_core.events.RequestCompleted`,
or None when the request completes later, as an admin write does) and *raises* its refusal
(an :class:`~felix_core.errors.EngineError`). The decorator places either one in the
engine's event stream where the request started, so it comes before every event the request
caused (a subscription's first records, a consumer's first deliveries, a cache's change
feed), whichever way the request ended.

A request whose identity is None needs no reply (a feed the client stopped): its refusal is
dropped, as is its completion.

The decorator costs one call frame and the forwarding of the arguments (about 0.3 us a
request here): nothing beside the work of an admin, subscription or consumer request, but a
third of a cache get. The engine's hottest requests (publish, enqueue, cache put and get)
therefore keep the same steps written out, ``mark = len(out)`` and ``try`` / ``except
EngineError`` (free when nothing is raised).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from felix_core.errors import EngineError
from felix_core.events import EngineEvent, RequestCompleted, RequestRefused

__all__ = ["Emitter", "completes"]


class Emitter(Protocol):
    """An engine part that emits into the engine's one event stream."""

    _out: list[EngineEvent]
    """The engine's event stream (appended to here; drained by the engine)."""


P = ParamSpec("P")
E = TypeVar("E", bound=Emitter)
R = TypeVar("R", bound=int | None)


def completes(
    method: Callable[Concatenate[E, int, R, P], RequestCompleted | None],
) -> Callable[Concatenate[E, int, R, P], None]:
    """Make ``method`` (``self, conn_id, request, ...``) a request: its returned completion,
    or the :class:`~felix_core.errors.EngineError` it raised as a
    :class:`~felix_core.events.RequestRefused`, goes into ``self._out`` at the position
    the stream had when the request started. Other exceptions (bugs in the caller,
    ``ValueError``) propagate.
    """

    @functools.wraps(method)
    def serve(self: E, conn_id: int, request: R, /, *args: P.args, **kwargs: P.kwargs) -> None:
        out = self._out
        mark = len(out)
        try:
            done = method(self, conn_id, request, *args, **kwargs)
        except EngineError as exc:
            if request is not None:
                out.insert(mark, RequestRefused(connection_id=conn_id, request=request, error=exc))
            return
        if done is not None and request is not None:
            out.insert(mark, done)

    return serve
