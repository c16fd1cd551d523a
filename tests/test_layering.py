"""The layering rule: felix_proto, felix_core and felix_server do no I/O and read no clock.

Two halves. The static half parses every module of the pure packages and fails on a
forbidden import. The dynamic half imports every module of those packages in a fresh
interpreter and fails if a forbidden module got loaded (directly or through a dependency).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("felix_proto", "felix_core", "felix_server")

# Top-level modules a pure module may not import itself.
FORBIDDEN_IMPORTS = frozenset(
    {
        "asyncio",
        "anyio",
        "trio",
        "socket",
        "selectors",
        "threading",
        "time",
        "random",
        "uuid",
        "prometheus_client",
        "aioquic.asyncio",
        "qh3",  # its package imports qh3.asyncio (felix_runtime.quic_qh3 holds what uses it)
        "ssl",
        "subprocess",
        "os",
        "signal",
        "multiprocessing",
        "concurrent",
    }
)
# Modules that may not even be loaded indirectly by importing the pure packages.
FORBIDDEN_LOADED = ("asyncio", "anyio", "trio", "aioquic.asyncio", "qh3", "prometheus_client")
# What felix_proto may import besides the standard library (it stands alone for third parties).
PROTO_ALLOWED_THIRD_PARTY = frozenset({"msgpack", "hypothesis"})  # hypothesis: testing.py only


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def forbidden_imports(path: Path) -> list[str]:
    """Return ``"file:line: name"`` for each forbidden import in one module."""
    bad = []
    for lineno, name in _imports(path):
        parts = name.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if prefixes & FORBIDDEN_IMPORTS:
            bad.append(f"{_display(path)}:{lineno}: {name}")
    return bad


def _display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_nothing_forbidden(package: str) -> None:
    bad = [entry for path in _modules(package) for entry in forbidden_imports(path)]
    assert not bad, "forbidden imports in a pure package:\n" + "\n".join(bad)


def test_felix_proto_stands_alone() -> None:
    stdlib = sys.stdlib_module_names
    bad = []
    for path in _modules("felix_proto"):
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if top in stdlib or top in {"felix_proto", "__future__"}:
                continue
            if top == "hypothesis" and path.name == "testing.py":
                continue
            if top not in PROTO_ALLOWED_THIRD_PARTY or top == "hypothesis":
                bad.append(f"{_display(path)}:{lineno}: {name}")
    assert not bad, "felix_proto may depend on msgpack and the stdlib only:\n" + "\n".join(bad)


def test_the_static_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The scan is not vacuous: it flags an ``import asyncio`` added to a core module."""
    fake = tmp_path / "broker.py"
    source = (ROOT / "felix_core" / "log.py").read_text()
    fake.write_text(source)
    assert forbidden_imports(fake) == []
    fake.write_text(
        source + "\nimport asyncio\nfrom time import monotonic\nimport aioquic.asyncio\n"
    )
    bad = forbidden_imports(fake)
    flagged = " ".join(bad)
    assert len({entry.split(":")[1] for entry in bad}) == 3  # three distinct lines
    assert ": asyncio" in flagged
    assert ": time.monotonic" in flagged
    assert ": aioquic.asyncio" in flagged


_PROBE = """
import importlib, json, pkgutil, sys
for extra in {extra!r}:
    importlib.import_module(extra)
names = []
for package in {packages!r}:
    mod = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(mod.__path__, package + "."):
        if info.name.endswith(".testing"):
            continue  # the hypothesis strategies are a test-time extra
        importlib.import_module(info.name)
        names.append(info.name)
loaded = sorted(
    m for m in sys.modules
    if any(m == f or m.startswith(f + ".") for f in {forbidden!r})
)
print(json.dumps({{"imported": names, "loaded": loaded}}))
"""


def _probe(packages: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    code = _PROBE.format(packages=packages, forbidden=FORBIDDEN_LOADED, extra=extra)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def test_importing_pure_packages_loads_no_io_module() -> None:
    result = _probe(PURE_PACKAGES)
    assert "felix_proto" in result["imported"]
    assert "felix_core" in result["imported"]
    assert result["loaded"] == [], f"importing pure packages loaded {result['loaded']}"


def test_the_dynamic_check_sees_an_io_import() -> None:
    """The probe is not vacuous: one more I/O import next to the pure packages shows up."""
    result = _probe(("felix_proto",), extra=("asyncio",))
    assert "asyncio" in result["loaded"]


def test_felix_proto_does_not_import_core_or_runtimes() -> None:
    bad = []
    for path in _modules("felix_proto"):
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if top.startswith(("felix_core", "felix_server", "felix_runtime", "felix_client")):
                bad.append(f"{_display(path)}:{lineno}: {name}")
    assert not bad, "\n".join(bad)


# felix_runtime is shared by the asyncio and the anyio adapters, so it may not pick an event
# loop (it may do I/O: certificates, logs, Prometheus), nor depend on either adapter.
RUNTIME_NEUTRAL_FORBIDDEN = frozenset(
    {"asyncio", "anyio", "trio", "sniffio", "felix_runtime_asyncio", "felix_runtime_anyio"}
)


def test_felix_runtime_is_runtime_neutral() -> None:
    bad = [
        f"{_display(path)}:{lineno}: {name}"
        for path in _modules("felix_runtime")
        for lineno, name in _imports(path)
        if name.split(".")[0] in RUNTIME_NEUTRAL_FORBIDDEN
    ]
    assert not bad, "felix_runtime must not choose an event loop:\n" + "\n".join(bad)


def _package_imports(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (TYPE_CHECKING ones too)."""
    graph: dict[str, set[str]] = {}
    for path in _modules(package):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        graph[name] = {
            imported
            for _, imported in _imports(path)
            if imported.startswith(f"{package}.") and imported.count(".") == 1
        }
    return graph


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_no_import_cycles_inside_a_pure_package(package: str) -> None:
    """Modules of one package import each other in one direction only: the session does not
    import the server that drives it, the drain does not import the server, and so on."""
    graph = _package_imports(package)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == [], f"modules on an import cycle: {cycles}"
