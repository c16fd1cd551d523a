"""The message tables of docs/wire-protocol.md §6 say what felix_proto does.

A third party implements the protocol from the spec alone, so every message's type code,
its fields (names and order), whether each is required, its default and its msgpack type
must be the ones :mod:`felix_proto.messages` and the codec's schema use. This test parses
the Markdown tables and compares them with the dataclasses, so a change to either side that
forgets the other fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from felix_proto import _schema
from felix_proto import messages as m

SPEC = Path(__file__).resolve().parents[1] / "docs" / "wire-protocol.md"
_SPELLED = {m.MAX_DURATION_MS: "≤ 10^12", m.MAX_FRAME_SIZE_FIELD: "≤ 2^32-1"}
"""How the tables write each semantic maximum of ``_schema.INT_MAXIMA``."""
HEADING = re.compile(r"^#### `(\w+)` — type `0x([0-9a-f]+)` \((\d+)\)$")


def _tables() -> dict[str, tuple[int, list[list[str]]]]:
    """``{message name: (type code, [[field, type, presence, meaning], ...])}``."""
    out: dict[str, tuple[int, list[list[str]]]] = {}
    current: str | None = None
    for line in SPEC.read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            name, hex_code, dec_code = heading.groups()
            assert int(hex_code, 16) == int(dec_code), line
            current = name
            out[name] = (int(dec_code), [])
        elif line.startswith("#"):
            current = None
        elif current is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[current][1].append(cells)
    return out


TABLES = _tables()


def _field_docs() -> dict[tuple[str, str], str]:
    """``{(message, field): the field's docstring}`` from felix_proto/messages.py, in the
    spec's spelling (reST double backticks become Markdown's single ones)."""
    tree = ast.parse(Path(m.__file__).read_text())
    out: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for st, nxt in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(st, ast.AnnAssign)
                and isinstance(st.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                text = " ".join(nxt.value.value.split()).replace("``", "`")
                out[(node.name, st.target.id)] = text
    return out


DOCS = _field_docs()


def _default_text(value: Any) -> str:
    """How the spec writes a default (Python's repr, as the tables were written)."""
    if isinstance(value, Enum):
        value = value.value
    return f"`{value!r}`"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_every_message_has_a_table() -> None:
    names = {cls.__name__ for cls in m.MESSAGE_TYPES.values()}
    assert names == set(TABLES), names ^ set(TABLES)


@pytest.mark.parametrize("cls", list(m.MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_table_matches_the_message(cls: type[m.Message]) -> None:
    code, rows = TABLES[cls.__name__]
    assert code == cls.TYPE
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert [r[0].strip("`") for r in rows] == [f.name for f in fields], "names or order"
    for row, f in zip(rows, fields, strict=True):
        _, mtype, presence, meaning = row
        default = _default(f)
        where = f"{cls.__name__}.{f.name}"
        assert meaning == DOCS.get((cls.__name__, f.name), ""), f"{where}: docstring != spec"
        if default is dataclasses.MISSING:
            assert presence == "required", where
        elif default is None:
            assert presence == "optional (absent)", where
        else:
            assert presence == f"optional, default {_default_text(default)}", where
        enum = _schema.ENUM_FIELDS.get((cls, f.name))
        if enum is not None:
            assert f"one of {enum.__name__}" in mtype, where
        maximum = _schema.INT_MAXIMA.get((cls, f.name))
        if maximum is not None:
            assert _SPELLED.get(maximum, "?") in mtype, f"{where}: maximum {maximum} not in {mtype}"
        else:
            assert "≤" not in mtype, f"{where}: the spec states a maximum the codec lacks"
        if (cls, f.name) in _schema.U16_FIELDS:
            assert "uint16" in mtype, where
        elif mtype.startswith(("uint", "array of uint")):
            assert "uint64" in mtype, where
