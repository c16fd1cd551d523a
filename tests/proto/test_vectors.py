"""Golden vectors in conformance/vectors: checked both ways, as a third party would."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from felix_proto import errors
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, decode, encode
from felix_proto.frames import HEADER_SIZE

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "conformance" / "vectors"
FILES = sorted(VECTORS.glob("*.json"))
BY_NAME = {cls.__name__: cls for cls in m.MESSAGE_TYPES.values()}


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if list(value) == ["$bytes"]:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def load(kind: str) -> list[dict[str, Any]]:
    out = [json.loads(p.read_text(encoding="utf-8")) for p in FILES]
    return [v for v in out if v["kind"] == kind]


def wire_fields(msg: m.Message) -> dict[str, Any]:
    import dataclasses

    return {
        f.name: getattr(msg, f.name)
        for f in dataclasses.fields(msg)  # type: ignore[arg-type]
        if getattr(msg, f.name) is not None
    }


def test_every_message_type_has_a_vector() -> None:
    covered = {v["message"] for v in load("message")}
    assert covered == set(BY_NAME)


@pytest.mark.parametrize("vector", load("message"), ids=lambda v: v["name"])
def test_message_vector_both_ways(vector: dict[str, Any]) -> None:
    cls = BY_NAME[vector["message"]]
    assert vector["type"] == cls.TYPE
    fields = from_json(vector["fields"])
    frame = bytes.fromhex(vector["frame_hex"])
    assert encode(cls(**fields)) == frame
    decoded = decode(frame[HEADER_SIZE:])
    assert type(decoded) is cls
    assert wire_fields(decoded) == fields


@pytest.mark.parametrize("vector", load("error"), ids=lambda v: v["name"])
def test_error_vector(vector: dict[str, Any]) -> None:
    decoder = MessageDecoder()
    decoder.feed(bytes.fromhex(vector["frame_hex"]))
    with pytest.raises(errors.RemoteProtocolError) as info:
        decoder.next_message()
    err = info.value
    assert type(err).__name__ == vector["error"]
    assert err.error_code == vector["error_code"]
    assert err.fatal == vector["fatal"]
    assert err.request_id == vector.get("request_id")
    if "field" in vector:
        assert err.details["field"] == vector["field"]
    if "message" in vector:
        assert err.message == vector["message"]
    if "version" in vector:
        assert isinstance(err, errors.UnsupportedVersion)
        assert err.version == vector["version"]
        assert list(err.supported) == vector["supported_versions"]


def test_files_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts/make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.all_vectors()
    assert sorted(p.stem for p in FILES) == sorted(expected)
    for path in FILES:
        assert path.read_text(encoding="utf-8") == module.render(expected[path.stem]), path.name
