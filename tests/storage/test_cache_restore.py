"""A durable cache comes back after a restart: rebuilt from its change log with the time of
the restart (expiry is absolute: an entry expired meanwhile stays expired), versions go on
(a CAS with the version read before the restart succeeds). Engine on DiskLogStore over
MemoryFileSystem; the restart is a new engine fed the same records on a crashed file system."""

from __future__ import annotations

import pytest
from engine_calls import Calls
from storage_helpers import settle

from felix_core import Broker, BrokerConfig
from felix_core.disklog import DiskLogStore
from felix_core.errors import NotFound
from felix_core.filesystem import MemoryFileSystem
from felix_core.metadata import Kind

C = ("default", "default", "c")
T0 = 1_000.0


def _restart(fs: MemoryFileSystem, before: Calls, now: float) -> Calls:
    """What a broker start does: a new store on the surviving files, every stored record
    fed to a new engine at ``now``."""
    fs.crash()  # only what was fsynced survives
    engine = Broker(BrokerConfig(), logs=DiskLogStore(fs), now=now)
    parents_first = {Kind.TENANT: 0, Kind.NAMESPACE: 1}
    for record in sorted(before.store.records(), key=lambda r: parents_first.get(r.kind, 2)):
        engine.metadata_changed(record.kind, record.path, record, now)
    return Calls(engine, before.store)


def _durable_cache(settings: dict[str, object] | None = None) -> tuple[MemoryFileSystem, Calls]:
    fs = MemoryFileSystem()
    calls = Calls(Broker(BrokerConfig(), logs=DiskLogStore(fs), now=T0))
    calls.create("cache", *C, {"durability": "durable", **(settings or {})}, now=T0)
    return fs, calls


def _sync(calls: Calls, now: float) -> None:
    store = calls.broker.logs
    assert isinstance(store, DiskLogStore)
    store.handle_timer(now + 1.0)
    settle(store, now + 1.0)


def test_entries_expiries_and_versions_survive_a_restart() -> None:
    fs, calls = _durable_cache()
    assert calls.cache_put(*C, "long", b"L", ttl_ms=3_600_000, now=T0) == (True, 1)
    assert calls.cache_put(*C, "short", b"S", ttl_ms=5_000, now=T0) == (True, 2)
    assert calls.cache_put(*C, "gone", b"G", now=T0) == (True, 3)
    calls.cache_delete(*C, "gone", now=T0)
    _sync(calls, T0)

    again = _restart(fs, calls, T0 + 2.0)
    long = again.cache_get(*C, "long", now=T0 + 2.0)
    short = again.cache_get(*C, "short", now=T0 + 2.0)
    assert (long.value, long.version) == (b"L", 1)
    assert (short.value, short.version) == (b"S", 2)
    assert again.cache_get(*C, "gone", now=T0 + 2.0) is None
    assert again.cache_get(*C, "short", now=T0 + 5.0) is None  # its absolute expiry
    # CAS with the version read before the restart; the counter goes on past the delete's
    # 4 and the expiry record's 5 (written by the get that found "short" expired).
    assert again.cache_put(*C, "long", b"L2", if_version=1, now=T0 + 6.0) == (True, 6)


def test_an_entry_expired_while_the_broker_was_down_stays_expired() -> None:
    fs, calls = _durable_cache()
    calls.cache_put(*C, "short", b"S", ttl_ms=5_000, now=T0)
    calls.cache_put(*C, "long", b"L", ttl_ms=3_600_000, now=T0)
    _sync(calls, T0)
    again = _restart(fs, calls, T0 + 60.0)
    assert again.cache_get(*C, "short", now=T0 + 60.0) is None
    assert again.cache_get(*C, "long", now=T0 + 60.0).value == b"L"
    assert again.cache_put(*C, "long", b"x", if_version=7, now=T0 + 60.0) == (False, 2)


def test_a_change_log_that_is_not_a_cache_s_leaves_the_cache_unserved() -> None:
    fs, calls = _durable_cache()
    calls.cache_put(*C, "k", b"v", now=T0)
    _sync(calls, T0)
    log = calls.broker.logs.log("cache", C)  # type: ignore[attr-defined]
    log.append_batch([b"junk"], 2_000_000)  # no key, no version header
    _sync(calls, T0 + 10.0)
    again = _restart(fs, calls, T0 + 1.0)
    assert again.broker.registry.find(Kind.CACHE, C) is None
    assert fs.exists(log.directory)  # left for an operator, not deleted
    assert again.broker.logs.log("cache", C) is None  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        again.cache_get(*C, "k", now=T0 + 1.0)
