"""CLI contexts: named sets of connection settings in ``config.toml``, and the precedence
that combines them with flags and the environment.

Theory of operation. The file lives in :func:`config_dir` (``$FELIX_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/felix``, else ``~/.config/felix``) and looks like::

    current = "prod"

    [contexts.prod]
    server = "quic://felix.example.com:7447"
    ca = "/home/me/felix/ca.pem"
    cert = "/home/me/felix/me.pem"
    cert_key = "/home/me/felix/me.key"
    token = "eyJ..."
    tenant = "acme"

It is read with :mod:`tomllib` into a :class:`ConfigFile` (strictly: an unknown key or a
value of the wrong type is a :class:`ConfigError` naming the file, so a typo such as
``sever =`` does not silently fall back to a default) and written back by
:func:`dump_toml`, a writer for exactly this shape (strings and booleans in named tables),
through a temporary file renamed over the old one with mode 0600: the file can hold
bearer tokens, and a reader never sees half a file.

:func:`resolve` is the precedence, one setting at a time: an explicit flag, else the
``FELIX_*`` environment variable, else the selected context, else the built-in default.
It is pure (the flags, the environment and the context are arguments), and it says where
each value came from so that errors can name the layer to fix. The client certificate and
its key (``cert``, ``cert_key``) resolve as a pair: both come from the first layer that
sets either, so a flag's certificate is never matched with a context's key.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._url import DEFAULT_URL

__all__ = [
    "CONFIG_NAME",
    "CONTEXT_ENV",
    "DEFAULT_METRICS_URL",
    "SETTINGS",
    "ConfigError",
    "ConfigFile",
    "Context",
    "Resolved",
    "check_name",
    "config_dir",
    "dump_toml",
    "parse_bool",
    "resolve",
]

CONFIG_NAME = "config.toml"
CONTEXT_ENV = "FELIX_CONTEXT"
"""Selects a context for one shell (between ``--context`` and ``current`` in the file)."""
CONFIG_DIR_ENV = "FELIX_CONFIG_DIR"
DEFAULT_METRICS_URL = "http://127.0.0.1:8080/metrics"
"""Where ``felix top`` scrapes when nothing else says (the broker's default ``--metrics``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """The config file cannot be read or written, or names a context that is not in it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """One named context: the settings it fixes (``None``: not set by this context)."""

    server: str | None = None
    """Broker URL, as ``--server``."""
    ca: str | None = None
    """CA certificate file (an absolute path), as ``--ca``."""
    insecure: bool | None = None
    """Skip certificate verification, as ``--insecure``."""
    cert: str | None = None
    """Client certificate file for mutual TLS (an absolute path), as ``--cert``."""
    cert_key: str | None = None
    """The private key file of ``cert`` (an absolute path), as ``--cert-key``."""
    token: str | None = None
    """Bearer token, as ``--token``. Never printed without ``--show-token``."""
    tenant: str | None = None
    """Default tenant, as ``--tenant``."""
    namespace: str | None = None
    """Default namespace, as ``--namespace``."""
    metrics: str | None = None
    """The broker's ``/metrics`` URL, for ``felix top``."""

    def items(self) -> dict[str, str | bool]:
        """The settings this context fixes, in field order."""
        out: dict[str, str | bool] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out


SETTINGS: dict[str, tuple[str, str | bool | None]] = {
    "server": ("FELIX_SERVER", DEFAULT_URL),
    "ca": ("FELIX_CA", None),
    "insecure": ("FELIX_INSECURE", False),
    "cert": ("FELIX_CERT", None),
    "cert_key": ("FELIX_CERT_KEY", None),
    "token": ("FELIX_TOKEN", None),
    "tenant": ("FELIX_TENANT", None),  # None: the token's tenant, else "default"
    "namespace": ("FELIX_NAMESPACE", "default"),
    "metrics": ("FELIX_METRICS", DEFAULT_METRICS_URL),
}
"""Each context setting: its environment variable and its built-in default."""

PAIRS = (("cert", "cert_key"),)
"""Settings that resolve together, from the first layer that sets either of them."""

_TYPES: dict[str, type] = {f.name: bool if f.name == "insecure" else str for f in fields(Context)}


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid context name (1-64 of ``A-Z a-z 0-9 _ . -``, not
    starting with a punctuation mark).

    Raises:
        ConfigError: it is not.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"invalid context name {name!r}: 1-64 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


def parse_bool(text: str, what: str) -> bool:
    """``1 true yes on`` / ``0 false no off`` (any case) as a bool.

    Raises:
        ConfigError: anything else.
    """
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what}={text!r}: expected true or false (1/0, yes/no, on/off)")


def config_dir(env: Mapping[str, str]) -> Path | None:
    """Where ``config.toml`` lives: ``$FELIX_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/felix``,
    else ``$HOME/.config/felix``; ``None`` when the environment names no home at all."""
    if env.get(CONFIG_DIR_ENV):
        return Path(env[CONFIG_DIR_ENV])
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "felix"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "felix"
    return None


@dataclass(slots=True)
class ConfigFile:
    """The contexts of one ``config.toml`` and the one marked current."""

    path: Path | None
    """The file (``None``: no config directory; nothing can be saved)."""
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None
    """The name in the file's ``current`` key."""

    @classmethod
    def load(cls, env: Mapping[str, str]) -> ConfigFile:
        """Read the file :func:`config_dir` names (a missing file is an empty config).

        Raises:
            ConfigError: it is not valid TOML, or not a valid Felix config.
        """
        folder = config_dir(env)
        path = folder / CONFIG_NAME if folder is not None else None
        if path is None:
            return cls(None)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            return cls(path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cls.from_toml(path, data)

    @classmethod
    def from_toml(cls, path: Path | None, data: Mapping[str, Any]) -> ConfigFile:
        """Check and convert a parsed file.

        Raises:
            ConfigError: an unknown key, a value of the wrong type, or a bad context name.
        """
        where = str(path) if path is not None else "config"
        unknown = set(data) - {"current", "contexts"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        current = data.get("current")
        if current is not None and not isinstance(current, str):
            raise ConfigError(f"{where}: current must be a string")
        tables = data.get("contexts", {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{where}: contexts must be a table of [contexts.NAME] tables")
        contexts: dict[str, Context] = {}
        for name, table in tables.items():
            try:
                check_name(name)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: contexts.{name} must be a table")
            values: dict[str, Any] = {}
            for key, value in table.items():
                kind = _TYPES.get(key)
                if kind is None:
                    raise ConfigError(
                        f"{where}: unknown setting {key!r} in context {name!r} "
                        f"(known: {', '.join(_TYPES)})"
                    )
                if not isinstance(value, kind):
                    raise ConfigError(
                        f"{where}: contexts.{name}.{key} must be a {kind.__name__}, "
                        f"not {type(value).__name__}"
                    )
                values[key] = value
            contexts[name] = Context(**values)
        return cls(path, contexts, current)

    def get(self, name: str) -> Context:
        """The context called ``name``.

        Raises:
            ConfigError: there is none.
        """
        try:
            return self.contexts[name]
        except KeyError:
            raise ConfigError(f"there is {self._missing(name)}") from None

    def selected(self, flag: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
        """The context a command uses and what selected it: ``--context`` (``flag``), else
        ``$FELIX_CONTEXT``, else the file's ``current``; ``None`` when nothing does.

        Raises:
            ConfigError: the selected name is not in the file.
        """
        for name, source in (
            (flag, "--context"),
            (env.get(CONTEXT_ENV), CONTEXT_ENV),
            (self.current, f"current in {self.path}"),
        ):
            if name:
                if name not in self.contexts:
                    raise ConfigError(f"{source} names {self._missing(name)}")
                return name, source
        return None

    def _missing(self, name: str) -> str:
        known = ", ".join(sorted(self.contexts)) or "none"
        return f"no context {name!r} (known: {known})"

    def save(self) -> None:
        """Write the file atomically (a temporary file in the same directory, renamed over
        it) with mode 0600; the directory is created with mode 0700 if missing.

        Raises:
            ConfigError: there is no config directory, or the write failed.
        """
        if self.path is None:
            raise ConfigError("no config directory: set HOME, XDG_CONFIG_HOME or FELIX_CONFIG_DIR")
        text = dump_toml(self.current, {n: c.items() for n, c in self.contexts.items()})
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)  # mkstemp makes it 0600 already; say so
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc}") from None

    def readable_by_others(self) -> bool:
        """Whether the file exists and its mode lets group or others read it."""
        if self.path is None:
            return False
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return False
        return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


# ------------------------------------------------------------------------------ TOML


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one (``A-Z a-z 0-9 _ -``), else a quoted one."""
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _toml_string(value)


def dump_toml(current: str | None, contexts: Mapping[str, Mapping[str, str | bool]]) -> str:
    """The text of a config file: a header comment, ``current``, then one
    ``[contexts.NAME]`` table per context with its string and boolean settings (names and
    keys are quoted when they are not bare TOML keys).

    ``tomllib.loads(dump_toml(c, t))`` gives back ``{"current": c, "contexts": t}``
    (without ``current`` when it is ``None``) for any strings: the tests check it.
    """
    lines = [
        "# Felix CLI contexts: felix context add|use|list|show|rm (docs/client.md).",
        "# Written by felix with mode 0600: it may hold bearer tokens.",
    ]
    if current is not None:
        lines.append(f"current = {_toml_string(current)}")
    for name, settings in contexts.items():
        lines.append("")
        lines.append(f"[contexts.{_toml_key(name)}]")
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in settings.items())
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ precedence


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """One setting's value and the layer it came from."""

    value: Any
    source: str
    """``flag``, ``env FELIX_...``, ``context NAME`` or ``default``."""


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    context: tuple[str, Context] | None,
) -> dict[str, Resolved]:
    """Every setting of :data:`SETTINGS`: the explicit flag, else the environment variable
    (an empty one counts as unset), else the context, else the default.

    Args:
        flags: the settings given on the command line (absent keys were not given).
        env: the environment.
        context: the selected context and its name, if any.

    Raises:
        ConfigError: ``FELIX_INSECURE`` is not a boolean.
    """
    out: dict[str, Resolved] = {}
    for name, (variable, default) in SETTINGS.items():
        if name in flags:
            out[name] = Resolved(value=flags[name], source="flag")
        elif env.get(variable):
            text = env[variable]
            value: Any = parse_bool(text, variable) if name == "insecure" else text
            out[name] = Resolved(value=value, source=f"env {variable}")
        elif context is not None and getattr(context[1], name) is not None:
            out[name] = Resolved(value=getattr(context[1], name), source=f"context {context[0]}")
        else:
            out[name] = Resolved(value=default, source="default")
    for pair in PAIRS:  # the layer that sets either one sets both
        layer = min(_layer(out[name].source) for name in pair)
        for name in pair:
            if _layer(out[name].source) != layer:
                top = next(n for n in pair if _layer(out[n].source) == layer)
                out[name] = Resolved(value=SETTINGS[name][1], source=out[top].source)
    return out


def _layer(source: str) -> int:
    """The rank of a :class:`Resolved` source's layer (0: a flag)."""
    return _LAYERS.index(source.split(" ", maxsplit=1)[0])


_LAYERS = ("flag", "env", "context", "default")
"""The layers of :func:`resolve`, first one first."""
