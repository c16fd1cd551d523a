"""Resource definitions on disk: :class:`FileMetadataStore`, a
:class:`~felix_core.metadata.MetadataStore` whose every change is durable before it is
answered.

Theory of operation
-------------------
The store keeps the records in memory (a :class:`~felix_core.metadata.MemoryMetadataStore`
does the checks: create-if-absent, compare-and-swap by generation, delete) and mirrors each
change into *one file per resource* under its directory (``<data-dir>/metadata``)::

    records/<kind>+<tenant>+<namespace>+<name>.rec   one resource (kind, path, settings...)
    uid                                              the uid high-water mark

A create or an update replaces that resource's file with
:meth:`~felix_core.filesystem.FileSystem.write_atomic` (temporary file, fsync, rename,
directory fsync); a delete removes it (directory fsynced). Why one file per change rather
than a journal plus snapshots: resource definitions are few (bounded by the count limits)
and written rarely, so a write costs one small file whatever the store holds, and there is
nothing to replay, compact or truncate: after a crash every file is either its old or its
new content, and the directory *is* the state. A journal would pay off for frequent small
writes, which these are not.

Each file is ``FXMD`` + version byte + CRC32 (of the JSON that follows, big-endian) + the
record as UTF-8 JSON. A file that fails its CRC or does not parse (bit rot, a file edited by
hand) is not loaded and is listed in :attr:`FileMetadataStore.damaged`; the runtime logs it,
the broker starts with the rest (never silently: the log line names the file).

A uid names one *incarnation of a resource's records*, and clients rely on it: a subscriber
that lost its connection resumes at its offset only if the stream's ``(uid, created_ms)``
is unchanged (``felix_client``; otherwise its offsets would name other records). A durable
resource keeps its uid across restarts, as its log does. An ephemeral resource's records
are gone after a restart, its definition is not: the store gives it a new uid when it
loads it (rewriting its file), so nobody resumes into the new, empty log as if it were the
old one.

Uids must never repeat for the store's lifetime (a durable log's directory is named by its
resource's uid), even after the resource with the highest uid is deleted. The ``uid`` file
reserves them in blocks of :data:`UID_BLOCK`: one extra atomic write per that many creates.

A write that fails (disk full: ``StorageFull``, retryable; anything else:
``StorageFailed``) changes nothing: the memory state is updated only after the file is.

A change is made in three steps, so that its file I/O can run on a worker thread:
:meth:`~FileMetadataStore.prepare` (the checks and the record as it will be stored, on the
loop; nothing changes), :meth:`~FileMetadataStore.write` (the files, thread-safe: it
touches only the file system) and :meth:`~FileMetadataStore.commit` (the memory state and
the change, on the loop, once the files are written). At most one change may be between
its ``prepare`` and its ``commit`` (the next one's checks depend on it):
:class:`~felix_server.local_route.LocalRoute` runs one at a time, as a storage job, so an
admin write answers only once it is on disk and the loop never waits for its fsyncs.
:meth:`~FileMetadataStore.apply` makes the three steps at once (at start, and in tests).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any

from felix_core.errors import AlreadyExists, Conflict, NotFound, StorageFailed, StorageFull
from felix_core.filesystem import FileSystem, FileSystemError, NoSpace
from felix_core.metadata import (
    LEAF_KINDS,
    Kind,
    MetadataChange,
    Path,
    PreparedWrite,
    ResourceRecord,
    WriteOp,
)

__all__ = [
    "UID_BLOCK",
    "DamagedRecord",
    "FileMetadataStore",
    "decode_record",
    "encode_record",
]

UID_BLOCK = 1024
"""How many uids one write of the ``uid`` file reserves."""

_MAGIC = b"FXMD"
_VERSION = 1
_HEADER = struct.Struct(">4sBI")  # magic, version, CRC32 of the body
_RECORDS = "records"
_UID_FILE = "uid"
_SUFFIX = ".rec"


@dataclass(frozen=True, slots=True)
class DamagedRecord:
    """A record file that was not loaded."""

    name: str
    """Its name in the store's tree."""
    reason: str
    """Why (bad magic, CRC mismatch, bad JSON...)."""


def encode_record(record: ResourceRecord) -> bytes:
    """The bytes of one record file.

    Args:
        record: the record.

    Returns:
        Header (magic, version, CRC32 of the body) + the record as JSON.
    """
    body = json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    return _HEADER.pack(_MAGIC, _VERSION, zlib.crc32(body)) + body


def decode_record(data: bytes) -> ResourceRecord:
    """Parse one record file.

    Raises:
        ValueError: a bad header, a CRC mismatch or a body that is not a record.
    """
    if len(data) < _HEADER.size:
        raise ValueError("shorter than its header")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise ValueError(f"bad magic or version ({magic!r}, {version})")
    body = data[_HEADER.size :]
    if zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    try:
        d: dict[str, Any] = json.loads(body)
        return ResourceRecord(
            kind=Kind(d["kind"]),
            tenant=d["tenant"],
            namespace=d["namespace"],
            name=d["name"],
            settings=d["settings"],
            uid=int(d["uid"]),
            generation=int(d["generation"]),
            created_ms=int(d["created_ms"]),
            updated_ms=int(d["updated_ms"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a record: {exc}") from None


def _label(record: ResourceRecord) -> str:
    return f"{record.kind.value} {'/'.join(p for p in record.path if p)}"


def _file_name(kind: Kind, path: tuple[str, str, str]) -> str:
    # Names are [A-Za-z0-9._-] (felix_core.names): "+" never occurs in one.
    return f"{_RECORDS}/{kind.value}+{'+'.join(path)}{_SUFFIX}"


class FileMetadataStore:
    """A :class:`~felix_core.metadata.StagedMetadataStore` kept in one file per resource. See the
    module docstring.

    Args:
        fs: the store's directory tree (``<data-dir>/metadata``).

    Raises:
        FileSystemError: the directory cannot be read or prepared (the broker cannot
            start).
    """

    def __init__(self, fs: FileSystem) -> None:
        self._fs = fs
        self._records: dict[tuple[Kind, Path], ResourceRecord] = {}
        self._changes: list[MetadataChange] = []
        self.damaged: list[DamagedRecord] = []
        """Record files that were not loaded (logged by the runtime at start)."""
        fs.make_dirs(_RECORDS)
        self._uid_limit = self._read_uid_limit()
        top = 0
        for entry in fs.list_dir(_RECORDS):
            name = f"{_RECORDS}/{entry}"
            if not entry.endswith(_SUFFIX):
                fs.remove(name)  # a temporary file a crash left behind
                continue
            try:
                record = decode_record(fs.read(name, 0, fs.size(name)))
                if name != _file_name(record.kind, record.path):
                    raise ValueError("the record does not match its file name")
            except ValueError as exc:
                self.damaged.append(DamagedRecord(name, str(exc)))
                continue
            self._records[(record.kind, record.path)] = record
            top = max(top, record.uid)
        self._uid = max(top, self._uid_limit)
        self._renew_ephemeral_uids()

    def _renew_ephemeral_uids(self) -> None:
        """Give every ephemeral stream, queue and cache a new uid (module docstring)."""
        renew = [
            r
            for r in self._records.values()
            if r.kind in LEAF_KINDS and r.settings.get("durability") != "durable"
        ]
        if not renew:
            return
        last = self._uid + len(renew)
        if last > self._uid_limit:
            limit = last + UID_BLOCK - 1
            self._fs.write_atomic(_UID_FILE, str(limit).encode())
            self._uid_limit = limit
        for record in sorted(renew, key=lambda r: r.uid):
            self._uid += 1
            renewed = replace(record, uid=self._uid)
            self._fs.write_atomic(_file_name(record.kind, record.path), encode_record(renewed))
            self._records[(record.kind, record.path)] = renewed

    def _read_uid_limit(self) -> int:
        if not self._fs.exists(_UID_FILE):
            return 0
        data = self._fs.read(_UID_FILE, 0, 64)
        try:
            return int(data.decode())
        except ValueError:
            self.damaged.append(DamagedRecord(_UID_FILE, f"not a number: {data!r}"))
            return 0

    def get(self, kind: Kind, path: Path) -> ResourceRecord | None:
        """The record at ``path``, or None."""
        return self._records.get((kind, path))

    def apply(
        self, op: WriteOp, record: ResourceRecord, expected_generation: int | None
    ) -> ResourceRecord:
        """Make one change, on disk before returning (:meth:`prepare`, :meth:`write`,
        :meth:`commit`); see :meth:`felix_core.metadata.MetadataStore.apply`.

        Raises:
            AlreadyExists: a create whose path is taken.
            NotFound: a replace or delete of a record that is not there.
            Conflict: a replace whose stored generation differs from the expected one.
            StorageFull: the disk is full (retryable; the change is not made).
            StorageFailed: any other failure to write (the change is not made).
        """
        prepared = self.prepare(op, record, expected_generation)
        self.write(prepared)
        return self.commit(prepared)

    def prepare(
        self, op: WriteOp, record: ResourceRecord, expected_generation: int | None
    ) -> PreparedWrite:
        """Check one change and say what to write; nothing changes (on the loop thread).

        Raises:
            AlreadyExists: a create whose path is taken.
            NotFound: a replace or delete of a record that is not there.
            Conflict: a replace whose stored generation differs from the expected one.
        """
        current = self._records.get((record.kind, record.path))
        if op is WriteOp.CREATE:
            if current is not None:
                raise AlreadyExists(f"{_label(record)} exists already")
            record = replace(record, uid=self._uid + 1)
        elif current is None:
            raise NotFound(f"{_label(record)} not found", details={"kind": record.kind.value})
        elif op is WriteOp.REPLACE and current.generation != expected_generation:
            raise Conflict(
                "the resource was changed concurrently",
                details={"generation": current.generation},
            )
        limit = None
        if op is WriteOp.CREATE and record.uid > self._uid_limit:
            limit = record.uid + UID_BLOCK - 1
        return PreparedWrite(op, record, current, limit)

    def write(self, prepared: PreparedWrite) -> None:
        """Write a prepared change's files (thread-safe: only the file system is touched).

        Raises:
            StorageFull: the disk is full (retryable; commit nothing).
            StorageFailed: any other failure to write (commit nothing).
        """
        record = prepared.record
        name = _file_name(record.kind, record.path)
        try:
            if prepared.uid_limit is not None:
                self._fs.write_atomic(_UID_FILE, str(prepared.uid_limit).encode())
            if prepared.op is WriteOp.DELETE:
                self._fs.remove(name)
            else:
                self._fs.write_atomic(name, encode_record(record))
        except NoSpace as exc:
            raise StorageFull(f"cannot store the {_label(record)} definition: {exc}") from exc
        except FileSystemError as exc:
            raise StorageFailed(f"cannot store the {_label(record)} definition: {exc}") from exc

    def commit(self, prepared: PreparedWrite) -> ResourceRecord:
        """Apply a written change to the memory state (on the loop thread); return the
        record as stored (a delete: the deleted record)."""
        record = prepared.record
        key = (record.kind, record.path)
        if prepared.uid_limit is not None:
            self._uid_limit = max(self._uid_limit, prepared.uid_limit)
        if prepared.op is WriteOp.DELETE:
            assert prepared.current is not None
            del self._records[key]
            self._changes.append((record.kind, record.path, None))
            return prepared.current
        if prepared.op is WriteOp.CREATE:
            self._uid = record.uid
        self._records[key] = record
        self._changes.append((record.kind, record.path, record))
        return record

    def records(self) -> list[ResourceRecord]:
        """Every record, parents before children."""
        order = {Kind.TENANT: 0, Kind.NAMESPACE: 1}
        return sorted(
            self._records.values(), key=lambda r: (order.get(r.kind, 2), r.path, r.kind.value)
        )

    def take_changes(self) -> list[MetadataChange]:
        """The changes since the last call, in order."""
        out, self._changes = self._changes, []
        return out
