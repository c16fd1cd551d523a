"""The golden vectors must be messages a broker would accept, not only well-formed frames:
the admin vectors' settings use the normative names, types and ranges of spec §6.7."""

from __future__ import annotations

import json
from pathlib import Path

from engine_calls import Calls

from felix_core.broker import Broker, BrokerConfig
from felix_proto import codec
from felix_proto import messages as m
from felix_proto.frames import HEADER_SIZE

VECTORS = Path(__file__).resolve().parents[2] / "conformance" / "vectors"
NOW = 1_700_000_000.0


def _message(name: str) -> m.Message:
    vector = json.loads((VECTORS / f"{name}.json").read_text())
    msg = codec.decode(bytes.fromhex(vector["frame_hex"])[HEADER_SIZE:])
    assert isinstance(msg, m.Message)
    return msg


def test_admin_vectors_are_accepted_by_a_broker() -> None:
    broker = Calls(Broker(BrokerConfig(), now=NOW))
    broker.create("tenant", "acme", now=NOW)
    broker.create("namespace", "acme", "orders", now=NOW)
    broker.create("cache", "acme", "orders", "sessions", now=NOW)

    create = _message("admin_create")
    assert isinstance(create, m.AdminCreate)
    created = broker.create(
        create.kind, create.tenant, create.namespace, create.name, create.settings, now=NOW
    )
    for name, value in create.settings.items():
        assert created["settings"][name] == value

    update = _message("admin_update")
    assert isinstance(update, m.AdminUpdate)
    updated = broker.update(
        update.kind, update.tenant, update.namespace, update.name, update.settings, now=NOW
    )
    for name, value in update.settings.items():
        assert updated["settings"][name] == value
