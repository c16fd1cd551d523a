"""``felix`` starts without the engine or the QUIC client: the commands that need no
connection (``--version``, ``--help``, ``token``, ``log``, ``audit``, ``completion``,
``context``) must not pay for importing them; ``felix completion`` (which reads ``felix
bench``'s parser too) loads neither the client, the codec, anyio, asyncio, aioquic nor
the bench extra. The package ``__init__``\\ s export lazily
(PEP 562, :mod:`felix_proto._lazy`); every exported name must still resolve."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY = ("felix_core.broker", "felix_client.client", "aioquic", "felix_proto.codec", "anyio")

_PROBE = """
import json, sys
import felix_client.cli
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in
    ('felix_core', 'felix_client', 'felix_proto', 'felix_server', 'felix_runtime', 'aioquic',
     'anyio'))))
"""


def test_importing_the_cli_loads_neither_the_engine_nor_the_quic_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"felix_client.cli imports {heavy}"


_COMPLETION_PROBE = """
import contextlib, io, json, sys
from felix_client import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = cli.main(["completion", sys.argv[1]])
assert code == 0 and "--fanout" in out.getvalue()  # bench's flags are in the script
print(json.dumps(sorted(sys.modules)))
"""

COMPLETION_HEAVY = (
    "felix_client.client",
    "felix_client.bench.command",
    "felix_core.broker",
    "felix_proto.codec",
    "aioquic",
    "anyio",
    "asyncio",
    "trio",
    "hdrh",
)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_loads_neither_the_client_nor_anyio_nor_aioquic(shell: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _COMPLETION_PROBE, shell],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    loaded = json.loads(out)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in COMPLETION_HEAVY)]
    assert heavy == [], f"felix completion {shell} imports {heavy}"


@pytest.mark.parametrize("package", ["felix_proto", "felix_core", "felix_client"])
def test_every_lazy_export_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name


def test_lazy_exports_are_the_defining_modules_objects() -> None:
    import felix_client
    import felix_core
    import felix_proto
    from felix_client.client import Client
    from felix_core.broker import Broker
    from felix_proto import events

    assert felix_client.Client is Client
    assert felix_core.Broker is Broker
    assert felix_proto.events is events
    assert felix_proto.messages is importlib.import_module("felix_proto.messages")


def test_parse_start_is_still_exported_by_the_cli() -> None:
    from felix_client import cli
    from felix_client._cli_commands import parse_start

    assert cli.parse_start is parse_start
    with pytest.raises(AttributeError):
        _ = cli.no_such_name  # type: ignore[attr-defined]
