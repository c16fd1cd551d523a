"""FeedOutbox: per-feed order, round robin between feeds, shared frames counted once."""

from __future__ import annotations

from felix_server.outbox import FeedOutbox


def test_shared_frames_are_counted_once_and_released_round_robin() -> None:
    box = FeedOutbox()
    frame = b"f" * 1000
    done: list[str] = []
    for sub in (1, 2, 3):
        box.hold((True, sub), len(frame), lambda s=sub: done.append(f"batch {s}"), frame)
    box.hold((True, 1), 50, lambda: done.append("end 1"))
    assert len(box) == 4 and box.held_bytes == 1000 + 50
    assert box.holds((True, 1)) and not box.holds((False, 1))
    assert box.next_size() == 1000
    while (write := box.pop()) is not None:
        write()
        if done == ["batch 1", "batch 2"]:
            assert box.held_bytes == 1000 + 50  # sub 3 still references the frame
    assert done == ["batch 1", "batch 2", "batch 3", "end 1"]
    assert len(box) == 0 and box.held_bytes == 0 and box.next_size() == 0


def test_drop_and_clear_forget_their_writes() -> None:
    box = FeedOutbox()
    a, b = b"a" * 100, b"b" * 10
    box.hold((True, 1), 100, lambda: None, a)
    box.hold((True, 2), 100, lambda: None, a)
    box.hold((False, 1), 10, lambda: None, b)
    box.hold((False, 1), 7, lambda: None)
    box.drop((True, 1))
    assert box.held_bytes == 100 + 10 + 7 and len(box) == 3
    box.drop((False, 1))
    assert box.held_bytes == 100 and len(box) == 1
    box.drop((False, 9))  # nothing held: no-op
    box.clear()
    assert box.held_bytes == 0 and len(box) == 0 and box.pop() is None
