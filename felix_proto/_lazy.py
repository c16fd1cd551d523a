"""PEP 562 lazy exports for package ``__init__`` modules.

A package lists what it exports as ``{module: names}``; :func:`lazy_getattr` returns the
module-level ``__getattr__`` that imports an export's module on first use. The ``felix``
CLI imports ``felix_client``, which imports ``felix_proto.errors``: with eager package
``__init__``\\ s that pulled in the codec, the engine and the TLS stack for every command,
``felix --version`` included. Each package keeps the same imports under ``TYPE_CHECKING``,
so mypy sees every export with its type.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``exports`` maps a module to the names the package
    takes from it; a name that is the module's own last part (``"felix_proto.events":
    ("events",)``) exports the submodule itself. The value found is cached in the package's
    namespace, so the hook runs once per name."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"{package}.{name}" else getattr(loaded, name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
