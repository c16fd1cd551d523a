"""The command line.

``python -m conformance --server quic://HOST:PORT [--ca FILE | --insecure] [--token T]
[--tenant T --namespace N] [--other-token T --other-tenant T]
[--restricted-token T [--restricted-subject S]]
[-k EXPR] [--junit FILE]
[--quic-engine aioquic|qh3] [--list]`` runs the wire checks;
``python -m conformance vectors DECODED.json`` checks a third-party codec's decoded vectors
(see :mod:`conformance.vectors`). Exit codes: 0 all passed (skips allowed), 1 a check
failed, 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from conformance import checks
from conformance.context import Options
from conformance.engines import ENGINES
from conformance.registry import select
from conformance.runner import Outcome, Result, junit_xml, run_checks, summary_line
from conformance.wire import Endpoint

__all__ = ["main", "parse_server"]


def parse_server(url: str) -> tuple[str, int]:
    """``quic://HOST:PORT`` (or ``HOST:PORT``) -> ``(host, port)``.

    Raises:
        ValueError: no host or port.
    """
    parts = urlsplit(url if "://" in url else f"quic://{url}")
    if parts.scheme != "quic" or not parts.hostname or parts.port is None:
        raise ValueError(f"expected quic://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Black-box conformance checks of a Felix broker against "
        "docs/wire-protocol.md. Subcommand: 'vectors DECODED.json' checks a codec's "
        "decoded golden vectors.",
    )
    p.add_argument("--server", help="the broker, quic://HOST:PORT")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ca", metavar="FILE", help="CA certificate(s) that sign the broker's")
    tls.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--server-name", help="TLS server name (default: the host)")
    p.add_argument("--token", help="bearer token for Hello.token")
    p.add_argument(
        "--other-token",
        metavar="T",
        help="a token of another tenant (with --other-tenant): runs the auth checks (§5.6)",
    )
    p.add_argument("--other-tenant", metavar="TENANT", help="the tenant of --other-token")
    p.add_argument(
        "--restricted-token",
        metavar="T",
        help="a token of --tenant whose only permission is subscribe:NAMESPACE/ro-* (with "
        "--tenant and --namespace): runs the rbac checks (§5.6)",
    )
    p.add_argument(
        "--restricted-subject",
        metavar="S",
        help="the subject of --restricted-token: runs rbac.live-change, which binds a role "
        "to it with --token",
    )
    p.add_argument("--tenant", help="work in this tenant (default: a new one, deleted after)")
    p.add_argument("--namespace", help="work in this namespace (default: a new one)")
    p.add_argument(
        "-k",
        dest="select",
        metavar="EXPR",
        help="select checks: comma-separated substrings or globs; 'not X' excludes",
    )
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML results to FILE")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument(
        "--wait", type=float, default=3.0, help="seconds any single wait may take (default 3)"
    )
    p.add_argument(
        "--quic-engine",
        choices=ENGINES,
        default="aioquic",
        help="the client's QUIC engine (default aioquic; qh3 needs the qh3 package)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["vectors"]:
        from conformance.vectorcheck import main as vectors_main

        return vectors_main(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    chosen = select(checks.all_checks(), args.select)
    if args.list:
        for c in chosen:
            print(f"{c.name:34} {c.section:24} {c.summary}")
        print(f"{len(chosen)} checks")
        return 0
    if not args.server:
        parser.error("--server is required (or use --list, or the vectors subcommand)")
    if bool(args.tenant) != bool(args.namespace):
        parser.error("--tenant and --namespace go together")
    if bool(args.other_token) != bool(args.other_tenant):
        parser.error("--other-token and --other-tenant go together")
    if args.restricted_token and not args.tenant:
        parser.error("--restricted-token needs --tenant and --namespace (the token's own)")
    if args.restricted_subject and not args.restricted_token:
        parser.error("--restricted-subject goes with --restricted-token")
    try:
        host, port = parse_server(args.server)
    except ValueError as exc:
        parser.error(str(exc))
    options = Options(
        endpoint=Endpoint(
            host=host,
            port=port,
            cafile=args.ca,
            insecure=args.insecure,
            server_name=args.server_name,
            wait=args.wait,
            quic_engine=args.quic_engine,
        ),
        token=args.token,
        tenant=args.tenant,
        namespace=args.namespace,
        other_token=args.other_token,
        other_tenant=args.other_tenant,
        restricted_token=args.restricted_token,
        restricted_subject=args.restricted_subject,
    )

    def report(result: Result) -> None:
        print(result.line(), flush=True)

    results = asyncio.run(run_checks(chosen, options, report))
    print(summary_line(results))
    if args.junit:
        Path(args.junit).write_bytes(junit_xml(results))
    return 1 if any(r.outcome is Outcome.FAIL for r in results) else 0
