"""``completes``: a request's completion or refusal goes where the request started."""

from __future__ import annotations

import pytest

from felix_core.completion import completes
from felix_core.errors import NotFound
from felix_core.events import EngineEvent, RecordsSkipped, RequestCompleted, RequestRefused


class _Part:
    def __init__(self) -> None:
        self._out: list[EngineEvent] = []

    def _caused(self, conn_id: int) -> None:
        self._out.append(
            RecordsSkipped(connection_id=conn_id, subscription_id=1, missed=1, next_offset=1)
        )

    @completes
    def works(self, conn_id: int, request: int | None) -> RequestCompleted | None:
        self._caused(conn_id)
        return None if request is None else RequestCompleted(connection_id=conn_id, request=request)

    @completes
    def fails(self, conn_id: int, request: int | None, exc: Exception) -> RequestCompleted:
        self._caused(conn_id)
        raise exc

    @completes
    def later(self, conn_id: int, request: int) -> None:
        self._caused(conn_id)


def test_the_completion_comes_before_what_the_request_caused() -> None:
    part = _Part()
    part._out.append(RequestCompleted(connection_id=9, request=0))  # an earlier event stays first
    part.works(1, 7)
    first, done, caused = part._out
    assert first == RequestCompleted(connection_id=9, request=0)
    assert done == RequestCompleted(connection_id=1, request=7)
    assert isinstance(caused, RecordsSkipped)


def test_the_refusal_comes_before_what_the_request_caused() -> None:
    part = _Part()
    part.fails(1, 7, NotFound("gone"))
    refused, caused = part._out
    assert isinstance(refused, RequestRefused)
    assert (refused.connection_id, refused.request) == (1, 7)
    assert isinstance(refused.error, NotFound)
    assert isinstance(caused, RecordsSkipped)


def test_a_request_that_completes_later_adds_nothing_now() -> None:
    part = _Part()
    part.later(1, 7)
    assert [type(e) for e in part._out] == [RecordsSkipped]


def test_no_reply_is_placed_for_a_request_that_needs_none() -> None:
    part = _Part()
    part.works(1, None)
    part.fails(1, None, NotFound("ignored"))
    assert [type(e) for e in part._out] == [RecordsSkipped, RecordsSkipped]


def test_other_exceptions_are_bugs_and_propagate() -> None:
    part = _Part()
    with pytest.raises(ValueError, match="bug"):
        part.fails(1, 7, ValueError("bug"))
