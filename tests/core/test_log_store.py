"""The log-storage seam: every resource's log comes from the broker's LogStore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine_calls import Calls

from felix_core import Broker, BrokerConfig
from felix_core.log import Log, LogPath, MemoryLog, MemoryLogStore


class RecordingStore:
    """A LogStore that hands out memory logs and remembers what it was asked."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, LogPath], MemoryLog] = {}
        self.opened: list[tuple[str, LogPath, dict[str, Any]]] = []
        self.dropped: list[tuple[str, LogPath]] = []

    def open_log(self, kind: str, path: LogPath, settings: Mapping[str, Any]) -> Log:
        self.opened.append((kind, path, dict(settings)))
        log = self.logs[(kind, path)] = MemoryLog()
        return log

    def drop_log(self, kind: str, path: LogPath) -> None:
        self.dropped.append((kind, path))

    @property
    def durable(self) -> bool:
        return True  # what a disk store says; lets the test create a durable stream


def test_streams_queues_and_caches_get_their_logs_from_the_store() -> None:
    store = RecordingStore()
    b = Calls(Broker(BrokerConfig(), logs=store, now=0.0))
    b.attach(1, now=0.0)
    b.create("stream", "default", "default", "orders", {"durability": "durable"}, now=0.0)
    b.create("queue", "default", "default", "jobs", now=0.0)
    b.create("cache", "default", "default", "sessions", now=0.0)

    b.publish(1, "default", "default", "orders", [b"a", b"b"], now=1.0)
    b.enqueue(1, "default", "default", "jobs", [b"j"], now=1.0)
    b.cache_put("default", "default", "sessions", "k", b"v", now=1.0)

    path = ("default", "default")
    assert store.logs[("stream", (*path, "orders"))].next_offset == 2
    assert store.logs[("queue", (*path, "jobs"))].next_offset == 1
    assert store.logs[("cache", (*path, "sessions"))].next_offset == 1  # the change feed
    kinds = {(kind, p[2]): settings for kind, p, settings in store.opened}
    assert kinds[("stream", "orders")]["durability"] == "durable"

    b.delete("stream", "default", "default", "orders", now=2.0)
    b.delete("queue", "default", "default", "jobs", now=2.0)
    b.delete("cache", "default", "default", "sessions", now=2.0)
    assert sorted(store.dropped) == [
        ("cache", (*path, "sessions")),
        ("queue", (*path, "jobs")),
        ("stream", (*path, "orders")),
    ]


def test_memory_log_store_gives_fresh_logs() -> None:
    store = MemoryLogStore()
    first = store.open_log("stream", ("t", "n", "s"), {})
    first.append(b"x", 0)
    again = store.open_log("stream", ("t", "n", "s"), {})
    assert again.next_offset == 0 and first.next_offset == 1
    store.drop_log("stream", ("t", "n", "s"))  # nothing to release, and no error
