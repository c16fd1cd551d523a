"""``felix audit``: check a broker's audit trail and show its last entries.

::

    felix audit verify felix-data/audit            # every file of the trail, in order
    felix audit verify audit-000002.jsonl --start HASH   # one file, continuing from HASH
    felix audit verify felix-data/audit --anchor SEQ:HASH  # and it still holds that head
    felix audit head felix-data/audit              # the head to keep elsewhere (JSON)
    felix audit tail felix-data/audit -n 20        # the last 20 entries, one JSON per line
    felix audit tail felix-data/audit --follow     # then each new entry as it is written

The format and the check live in :mod:`felix_runtime.audit` (imported only when an
``audit`` command runs). ``verify`` exits 0 when the trail checks out, 1 naming the first
line that does not (``FILE:LINE: problem``); usage errors exit 2. ``head`` verifies the
trail too, then prints ``{"anchor": "SEQ:HASH", "seq", "hash", "entries", "chain"}``;
``verify --anchor`` with that ``anchor`` later detects lines cut off the end, which the
hash chain alone cannot. ``tail --follow`` polls
the trail every ``--interval`` seconds, at most :data:`FOLLOW_CHUNK` bytes a poll, moves on
to the next numbered file when the writer rotates, and exits 0 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from felix_runtime.audit import Verified

__all__ = ["FOLLOW_CHUNK", "Follower", "add_audit_commands", "run_audit_command"]

FOLLOW_CHUNK = 1 << 20
"""The most ``tail --follow`` reads from the trail in one poll."""
_sleep = time.sleep


def add_audit_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``audit verify|head|tail`` on the ``felix`` subcommand parsers."""
    a = sub.add_parser(
        "audit", help="the audit trail: verify its hash chain, print its head, show its tail"
    )
    actions = a.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "verify",
        help="check the hash chain; name the first edited, removed, inserted or moved line",
        description="Check audit files in chain order (a directory stands for its "
        "audit-*.jsonl files). Exit 0 and print the entry count and the last hash, or exit "
        "1 and print FILE:LINE: problem for the first line that does not fit.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE", help="audit files or a directory")
    p.add_argument(
        "--start",
        metavar="HASH",
        help="the trail's first line continues from HASH (the last hash of earlier files "
        "archived elsewhere) instead of chain_start or a retention cut",
    )
    p.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head kept elsewhere (felix audit head, or the broker's 'audit head' log): "
        "the trail must still hold it; detects lines cut off the end",
    )
    p = actions.add_parser(
        "head",
        help="verify the trail and print its head (an anchor to keep elsewhere)",
        description="Verify the trail, then print one JSON line: anchor (SEQ:HASH, for "
        "verify --anchor), seq, hash, entries and chain. Exit 1 if it does not verify.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE", help="audit files or a directory")
    p.add_argument("--start", metavar="HASH", help="as for verify")
    p = actions.add_parser(
        "tail",
        help="print the last entries of the trail",
        description="Print the last N entries (JSON lines) of an audit directory or file.",
    )
    p.add_argument("path", metavar="PATH", help="the audit directory (or one file)")
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="default 10")
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then print each new entry as it is written, across rotations, until Ctrl-C",
    )
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=0.5,
        metavar="SECONDS",
        help="with --follow: seconds between polls of the trail (default 0.5)",
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def run_audit_command(args: argparse.Namespace) -> int:
    """Run a parsed ``felix audit ...`` command and return its exit code."""
    try:
        if args.audit_command == "verify":
            return _verify(args.paths, args.start, args.anchor)
        if args.audit_command == "head":
            return _head(args.paths, args.start)
        return _tail(Path(args.path), args.lines, args.interval if args.follow else None)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"felix: error: {name}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _checked(paths: list[str], start: str | None, anchor: str | None = None) -> Verified | None:
    """The trail's figures, or None once the problem is printed."""
    from felix_runtime.audit import Finding, verify

    try:
        result = verify(paths, start=start, anchor=anchor)
    except ValueError as exc:  # a malformed --anchor
        print(f"felix audit: {exc}", file=sys.stderr)
        return None
    if isinstance(result, Finding):
        print(f"felix audit: {result}", file=sys.stderr)
        return None
    if result.entries == 0:
        print("felix audit: no entries", file=sys.stderr)
        return None
    return result


def _verify(paths: list[str], start: str | None, anchor: str | None) -> int:
    result = _checked(paths, start, anchor)
    if result is None:
        return 1
    begins = {
        "chain_start": f"chain {result.chain}",
        "retention": f"chain {result.chain}, from seq {result.first_seq} (earlier files cut "
        "by retention, as a retention entry records)",
        "given": f"continues from the given start at seq {result.first_seq}",
    }[result.start]
    found = {
        "": "",
        "entry": ", anchor found",
        "retention": ", anchor found (where retention cut)",
        "cut": ", anchor older than the first entry kept (the trail goes on past it)",
    }[result.anchor]
    print(f"ok: {result.entries} entries, {begins}, last hash {result.head}{found}")
    return 0


def _head(paths: list[str], start: str | None) -> int:
    result = _checked(paths, start)
    if result is None:
        return 1
    head = {
        "anchor": result.anchor_text,
        "seq": result.head_seq,
        "hash": result.head,
        "entries": result.entries,
        "chain": result.chain,
    }
    print(json.dumps(head))
    return 0


def _tail(path: Path, count: int, interval: float | None) -> int:
    """Print the last ``count`` lines; with an ``interval``, then follow the trail."""
    from felix_runtime.audit import audit_files

    files = audit_files(path) if path.is_dir() else [path]
    if not files:
        print(f"felix: error: {path}: no audit files", file=sys.stderr)
        return 1
    last: deque[str] = deque(maxlen=max(count, 0))
    end = 0
    for file in reversed(files):  # newest first, until enough lines are in hand
        data = file.read_bytes()
        if file is files[-1] and interval is not None:
            end = data.rfind(b"\n") + 1  # complete lines; the follower prints the rest
            data = data[:end]
        lines = data.decode("utf-8", errors="replace").splitlines()
        last.extendleft(reversed(lines[-count:] if count > 0 else []))
        if len(last) >= count:
            break
    for line in last:
        print(line)
    if interval is None:
        return 0
    sys.stdout.flush()  # the tail shows now, not when the pipe's buffer fills
    return follow(Follower(path, files[-1], end), interval)


class Follower:
    """Where ``tail --follow`` is in a trail: the file it reads (of the directory ``path``,
    or ``path`` itself) and the offset after the last complete line it returned."""

    def __init__(self, path: Path, file: Path, offset: int, chunk: int = FOLLOW_CHUNK) -> None:
        self.path = path
        self.file = file
        self.offset = offset
        self.chunk = chunk

    def poll(self) -> list[str]:
        """The complete lines written since the last poll (at most ``chunk`` bytes of a
        file per call); once the current file is read to its end, the lines of the newer
        files of the directory, which the writer opened when it rotated."""
        lines, at_end = self._read()
        while at_end and self.path.is_dir():
            newer = self._next_file()
            if newer is None:
                break
            self.file, self.offset = newer, 0
            more, at_end = self._read()
            lines += more
        return lines

    def _read(self) -> tuple[list[str], bool]:
        try:
            with self.file.open("rb") as f:
                f.seek(0, 2)
                if f.tell() < self.offset:  # truncated or replaced: start it again
                    self.offset = 0
                f.seek(self.offset)
                data = f.read(self.chunk)
        except FileNotFoundError:  # removed: only a newer file can follow
            return [], True
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) == self.chunk:  # no entry is this long: skip, say so
            skipped = f"{self.file}: skipped {len(data)} bytes without a newline"
            print(f"felix audit: {skipped}", file=sys.stderr)
            end = len(data)
        self.offset += end
        lines = data[:end].decode("utf-8", errors="replace").splitlines()
        return lines, len(data) < self.chunk

    def _next_file(self) -> Path | None:
        from felix_runtime.audit import FILE_PATTERN, audit_files

        def number(file: Path) -> int:
            match = FILE_PATTERN.match(file.name)
            return int(match.group(1)) if match else -1

        current = number(self.file)
        return next((f for f in audit_files(self.path) if number(f) > current), None)


def follow(
    follower: Follower,
    interval: float,
    sleep: Callable[[float], None] | None = None,
    polls: int | None = None,
) -> int:
    """Print what ``follower`` finds every ``interval`` seconds until Ctrl-C (exit 0), or
    ``polls`` polls when given (tests); ``sleep`` defaults to :data:`_sleep`."""
    sleep = _sleep if sleep is None else sleep
    try:
        done = 0
        while polls is None or done < polls:
            for line in follower.poll():
                print(line, flush=True)
            done += 1
            sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0
