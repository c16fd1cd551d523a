"""The file layer under durable storage: a protocol, its errors, and a fault-injecting twin.

Theory of operation
-------------------
Durable logs never touch the operating system themselves: they are given a
:class:`FileSystem`, one data directory tree addressed by *relative names* (``"/"``-separated,
no leading ``"/"``, no ``"."`` or ``".."`` parts, e.g.
``"stream/t/ns/orders/7/00000000000000000000.log"``).
The real implementation (``os`` calls, one open descriptor per file) lives in the runtime
package; :class:`MemoryFileSystem` is the twin the tests use.

Two kinds of durability are kept apart, as the kernel keeps them apart:

* *written*: :meth:`FileSystem.append` returned; the bytes are in the page cache, every
  reader sees them, a ``kill -9`` of the process does not lose them, a power loss may.
* *synced*: :meth:`FileSystem.sync` returned for that file after the write; the bytes (and
  the file's directory entry) survive a power loss.

Threads. Every method is called from the event-loop thread except :meth:`FileSystem.sync`,
:meth:`FileSystem.read` and :meth:`FileSystem.write_atomic`, which the runtime also calls
from worker threads (an fsync and a cold read must never block the loop; a sync job writes
the index of a rolled segment). Those three must be safe to run while the loop thread
appends to, truncates or creates *other* parts of the same file or other files. The storage
engine never truncates the part a job reads, and never removes a file a job uses, except
when the whole log is dropped (its resource was deleted): then a job may fail with
:class:`IOFailure` (or succeed on a still-open descriptor) and its outcome is ignored.

Errors. Every method raises :class:`NoSpace` when the device is full (``ENOSPC``, ``EDQUOT``)
and :class:`IOFailure` for any other failure (``EIO``, a missing file, permissions...). A
failed :meth:`FileSystem.append` may have written a *prefix* of the data (as ``write(2)``
does): the caller truncates back to the size it knew. A failed :meth:`FileSystem.sync` must
never be retried on the same file: the kernel may have dropped the dirty pages it could not
write and marked them clean, so a second fsync can succeed while the data is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "FileSystem",
    "FileSystemError",
    "IOFailure",
    "MemoryFileSystem",
    "NoSpace",
    "check_name",
    "parent_of",
]


class FileSystemError(Exception):
    """Base of the errors a :class:`FileSystem` raises."""


class NoSpace(FileSystemError):
    """The device (or quota) is full: ``ENOSPC``. Writes may succeed again once space
    returns; nothing already written is affected."""


class IOFailure(FileSystemError):
    """Any other failure of the file layer (``EIO``, a missing file, permissions...)."""


def check_name(name: str, *, allow_root: bool = False) -> str:
    """Check that ``name`` is a relative name inside the tree.

    Args:
        name: the name to check.
        allow_root: accept ``""`` (the root of the tree), for directory operations.

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: ``name`` is absolute, empty (unless allowed), or has an empty, ``"."``
            or ``".."`` part (a caller bug, never a file-system failure).
    """
    if name == "":
        if allow_root:
            return name
        raise ValueError("empty file name")
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise ValueError(f"not a relative name: {name!r}")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"bad name part in {name!r}")
    return name


def parent_of(name: str) -> str:
    """The directory holding ``name`` (``""`` for the root)."""
    cut = name.rfind("/")
    return name[:cut] if cut >= 0 else ""


@runtime_checkable
class FileSystem(Protocol):
    """One data directory tree, addressed by relative names (see the module docstring).

    Every method raises :class:`NoSpace` or :class:`IOFailure` on failure, and ``ValueError``
    for a malformed name. Only :meth:`sync`, :meth:`read` and :meth:`write_atomic` may be
    called from a worker thread.
    """

    def list_dir(self, name: str) -> list[str]:
        """Return the names of the entries (files and directories) directly inside the
        directory ``name`` (``""``: the root), sorted; ``[]`` when it does not exist."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a file or directory called ``name`` exists."""
        ...

    def size(self, name: str) -> int:
        """The length in bytes of the file ``name`` (IOFailure when missing)."""
        ...

    def read(self, name: str, pos: int, n: int) -> bytes:
        """Read up to ``n`` bytes of the file ``name`` from ``pos``; fewer only at the end
        of the file. Thread-safe. (IOFailure when missing.)"""
        ...

    def append(self, name: str, data: bytes) -> None:
        """Append ``data`` to the file ``name``, creating it (not its directory) if needed.

        Written, not synced: see :meth:`sync`. On :class:`NoSpace` / :class:`IOFailure` a
        prefix of ``data`` may have been written.
        """
        ...

    def truncate(self, name: str, size: int) -> None:
        """Cut the file ``name`` to ``size`` bytes (at most its length)."""
        ...

    def sync(self, name: str) -> None:
        """fsync the file ``name``: every byte written before the call, its length and its
        directory entry survive a power loss once this returns. Thread-safe. Never call it
        again on a file whose sync failed."""
        ...

    def remove(self, name: str) -> None:
        """Delete the file ``name`` (nothing happens when it is already gone)."""
        ...

    def make_dirs(self, name: str) -> None:
        """Create the directory ``name`` and its missing parents (durably)."""
        ...

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace the file ``name`` by ``data`` all at once and durably: a temporary file
        in the same directory, fsync, rename over ``name``, fsync of the directory. After a
        crash the file holds either the old content or ``data``, never a mix. Thread-safe
        (for distinct names)."""
        ...

    def remove_tree(self, name: str) -> None:
        """Delete the directory ``name`` and everything under it (nothing when missing)."""
        ...


@dataclass(slots=True)
class _File:
    data: bytearray = field(default_factory=bytearray)
    synced: int = 0
    """Length of the prefix of ``data`` that survives a crash."""
    entry_synced: bool = False
    """Whether the file's directory entry survives a crash."""


class MemoryFileSystem:
    """A :class:`FileSystem` in memory that models the page cache and the disk, and fails
    on demand: the twin the storage tests run against.

    Each file holds its written bytes and the length of the synced prefix; a file created by
    :meth:`append` exists on "disk" only once synced. :meth:`crash` turns the tree into what
    a power loss leaves: every file keeps its synced prefix, plus optionally a *torn* prefix
    of its unsynced bytes; files never synced disappear. Directories, removals and
    :meth:`write_atomic` are durable at once (the model is strict only where logs rely on
    fsync).

    Faults: :meth:`fail_next` makes the next call of one operation raise (an ``append`` may
    first write a prefix), and ``quota`` bounds the total bytes of all files, so appends
    beyond it write what fits and raise :class:`NoSpace` like a full disk.

    Threads: it takes no lock (the pure packages may not import ``threading``). Each
    operation is a few steps on Python objects; tests run jobs inline, and runtime tests
    that call :meth:`sync` / :meth:`read` from a worker thread rely on the GIL making those
    two (one attribute store; one slice copy) atomic.
    """

    def __init__(self, *, quota: int | None = None) -> None:
        """Create an empty tree.

        Args:
            quota: the most bytes all files together may hold (None: unbounded).
        """
        self.quota = quota
        self._files: dict[str, _File] = {}
        self._dirs: set[str] = {""}
        self._failures: dict[str, list[tuple[FileSystemError, int]]] = {}
        self._last_appended: str | None = None
        self.sync_count = 0
        """How many syncs succeeded (a test counts group commits with it)."""
        self.append_count = 0
        """How many appends were called."""

    # -- fault injection ----------------------------------------------------------------

    def fail_next(self, op: str, error: FileSystemError, *, partial: int = 0) -> None:
        """Make the next call of ``op`` raise ``error`` (queued: several calls fail in turn).

        Args:
            op: a method name: ``"append"``, ``"sync"``, ``"read"``, ``"truncate"``,
                ``"write_atomic"``, ``"remove"``, ``"make_dirs"``, ``"list_dir"``, ``"size"``.
            error: the exception to raise.
            partial: for ``"append"``: how many bytes to write before failing.
        """
        self._failures.setdefault(op, []).append((error, partial))

    def fail_next_append(self, error: FileSystemError, *, partial: int = 0) -> None:
        """Shorthand for ``fail_next("append", error, partial=partial)``."""
        self.fail_next("append", error, partial=partial)

    def fail_next_sync(self, error: FileSystemError) -> None:
        """Shorthand for ``fail_next("sync", error)``."""
        self.fail_next("sync", error)

    def _maybe_fail(self, op: str) -> tuple[FileSystemError, int] | None:
        queued = self._failures.get(op)
        if not queued:
            return None
        return queued.pop(0)

    def crash(self, tear_at: int | Mapping[str, int] | None = None) -> None:
        """Lose what a power loss loses.

        Args:
            tear_at: how many unsynced bytes survive (a torn write). An ``int`` applies to
                the file appended to last, a mapping gives a count per file name; other
                files keep only their synced prefix. Counts beyond the unsynced length keep
                it all.
        """
        if isinstance(tear_at, int):
            tears = {self._last_appended: tear_at} if self._last_appended is not None else {}
        else:
            tears = dict(tear_at or {})
        for name in list(self._files):
            f = self._files[name]
            keep = f.synced + max(0, tears.get(name, 0))
            keep = min(keep, len(f.data))
            if not f.entry_synced and f.synced == 0 and keep == 0:
                del self._files[name]
                continue
            del f.data[keep:]
            f.synced = keep
            f.entry_synced = True
        self._failures.clear()
        self._last_appended = None

    def corrupt(self, name: str, pos: int, value: int | None = None) -> None:
        """Overwrite one byte of a file, on disk too (bit rot, a bad sector).

        Args:
            name: the file.
            pos: the byte's position.
            value: the new byte (default: the old one with every bit flipped).
        """
        f = self._file(name)
        f.data[pos] = (f.data[pos] ^ 0xFF) if value is None else value

    def unsynced_bytes(self, name: str) -> int:
        """How many bytes of ``name`` a crash would lose."""
        f = self._file(name)
        return len(f.data) - f.synced

    def total_bytes(self) -> int:
        """The bytes all files hold together (what ``quota`` bounds)."""
        return sum(len(f.data) for f in self._files.values())

    # -- the FileSystem protocol --------------------------------------------------------

    def _file(self, name: str) -> _File:
        f = self._files.get(check_name(name))
        if f is None:
            raise IOFailure(f"no such file: {name}")
        return f

    def _raise_if_failing(self, op: str) -> None:
        failure = self._maybe_fail(op)
        if failure is not None:
            raise failure[0]

    def list_dir(self, name: str) -> list[str]:
        """See :meth:`FileSystem.list_dir`."""
        check_name(name, allow_root=True)
        self._raise_if_failing("list_dir")
        prefix = name + "/" if name else ""
        found = set()
        for path in (*self._files, *self._dirs):
            if path and path.startswith(prefix):
                found.add(path[len(prefix) :].split("/", 1)[0])
        return sorted(found)

    def exists(self, name: str) -> bool:
        """See :meth:`FileSystem.exists`."""
        check_name(name, allow_root=True)
        return name in self._files or name in self._dirs

    def size(self, name: str) -> int:
        """See :meth:`FileSystem.size`."""
        self._raise_if_failing("size")
        return len(self._file(name).data)

    def read(self, name: str, pos: int, n: int) -> bytes:
        """See :meth:`FileSystem.read`."""
        self._raise_if_failing("read")
        if pos < 0 or n < 0:
            raise ValueError("negative position or length")
        return bytes(self._file(name).data[pos : pos + n])

    def append(self, name: str, data: bytes) -> None:
        """See :meth:`FileSystem.append`."""
        check_name(name)
        self.append_count += 1
        if parent_of(name) not in self._dirs:
            raise IOFailure(f"no such directory: {parent_of(name)}")
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = _File()
        self._last_appended = name
        failure = self._maybe_fail("append")
        if failure is not None:
            error, partial = failure
            f.data += data[: max(0, min(partial, len(data)))]
            raise error
        if self.quota is not None:
            room = max(0, self.quota - self.total_bytes())
            if len(data) > room:
                f.data += data[:room]
                raise NoSpace(f"quota of {self.quota} bytes reached writing {name}")
        f.data += data

    def truncate(self, name: str, size: int) -> None:
        """See :meth:`FileSystem.truncate`."""
        self._raise_if_failing("truncate")
        f = self._file(name)
        if size < 0 or size > len(f.data):
            raise ValueError(f"cannot truncate {name} of {len(f.data)} bytes to {size}")
        del f.data[size:]
        f.synced = min(f.synced, size)

    def sync(self, name: str) -> None:
        """See :meth:`FileSystem.sync`."""
        self._raise_if_failing("sync")
        f = self._file(name)
        f.synced = len(f.data)
        f.entry_synced = True
        self.sync_count += 1

    def remove(self, name: str) -> None:
        """See :meth:`FileSystem.remove`."""
        check_name(name)
        self._raise_if_failing("remove")
        self._files.pop(name, None)

    def make_dirs(self, name: str) -> None:
        """See :meth:`FileSystem.make_dirs`."""
        check_name(name, allow_root=True)
        self._raise_if_failing("make_dirs")
        if name in self._files:
            raise IOFailure(f"a file is in the way: {name}")
        parts = name.split("/") if name else []
        for i in range(1, len(parts) + 1):
            self._dirs.add("/".join(parts[:i]))

    def write_atomic(self, name: str, data: bytes) -> None:
        """See :meth:`FileSystem.write_atomic`."""
        check_name(name)
        self._raise_if_failing("write_atomic")
        if parent_of(name) not in self._dirs:
            raise IOFailure(f"no such directory: {parent_of(name)}")
        if self.quota is not None:
            old = self._files.get(name)
            room = self.quota - self.total_bytes() + (len(old.data) if old else 0)
            if len(data) > room:
                raise NoSpace(f"quota of {self.quota} bytes reached writing {name}")
        self._files[name] = _File(bytearray(data), len(data), True)

    def remove_tree(self, name: str) -> None:
        """See :meth:`FileSystem.remove_tree`."""
        check_name(name)
        self._raise_if_failing("remove_tree")
        prefix = name + "/"
        for path in [p for p in self._files if p.startswith(prefix)]:
            del self._files[path]
        self._dirs = {d for d in self._dirs if d != name and not d.startswith(prefix)}
