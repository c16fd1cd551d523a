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

Retention (``retention_bytes``, ``retention_s``) deletes the oldest files, never the one
being written, after a ``retention`` entry names what goes: the files, their ``seq`` range
and ``cut_head``, the hash the first remaining entry carries as ``prev``. So the trail
still verifies from where it now starts, and a file removed any other way still does not.

Anchors: the chain's head (``SEQ:HASH``) kept outside the host detects lines cut off the
end, which leave no gap in the chain. :class:`AuditTrail` logs it (``audit head``) every
``anchor_every_s`` while entries are written; ``verify(anchor=...)`` checks a trail still
holds it.

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
:class:`AuditObserver` also writes the client certificates the TLS handshake refused
(``tls_refused``, from :class:`felix_runtime.tls_server.TlsRefusal`).
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
from felix_runtime.tls_server import TlsRefusal
from felix_server.access import ClientIdentity
from felix_server.config import ServerConfig
from felix_server.server import FelixServer

__all__ = [
    "AuditObserver",
    "AuditTrail",
    "AuditWriter",
    "Finding",
    "audit_files",
    "broker_observer",
    "parse_anchor",
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


def audit_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trail's files in ``directory``, in chain order."""
    directory = Path(directory)
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = FILE_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _first_entry(path: Path) -> dict[str, Any]:
    """The first line of ``path`` parsed ({} when it is empty or not JSON)."""
    with path.open("rb") as f:
        return _parse(f.readline())


def _last_entry(path: Path) -> dict[str, Any]:
    """The last complete line of ``path`` parsed ({} when there is none)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        window = 1 << 16
        while True:
            f.seek(max(0, size - window))
            data = f.read()
            lines = data[: data.rfind(b"\n") + 1].splitlines()
            if len(lines) >= 2 or window >= size:  # one whole line at least (the first
                return _parse(lines[-1]) if lines else {}  # may be cut by the window)
            window *= 4


def _parse(line: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _chain_id(files: list[Path]) -> str:
    """The trail's chain id: its ``chain_start``'s, or, once retention cut that, the one a
    ``retention`` entry repeats (there is one after every cut)."""
    if not files:
        return ""
    first = _first_entry(files[0])
    if first.get("kind") == "chain_start":
        return str(first.get("chain", ""))
    for path in files:
        with path.open("rb") as f:
            for line in f:
                if b'"kind":"retention"' in line:
                    return str(_parse(line).get("chain", ""))
    return ""


class AuditWriter:
    """Appends entries to the trail in ``directory`` (synchronous; one writer per trail).

    Args:
        directory: where the files are (created, mode 0700, if absent).
        rotate_bytes: start a new file once the current one holds this many bytes.
        retention_bytes: delete the oldest files while the trail holds more than this many
            bytes (0: no limit); see :meth:`retain`.
        retention_s: delete the oldest files whose last entry is older than this many
            seconds (0: no limit).
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
        retention_bytes: int = 0,
        retention_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.retention_bytes = retention_bytes
        self.retention_s = retention_s
        self._retaining = False
        self._next_age_check = 0.0
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
        self.retain()

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
        self.chain = _chain_id(files)
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
        rotated = self._size >= self.rotate_bytes
        if rotated:
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
        if rotated or (self.retention_s > 0 and self._clock() >= self._next_age_check):
            try:
                self.retain()
            except OSError as exc:  # the entries are written: only retention waits
                logger.error("audit retention failed", extra=log_fields(error=str(exc)))

    def retain(self) -> list[Path]:
        """Apply retention: delete the oldest files while the trail holds more than
        ``retention_bytes``, or while the oldest file's last entry is older than
        ``retention_s``; never the file being written. Runs at open, after each rotation,
        and (with ``retention_s``) at most once a minute as entries are written.

        Before any file goes, a ``retention`` entry names what is cut: the files, the
        ``seq`` range (``cut_from_seq`` .. ``cut_to_seq``) and ``cut_head``, the hash of the
        last entry cut, which is what the first remaining entry carries as ``prev``.
        :func:`verify` accepts a trail that starts there because of that entry. A crash
        between the entry and the deletion leaves files the entry names: they still
        verify, and the next pass cuts them again.

        Returns:
            The files deleted.
        """
        if self._retaining or not (self.retention_bytes > 0 or self.retention_s > 0):
            return []
        now = self._clock()
        self._next_age_check = now + 60.0
        current = self._path()
        files = audit_files(self.directory)
        sizes = {path: path.stat().st_size for path in files}
        total = sum(sizes.values())
        cut: list[Path] = []
        reasons: set[str] = set()
        for path in files:
            if path == current:
                break
            over = self.retention_bytes > 0 and total > self.retention_bytes
            old = self.retention_s > 0 and _last_entry(path).get("ts", now) < now - self.retention_s
            if not (over or old):
                break
            reasons.update(r for r, hit in (("bytes", over), ("age", old)) if hit)
            cut.append(path)
            total -= sizes[path]
        if not cut:
            return []
        first, last = _first_entry(cut[0]), _last_entry(cut[-1])
        fields = {
            "chain": self.chain,
            "cut_files": [path.name for path in cut],
            "cut_from_seq": first.get("seq"),
            "cut_to_seq": last.get("seq"),
            "cut_head": last.get("hash"),
            "reason": "+".join(sorted(reasons)),
            "retention_bytes": self.retention_bytes,
            "retention_s": self.retention_s,
        }
        self._retaining = True
        try:
            self.write("retention", fields)
        finally:
            self._retaining = False
        for path in cut:
            path.unlink(missing_ok=True)
        logger.info("audit retention: files deleted", extra=log_fields(**fields))
        return cut

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
        anchor_every_s: log the chain's head (``audit head``, with ``seq``, ``head`` and
            ``anchor``) at most this often, once entries were written since the last time
            (0: never; :func:`broker_observer` logs it at close as well). A copy of it kept
            outside the host is what ``felix audit verify --anchor`` checks a later trail
            against: lines cut off the end leave no other trace.
    """

    def __init__(
        self,
        writer: AuditWriter,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        anchor_every_s: float = 0.0,
    ) -> None:
        self.writer = writer
        self.max_pending = max_pending
        self.retry_s = retry_s
        self._clock = clock
        self.anchor_every_s = anchor_every_s
        self._anchored_seq = writer.seq
        self._anchored_at = time.monotonic()
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

    def _anchor_due_in(self) -> float | None:
        """Seconds until the head is due in the log (None: nothing new to log)."""
        if self.anchor_every_s <= 0 or self.writer.seq == self._anchored_seq:
            return None
        return self._anchored_at + self.anchor_every_s - time.monotonic()

    def _log_anchor(self) -> None:
        """Log the head if it is due (the worker thread, which alone moves the writer)."""
        due = self._anchor_due_in()
        if due is None or due > 0:
            return
        writer = self.writer
        self._anchored_seq, self._anchored_at = writer.seq, time.monotonic()
        logger.info(
            "audit head",
            extra=log_fields(
                chain=writer.chain,
                seq=writer.seq,
                head=writer.head,
                anchor=f"{writer.seq}:{writer.head}",
            ),
        )

    def _take(self) -> list[tuple[str, Mapping[str, Any], float | None]] | None:
        with self._lock:
            while not self._pending and not self._lost and not self._closing:
                due = self._anchor_due_in()
                if due is not None and due <= 0:
                    return []  # nothing to write: only the head to log
                self._wake.wait(due)
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
            if not batch:
                self._log_anchor()
                continue
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
            self._log_anchor()

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
        self._server: FelixServer | None = None

    def handshake_accepted(self, conn_id: int, principal: Principal) -> None:
        self.trail.record("handshake_accepted", conn=conn_id, **_who(principal))

    def attach(self, server: FelixServer) -> None:
        super().attach(server)
        self._server = server

    def handshake_refused(self, conn_id: int, error_code: int, reason: str) -> None:
        certificate = {}
        if reason.startswith("certificate_"):  # unmapped or mismatched: name the certificate
            certificate = self._certificate_of(conn_id)
        self.trail.record(
            "handshake_refused", conn=conn_id, code=error_code, reason=reason, **certificate
        )

    def _certificate_of(self, conn_id: int) -> dict[str, Any]:
        """The verified client certificate of connection ``conn_id`` (mutual TLS), as audit
        fields; {} without one. A scan of the live sessions: only refusals of a certificate
        the client CA vouched for come here."""
        server = self._server
        found = (
            None
            if server is None
            else next((s for s in server.sessions if s.conn_id == conn_id), None)
        )
        identity = getattr(getattr(found, "quic", None), "client_identity", None)
        if not isinstance(identity, ClientIdentity):
            return {}
        names = [
            *(f"CN={v}" for v in identity.common_names),
            *(f"OU={v}" for v in identity.organizational_units),
            *(f"O={v}" for v in identity.organizations),
        ]
        sans = [*identity.uris, *identity.dns_names, *identity.emails]
        return {"subject": ",".join(names), "san": sans, "fingerprint": identity.fingerprint}

    def tls_refused(self, refusal: TlsRefusal) -> None:
        super().tls_refused(refusal)
        presented = {
            key: value
            for key, value in (
                ("subject", refusal.subject),
                ("issuer", refusal.issuer),
                ("fingerprint", refusal.fingerprint),
            )
            if value is not None
        }
        self.trail.record(
            "tls_refused",
            conn=None,
            quic_cid=refusal.quic_cid,
            peer=refusal.peer,
            reason=refusal.reason,
            **presented,
        )

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
    writer = AuditWriter(
        config.audit_directory,
        rotate_bytes=config.audit_rotate_bytes,
        retention_bytes=config.audit_retention_bytes,
        retention_s=config.audit_retention_s,
    )
    trail = AuditTrail(writer, anchor_every_s=config.audit_anchor_log_s)
    logger.info(
        "audit trail open",
        extra=log_fields(
            path=config.audit_directory,
            chain=writer.chain,
            seq=writer.seq,
            anchor=f"{writer.seq}:{writer.head}",
        ),
    )

    def close() -> None:
        trail.close()
        logger.info(
            "audit trail closed",
            extra=log_fields(
                seq=writer.seq,
                head=writer.head,
                anchor=f"{writer.seq}:{writer.head}",
                written=trail.written,
            ),
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
    head_seq: int = -1
    """The last entry's ``seq``."""
    start: str = ""
    """How the trail starts: ``chain_start``, ``retention`` (the files before were cut by
    retention, which a ``retention`` entry records) or ``given`` (the ``prev`` the caller
    passed as ``start``)."""
    anchor: str = ""
    """How the anchor was found (empty without one): ``entry`` (an entry has that hash),
    ``retention`` (a ``retention`` entry cut the trail right after it) or ``cut`` (it is
    older than the first entry kept; the trail goes on past its ``seq``)."""

    @property
    def anchor_text(self) -> str:
        """The head as an anchor for a later :func:`verify`: ``SEQ:HASH``."""
        return f"{self.head_seq}:{self.head}"


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


def parse_anchor(text: str) -> tuple[int | None, str]:
    """``SEQ:HASH`` or ``HASH`` (what ``felix audit head`` prints) as ``(seq, hash)``.

    Raises:
        ValueError: not that shape (the hash is 64 hex digits).
    """
    seq_text, _, digest = text.strip().rpartition(":")
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or (seq_text and not seq_text.isdigit()):
        raise ValueError(f"not an audit anchor (SEQ:HASH or HASH): {text!r}")
    return (int(seq_text) if seq_text else None), digest


def verify(
    paths: Iterable[str | os.PathLike[str]],
    *,
    start: str | None = None,
    anchor: str | None = None,
) -> Verified | Finding:
    """Check trail files, in chain order (a directory stands for its ``audit-*.jsonl``).

    Each line must be intact (its ``hash`` is the SHA-256 of its content) and follow the line
    before (``seq`` one more, ``prev`` equal to the line before's ``hash``). The first line
    must be the ``chain_start`` (``seq`` 0); or a line whose ``prev`` is ``start`` (the
    caller vouches for what came before: the hash of the last line of files archived
    elsewhere); or a line that a ``retention`` entry of the trail says follows what it cut
    (``cut_to_seq`` one less, ``cut_head`` equal to its ``prev``). Otherwise lines were
    removed from the start. What is named:

    - an edited line: that line (``edited ...``);
    - removed lines: the line after the gap (``N line(s) removed or moved before this
      line``); a line moved later leaves the same gap where it was; lines removed from the
      start: the first line (``does not start at chain_start ...``);
    - an inserted or moved line: the first line out of sequence (``inserted or
      reordered``), or the line after a forged one (``does not follow the line before``);
    - with ``anchor``, lines cut off the end, which a chain alone cannot show: the last line
      (``the anchor ... is not in the trail``).

    Args:
        paths: files and directories, in chain order.
        start: the ``prev`` the first line must carry when it is not the ``chain_start``.
        anchor: a head kept elsewhere, ``SEQ:HASH`` or ``HASH`` (:func:`parse_anchor`): the
            trail must still hold that entry (or, when retention cut it, go on past its
            ``seq``).

    Returns:
        :class:`Verified` figures, or the first :class:`Finding`.

    Raises:
        ValueError: ``anchor`` is not an anchor.
    """
    wanted = parse_anchor(anchor) if anchor is not None else None
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(audit_files(p) if p.is_dir() else [p])
    seen = Verified()
    previous: dict[str, Any] | None = None
    opening: tuple[Path, int, dict[str, Any]] | None = None
    cuts: dict[tuple[int, str], str] = {}  # (cut_to_seq, cut_head) -> chain
    anchored = False
    last_place = (files[0] if files else Path(), 0)
    for path, number, raw in _entries(files):
        last_place = (path, number)
        entry, problem = _check_line(raw)
        if entry is None:
            return Finding(path=path, line=number, problem=problem)
        seq = entry["seq"]
        if previous is None:
            opening = (path, number, entry)
            if entry.get("kind") == "chain_start" and start is None:
                if seq != 0 or entry["prev"]:
                    return Finding(path=path, line=number, problem="edited (bad chain start)")
                seen.chain = str(entry.get("chain", ""))
                seen.start = "chain_start"
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
        if entry.get("kind") == "retention":
            key = (entry.get("cut_to_seq"), entry.get("cut_head"))
            if isinstance(key[0], int) and isinstance(key[1], str):
                cuts[(key[0], key[1])] = str(entry.get("chain", ""))
        if wanted is not None and entry["hash"] == wanted[1]:
            if wanted[0] not in (None, seq):
                return Finding(
                    path=path,
                    line=number,
                    problem=f"the anchor names seq {wanted[0]}, "
                    f"this line with its hash is seq {seq}: the trail was rewritten",
                )
            anchored = True
        previous = entry
        seen.entries += 1
        seen.head, seen.head_seq = entry["hash"], seq
    if opening is not None and not seen.start:
        path, number, first = opening
        if start is not None:
            if first["prev"] != start:
                return Finding(
                    path=path,
                    line=number,
                    problem=f"does not continue from the given start {start[:16]}... "
                    f"(its prev is {first['prev'][:16] or 'empty'}...)",
                )
            seen.start = "given"
        elif (first["seq"] - 1, first["prev"]) in cuts:
            seen.start = "retention"
            seen.chain = cuts[(first["seq"] - 1, first["prev"])]
        else:
            return Finding(
                path=path,
                line=number,
                problem=f"does not start at chain_start (seq {first['seq']}) and no retention "
                "entry names what was cut before it: lines were removed from the start "
                "(give --start HASH, the prev of this line, if earlier files were archived)",
            )
    if wanted is not None and seen.entries:
        anchor_seq, anchor_hash = wanted
        if anchored:
            seen.anchor = "entry"
        elif any(head == anchor_hash for _, head in cuts):
            seen.anchor = "retention"
        elif anchor_seq is not None and anchor_seq < seen.first_seq:
            seen.anchor = "cut"
        else:
            path, number = last_place
            return Finding(
                path=path,
                line=number,
                problem=f"the anchor {wanted[1][:16]}... is not in the trail: lines were cut "
                f"off the end (the trail ends at seq {seen.head_seq}) or it was rewritten",
            )
    return seen
