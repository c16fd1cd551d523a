"""FileMetadataStore: resource definitions survive a restart (and a power loss, on the
twin), uids never repeat, a failed write changes nothing, damage is reported not hidden."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from felix_core import Broker, BrokerConfig
from felix_core.errors import AlreadyExists, Conflict, NotFound, StorageFailed, StorageFull
from felix_core.filesystem import FileSystem, IOFailure, MemoryFileSystem, NoSpace
from felix_core.metadata import Kind, ResourceRecord, WriteOp
from felix_runtime.filesystem import OsFileSystem
from felix_runtime.metadata_store import UID_BLOCK, FileMetadataStore, encode_record
from felix_server.local_route import LocalRoute


def rec(
    kind: Kind, tenant: str, namespace: str = "", name: str = "", **settings: object
) -> ResourceRecord:
    return ResourceRecord(
        kind=kind, tenant=tenant, namespace=namespace, name=name, settings=dict(settings)
    )


@pytest.fixture(params=["os", "memory"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> FileSystem:
    if request.param == "os":
        return OsFileSystem(tmp_path / "metadata")
    return MemoryFileSystem()


def populate(store: FileMetadataStore) -> None:
    store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t", description="x"), None)
    store.apply(WriteOp.CREATE, rec(Kind.NAMESPACE, "t", "n"), None)
    orders = store.apply(
        WriteOp.CREATE, rec(Kind.STREAM, "t", "n", "orders", a=1, durability="durable"), None
    )
    store.apply(
        WriteOp.CREATE, rec(Kind.QUEUE, "t", "n", "orders", b=None, durability="durable"), None
    )
    store.apply(WriteOp.CREATE, rec(Kind.CACHE, "t", "n", "gone"), None)
    store.apply(
        WriteOp.REPLACE,
        replace(orders, settings={"a": 2, "durability": "durable"}, generation=2),
        orders.generation,
    )
    store.apply(WriteOp.DELETE, rec(Kind.CACHE, "t", "n", "gone"), None)


def test_records_survive_reopening(fs: FileSystem) -> None:
    store = FileMetadataStore(fs)
    populate(store)
    assert [c[2] is None for c in store.take_changes()] == [False] * 6 + [True]
    again = FileMetadataStore(fs)
    assert again.records() == store.records()
    assert [(r.kind, r.path) for r in again.records()] == [
        (Kind.TENANT, ("t", "", "")),
        (Kind.NAMESPACE, ("t", "n", "")),
        (Kind.QUEUE, ("t", "n", "orders")),
        (Kind.STREAM, ("t", "n", "orders")),
    ]
    stream = again.get(Kind.STREAM, ("t", "n", "orders"))
    assert stream is not None and stream.generation == 2
    assert stream.settings == {"a": 2, "durability": "durable"}
    assert again.take_changes() == [] and again.damaged == []


def test_answered_writes_survive_a_power_loss() -> None:
    fs = MemoryFileSystem()
    store = FileMetadataStore(fs)
    populate(store)
    fs.crash()
    assert FileMetadataStore(fs).records() == store.records()


def test_uids_never_repeat_across_restarts(fs: FileSystem) -> None:
    store = FileMetadataStore(fs)
    t = store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t"), None)
    u = store.apply(WriteOp.CREATE, rec(Kind.TENANT, "u"), None)
    store.apply(WriteOp.DELETE, u, None)
    again = FileMetadataStore(fs)
    v = again.apply(WriteOp.CREATE, rec(Kind.TENANT, "u"), None)
    assert len({t.uid, u.uid, v.uid}) == 3 and v.uid > u.uid


def test_an_ephemeral_resource_gets_a_new_uid_at_each_start(fs: FileSystem) -> None:
    """Its records are gone after a restart: a client must not take the new log for the old
    one (it compares uids before resuming). A durable one keeps its uid, as its log."""
    store = FileMetadataStore(fs)
    store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t"), None)
    kept = store.apply(WriteOp.CREATE, rec(Kind.QUEUE, "t", "n", "q", durability="durable"), None)
    old = store.apply(WriteOp.CREATE, rec(Kind.STREAM, "t", "n", "s"), None)
    again = FileMetadataStore(fs)
    renewed = again.get(Kind.STREAM, ("t", "n", "s"))
    assert renewed is not None and renewed.uid > old.uid
    assert replace(renewed, uid=old.uid) == old  # nothing else changed
    assert again.get(Kind.QUEUE, ("t", "n", "q")) == kept
    assert again.get(Kind.TENANT, ("t", "", "")) == store.get(Kind.TENANT, ("t", "", ""))
    third = FileMetadataStore(fs)  # the new uid was written: the next start renews it again
    latest = third.get(Kind.STREAM, ("t", "n", "s"))
    assert latest is not None and latest.uid > renewed.uid
    created = third.apply(WriteOp.CREATE, rec(Kind.TENANT, "u"), None)
    assert created.uid > latest.uid


def test_uids_are_reserved_in_blocks(fs: FileSystem) -> None:
    store = FileMetadataStore(fs)
    store.apply(WriteOp.CREATE, rec(Kind.TENANT, "a"), None)
    assert fs.read("uid", 0, 64) == str(UID_BLOCK).encode()
    store.apply(WriteOp.CREATE, rec(Kind.TENANT, "b"), None)
    assert fs.read("uid", 0, 64) == str(UID_BLOCK).encode()


def test_the_checks_of_a_store(fs: FileSystem) -> None:
    store = FileMetadataStore(fs)
    t = store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t"), None)
    with pytest.raises(AlreadyExists):
        store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t"), None)
    with pytest.raises(Conflict):
        store.apply(WriteOp.REPLACE, replace(t, generation=5), 4)
    with pytest.raises(NotFound):
        store.apply(WriteOp.DELETE, rec(Kind.TENANT, "x"), None)


@pytest.mark.parametrize(
    ("error", "refusal"), [(NoSpace("full"), StorageFull), (IOFailure("eio"), StorageFailed)]
)
def test_a_failed_write_changes_nothing(
    error: NoSpace | IOFailure, refusal: type[Exception]
) -> None:
    fs = MemoryFileSystem()
    store = FileMetadataStore(fs)
    t = store.apply(WriteOp.CREATE, rec(Kind.TENANT, "t"), None)
    store.take_changes()
    fs.fail_next("write_atomic", error)
    with pytest.raises(refusal):
        store.apply(WriteOp.REPLACE, replace(t, settings={"x": 1}, generation=2), 1)
    fs.fail_next("write_atomic", error)
    with pytest.raises(refusal):
        store.apply(WriteOp.CREATE, rec(Kind.TENANT, "u"), None)
    fs.fail_next("remove", error)
    with pytest.raises(refusal):
        store.apply(WriteOp.DELETE, t, None)
    assert store.take_changes() == []
    assert store.records() == [t]
    assert FileMetadataStore(fs).records() == [t]
    u = store.apply(WriteOp.CREATE, rec(Kind.TENANT, "u"), None)  # space is back
    assert u.uid == t.uid + 1


def test_damaged_files_are_reported_and_skipped(fs: FileSystem) -> None:
    store = FileMetadataStore(fs)
    populate(store)
    name = "records/stream+t+n+orders.rec"
    data = bytearray(fs.read(name, 0, fs.size(name)))
    data[-3] ^= 0x20
    fs.write_atomic(name, bytes(data))
    fs.write_atomic("records/tenant+x++.rec", encode_record(rec(Kind.TENANT, "y")))
    fs.write_atomic("records/namespace+t+m.rec", b"garbage")
    fs.write_atomic("records/queue+t+n+q.rec.tmp", b"half written")
    again = FileMetadataStore(fs)
    assert sorted((d.name, d.reason) for d in again.damaged) == [
        ("records/namespace+t+m.rec", "shorter than its header"),
        ("records/stream+t+n+orders.rec", "CRC mismatch"),
        ("records/tenant+x++.rec", "the record does not match its file name"),
    ]
    assert len(again.records()) == 3
    assert not fs.exists("records/queue+t+n+q.rec.tmp")  # a crash's leftover, removed


def test_an_engine_is_fed_the_stored_records_at_start(tmp_path: Path) -> None:
    store = FileMetadataStore(OsFileSystem(tmp_path))
    route = LocalRoute(Broker(BrokerConfig(), now=1.0), store, now=1.0)
    route.engine.attach(1, now=1.0)
    route.engine.create(1, 1, "stream", "default", "default", "orders", {}, now=1.0)
    route.take_events(1.0)
    before = sorted(r.path for r in route.engine.view.records())
    assert ("default", "default", "orders") in before
    fresh = LocalRoute(
        Broker(BrokerConfig(), now=2.0), FileMetadataStore(OsFileSystem(tmp_path)), now=2.0
    )
    fresh.take_events(2.0)
    assert sorted(r.path for r in fresh.engine.view.records()) == before
    # The defaults were there already: the new engine asked for them and was told so.
    assert len(fresh.store.records()) == len(before)
