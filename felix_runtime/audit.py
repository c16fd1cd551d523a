"""The audit trail: security events as hash-chained JSON lines, and their verification.

Theory of operation. Every entry is one line of JSON, written once and never changed::

    {"seq":7,"ts":1765000000.123456,"kind":"handshake_accepted",...,"prev":"9f2c...","hash":"51ab..."}

``seq`` counts entries from 0 for the whole chain; ``prev`` is the ``hash`` of the entry
before (empty for the first); ``hash`` is the SHA-256 (hex) of the line's bytes up to the
``,"hash":`` that closes it, followed by ``}`` (the entry serialized without its own hash).
Through ``prev`` every hash covers every earlier line. The first entry has ``kind``
``chain_start`` and names a random ``chain`` id, so two trails are never confused.

Files: ``audit-NNNNNN.jsonl`` in one directory (``<data-dir>/audit`` by default). When a file
passes ``rotate_bytes`` the next entry opens the next number; the chain goes on across
files (the first entry of a file links to the last of the one before). A writer that opens
a directory with files in it continues the chain from the last complete line (a line cut
short by a crash is cut off, and a ``resumed`` entry says so).

Who writes: :class:`AuditWriter` is the file format (chain, rotation, resume), synchronous
and usable by any process (the broker, the region bridge). :class:`AuditTrail` puts a
bounded buffer and one worker thread in front of it, so that an event costs the caller an
append under a lock: nothing touches the disk on the broker's event loop.
:class:`AuditObserver` is the broker's observer (metrics as before) that also records the
glue's security hooks into an :class:`AuditTrail`.

Nothing is dropped silently. When the buffer (``max_pending`` entries) is full, further
events are counted per kind, an error is logged once, and as soon as the writer catches up
an ``audit_overflow`` entry records how many events of each kind were lost and when. When a
write fails (disk full, I/O error) the partial line is cut off (the file is truncated back
to its last complete line), an error is logged, and the writer retries every
``retry_s`` seconds while events keep buffering: a full disk ends in ``audit_overflow``
counts rather than in a broken chain.

:func:`verify` checks files and names the first line that does not fit (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from felix_core.access import Principal
from felix_runtime.logs import log_fields, logger
from felix_runtime.prometheus import PrometheusObserver
from felix_server.config import ServerConfig

__all__ = [
    "AuditObserver",
    "AuditTrail",
    "AuditWriter",
    "Finding",
    "audit_files",
    "broker_observer",
    "verify",
]

FILE_PATTERN = re.compile(r"^audit-(\d{6,})\.jsonl$")
"""Names of the trail's files, numbered from 1."""
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
"""A file is closed for new entries once it holds this many bytes."""
DEFAULT_MAX_PENDING = 65536
"""Entries the :class:`AuditTrail` buffer holds before it counts events as lost."""
_HASH_KEY = ',"hash":"'


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(entry: Mapping[str, Any]) -> bytes:
    """The line for ``entry`` (which carries ``seq`` and ``prev``), with its ``hash``
    appended, without the newline."""
    body = json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode()
    return body[:-1] + _HASH_KEY.encode() + _digest(body).encode() + b'"}'


def audit_files(directory: Path) -> list[Path]:
    """The trail's files in ``directory``, in chain order."""
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = FILE_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


class AuditWriter:
    """Appends entries to the trail in ``directory`` (synchronous; one writer per trail).

    Args:
        directory: where the files are (created, mode 0700, if absent).
        rotate_bytes: start a new file once the current one holds this many bytes.
        clock: seconds since the epoch, stamped as ``ts``.
        fsync: make each :meth:`write` durable before returning.

    Raises:
        OSError: the directory or its last file cannot be opened.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self._clock = clock
        self._fsync = fsync
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = audit_files(self.directory)
        self._number = 1
        self.seq = -1
        """The last entry's ``seq`` (-1: none yet)."""
        self.head = ""
        """The last entry's ``hash``: what the next entry's ``prev`` is."""
        self.chain = ""
        """The chain id (known once the first entry has been read or written)."""
        self._fd = -1
        self._size = 0
        cut = 0
        if files:
            self._number = int(FILE_PATTERN.match(files[-1].name).group(1))  # type: ignore[union-attr]
            cut = self._resume(files)
        self._open()
        if self.seq < 0:
            self.write("chain_start", {"chain": secrets.token_hex(16)})
        elif cut:
            self.write("resumed", {"cut_bytes": cut})

    def _path(self) -> Path:
        return self.directory / f"audit-{self._number:06d}.jsonl"

    def _resume(self, files: list[Path]) -> int:
        """Take the chain's head from the last complete line; cut a partial last line.
        Returns how many bytes were cut."""
        cut = 0
        for path in reversed(files):
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data) and path == files[-1]:
                cut = len(data) - end
                with path.open("r+b") as f:
                    f.truncate(end)
            lines = data[:end].splitlines()
            if lines:
                try:
                    last = json.loads(lines[-1])
                    self.seq, self.head = int(last["seq"]), str(last["hash"])
                except (ValueError, TypeError, KeyError) as exc:
                    raise OSError(
                        f"{path}: the last line is not an audit entry ({exc!r}); the chain "
                        "cannot go on: check the trail with felix audit verify"
                    ) from None
                break
        if files:
            first = json.loads(files[0].read_bytes().split(b"\n", 1)[0] or b"{}")
            self.chain = str(first.get("chain", ""))
        return cut

    def _open(self) -> None:
        path = self._path()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, kind: str, fields: Mapping[str, Any], ts: float | None = None) -> bytes:
        """Append one entry; returns its line. On an ``OSError`` the file is cut back to
        its last complete line and the chain is unchanged (the caller may retry).

        Args:
            kind: the event kind (``handshake_accepted`` ...).
            fields: the event's fields (JSON values; ``seq``, ``ts``, ``kind``, ``prev``
                and ``hash`` are the writer's).
            ts: when it happened (default: now).
        """
        self.write_many([(kind, fields, ts)])
        return self._last_line

    def write_many(self, events: Iterable[tuple[str, Mapping[str, Any], float | None]]) -> None:
        """Append several entries with one write (and one fsync); all or none."""
        seq, head = self.seq, self.head
        out: list[bytes] = []
        for kind, fields, ts in events:
            seq += 1
            entry = {"seq": seq, "ts": round(self._clock() if ts is None else ts, 6)}
            entry["kind"] = kind  # type: ignore[assignment]
            for key, value in fields.items():
                if key not in ("seq", "ts", "kind", "prev", "hash"):
                    entry[key] = value
            entry["prev"] = head  # type: ignore[assignment]
            line = seal(entry)
            head = json.loads(line)["hash"]
            out.append(line + b"\n")
        if not out:
            return
        if self._size >= self.rotate_bytes:
            os.close(self._fd)
            self._number += 1
            self._open()
        data = b"".join(out)
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self._size)  # no partial line stays behind
            raise
        self._size += len(data)
        if self.seq < 0:
            self.chain = str(json.loads(out[0])["chain"])
        self.seq, self.head = seq, head
        self._last_line = out[-1][:-1]

    def close(self) -> None:
        """Close the current file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class AuditTrail:
    """A bounded buffer and a worker thread in front of an :class:`AuditWriter`.

    :meth:`record` never blocks on the disk and never raises. See the module docstring for
    what happens when the buffer is full or the disk refuses a write.

    Args:
        writer: the file writer (owned from now on: closed by :meth:`close`).
        max_pending: entries buffered before events are counted as lost.
        retry_s: seconds between attempts after a failed write.
        clock: stamps each event as it is recorded.
    """

    def __init__(
        self,
        writer: AuditWriter,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.max_pending = max_pending
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: deque[tuple[str, Mapping[str, Any], float | None]] = deque()
        self._lost: Counter[str] = Counter()
        self._lost_since = 0.0
        self._closing = False
        self._busy = False
        self.written = 0
        """Entries written so far (for tests and figures)."""
        self.failures = 0
        """Writes that failed (each retried)."""
        self._thread = threading.Thread(target=self._run, name="felix-audit", daemon=True)
        self._thread.start()

    def record(self, kind: str, **fields: Any) -> None:
        """Queue one event (stamped now); counted as lost if the buffer is full."""
        now = self._clock()
        with self._lock:
            if self._closing:
                return
            if len(self._pending) >= self.max_pending:
                if not self._lost:
                    self._lost_since = now
                    logger.error(
                        "audit buffer full: counting lost events until the writer catches up",
                        extra=log_fields(max_pending=self.max_pending),
                    )
                self._lost[kind] += 1
                return
            self._pending.append((kind, fields, now))
            self._wake.notify_all()  # the worker (and a flush waiting on the same lock)

    def _take(self) -> list[tuple[str, Mapping[str, Any], float | None]] | None:
        with self._lock:
            while not self._pending and not self._lost and not self._closing:
                self._wake.wait()
            if not self._pending and not self._lost:
                return None  # closing, and everything is written
            batch = list(self._pending)
            self._pending.clear()
            self._busy = True
            if self._lost and not batch:  # the buffer drained: say what was lost
                lost = {"lost": dict(self._lost), "since": round(self._lost_since, 6)}
                self._lost.clear()
                batch.append(("audit_overflow", lost, None))
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            while True:
                try:
                    self.writer.write_many(batch)
                    break
                except OSError as exc:
                    self.failures += 1
                    logger.error(
                        "audit write failed; retrying (events keep buffering)",
                        extra=log_fields(error=str(exc), entries=len(batch)),
                    )
                    with self._lock:
                        if self._closing:
                            self._lost.update(kind for kind, _, _ in batch)
                            logger.error(
                                "audit trail closed with unwritten events",
                                extra=log_fields(lost=dict(self._lost)),
                            )
                            self._pending.clear()
                            self._lost.clear()
                            return
                        self._wake.wait(self.retry_s)
            with self._lock:
                self.written += len(batch)
                self._busy = False
                self._wake.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until everything recorded so far is written; True if it is."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._lost or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (bounded by ``timeout``), stop the thread, close the file."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.writer.close()


def _who(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {}
    out: dict[str, Any] = {
        "subject": principal.subject,
        "tenant": principal.tenant,
        "issuer": principal.issuer,
    }
    if principal.token_id is not None:
        out["token_id"] = principal.token_id
    if principal.operator:
        out["operator"] = True
    return out


class AuditObserver(PrometheusObserver):
    """The broker's observer with an audit trail: metrics as :class:`PrometheusObserver`,
    and every security hook of the glue recorded into ``trail``."""

    def __init__(self, trail: AuditTrail) -> None:
        super().__init__()
        self.trail = trail

    def handshake_accepted(self, conn_id: int, principal: Principal) -> None:
        self.trail.record("handshake_accepted", conn=conn_id, **_who(principal))

    def handshake_refused(self, conn_id: int, error_code: int, reason: str) -> None:
        self.trail.record("handshake_refused", conn=conn_id, code=error_code, reason=reason)

    def token_refreshed(
        self, conn_id: int, principal: Principal | None, error_code: int, reason: str
    ) -> None:
        outcome = "ok" if error_code == 0 else "refused"
        self.trail.record(
            "token_refresh",
            conn=conn_id,
            outcome=outcome,
            code=error_code,
            reason=reason,
            **_who(principal),
        )

    def token_exchanged(
        self,
        conn_id: int,
        issuer: str | None,
        subject: str | None,
        principal: Principal | None,
        error_code: int,
        reason: str,
    ) -> None:
        claimed = {"id_issuer": issuer, "id_subject": subject}
        self.trail.record(
            "token_exchange",
            conn=conn_id,
            outcome="ok" if error_code == 0 else "refused",
            code=error_code,
            reason=reason,
            **{k: v for k, v in claimed.items() if v is not None},
            **_who(principal),
        )

    def access_denied(
        self, conn_id: int, principal: Principal | None, action: str, resource: str, code: int
    ) -> None:
        self.trail.record(
            "access_denied",
            conn=conn_id,
            action=action,
            resource=resource,
            code=code,
            **_who(principal),
        )

    def admin_operation(
        self,
        conn_id: int,
        principal: Principal | None,
        operation: str,
        resource: str,
        code: int,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        extra = {} if settings is None else {"settings": dict(settings)}
        self.trail.record(
            "admin",
            conn=conn_id,
            operation=operation,
            resource=resource,
            outcome="ok" if code == 0 else "error",
            code=code,
            **extra,
            **_who(principal),
        )


def broker_observer(config: ServerConfig) -> tuple[PrometheusObserver, Callable[[], None]]:
    """The broker's observer, with the audit trail when ``config.audit`` is on, and the
    function that closes it (writes what is buffered; logs the chain's head, a copy of
    which detects a later cut of the trail's tail).

    Raises:
        OSError: the audit directory cannot be made or opened (the broker cannot start).
    """
    if not config.audit:
        return PrometheusObserver(), lambda: None
    writer = AuditWriter(config.audit_directory, rotate_bytes=config.audit_rotate_bytes)
    trail = AuditTrail(writer)
    logger.info(
        "audit trail open",
        extra=log_fields(path=config.audit_directory, chain=writer.chain, seq=writer.seq),
    )

    def close() -> None:
        trail.close()
        logger.info(
            "audit trail closed",
            extra=log_fields(seq=writer.seq, head=writer.head, written=trail.written),
        )

    return AuditObserver(trail), close


# ---------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """The first line of a trail that does not fit."""

    path: Path
    """The file."""
    line: int
    """Its line number (1-based)."""
    problem: str
    """What is wrong (``edited``, ``N line(s) removed before this line`` ...)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass(slots=True)
class Verified:
    """What :func:`verify` saw in a trail that checks out."""

    entries: int = 0
    chain: str = ""
    first_seq: int = -1
    head: str = ""
    """The last entry's hash: compare it with a copy kept elsewhere to detect a cut tail."""


def _entries(paths: Iterable[Path]) -> Iterator[tuple[Path, int, bytes]]:
    for path in paths:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                yield path, number, raw


def _check_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parse and self-check one line: (entry, "") or (None, problem)."""
    if not raw.endswith(b"\n"):
        return None, "edited or cut short (no newline at the end)"
    line = raw[:-1]
    try:
        entry = json.loads(line)
    except ValueError:
        return None, "edited (not JSON)"
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("seq"), int)
        and isinstance(entry.get("prev"), str)
        and isinstance(entry.get("hash"), str)
    ):
        return None, "edited (not an audit entry)"
    suffix = (_HASH_KEY + entry["hash"] + '"}').encode()
    if not line.endswith(suffix):
        return None, "edited (its hash is not where the writer puts it)"
    if _digest(line[: -len(suffix)] + b"}") != entry["hash"]:
        return None, "edited (its content does not match its hash)"
    return entry, ""


def verify(paths: Iterable[str | os.PathLike[str]]) -> Verified | Finding:
    """Check trail files, in chain order (a directory stands for its ``audit-*.jsonl``).

    Each line must be intact (its ``hash`` is the SHA-256 of its content), follow the line
    before (``seq`` one more, ``prev`` equal to the line before's ``hash``), and the chain
    must start with ``chain_start`` at ``seq`` 0, unless the first file given continues an
    earlier one (then that first link cannot be checked). What is named:

    - an edited line: that line (``edited ...``);
    - removed lines: the line after the gap (``N line(s) removed or moved before this
      line``); a line moved later leaves the same gap where it was;
    - an inserted or moved line: the first line out of sequence (``inserted or
      reordered``), or the line after a forged one (``does not follow the line before``).

    Lines removed from the very end leave no gap; compare :attr:`Verified.head` with a copy
    of the last hash kept elsewhere (a log line, another host) to detect that.

    Returns:
        :class:`Verified` figures, or the first :class:`Finding`.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(audit_files(p) if p.is_dir() else [p])
    seen = Verified()
    previous: dict[str, Any] | None = None
    for path, number, raw in _entries(files):
        entry, problem = _check_line(raw)
        if entry is None:
            return Finding(path=path, line=number, problem=problem)
        seq = entry["seq"]
        if previous is None:
            if entry.get("kind") == "chain_start":
                if seq != 0 or entry["prev"]:
                    return Finding(path=path, line=number, problem="edited (bad chain start)")
                seen.chain = str(entry.get("chain", ""))
            seen.first_seq = seq
        else:
            expected = previous["seq"] + 1
            if seq > expected:
                return Finding(
                    path=path,
                    line=number,
                    problem=f"{seq - expected} line(s) removed or moved before this line "
                    f"(seq {seq} after {expected - 1})",
                )
            if seq < expected:
                return Finding(
                    path=path,
                    line=number,
                    problem=f"inserted or reordered (seq {seq} after {expected - 1})",
                )
            if entry["prev"] != previous["hash"]:
                return Finding(
                    path=path,
                    line=number,
                    problem="does not follow the line before (prev hash differs): "
                    "a line was replaced or inserted",
                )
        previous = entry
        seen.entries += 1
        seen.head = entry["hash"]
    return seen
