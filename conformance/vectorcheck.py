"""Codec-level conformance for other languages: check a codec's decoded golden vectors.

``python -m conformance vectors DECODED.json [--vectors DIR]`` compares what a third-party
codec made of every vector in ``conformance/vectors/`` with what the vector says, and prints
one PASS / FAIL line per vector and a summary; the exit code is 1 if any vector failed.
``python -m conformance vectors --emit OUT.json`` writes the file our own codec
(felix_proto) produces: a reference for the format.

The DECODED.json format (``"format": 1``)::

    {"format": 1, "codec": "free text",
     "results": {
        "<vector name>": {"type": 16, "fields": {...}, "frame_hex": "..."},
        "<error vector name>": {"error_code": 100, "fatal": false, "request_id": 7}
     }}

* message vectors: ``type`` and ``fields`` are what decoding the vector's ``frame_hex``
  gave (bytes as ``{"$bytes": "<hex>"}``, like the vectors; absent optional fields may be
  left out, or given as null or their default); ``frame_hex`` (optional) is what encoding the
  vector's ``fields`` gave and must equal the vector's byte for byte;
* error vectors: ``error_code`` and ``fatal`` are how the codec rejected the frame;
  ``request_id`` is required when the vector names one.

Values are compared strictly: ``true`` is not ``1``, and ``1.0`` is not ``1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from felix_proto import messages as m
from felix_proto.codec import decode, encode
from felix_proto.errors import RemoteProtocolError
from felix_proto.frames import FrameDecoder

__all__ = ["VECTORS_DIR", "check_results", "emit", "main"]

VECTORS_DIR = Path(__file__).parent / "vectors"
"""The golden vectors shipped with the suite."""


def _from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if list(v) == ["$bytes"]:
            return bytes.fromhex(v["$bytes"])
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def _to_json(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_to_json(x) for x in v]
    return v


def _same(a: Any, b: Any) -> bool:
    """Strict equality of JSON-ish values (bool is not int, float is not int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _defaults(type_code: int) -> dict[str, Any]:
    cls: Any = m.MESSAGE_TYPES.get(type_code)
    if cls is None:
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _check_message(vector: dict[str, Any], got: dict[str, Any]) -> str | None:
    if not _same(got.get("type"), vector["type"]):
        return f"decoded type {got.get('type')!r}, expected {vector['type']}"
    want = _from_json(vector["fields"])
    fields = got.get("fields")
    if not isinstance(fields, dict):
        return "no decoded 'fields' object"
    have = _from_json(fields)
    for name, value in want.items():
        if name not in have:
            return f"decoded fields lack {name!r}"
        if not _same(have[name], value):
            return f"field {name!r} decoded as {_to_json(have[name])!r}, expected {value!r}"
    defaults = _defaults(vector["type"])
    for name in have.keys() - want.keys():
        value = have[name]
        if value is not None and not (name in defaults and _same(value, defaults[name])):
            return f"field {name!r} decoded as {_to_json(value)!r}; the frame does not carry it"
    encoded = got.get("frame_hex")
    if encoded is not None and str(encoded).lower() != vector["frame_hex"]:
        return f"encoding the fields gave {encoded}, expected {vector['frame_hex']}"
    return None


def _check_error(vector: dict[str, Any], got: dict[str, Any]) -> str | None:
    if not _same(got.get("error_code"), vector["error_code"]):
        return f"rejected with code {got.get('error_code')!r}, expected {vector['error_code']}"
    if not _same(got.get("fatal"), vector["fatal"]):
        return f"fatal is {got.get('fatal')!r}, expected {vector['fatal']}"
    if "request_id" in vector and not _same(got.get("request_id"), vector["request_id"]):
        return f"request_id {got.get('request_id')!r}, expected {vector['request_id']}"
    return None


def load_vectors(directory: Path = VECTORS_DIR) -> dict[str, dict[str, Any]]:
    """Every vector file in ``directory`` by name."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        vector = json.loads(path.read_text())
        out[vector["name"]] = vector
    return out


def check_results(
    decoded: dict[str, Any], vectors: dict[str, dict[str, Any]]
) -> list[tuple[str, str | None]]:
    """Compare a DECODED.json document with the vectors.

    Returns:
        ``(vector name, failure reason or None)`` for every vector, in name order.

    Raises:
        ValueError: the document is not format 1 or has no ``results`` object.
    """
    if (
        not isinstance(decoded, dict)
        or decoded.get("format") != 1
        or not isinstance(decoded.get("results"), dict)
    ):
        raise ValueError('expected {"format": 1, "results": {...}}')
    results = decoded["results"]
    out: list[tuple[str, str | None]] = []
    for name, vector in sorted(vectors.items()):
        got = results.get(name)
        if not isinstance(got, dict):
            out.append((name, "not reported"))
        elif vector["kind"] == "message":
            out.append((name, _check_message(vector, got)))
        else:
            out.append((name, _check_error(vector, got)))
    return out


def _decode_one(frame: bytes) -> m.Message:
    frames = FrameDecoder()
    frames.feed(frame)
    payload = frames.next_frame()
    if payload is None:
        raise ValueError("incomplete frame")
    return decode(payload)


def emit(vectors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What felix_proto makes of every vector, as a DECODED.json document."""
    results: dict[str, Any] = {}
    for name, vector in vectors.items():
        frame = bytes.fromhex(vector["frame_hex"])
        try:
            msg = _decode_one(frame)
        except RemoteProtocolError as exc:
            entry: dict[str, Any] = {"error_code": int(exc.error_code), "fatal": exc.fatal}
            if exc.request_id is not None:
                entry["request_id"] = exc.request_id
            results[name] = entry
            continue
        record: Any = msg
        fields = {
            f.name: getattr(msg, f.name)
            for f in dataclasses.fields(record)
            if getattr(msg, f.name) is not None
        }
        results[name] = {
            "type": msg.TYPE,
            "fields": _to_json(fields),
            "frame_hex": encode(msg).hex(),
        }
    return {"format": 1, "codec": "felix_proto (reference)", "results": results}


def main(argv: Sequence[str]) -> int:
    """``python -m conformance vectors``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m conformance vectors",
        description="Check a codec's decoded golden vectors (see conformance/vectorcheck.py "
        "and docs/conformance.md for the DECODED.json format).",
    )
    p.add_argument("decoded", nargs="?", help="DECODED.json produced by the codec under test")
    p.add_argument("--vectors", type=Path, default=VECTORS_DIR, help="the vector directory")
    p.add_argument("--emit", metavar="OUT", help="write felix_proto's own DECODED.json to OUT")
    args = p.parse_args(list(argv))
    vectors = load_vectors(args.vectors)
    if args.emit:
        Path(args.emit).write_text(json.dumps(emit(vectors), indent=1) + "\n")
        print(f"wrote {len(vectors)} decoded vectors to {args.emit}")
        return 0
    if not args.decoded:
        p.error("give DECODED.json (or --emit OUT)")
    try:
        doc = json.loads(Path(args.decoded).read_text())
        results = check_results(doc, vectors)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.decoded}: {exc}")
        return 2
    for name, reason in results:
        print(f"FAIL {name}: {reason}" if reason else f"PASS {name}")
    failed = sum(1 for _, r in results if r)
    print(f"{len(results) - failed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0
