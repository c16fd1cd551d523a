"""Tests of names, settings schemas, the metadata store and the catalog: every error path."""

from __future__ import annotations

from typing import Any

import pytest

from felix_core.errors import (
    AlreadyExists,
    Conflict,
    EngineError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Overloaded,
    ShuttingDown,
    TooLarge,
)
from felix_core.limits import BrokerConfig, MemoryBudget
from felix_core.metadata import (
    Catalog,
    Kind,
    MemoryMetadataStore,
    MetadataView,
    Path,
    ResourceRecord,
    WriteOp,
)
from felix_core.names import is_valid_name, validate_name
from felix_core.settings import SlowConsumerPolicy, StreamSettings
from felix_proto.errors import ErrorCode


class Writer:
    """A catalog over a view, its writes applied to a store and fed back to the view: what
    the engine and the glue do together, without the engine's partitions."""

    def __init__(self, config: BrokerConfig, store: MemoryMetadataStore | None = None, **kw: Any):
        self.view = MetadataView()
        self.store = store if store is not None else MemoryMetadataStore()
        self.catalog = Catalog(self.view, config, **kw)

    def _apply(self, op: WriteOp, record: ResourceRecord, expected: int | None) -> ResourceRecord:
        stored = self.store.apply(op, record, expected)
        for kind, path, now_record in self.store.take_changes():
            self.view.apply(kind, path, now_record)
        return stored

    def create(self, kind: Kind, path: Path, settings: Any, now: float) -> ResourceRecord:
        return self._apply(WriteOp.CREATE, self.catalog.create(kind, path, settings, now), None)

    def update(self, kind: Kind, path: Path, settings: Any, now: float) -> ResourceRecord:
        record = self.catalog.update(kind, path, settings, now)
        return self._apply(WriteOp.REPLACE, record, record.generation - 1)

    def delete(self, kind: Kind, path: Path) -> ResourceRecord:
        return self._apply(WriteOp.DELETE, self.catalog.delete(kind, path), None)

    def describe(self, kind: Kind, path: Path) -> ResourceRecord:
        return self.catalog.describe(kind, path)

    def list(self, kind: Kind, tenant: str = "", namespace: str = "") -> list[ResourceRecord]:
        return self.catalog.list(kind, tenant, namespace)


def catalog(**config: Any) -> Writer:
    cat = Writer(BrokerConfig(**config))
    cat.create(Kind.TENANT, ("t", "", ""), {}, 1.0)
    cat.create(Kind.NAMESPACE, ("t", "n", ""), {}, 1.0)
    return cat


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A9", "_x", "a.b-c_d", "x" * 128, "0"])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)
    assert validate_name("stream", name) == name


@pytest.mark.parametrize("name", ["", ".a", "-a", "a b", "a/b", "é", "x" * 129, None, 3])
def test_invalid_names(name: object) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidArgument) as err:
        validate_name("stream", name)
    assert err.value.details == {"field": "stream"}


# -- errors and limits -------------------------------------------------------------------------


def test_error_codes_and_retryable() -> None:
    pairs = [
        (NotFound, ErrorCode.NOT_FOUND, False),
        (AlreadyExists, ErrorCode.ALREADY_EXISTS, False),
        (InvalidArgument, ErrorCode.INVALID_ARGUMENT, False),
        (LimitExceeded, ErrorCode.LIMIT_EXCEEDED, False),
        (TooLarge, ErrorCode.TOO_LARGE, False),
        (Conflict, ErrorCode.CONFLICT, False),
        (Overloaded, ErrorCode.OVERLOADED, True),
        (ShuttingDown, ErrorCode.SHUTTING_DOWN, True),
    ]
    for cls, code, retryable in pairs:
        err = cls("m", details={"a": 1})
        assert (err.code, err.message, err.details, err.retryable) == (
            code,
            "m",
            {"a": 1},
            retryable,
        )
        assert isinstance(err, EngineError)
        assert code.name in repr(err)
    assert EngineError(ErrorCode.INTERNAL, "x").details == {}


def test_broker_config_validation() -> None:
    with pytest.raises(InvalidArgument):
        BrokerConfig(max_tenants=0)
    with pytest.raises(InvalidArgument):
        BrokerConfig(batch_max_delay_us=-1)
    with pytest.raises(InvalidArgument):
        BrokerConfig(stream_retention_max_bytes=10, stream_max_retention_bytes=5)


def test_memory_budget() -> None:
    with pytest.raises(InvalidArgument):
        MemoryBudget(0)
    b = MemoryBudget(100)
    assert b.fits(100) and not b.fits(101) and b.fits(-5)
    b.adjust(60)
    assert (b.used, b.available, b.high_water) == (60, 40, 60)
    b.check(40)
    with pytest.raises(Overloaded) as err:
        b.check(41, "publish")
    assert err.value.details == {"limit": 100, "used": 60, "needed": 41}
    assert b.refused == 1
    b.adjust(-60)
    assert b.used == 0 and b.high_water == 60 and b.limit == 100
    b.adjust(200)
    assert b.available == 0


# -- stream settings -------------------------------------------------------------------------


def test_stream_settings_defaults_and_round_trip() -> None:
    cfg = BrokerConfig()
    s = StreamSettings.defaults(cfg)
    assert s.batch.max_events == 64 and s.batch.max_bytes == 65536
    assert s.batch.max_delay_s == pytest.approx(0.00025)
    assert s.slow_consumer is SlowConsumerPolicy.DROP_OLDEST
    assert StreamSettings.from_mapping(s.to_mapping(), cfg) == s
    updated = StreamSettings.from_mapping({"slow_consumer": "block"}, cfg, s)
    assert updated.slow_consumer is SlowConsumerPolicy.BLOCK and updated.batch == s.batch


@pytest.mark.parametrize(
    "settings",
    [
        {"bogus": 1},
        {"retention_max_records": 0},
        {"retention_max_records": True},
        {"retention_max_records": "5"},
        {"retention_max_bytes": None},
        {"retention_max_bytes": 2 << 40},
        {"batch_max_events": 0},
        {"batch_max_delay_us": -1},
        {"slow_consumer": "drop_new"},
        {"durability": "forever"},
    ],
)
def test_bad_stream_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as err:
        StreamSettings.from_mapping(settings, BrokerConfig())
    assert "field" in err.value.details


# -- catalog ---------------------------------------------------------------------------------


def test_create_describe_list_update_delete() -> None:
    cat = catalog()
    rec = cat.create(Kind.STREAM, ("t", "n", "s"), {"retention_max_records": 10}, 2.5)
    assert rec.kind is Kind.STREAM and rec.generation == 1 and rec.created_ms == 2500
    assert rec.settings["retention_max_records"] == 10
    assert cat.describe(Kind.STREAM, ("t", "n", "s")) == rec
    assert [r.name for r in cat.list(Kind.STREAM, "t", "n")] == ["s"]
    assert [r.tenant for r in cat.list(Kind.TENANT)] == ["t"]
    assert [r.namespace for r in cat.list(Kind.NAMESPACE, "t")] == ["n"]
    up = cat.update(Kind.STREAM, ("t", "n", "s"), {"slow_consumer": "disconnect"}, 3.0)
    assert up.generation == 2 and up.uid == rec.uid and up.updated_ms == 3000
    assert up.settings["retention_max_records"] == 10
    assert up.settings["slow_consumer"] == "disconnect"
    d = up.to_dict()
    assert d["kind"] == "stream" and d["settings"]["slow_consumer"] == "disconnect"
    assert cat.delete(Kind.STREAM, ("t", "n", "s")).uid == rec.uid
    again = cat.create(Kind.STREAM, ("t", "n", "s"), {}, 4.0)
    assert again.uid != rec.uid


def test_kinds_have_separate_names() -> None:
    cat = catalog()
    cat.create(Kind.STREAM, ("t", "n", "x"), {}, 1.0)
    cat.create(Kind.QUEUE, ("t", "n", "x"), {}, 1.0)
    cat.create(Kind.CACHE, ("t", "n", "x"), {}, 1.0)
    with pytest.raises(AlreadyExists):
        cat.create(Kind.QUEUE, ("t", "n", "x"), {}, 1.0)


def test_path_and_kind_errors() -> None:
    cat = catalog()
    with pytest.raises(InvalidArgument):
        Catalog.parse_kind("topic")
    with pytest.raises(InvalidArgument):
        cat.create(Kind.TENANT, ("t2", "n", ""), {}, 1.0)  # a tenant path has no namespace
    with pytest.raises(InvalidArgument):
        cat.create(Kind.NAMESPACE, ("t", "n2", "x"), {}, 1.0)  # nor a namespace a name
    with pytest.raises(InvalidArgument):
        cat.create(Kind.STREAM, ("t", "n", ".bad"), {}, 1.0)
    with pytest.raises(NotFound):
        cat.create(Kind.NAMESPACE, ("nope", "n", ""), {}, 1.0)
    with pytest.raises(NotFound):
        cat.create(Kind.STREAM, ("t", "nope", "s"), {}, 1.0)
    with pytest.raises(NotFound):
        cat.describe(Kind.STREAM, ("t", "n", "nope"))
    with pytest.raises(NotFound):
        cat.list(Kind.STREAM, "t", "nope")
    with pytest.raises(NotFound):
        cat.list(Kind.NAMESPACE, "nope")
    with pytest.raises(NotFound):
        cat.update(Kind.STREAM, ("t", "n", "nope"), {}, 1.0)
    with pytest.raises(NotFound):
        cat.delete(Kind.QUEUE, ("t", "n", "nope"))
    with pytest.raises(AlreadyExists):
        cat.create(Kind.TENANT, ("t", "", ""), {}, 1.0)


def test_settings_validation_on_create_and_update() -> None:
    cat = catalog()
    with pytest.raises(InvalidArgument):
        cat.create(Kind.TENANT, ("t2", "", ""), {"description": 5}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.TENANT, ("t2", "", ""), {"color": "red"}, 1.0)
    rec = cat.create(Kind.TENANT, ("t2", "", ""), {"description": "ok"}, 1.0)
    assert rec.settings == {"description": "ok"}
    with pytest.raises(InvalidArgument):
        cat.create(Kind.QUEUE, ("t", "n", "q"), {"visibility_timeout_ms": 0}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.QUEUE, ("t", "n", "q"), {"dead_letter_queue": "q"}, 1.0)  # itself
    with pytest.raises(InvalidArgument):
        cat.create(Kind.QUEUE, ("t", "n", "q"), {"dead_letter_queue": "-x"}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.QUEUE, ("t", "n", "q"), {"nope": 1}, 1.0)
    q = cat.create(Kind.QUEUE, ("t", "n", "q"), {"dead_letter_queue": "dlq"}, 1.0)
    assert q.settings["dead_letter_queue"] == "dlq"
    with pytest.raises(InvalidArgument):
        cat.create(Kind.CACHE, ("t", "n", "c"), {"default_ttl_ms": -1}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.CACHE, ("t", "n", "c"), {"max_value_bytes": 1 << 40}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.CACHE, ("t", "n", "c"), {"what": 1}, 1.0)
    c = cat.create(Kind.CACHE, ("t", "n", "c"), {"default_ttl_ms": 500}, 1.0)
    assert cat.update(Kind.CACHE, c.path, {"max_entries": 3}, 2.0).settings["default_ttl_ms"] == 500
    with pytest.raises(InvalidArgument):
        cat.update(Kind.QUEUE, q.path, {"max_prefetch": 0}, 2.0)


def test_count_limits() -> None:
    cat = catalog(max_tenants=2, max_namespaces_per_tenant=1, max_resources_per_namespace=2)
    cat.create(Kind.TENANT, ("t2", "", ""), {}, 1.0)
    with pytest.raises(LimitExceeded):
        cat.create(Kind.TENANT, ("t3", "", ""), {}, 1.0)
    with pytest.raises(LimitExceeded):
        cat.create(Kind.NAMESPACE, ("t", "n2", ""), {}, 1.0)
    cat.create(Kind.STREAM, ("t", "n", "a"), {}, 1.0)
    cat.create(Kind.CACHE, ("t", "n", "b"), {}, 1.0)
    with pytest.raises(LimitExceeded) as err:
        cat.create(Kind.QUEUE, ("t", "n", "c"), {}, 1.0)
    assert err.value.details == {"limit": 2}


def test_delete_non_empty_parents_conflicts() -> None:
    cat = catalog()
    cat.create(Kind.QUEUE, ("t", "n", "q"), {}, 1.0)
    with pytest.raises(Conflict):
        cat.delete(Kind.NAMESPACE, ("t", "n", ""))
    with pytest.raises(Conflict):
        cat.delete(Kind.TENANT, ("t", "", ""))
    cat.delete(Kind.QUEUE, ("t", "n", "q"))
    cat.delete(Kind.NAMESPACE, ("t", "n", ""))
    cat.delete(Kind.TENANT, ("t", "", ""))
    assert cat.list(Kind.TENANT) == []


def test_store_conditional_operations() -> None:
    store = MemoryMetadataStore()
    rec = store.apply(WriteOp.CREATE, ResourceRecord(kind=Kind.TENANT, tenant="t"), None)
    assert rec.uid == 1  # the store gives the uid
    with pytest.raises(AlreadyExists):
        store.apply(WriteOp.CREATE, rec, None)
    newer = ResourceRecord(kind=Kind.TENANT, tenant="t", uid=rec.uid, generation=2)
    with pytest.raises(Conflict) as err:
        store.apply(WriteOp.REPLACE, newer, 5)
    assert err.value.details == {"generation": 1}
    store.apply(WriteOp.REPLACE, newer, 1)
    assert store.get(Kind.TENANT, ("t", "", "")) == newer
    assert store.records() == [newer]
    with pytest.raises(NotFound):
        store.apply(WriteOp.REPLACE, ResourceRecord(kind=Kind.TENANT, tenant="x"), 1)
    assert store.apply(WriteOp.DELETE, newer, None) == newer
    with pytest.raises(NotFound):
        store.apply(WriteOp.DELETE, newer, None)
    assert store.records() == []
    path = ("t", "", "")
    changes = [(Kind.TENANT, path, rec), (Kind.TENANT, path, newer), (Kind.TENANT, path, None)]
    assert store.take_changes() == changes
    assert store.take_changes() == []


def test_the_view_takes_each_change_once_and_never_an_older_generation() -> None:
    view = MetadataView()
    rec = ResourceRecord(kind=Kind.TENANT, tenant="t", uid=1)
    newer = ResourceRecord(kind=Kind.TENANT, tenant="t", uid=1, generation=2)
    assert view.apply(Kind.TENANT, rec.path, rec) and not view.apply(Kind.TENANT, rec.path, rec)
    assert view.apply(Kind.TENANT, rec.path, newer)
    assert not view.apply(Kind.TENANT, rec.path, rec)  # late: ignored
    again = ResourceRecord(kind=Kind.TENANT, tenant="t", uid=2)  # re-created elsewhere
    assert view.apply(Kind.TENANT, rec.path, again) and view.get(Kind.TENANT, rec.path) == again
    assert view.apply(Kind.TENANT, rec.path, None) and not view.apply(Kind.TENANT, rec.path, None)
    assert view.list(Kind.TENANT) == [] and view.count(Kind.TENANT) == 0


def test_update_conflict_when_store_changed_underneath() -> None:
    cat = Writer(BrokerConfig())
    rec = cat.create(Kind.TENANT, ("t", "", ""), {}, 1.0)
    update = cat.catalog.update(Kind.TENANT, rec.path, {"description": "x"}, 2.0)
    # another writer bumps the generation between our validation and our write
    bumped = ResourceRecord(kind=rec.kind, tenant="t", uid=rec.uid, generation=2)
    cat.store.apply(WriteOp.REPLACE, bumped, rec.generation)
    with pytest.raises(Conflict):
        cat.store.apply(WriteOp.REPLACE, update, update.generation - 1)


def test_catalog_accepts_replacement_schemas() -> None:
    def strict(path: Any, new: Any, current: Any) -> dict[str, Any]:
        raise InvalidArgument("no queues here")

    cat = Writer(BrokerConfig(), schemas={Kind.QUEUE: strict})
    cat.create(Kind.TENANT, ("t", "", ""), {}, 1.0)
    cat.create(Kind.NAMESPACE, ("t", "n", ""), {}, 1.0)
    with pytest.raises(InvalidArgument):
        cat.create(Kind.QUEUE, ("t", "n", "q"), {}, 1.0)
