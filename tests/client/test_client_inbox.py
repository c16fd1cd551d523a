"""A feed's inbox (``felix_client/_inbox.py``): one writer that never waits, one reader; an
item already there is taken without yielding to the event loop; closing lets the reader
drain what is left, then ``EndOfStream``; a cancelled reader loses nothing."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from felix_client._inbox import Inbox

pytestmark = pytest.mark.anyio


def _inbox() -> Inbox[int]:
    return Inbox(anyio.Event)


async def test_items_come_out_in_order_and_without_yielding() -> None:
    inbox = _inbox()
    for i in range(3):
        inbox.send_nowait(i)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        got = [await inbox.receive() for _ in range(3)]
        assert ran == []  # three receives, no pass of the loop: the other task waits
    assert got == [0, 1, 2] and ran == ["other"]
    with pytest.raises(anyio.WouldBlock):
        inbox.receive_nowait()


async def test_a_waiting_reader_is_woken_by_a_send() -> None:
    inbox = _inbox()
    got: list[int] = []

    async def reader() -> None:
        got.append(await inbox.receive())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.lowlevel.checkpoint()
            await anyio.sleep(0.01)  # the reader waits
            inbox.send_nowait(7)
    assert got == [7]


async def test_close_drains_then_ends() -> None:
    inbox = _inbox()
    inbox.send_nowait(1)
    inbox.close()
    assert await inbox.receive() == 1
    with pytest.raises(anyio.EndOfStream):
        await inbox.receive()
    with pytest.raises(anyio.EndOfStream):
        inbox.receive_nowait()
    with pytest.raises(anyio.ClosedResourceError):
        inbox.send_nowait(2)


async def test_close_wakes_a_waiting_reader() -> None:
    inbox = _inbox()
    ended: list[bool] = []

    async def reader() -> None:
        try:
            await inbox.receive()
        except anyio.EndOfStream:
            ended.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.sleep(0.01)
            inbox.close()
    assert ended == [True]


async def test_a_cancelled_reader_loses_nothing() -> None:
    inbox = _inbox()
    with anyio.move_on_after(0.01):
        await inbox.receive()
    inbox.send_nowait(5)  # nobody waits now
    assert inbox.receive_nowait() == 5
    assert len(inbox) == 0
