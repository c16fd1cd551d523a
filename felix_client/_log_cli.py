"""``felix log``: check and read a durable log's segment files offline.

::

    felix log verify felix-data/logs                 # every segment below; exit 1 on damage
    felix log dump felix-data/logs/stream/default/default/orders/1 --from 100 --count 10
    felix log dump .../00000000000000000000.log --json
    felix log truncate felix-data/logs/stream/default/default/orders/1 --yes

It reads the files directly (no broker; run it on a stopped broker's data directory, or on
a copy) with the format of :mod:`felix_core.segments`, imported only when a ``log``
command runs.

``verify`` walks every directory below DIR that holds segments (one durable log each) and
checks, per segment: every batch's checksum and record encoding, that offsets continue
from batch to batch and from segment to segment, and that the ``.index`` file, where there
is one, describes the segment as it is. It prints one line per segment and a summary.
*Damage* (exit 1): a checksum failure followed by more data, a torn batch anywhere but at
the end of a log's last segment, a gap or overlap of offsets, an index that is damaged or
points elsewhere than at its batches. A torn tail of the last segment is reported but is
not damage: the broker truncates it at start (only records never acknowledged as
committed can be there). A missing or stale index is not damage either: the broker
rebuilds it.

``dump`` prints the records of one segment file, or of every segment of one log directory
in order, from ``--from`` (an offset) for at most ``--count`` records: text, or one JSON
object per line with ``--json`` (payload, key and header values as UTF-8 when they are,
else as ``*_base64``). It stops at the first bad batch, saying where, and exits 1 then.

``truncate`` is the operator's answer to damage the broker will not repair itself (a log it
serves read-only below a bad batch): on one log directory of a *stopped* broker (it refuses
while the data directory's ``lock`` is held), it finds the first damage as ``verify`` does
(a bad batch followed by more data, a torn batch in a closed segment, a gap between
segments, a batch whose records do not decode) and cuts the log there: that segment is
truncated to its last whole batch before the damage, its index and every later segment
(with its index) are deleted. An index ``verify`` calls damaged on a segment kept whole is
deleted too (the broker rebuilds it, nothing is lost). It prints what it cuts (the first
offset lost and how many bytes) and does it only with ``--yes``; without, nothing changes.
The records from that offset on are gone: the log's next records take their offsets again.
A torn tail of the last segment is not cut here (the broker does it at start).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import mmap
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from felix_core.segments import Batch

__all__ = ["add_log_commands", "run_log_command"]


def add_log_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``log verify|dump|truncate`` on the ``felix`` subcommand parsers."""
    t = sub.add_parser(
        "log", help="durable logs on disk: verify segments, dump records, truncate damage"
    )
    actions = t.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "verify",
        help="check every segment below DIR (exit 1 on damage)",
        description="Check checksums, offsets and indexes of every durable log segment "
        "below DIR (a data directory, its logs/ directory or one log's directory). Exit 1 "
        "when anything is damaged.",
    )
    p.add_argument("dir", metavar="DIR", help="directory to walk")
    p.set_defaults(log_run=_verify)
    p = actions.add_parser(
        "dump",
        help="print the records of a segment file or a log directory",
        description="Print records from one .log segment file, or from every segment of "
        "one log directory in offset order.",
    )
    p.add_argument("path", metavar="PATH", help="a .log file or a log's directory")
    p.add_argument("--from", dest="start", type=int, default=0, metavar="N", help="first offset")
    p.add_argument("--count", type=int, default=None, metavar="K", help="most records")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.set_defaults(log_run=_dump)
    p = actions.add_parser(
        "truncate",
        help="cut one log at its first damage (broker stopped; --yes to do it)",
        description="Cut one durable log's directory at its first damage: the damaged "
        "segment is truncated to its last whole batch, later segments are deleted. The "
        "broker must be stopped. Prints the plan; changes nothing without --yes.",
    )
    p.add_argument("path", metavar="DIR", help="one log's directory")
    p.add_argument("--yes", action="store_true", help="do it (default: only print the plan)")
    p.set_defaults(log_run=_truncate)


def run_log_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a parsed ``felix log`` command; returns the exit code."""
    try:
        code: int = args.log_run(args, out or sys.stdout)
    except OSError as exc:
        print(f"felix log: {exc}", file=sys.stderr)
        return 1
    return code


# -- reading segments ------------------------------------------------------------------------


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """The ``.log`` segments of one log directory, in offset order."""
    from felix_core.segments import parse_segment_name

    found = []
    for entry in directory.iterdir():
        parsed = parse_segment_name(entry.name)
        if parsed is not None and parsed[1] == "log" and entry.is_file():
            found.append((parsed[0], entry))
    return sorted(found)


class _Mapped:
    """A file's bytes, memory-mapped (empty files cannot be mapped)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.data: bytes | memoryview = memoryview(self._map) if self._map else b""

    def close(self) -> None:
        if isinstance(self.data, memoryview):
            self.data.release()
        if self._map is not None:
            self._map.close()
        self._file.close()

    def __enter__(self) -> _Mapped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _SegmentReport:
    path: Path
    batches: int = 0
    first: int | None = None
    next: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_segment(path: Path, base: int, expected: int | None, last: bool) -> _SegmentReport:
    from felix_core.segments import CorruptBatch, TailState, decode_batch, decode_index, scan

    report = _SegmentReport(path)
    if expected is not None and base != expected:
        report.problems.append(f"starts at offset {base}, the previous segment ends at {expected}")
    with _Mapped(path) as mapped:
        data = mapped.data
        result = scan(data, expected_base=base)
        report.batches = len(result.batches)
        report.first = base
        report.next = result.next_offset if result.next_offset is not None else base
        for info in result.batches:
            try:
                decode_batch(data, info.position)
            except CorruptBatch as exc:
                report.problems.append(f"batch at byte {info.position}: {exc}")
        where = f"at byte {result.valid_end} of {len(data)} (offset {report.next})"
        if result.state is TailState.CORRUPT:
            report.problems.append(f"bad batch followed by more data {where}")
        elif result.state is TailState.TORN:
            if last:
                report.notes.append(f"torn tail {where}: truncated when the broker starts")
            else:
                report.problems.append(f"torn batch {where} in a closed segment")
        index_path = path.with_suffix(".index")
        if index_path.exists():
            index = decode_index(index_path.read_bytes(), base, len(data))
            if index is None:
                report.notes.append("index stale or damaged: rebuilt when the broker starts")
            else:
                starts = {info.position: info.base_offset for info in result.batches}
                for offset, pos in zip(index.offsets, index.positions, strict=True):
                    if starts.get(pos) != offset:
                        report.problems.append(
                            f"index says offset {offset} is at byte {pos}: no such batch there"
                        )
                        break
                if index.summary.next_offset != report.next and result.state is TailState.CLEAN:
                    report.problems.append(
                        f"index ends at offset {index.summary.next_offset}, the data at "
                        f"{report.next}"
                    )
    return report


def _log_directories(root: Path) -> Iterator[Path]:
    from felix_core.segments import parse_segment_name

    for directory, _, files in sorted(os.walk(root)):
        if any((p := parse_segment_name(f)) is not None and p[1] == "log" for f in files):
            yield Path(directory)


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise OSError(f"{root}: not a directory")
    logs = segments = damaged = 0
    for directory in _log_directories(root):
        logs += 1
        expected: int | None = None
        found = _segments(directory)
        for i, (base, path) in enumerate(found):
            segments += 1
            report = _check_segment(path, base, expected, last=i == len(found) - 1)
            # After damage the segment's end is unknown: the next one is checked alone.
            expected = None if report.problems else report.next
            status = "DAMAGED" if report.problems else "ok"
            out.write(
                f"{path}: {status}, {report.batches} batches, offsets {report.first}.."
                f"{(report.next or 0) - 1 if report.next != report.first else '(none)'}\n"
            )
            for problem in report.problems:
                out.write(f"  damage: {problem}\n")
            for note in report.notes:
                out.write(f"  note: {note}\n")
            damaged += bool(report.problems)
    out.write(f"{logs} logs, {segments} segments, {damaged} damaged\n")
    return 1 if damaged else 0


# -- dump ------------------------------------------------------------------------------------


def _text_or_base64(name: str, data: bytes) -> dict[str, str]:
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def _record_json(batch: Batch, i: int) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "offset": batch.base_offset + i,
        "timestamp_ms": batch.timestamps_ms[i],
    }
    key = batch.keys[i]
    if key is not None:
        obj.update(_text_or_base64("key", key))
    headers = batch.headers[i]
    if headers:
        obj["headers"] = {
            k: next(iter(_text_or_base64("value", v).values())) for k, v in headers.items()
        }
    obj.update(_text_or_base64("payload", batch.payloads[i]))
    return obj


def _record_text(batch: Batch, i: int) -> str:
    parts = [f"{batch.base_offset + i}", f"ts={batch.timestamps_ms[i]}"]
    key = batch.keys[i]
    if key is not None:
        parts.append(f"key={key.decode('utf-8', errors='backslashreplace')}")
    for name, value in (batch.headers[i] or {}).items():
        parts.append(f"{name}={value.decode('utf-8', errors='backslashreplace')}")
    parts.append(batch.payloads[i].decode("utf-8", errors="backslashreplace"))
    return " ".join(parts)


def _dump(args: argparse.Namespace, out: TextIO) -> int:
    from felix_core.segments import CorruptBatch, decode_batch, parse_segment_name, scan

    path = Path(args.path)
    if path.is_dir():
        files = [p for _, p in _segments(path)]
    else:
        parsed = parse_segment_name(path.name)
        if parsed is None or parsed[1] != "log":
            raise OSError(f"{path}: not a segment file (NNNNNNNNNNNNNNNNNNNN.log)")
        files = [path]
    left = args.count if args.count is not None else -1
    for file in files:
        with _Mapped(file) as mapped:
            data = mapped.data
            result = scan(data)
            for info in result.batches:
                if info.next_offset <= args.start:
                    continue
                try:
                    batch, _ = decode_batch(data, info.position)
                except CorruptBatch as exc:
                    print(f"felix log: {file}: byte {info.position}: {exc}", file=sys.stderr)
                    return 1
                for i in range(len(batch.payloads)):
                    if batch.base_offset + i < args.start:
                        continue
                    if left == 0:
                        return 0
                    if args.json:
                        out.write(json.dumps(_record_json(batch, i), separators=(",", ":")))
                        out.write("\n")
                    else:
                        out.write(_record_text(batch, i) + "\n")
                    left -= 1
            if result.valid_end < len(data):
                print(
                    f"felix log: {file}: unreadable from byte {result.valid_end} "
                    f"({result.state.value})",
                    file=sys.stderr,
                )
                return 1
    return 0


# -- truncate --------------------------------------------------------------------------------


@dataclass
class _Cut:
    """What ``truncate`` does to one log directory."""

    offset: int | None = None
    """The first offset lost (None: no damage to cut)."""
    segment: Path | None = None
    """The segment truncated (None: a gap, nothing truncated)."""
    keep_bytes: int = 0
    """Its length afterwards."""
    reason: str = ""
    remove: list[Path] = field(default_factory=list)
    """Files deleted: the truncated segment's index, every later segment and index, and
    indexes that describe their segment wrongly."""


def _plan_cut(directory: Path) -> _Cut:
    """Find the first damage of the log in ``directory`` (see the module docstring)."""
    from felix_core.segments import CorruptBatch, TailState, decode_batch, scan

    cut = _Cut()
    found = _segments(directory)
    expected: int | None = None
    for i, (base, path) in enumerate(found):
        later = [p for _, seg in found[i + 1 :] for p in (seg, seg.with_suffix(".index"))]
        later = [p for p in later if p.exists()]
        index = path.with_suffix(".index")
        if expected is not None and base != expected:
            cut.offset, cut.reason = expected, f"{path.name} starts at {base}: a gap"
            cut.remove = [p for p in (path, index) if p.exists()] + later
            return cut
        report = _check_segment(path, base, expected, last=i == len(found) - 1)
        with _Mapped(path) as mapped:
            data = mapped.data
            result = scan(data, expected_base=base)
            position, offset = result.valid_end, result.next_offset
            bad = result.state is TailState.CORRUPT or (
                result.state is TailState.TORN and i < len(found) - 1
            )
            for info in result.batches:
                try:
                    decode_batch(data, info.position)
                except CorruptBatch as exc:
                    position, offset, bad = info.position, info.base_offset, True
                    cut.reason = f"batch at byte {info.position}: {exc}"
                    break
            if bad:
                cut.offset = base if offset is None else offset
                cut.reason = cut.reason or f"{result.state.value} batch at byte {position}"
                cut.segment, cut.keep_bytes = path, position
                cut.remove = [index] if index.exists() else []
                cut.remove += later
                return cut
        if report.problems and index.exists():  # the data is whole: only the index lies
            cut.remove.append(index)
        expected = report.next
    return cut


def _broker_lock(directory: Path) -> Path | None:
    """The ``lock`` of the data directory ``directory`` is in, if any."""
    for parent in [directory, *directory.resolve().parents]:
        if (parent / "lock").is_file() and (parent / "logs").is_dir():
            return parent / "lock"
    return None


def _truncate(args: argparse.Namespace, out: TextIO) -> int:
    directory = Path(args.path)
    if not directory.is_dir() or not _segments(directory):
        raise OSError(f"{directory}: not a log directory (no NNNNNNNNNNNNNNNNNNNN.log in it)")
    with contextlib.ExitStack() as stack:
        lock = _broker_lock(directory)
        if lock is not None:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(f"a broker is running on {lock.parent} (stop it first)") from None
        cut = _plan_cut(directory)
        if cut.offset is None and not cut.remove:
            out.write(f"{directory}: no damage to cut\n")
            return 0
        if cut.offset is not None:
            out.write(f"{directory}: damage: {cut.reason}\n")
            out.write(f"  records from offset {cut.offset} on are lost\n")
        if cut.segment is not None:
            size = cut.segment.stat().st_size
            out.write(
                f"  truncate {cut.segment.name} to {cut.keep_bytes} bytes "
                f"({size - cut.keep_bytes} cut)\n"
            )
        for path in cut.remove:
            out.write(f"  delete {path.name}\n")
        if not args.yes:
            out.write("nothing changed (run again with --yes to do it)\n")
            return 0
        if cut.segment is not None:
            os.truncate(cut.segment, cut.keep_bytes)
            _fsync(cut.segment)
        for path in cut.remove:
            path.unlink()
        _fsync(directory)
        out.write("done\n")
    return 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
