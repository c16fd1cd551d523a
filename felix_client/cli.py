"""The ``felix`` command: publish, subscribe, queues, cache and admin from the shell.

In the style of the ``nats`` CLI and ``redis-cli``::

    felix pub orders "hello"                 # one message
    seq 10 | felix pub orders                # one message per stdin line
    felix pub orders --count 100000 --size 100 --rate 20000
    felix sub orders --from earliest --count 10
    felix queue push jobs "resize 42"
    felix queue consume jobs --count 1
    felix cache put sessions alice 42 --ttl 60
    felix cache get sessions alice
    felix admin create stream orders --set retention_max_records=100000
    felix admin role create reader --allow 'subscribe:default/*'
    felix admin binding create ci-reads --role reader --subject ci
    felix broker                             # the broker (also: felix-broker)
    felix top                                # live view of the broker's /metrics
    felix context add prod --server quic://prod:7447 --use
    felix login --id-token /var/run/secrets/tokens/felix --save token.txt
    felix completion bash                    # also zsh, fish
    felix --version

Common flags (anywhere on the line): ``--server`` (``FELIX_SERVER``), ``--ca`` / ``--insecure``,
``--cert`` / ``--cert-key`` (``FELIX_CERT``, ``FELIX_CERT_KEY``: mutual TLS),
``--token`` (``FELIX_TOKEN``), ``--tenant``, ``--namespace``, ``--context``, ``--output
text|json``, ``--timeout``, ``--loop``, ``--quic-engine`` (``FELIX_QUIC_ENGINE``). Each
setting comes from its flag, else its ``FELIX_*`` variable, else the selected context, else
the default (:mod:`felix_client._contexts`). Expected errors print one line on stderr and
exit 1 (2 for usage errors, 130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from ._audit_cli import add_audit_commands, run_audit_command
from ._completion import SHELLS, command_tree, render
from ._context_cli import add_context_commands, load_config, run_context_command
from ._contexts import DEFAULT_METRICS_URL, SETTINGS, ConfigError, resolve
from ._log_cli import add_log_commands, run_log_command
from ._rbac_cli import add_rbac_commands
from ._token_cli import add_token_commands, run_token_command
from ._url import DEFAULT_URL, parse_url
from .errors import FelixError

if TYPE_CHECKING:
    from ._cli_commands import parse_start

# The QUIC client (felix_client.client, aioquic, the TLS stack) is imported only by the
# commands that connect: --version, --help, token, log, audit, context and completion start
# without it (tests/client/test_cli_startup.py).

__all__ = ["broker_main", "build_parser", "main", "parse_start"]

PROG = "felix"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_COMMON_DEFAULTS: dict[str, Any] = {
    "output": "text",
    "timeout": 10.0,
    "loop": "asyncio",
    "quic_engine": None,  # the client's default: $FELIX_QUIC_ENGINE, else aioquic
}


def _common(parser: argparse.ArgumentParser) -> None:
    """Add the common flags; defaults are SUPPRESSed so a flag works before or after the
    subcommand (the real defaults are filled in by :func:`_finish`)."""
    g = parser.add_argument_group("connection and output")
    s = argparse.SUPPRESS
    g.add_argument(
        "--server",
        "-s",
        default=s,
        metavar="URL",
        help=f"broker URL (env FELIX_SERVER; default {DEFAULT_URL})",
    )
    g.add_argument(
        "--ca",
        default=s,
        metavar="FILE",
        help="PEM certificate(s) to trust, e.g. the broker's self-signed cert (env FELIX_CA)",
    )
    g.add_argument(
        "--insecure",
        "-k",
        action="store_true",
        default=s,
        help="do not verify the broker's certificate (development only; env FELIX_INSECURE)",
    )
    g.add_argument(
        "--no-insecure",
        dest="insecure",
        action="store_false",
        default=s,
        help="verify the certificate even if the context or FELIX_INSECURE says not to",
    )
    g.add_argument(
        "--cert",
        default=s,
        metavar="FILE",
        help="PEM client certificate for mutual TLS (env FELIX_CERT; with --cert-key)",
    )
    g.add_argument(
        "--cert-key",
        default=s,
        metavar="FILE",
        help="the private key of --cert (env FELIX_CERT_KEY)",
    )
    g.add_argument("--token", default=s, help="bearer token (env FELIX_TOKEN)")
    g.add_argument(
        "--tenant",
        default=s,
        help="tenant (env FELIX_TENANT; default: the one the broker assigned to the "
        "credential, else the token's, else default)",
    )
    g.add_argument(
        "--namespace", "-n", default=s, help="namespace (env FELIX_NAMESPACE; default: default)"
    )
    g.add_argument(
        "--context",
        default=s,
        metavar="CONTEXT",
        help="the context to take settings from (env FELIX_CONTEXT; default: the current one)",
    )
    g.add_argument(
        "--output", "-o", choices=("text", "json"), default=s, help="output format (default: text)"
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="per-request timeout (default: 10)",
    )
    g.add_argument(
        "--loop",
        choices=("asyncio", "trio"),
        default=s,
        help="event loop the client runs on (default: asyncio)",
    )
    g.add_argument(
        "--quic-engine",
        choices=("aioquic", "qh3"),
        default=s,
        help="QUIC implementation (env FELIX_QUIC_ENGINE; default: aioquic; qh3 needs felix[qh3])",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``felix`` (every subcommand but ``broker``'s own flags)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Felix command-line client: streams, queues, cache and admin.",
        epilog="Run 'felix COMMAND --help' for a command's options. "
        "'felix broker --help' shows the broker's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        _common(p)
        return p

    p = sub.add_parser(
        "broker", help="run a broker (all further arguments go to it)", add_help=False
    )
    p.add_argument("--runtime", choices=("asyncio", "anyio"), default="asyncio")
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("broker_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("bench", help="measure a broker (felix bench --help)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)

    p = cmd("pub", "publish to a stream (a message, stdin lines, or a generated load)")
    p.add_argument("stream")
    p.add_argument("message", nargs="?", help="the payload; without it, one per stdin line")
    p.add_argument("--count", "-c", type=_positive_int, help="publish this many messages")
    p.add_argument("--size", type=_positive_int, help="generated payload size in bytes")
    p.add_argument("--rate", type=float, help="at most this many messages per second")
    p.add_argument("--key", help="record key")
    p.add_argument("--header", "-H", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--ack", choices=("none", "accepted", "committed"), default="accepted")
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=512,
        help="max records per batch for --count and stdin (default 512)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")

    p = cmd("sub", "subscribe to a stream and print its events")
    p.add_argument("stream")
    p.add_argument(
        "--from",
        dest="start",
        default="latest",
        metavar="WHERE",
        help="earliest, latest (default), an OFFSET, an ISO time, or an age like 5m / 2h / 30s",
    )
    p.add_argument("--count", "-c", type=_positive_int, help="exit after this many events")
    p.add_argument(
        "--cache-feed", action="store_true", help="follow the change feed of the cache named STREAM"
    )
    p.add_argument(
        "--idle", type=float, metavar="SECONDS", help="exit when no event arrives for this long"
    )
    p.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="do not print events (with --stats, for load tests)",
    )
    p.add_argument("--stats", action="store_true", help="print a rate line on stderr")

    q = sub.add_parser("queue", help="queues: push, consume").add_subparsers(
        dest="queue_command", metavar="ACTION", required=True
    )
    p = cmd("push", "append messages to a queue", q)
    p.add_argument("queue")
    p.add_argument("message", nargs="?", help="the payload; without it, one per stdin line")
    p = cmd("consume", "take messages from a queue, print and ack them", q)
    p.add_argument("queue")
    p.add_argument("--group", "-g", default="default")
    p.add_argument("--count", "-c", type=_positive_int, help="exit after this many messages")
    p.add_argument("--prefetch", type=_positive_int, default=16)
    p.add_argument(
        "--idle", type=float, metavar="SECONDS", help="exit when no message arrives for this long"
    )
    p.add_argument("--nack", action="store_true", help="nack instead of ack (redeliver)")
    p.add_argument(
        "--ack",
        choices=("accepted", "committed"),
        default="accepted",
        help="committed: wait until each ack is on disk (durable queue) before the next message",
    )

    c = sub.add_parser("cache", help="cache: put, get, del").add_subparsers(
        dest="cache_command", metavar="ACTION", required=True
    )
    p = cmd("put", "store a value", c)
    p.add_argument("cache")
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value (stdin when omitted)")
    p.add_argument(
        "--ttl",
        type=float,
        metavar="SECONDS",
        help="time to live (0: forever; a positive TTL is at least 1 ms)",
    )
    p.add_argument(
        "--if-absent",
        action="store_true",
        help="only if the key has no value (not with --if-version)",
    )
    p.add_argument(
        "--if-version",
        type=int,
        metavar="V",
        help="only if at version V (CAS; not with --if-absent)",
    )
    p = cmd("get", "read a value", c)
    p.add_argument("cache")
    p.add_argument("key")
    p = cmd("del", "delete a value", c)
    p.add_argument("cache")
    p.add_argument("key")
    p.add_argument("--if-version", type=int, metavar="V", help="only if at version V")

    a = sub.add_parser(
        "admin", help="manage tenants, namespaces, streams, queues, caches, roles, bindings"
    )
    a_sub = a.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    kinds = ("tenant", "namespace", "stream", "queue", "cache")
    for action, text in (
        ("create", "create a resource"),
        ("describe", "describe a resource"),
        ("update", "change settings"),
        ("delete", "delete a resource"),
    ):
        p = cmd(action, text, a_sub)
        p.add_argument("kind", choices=kinds)
        p.add_argument("name")
        if action in ("create", "update"):
            p.add_argument(
                "--set",
                dest="settings",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="a setting (repeatable)",
            )
    p = cmd("list", "list resources of a kind", a_sub)
    p.add_argument("kind", choices=kinds)
    add_rbac_commands(a_sub, cmd)
    p = cmd("top", "a live view of a broker from its /metrics (needs felix[top])")
    p.add_argument(
        "--metrics",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"the broker's metrics URL or HOST:PORT (env FELIX_METRICS, else the context's; "
        f"default {DEFAULT_METRICS_URL})",
    )
    p.add_argument(
        "--interval",
        "-i",
        type=_positive_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between scrapes (default 2)",
    )
    p.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="rows per table (default 20)"
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="scrape twice --interval apart, print one frame and exit",
    )
    p = cmd("login", "exchange an identity token (OIDC, Kubernetes) for a Felix token")
    p.add_argument(
        "--id-token",
        required=True,
        metavar="FILE",
        help="the file holding the identity token ('-': stdin)",
    )
    p.add_argument(
        "--save", metavar="PATH", help="write the Felix token to PATH (mode 0600), not stdout"
    )
    add_token_commands(sub)
    add_audit_commands(sub)
    add_log_commands(sub)
    add_context_commands(sub)
    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of felix and felix-broker for a shell "
        "(how to install it is in the script's first lines).",
    )
    p.add_argument("shell", choices=SHELLS)
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


_NO_CONTEXT = frozenset({"token", "audit"})
"""Commands whose settings skip the context layer (``token`` commands use ``--tenant`` and
``TOKEN`` as their own; ``context`` and ``completion`` resolve no settings at all:
``context add`` stores exactly the flags it is given; ``audit`` reads local files only)."""


def _finish(args: argparse.Namespace, env: dict[str, str]) -> argparse.Namespace:
    """Fill the settings, each from its flag, else its ``FELIX_*`` variable, else the
    selected context, else the default (:func:`felix_client._contexts.resolve`); check the
    URL and the CA file. ``args.sources`` says where each setting came from.

    Raises:
        ValueError: a malformed server URL or a missing CA file.
        ConfigError: the config file is invalid or the selected context does not exist.
    """
    for name, default in _COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.command in ("context", "completion"):
        return args
    flags = {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
    context = None
    if args.command not in _NO_CONTEXT:
        config = load_config(env)
        chosen = config.selected(getattr(args, "context", None), env)
        if chosen is not None:
            context = (chosen[0], config.contexts[chosen[0]])
    settings = resolve(flags, env, context)
    for name, setting in settings.items():
        setattr(args, name, setting.value)
    args.sources = {name: setting.source for name, setting in settings.items()}
    try:
        parse_url(args.server)
    except ValueError as exc:
        raise ValueError(f"{exc}{_origin(settings['server'].source)}") from None
    if args.ca and not os.path.isfile(args.ca):
        where = _origin(settings["ca"].source)
        raise ValueError(f"CA file {args.ca!r}{where} does not exist")
    where = _origin(settings["cert"].source)  # the pair's one source
    if bool(args.cert) != bool(args.cert_key):
        raise ValueError(f"--cert and --cert-key go together{where}")
    for flag, path in (("--cert", args.cert), ("--cert-key", args.cert_key)):
        if path and not os.path.isfile(path):
            raise ValueError(f"{flag} file {path!r}{where} does not exist")
    return args


def _origin(source: str) -> str:
    return "" if source == "flag" else f" (from {source})"


def parse_args(argv: Sequence[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse a ``felix`` command line (without the program name).

    Raises:
        SystemExit: bad usage (argparse prints the message) or ``--help``.
        ValueError: a malformed ``--server`` URL or a missing ``--ca`` file.
    """
    args = build_parser().parse_args(list(argv))
    return _finish(args, dict(os.environ) if env is None else env)


def error_line(exc: BaseException) -> str:
    """The one line printed on stderr for an expected error."""
    if isinstance(exc, FelixError):
        text = str(exc)
        low = text.lower()
        if "client certificate" in low:  # the broker refused ours (mutual TLS)
            text += " (--cert FILE --cert-key FILE: a certificate of the broker's client CA)"
        elif "certificate" in low or "verify" in low:
            text += " (pass --ca FILE with the broker's certificate, or --insecure)"
        return f"{PROG}: error: {text}"
    return f"{PROG}: error: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``felix``. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "broker":
        return broker_main(argv[1:])
    if argv and argv[0] == "bench":
        try:
            from .bench import main as bench_main
        except ImportError as exc:  # the bench extra is not installed
            print(f"{PROG}: error: {exc} (pip install 'felix[bench]')", file=sys.stderr)
            return EXIT_ERROR
        return bench_main(argv[1:])
    # aioquic logs connection errors on the "quic" logger; the CLI reports them itself.
    logging.getLogger("quic").addHandler(logging.NullHandler())
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "token":
        return run_token_command(args)
    if args.command == "log":
        return run_log_command(args)
    if args.command == "audit":
        return run_audit_command(args)
    if args.command == "context":
        return run_context_command(args)
    if args.command == "completion":
        sys.stdout.write(completion_script(args.shell))
        return 0
    if args.command == "top":
        from ._top import run_top

        return run_top(args)
    return _run_connected(args)


def _run_connected(args: argparse.Namespace) -> int:
    """Run a command that talks to a broker (the only path that imports the client)."""
    import anyio

    from ._cli_commands import COMMANDS
    from ._login_cli import cmd_login
    from ._rbac_cli import RBAC_COMMANDS

    command: Callable[[argparse.Namespace], Awaitable[int]]
    if args.command == "login":
        command = cmd_login
    else:
        key = _command_key(args)
        command = RBAC_COMMANDS[key] if key in RBAC_COMMANDS else COMMANDS[key]
    try:
        result: int = anyio.run(command, args, backend=args.loop)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (FelixError, ValueError, OSError) as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    return result


def completion_script(shell: str) -> str:
    """The completion script of ``felix`` and ``felix-broker`` for ``shell``, generated
    from :func:`build_parser` with the broker runtime's own flags under ``broker`` and
    ``felix bench``'s scenarios and flags under ``bench``."""
    from felix_server.config import build_parser as broker_parser

    from .bench.parser import build_parser as bench_parser  # light: no client, no extra

    merge: dict[tuple[str, ...], argparse.ArgumentParser] = {
        ("broker",): broker_parser(),
        ("bench",): bench_parser(),
    }
    tree = command_tree(build_parser(), merge)
    return render(shell, tree, __version__)


def _command_key(args: argparse.Namespace) -> str:
    sub = {"queue": "queue_command", "cache": "cache_command", "admin": "admin_command"}
    if args.command in sub:
        return f"{args.command} {getattr(args, sub[args.command])}"
    return str(args.command)


def broker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``felix-broker`` and ``felix broker``: run a broker.

    ``--runtime asyncio`` (default) runs :func:`felix_runtime_asyncio.main`; ``--runtime
    anyio --backend asyncio|trio`` runs :func:`felix_runtime_anyio.main`. Every other
    argument is passed on to the runtime.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv:  # answered here: the runtime's own parser has no --version
        print(f"felix-broker {__version__}")
        return 0
    pre = argparse.ArgumentParser(
        prog="felix broker",
        add_help=False,
        description="Runtime selection (the options below it are the runtime's own):",
    )
    pre.add_argument(
        "--runtime",
        choices=("asyncio", "anyio"),
        default="asyncio",
        help="the event-loop adapter (default asyncio)",
    )
    pre.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="with --runtime anyio: the loop anyio runs on (default asyncio)",
    )
    pre.add_argument("--version", action="store_true", help="print the version and exit")
    try:
        known, rest = pre.parse_known_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if "-h" in rest or "--help" in rest:
        print(pre.format_help())
    if known.runtime == "asyncio":
        if known.backend != "asyncio":
            print(
                f"{PROG}: error: --backend {known.backend} needs --runtime anyio", file=sys.stderr
            )
            return EXIT_USAGE
        module = "felix_runtime_asyncio"
    else:
        module = "felix_runtime_anyio"
        rest = ["--backend", known.backend, *rest]
    runtime = importlib.import_module(module)
    run = getattr(runtime, "main", None)
    if run is None:
        print(f"{PROG}: error: the {known.runtime} runtime is not available yet", file=sys.stderr)
        return EXIT_ERROR
    code = run(rest)
    return int(code or 0)


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """``parse_start`` stays importable from here without loading the client eagerly."""
        if name == "parse_start":
            from ._cli_commands import parse_start

            return parse_start
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
