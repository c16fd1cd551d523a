"""``felix context``: add, select, list, show and remove named connection contexts.

::

    felix context add prod --server quic://felix.example.com:7447 --ca ca.pem \\
        --token - --tenant acme --use          # the token read from stdin
    felix context add mtls --server quic://felix.example.com:7447 --ca ca.pem \\
        --cert me.pem --cert-key me.key        # a client certificate (mutual TLS)
    felix context use prod
    felix context list                          # * marks the context commands use
    felix context show [NAME] [--show-token]
    felix context rm prod

The file and the precedence live in :mod:`felix_client._contexts`; this module is the
command line around them. A token is never printed unless ``--show-token`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ._contexts import CONTEXT_ENV, ConfigError, ConfigFile, Context, check_name
from ._url import parse_url

__all__ = ["add_context_commands", "load_config", "run_context_command"]

HIDDEN = "(hidden: --show-token prints it)"


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        "-o",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="output format (default: text)",
    )


def _show_token(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show-token", action="store_true", help="print tokens too")


def add_context_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``context add|use|list|show|rm`` on the ``felix`` subcommand parsers."""
    c = sub.add_parser(
        "context",
        help="named connection settings: add, use, list, show, rm",
        description="Contexts are named sets of connection settings kept in "
        "config.toml ($FELIX_CONFIG_DIR, else $XDG_CONFIG_HOME/felix, else ~/.config/felix). "
        "A command uses --context NAME, else $FELIX_CONTEXT, else the current context; "
        "each of its settings comes from a flag, else a FELIX_* variable, else that context.",
    )
    actions = c.add_subparsers(dest="context_command", metavar="ACTION", required=True)
    s = argparse.SUPPRESS

    p = actions.add_parser("add", help="add a context", description="Add a context.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--server", "-s", default=s, metavar="URL", help="broker URL")
    p.add_argument(
        "--ca",
        default=s,
        metavar="FILE",
        help="PEM certificate(s) to trust (stored as an absolute path)",
    )
    p.add_argument(
        "--insecure",
        "-k",
        action="store_true",
        default=s,
        help="do not verify the broker's certificate (development only)",
    )
    p.add_argument(
        "--cert",
        default=s,
        metavar="FILE",
        help="PEM client certificate for mutual TLS (with --cert-key; stored as an absolute path)",
    )
    p.add_argument(
        "--cert-key",
        default=s,
        metavar="FILE",
        help="the private key of --cert (stored as an absolute path)",
    )
    p.add_argument(
        "--token",
        default=s,
        help="bearer token; - reads it from stdin (keeps it out of shell history)",
    )
    p.add_argument("--tenant", default=s, help="default tenant")
    p.add_argument("--namespace", "-n", default=s, help="default namespace")
    p.add_argument(
        "--metrics", default=s, metavar="URL", help="the broker's /metrics URL, for felix top"
    )
    p.add_argument("--force", "-f", action="store_true", help="replace a context of that name")
    p.add_argument("--use", action="store_true", help="make it the current context")
    p.set_defaults(context_run=_add)

    p = actions.add_parser(
        "use", help="make a context the current one", description="Make a context the current one."
    )
    p.add_argument("name", metavar="CONTEXT")
    p.set_defaults(context_run=_use)

    p = actions.add_parser(
        "list",
        help="list the contexts (* marks the one commands use)",
        description="List the contexts; * marks the one commands use.",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="names only")
    _output(p)
    _show_token(p)
    p.set_defaults(context_run=_list)

    p = actions.add_parser(
        "show",
        help="show a context (default: the one commands use)",
        description="Show a context's settings.",
    )
    p.add_argument("name", metavar="CONTEXT", nargs="?")
    _output(p)
    _show_token(p)
    p.set_defaults(context_run=_show)

    p = actions.add_parser("rm", help="remove a context", description="Remove a context.")
    p.add_argument("name", metavar="CONTEXT")
    p.set_defaults(context_run=_rm)


def load_config(env: Mapping[str, str], err: TextIO | None = None) -> ConfigFile:
    """Read the config file; warn on ``err`` (stderr) if others may read a token in it.

    Raises:
        ConfigError: the file is not a valid config.
    """
    config = ConfigFile.load(env)
    if any(c.token for c in config.contexts.values()) and config.readable_by_others():
        print(
            f"felix: warning: {config.path} holds tokens and others can read it: "
            f"chmod 600 {config.path}",
            file=err or sys.stderr,
        )
    return config


def run_context_command(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run a parsed ``felix context ...`` command; return 0, or 1 after one error line."""
    env = os.environ if env is None else env
    out, err = out or sys.stdout, err or sys.stderr
    try:
        config = load_config(env, err)
        code: int = args.context_run(args, config, env, out, err)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"felix: error: {exc}", file=err)
        return 1
    return code


def _add(
    args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    name = check_name(args.name)
    if name in config.contexts and not args.force:
        raise ConfigError(f"context {name!r} exists: --force replaces it")
    values: dict[str, Any] = {}
    if hasattr(args, "server"):
        parse_url(args.server)  # ValueError: not a broker URL
        values["server"] = args.server
    if hasattr(args, "ca"):
        ca = Path(args.ca).expanduser()
        if not ca.is_file():
            raise ConfigError(f"CA file {args.ca!r} does not exist")
        values["ca"] = str(ca.resolve())
    if hasattr(args, "cert") != hasattr(args, "cert_key"):
        raise ConfigError("--cert and --cert-key go together")
    for key, flag in (("cert", "--cert"), ("cert_key", "--cert-key")):
        if hasattr(args, key):
            path = Path(getattr(args, key)).expanduser()
            if not path.is_file():
                raise ConfigError(f"{flag} file {getattr(args, key)!r} does not exist")
            values[key] = str(path.resolve())
    if hasattr(args, "token"):
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        if not token:
            raise ConfigError("empty token")
        values["token"] = token
    for key in ("insecure", "tenant", "namespace", "metrics"):
        if hasattr(args, key):
            values[key] = getattr(args, key)
    config.contexts[name] = Context(**values)
    if args.use:
        config.current = name
    config.save()
    print(f"added context {name}" + (" (current)" if args.use else ""), file=out)
    return 0


def _use(
    args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    config.get(args.name)
    config.current = args.name
    config.save()
    print(f"current context: {args.name}", file=out)
    chosen = env.get(CONTEXT_ENV)
    if chosen and chosen != args.name:
        print(f"felix: note: {CONTEXT_ENV}={chosen} overrides it in this shell", file=err)
    return 0


def _selected(args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str]) -> str | None:
    chosen = config.selected(getattr(args, "context", None), env)
    return chosen[0] if chosen else None


def _record(
    name: str, context: Context, current: bool, show_token: bool
) -> dict[str, str | bool | None]:
    """A context as JSON: ``token`` only with ``--show-token``, ``token_set`` always."""
    record: dict[str, str | bool | None] = {"name": name, "current": current}
    for key, value in context.items().items():
        if key != "token" or show_token:
            record[key] = value
    record["token_set"] = context.token is not None
    return record


def _list(
    args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    try:
        current = _selected(args, config, env)
    except ConfigError as exc:
        print(f"felix: warning: {exc}", file=err)
        current = None
    names = sorted(config.contexts)
    if args.quiet:
        out.writelines(f"{n}\n" for n in names)
        return 0
    if getattr(args, "output", "text") == "json":
        records = [_record(n, config.contexts[n], n == current, args.show_token) for n in names]
        out.write(json.dumps(records, separators=(",", ":")) + "\n")
        return 0
    if not names:
        print("(no contexts: felix context add NAME --server URL ...)", file=out)
        return 0
    header = ["CURRENT", "NAME", "SERVER", "TENANT", "NAMESPACE", "TOKEN"]
    rows = [header]
    for n in names:
        c = config.contexts[n]
        token = "-" if c.token is None else (c.token if args.show_token else "(hidden)")
        rows.append(
            [
                "*" if n == current else "",
                n,
                c.server or "-",
                c.tenant or "-",
                c.namespace or "-",
                token,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


def _show(
    args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    current = _selected(args, config, env)
    name = args.name or current
    if name is None:
        raise ConfigError("no context selected: felix context show NAME, or felix context use")
    context = config.get(name)
    record = _record(name, context, name == current, args.show_token)
    if getattr(args, "output", "text") == "json":
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        return 0
    for key, value in record.items():
        if key == "token_set":
            if value and not args.show_token:
                out.write(f"token: {HIDDEN}\n")
            continue
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        out.write(f"{key}: {text}\n")
    return 0


def _rm(
    args: argparse.Namespace, config: ConfigFile, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    config.get(args.name)
    del config.contexts[args.name]
    if config.current == args.name:
        config.current = None
    config.save()
    print(f"removed context {args.name}", file=out)
    return 0
