"""``felix audit``: check a broker's audit trail and show its last entries.

::

    felix audit verify felix-data/audit            # every file of the trail, in order
    felix audit verify audit-000002.jsonl          # one file (its link to the one before
                                                   # is not checked)
    felix audit tail felix-data/audit -n 20        # the last 20 entries, one JSON per line

The format and the check live in :mod:`felix_runtime.audit` (imported only when an
``audit`` command runs). ``verify`` exits 0 when the trail checks out, 1 naming the first
line that does not (``FILE:LINE: problem``); usage errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["add_audit_commands", "run_audit_command"]


def add_audit_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``audit verify|tail`` on the ``felix`` subcommand parsers."""
    a = sub.add_parser("audit", help="the audit trail: verify its hash chain, show its tail")
    actions = a.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "verify",
        help="check the hash chain; name the first edited, removed, inserted or moved line",
        description="Check audit files in chain order (a directory stands for its "
        "audit-*.jsonl files). Exit 0 and print the entry count and the last hash, or exit "
        "1 and print FILE:LINE: problem for the first line that does not fit.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE", help="audit files or a directory")
    p = actions.add_parser(
        "tail",
        help="print the last entries of the trail",
        description="Print the last N entries (JSON lines) of an audit directory or file.",
    )
    p.add_argument("path", metavar="PATH", help="the audit directory (or one file)")
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="default 10")


def run_audit_command(args: argparse.Namespace) -> int:
    """Run a parsed ``felix audit ...`` command and return its exit code."""
    try:
        if args.audit_command == "verify":
            return _verify(args.paths)
        return _tail(Path(args.path), args.lines)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"felix: error: {name}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _verify(paths: list[str]) -> int:
    from felix_runtime.audit import Finding, verify

    result = verify(paths)
    if isinstance(result, Finding):
        print(f"felix audit: {result}", file=sys.stderr)
        return 1
    if result.entries == 0:
        print("felix audit: no entries", file=sys.stderr)
        return 1
    start = (
        f"chain {result.chain}"
        if result.chain
        else f"continues a chain from seq {result.first_seq} (earlier files not checked)"
    )
    print(f"ok: {result.entries} entries, {start}, last hash {result.head}")
    return 0


def _tail(path: Path, count: int) -> int:
    from felix_runtime.audit import audit_files

    files = audit_files(path) if path.is_dir() else [path]
    if not files:
        print(f"felix: error: {path}: no audit files", file=sys.stderr)
        return 1
    last: deque[str] = deque(maxlen=max(count, 0))
    for file in reversed(files):  # newest first, until enough lines are in hand
        with file.open(encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip("\n") for line in f]
        last.extendleft(reversed(lines[-count:] if count else []))
        if len(last) >= count:
            break
    for line in last:
        print(line)
    return 0
