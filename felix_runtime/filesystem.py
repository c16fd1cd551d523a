"""The real file layer: :class:`OsFileSystem`, the ``os`` implementation of
:class:`felix_core.filesystem.FileSystem` that both runtimes share.

Theory of operation
-------------------
One directory tree (the broker's ``<data-dir>/logs`` or ``<data-dir>/metadata``) addressed
by relative names, as the protocol says. What each call does on the operating system:

* :meth:`~OsFileSystem.append` writes through a file descriptor opened ``O_RDWR |
  O_APPEND`` and *kept open*: a log appends to the same segment thousands of times a second
  and an ``open``/``close`` per append would cost more than the write. The open descriptors
  are an LRU of at most ``max_open_files``; the least recently used one is closed when a
  new file needs one. A file created by an append has a directory entry that is not yet
  durable: the next :meth:`~OsFileSystem.sync` of that file fsyncs its directory too.
* :meth:`~OsFileSystem.sync` is ``fsync`` (it runs on worker threads). :meth:`read` is
  ``pread`` (also on worker threads). Both *pin* the descriptor they use while the call
  runs, so the loop thread evicting it from the LRU meanwhile defers the ``close`` to the
  unpin: a descriptor number is never closed under a running ``fsync`` and reused by
  another file. One lock guards the table (never held during the system call itself).
* Creating a directory, renaming a file (:meth:`~OsFileSystem.write_atomic`) and removing a
  file or a tree fsync the parent directory afterwards, so the change survives a power
  loss before the call returns. A tree whose file removals need not be durable at once
  (``durable_removes=False``: the logs, where retention deletes segments on the loop
  thread) leaves that directory fsync to the next :meth:`~OsFileSystem.sync` of a file in
  the same directory, on a worker thread: a removal a power loss undoes only brings back a
  segment retention had deleted, whose records are valid (recovery takes it back in).
  Likewise ``durable_mkdirs=False`` (the logs, whose directories a resource's create makes
  on the loop thread): :meth:`~OsFileSystem.make_dirs` fsyncs nothing and the next
  :meth:`~OsFileSystem.sync` of a file below a new directory fsyncs every parent whose
  entries changed, up to the root, before it returns; nothing is acknowledged as synced in
  a directory whose entry is not. A directory marked again while a sync fsyncs it stays
  marked (a mark is a sequence number, cleared only if unchanged).
* :meth:`~OsFileSystem.write_atomic`: ``name.tmp`` written and fsynced, ``rename`` over
  ``name``, directory fsynced: after a crash the file holds the old or the new content.

Errors: ``ENOSPC`` and ``EDQUOT`` become :class:`~felix_core.filesystem.NoSpace`, any other
``OSError`` :class:`~felix_core.filesystem.IOFailure` (the original error chained).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from felix_core.filesystem import FileSystemError, IOFailure, NoSpace, check_name, parent_of

__all__ = ["DEFAULT_MAX_OPEN_FILES", "OsFileSystem"]

DEFAULT_MAX_OPEN_FILES = 256
"""How many file descriptors an :class:`OsFileSystem` keeps open at most (plus the few a
running ``fsync`` or ``pread`` pins beyond it, briefly)."""

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_TMP_SUFFIX = ".tmp"


def _error(what: str, name: str, exc: OSError) -> FileSystemError:
    """The protocol's error for ``exc`` (the one seam: :func:`_translated` and the hot
    append path use it)."""
    if exc.errno in _NO_SPACE:
        return NoSpace(f"{what} {name}: {exc.strerror}")
    return IOFailure(f"{what} {name}: {exc.strerror or exc}")


@contextlib.contextmanager
def _translated(what: str, name: str) -> Iterator[None]:
    """Turn ``OSError`` into the protocol's errors."""
    try:
        yield
    except OSError as exc:
        raise _error(what, name, exc) from exc


class _Handle:
    """One open descriptor: pinned while a sync or read uses it."""

    __slots__ = ("closing", "fd", "pins")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pins = 0
        self.closing = False  # evicted while pinned: the last unpin closes it


class OsFileSystem:
    """The :class:`~felix_core.filesystem.FileSystem` protocol on real files under
    ``root``. See the module docstring.

    Args:
        root: the directory of the tree (created, durably, if missing).
        max_open_files: the most descriptors kept open between calls.
        on_append: told the duration in seconds of every :meth:`append` that succeeded (the
            append-duration histogram), on the calling thread.
        durable_mkdirs: :meth:`make_dirs` fsyncs each new directory's parent before
            returning (True), or the next :meth:`sync` of a file below it does (False).
        durable_removes: :meth:`remove` fsyncs the directory before returning (True), or
            the next :meth:`sync` in that directory does (False; see the module docstring).

    Raises:
        NoSpace, IOFailure: ``root`` cannot be created.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        on_append: Callable[[float], None] | None = None,
        durable_removes: bool = True,
        durable_mkdirs: bool = True,
    ) -> None:
        if max_open_files < 1:
            raise ValueError("max_open_files must be >= 1")
        self.root = os.path.abspath(os.fspath(root))
        self.max_open_files = max_open_files
        self._on_append = on_append
        self._durable_removes = durable_removes
        self._durable_mkdirs = durable_mkdirs
        self._marks = itertools.count(1)
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Handle] = OrderedDict()
        self._new: set[str] = set()  # created by append, directory not fsynced since
        self._dirty_dirs: dict[str, int] = {}  # entries changed since: dir -> mark
        with _translated("create", self.root):
            if not os.path.isdir(self.root):
                os.makedirs(self.root, exist_ok=True)
                _fsync_dir(os.path.dirname(self.root))

    def _path(self, name: str, *, allow_root: bool = False) -> str:
        check_name(name, allow_root=allow_root)
        return os.path.join(self.root, name) if name else self.root

    # -- the descriptor table -----------------------------------------------------------

    def _pin(self, name: str, *, create: bool) -> _Handle:
        """The open handle of ``name`` (opened now if needed), pinned."""
        with self._lock:
            handle = self._open.get(name)
            if handle is not None:
                self._open.move_to_end(name)
                handle.pins += 1
                return handle
        path = self._path(name)
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        created = False
        with _translated("open", name):
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                if not create:
                    raise
                if not os.path.isdir(os.path.dirname(path)):
                    raise IOFailure(f"no such directory: {parent_of(name)!r}") from None
                fd = os.open(path, flags | os.O_CREAT, 0o644)
                created = True
        with self._lock:
            if created:
                self._new.add(name)
            raced = self._open.get(name)
            if raced is not None:  # another thread opened it meanwhile: keep theirs
                os.close(fd)
                raced.pins += 1
                return raced
            handle = self._open[name] = _Handle(fd)
            handle.pins += 1
            self._evict_locked()
            return handle

    def _unpin(self, handle: _Handle) -> None:
        with self._lock:
            handle.pins -= 1
            if handle.closing and handle.pins == 0:
                os.close(handle.fd)

    def _evict_locked(self) -> None:
        while len(self._open) > self.max_open_files:
            _, old = self._open.popitem(last=False)
            self._release_locked(old)

    def _release_locked(self, handle: _Handle) -> None:
        if handle.pins:
            handle.closing = True
        else:
            os.close(handle.fd)

    def _forget(self, name: str) -> None:
        """Close the descriptor of ``name`` if open (the file is going away)."""
        with self._lock:
            self._new.discard(name)
            handle = self._open.pop(name, None)
            if handle is not None:
                self._release_locked(handle)

    def _forget_under(self, prefix: str) -> None:
        with self._lock:
            self._new = {n for n in self._new if not n.startswith(prefix)}
            self._dirty_dirs = {
                d: mark
                for d, mark in self._dirty_dirs.items()
                if d != prefix[:-1] and not d.startswith(prefix)
            }
            for name in [n for n in self._open if n.startswith(prefix)]:
                self._release_locked(self._open.pop(name))

    @property
    def open_files(self) -> int:
        """How many descriptors the table holds (tests: the bound)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every cached descriptor (pinned ones when their call ends). The object
        stays usable: descriptors are opened again on demand."""
        with self._lock:
            for handle in self._open.values():
                self._release_locked(handle)
            self._open.clear()

    # -- the FileSystem protocol --------------------------------------------------------

    def list_dir(self, name: str) -> list[str]:
        """See :meth:`felix_core.filesystem.FileSystem.list_dir`."""
        path = self._path(name, allow_root=True)
        with _translated("list", name):
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []

    def exists(self, name: str) -> bool:
        """See :meth:`felix_core.filesystem.FileSystem.exists`."""
        return os.path.exists(self._path(name, allow_root=True))

    def size(self, name: str) -> int:
        """See :meth:`felix_core.filesystem.FileSystem.size`."""
        path = self._path(name)
        with _translated("stat", name):
            return os.stat(path).st_size

    def read(self, name: str, pos: int, n: int) -> bytes:
        """See :meth:`felix_core.filesystem.FileSystem.read` (``pread``; thread-safe)."""
        if pos < 0 or n < 0:
            raise ValueError("negative position or length")
        handle = self._pin(name, create=False)
        try:
            chunks: list[bytes] = []
            with _translated("read", name):
                while n > 0:
                    chunk = os.pread(handle.fd, n, pos)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    pos += len(chunk)
                    n -= len(chunk)
            return b"".join(chunks)
        finally:
            self._unpin(handle)

    def append(self, name: str, data: bytes) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.append` (the page cache only).

        The hot path of a durable publish: one ``os.write`` on the kept-open descriptor,
        nothing else (no ``stat``: a missing directory is found when the file is opened,
        and a file only loses its descriptor through this object's own removes)."""
        on_append = self._on_append
        started = time.perf_counter() if on_append is not None else 0.0
        handle = self._pin(name, create=True)
        try:  # not _translated: its enter and exit cost 0.7 us, on every durable publish
            written = os.write(handle.fd, data)
            if written < len(data):  # a short write (a signal, a full disk): finish it
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(handle.fd, view) :]
        except OSError as exc:
            raise _error("write", name, exc) from exc
        finally:
            self._unpin(handle)
        if on_append is not None:
            on_append(time.perf_counter() - started)

    def truncate(self, name: str, size: int) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.truncate`."""
        path = self._path(name)
        with _translated("truncate", name):
            length = os.stat(path).st_size
            if size < 0 or size > length:
                raise ValueError(f"cannot truncate {name} of {length} bytes to {size}")
            os.truncate(path, size)

    def sync(self, name: str) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.sync` (``fsync``; then the directory's
        when the file was created since, and every ancestor whose entries changed since;
        thread-safe)."""
        handle = self._pin(name, create=False)
        try:
            parent = parent_of(name)
            with _translated("fsync", name):
                os.fsync(handle.fd)
                with self._lock:
                    due = self._dirs_due(name, parent)
                for directory in due:
                    _fsync_dir(self._path(directory, allow_root=True))
                with self._lock:
                    self._new.discard(name)
                    for directory, mark in due.items():
                        if self._dirty_dirs.get(directory) == mark:
                            del self._dirty_dirs[directory]
        finally:
            self._unpin(handle)

    def _dirs_due(self, name: str, parent: str) -> dict[str, int]:
        """The directories a sync of ``name`` must fsync, deepest first, with their marks
        (0: the parent of a new file, not marked itself). Call with the lock held."""
        due: dict[str, int] = {}
        if name in self._new:
            due[parent] = self._dirty_dirs.get(parent, 0)
        if self._dirty_dirs:
            directory = parent
            while True:
                mark = self._dirty_dirs.get(directory)
                if mark is not None:
                    due[directory] = mark
                if not directory:
                    break
                directory = parent_of(directory)
        return due

    def remove(self, name: str) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.remove` (the directory fsynced now,
        or by the next :meth:`sync` of a file in it: ``durable_removes``)."""
        path = self._path(name)
        self._forget(name)
        with _translated("remove", name):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            if self._durable_removes:
                _fsync_dir(os.path.dirname(path))
                return
        with self._lock:
            self._dirty_dirs[parent_of(name)] = next(self._marks)

    def make_dirs(self, name: str) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.make_dirs` (each new directory's
        parent fsynced now, or by the next :meth:`sync` below it: ``durable_mkdirs``)."""
        check_name(name, allow_root=True)
        parts = name.split("/") if name else []
        with _translated("mkdir", name):
            for i in range(1, len(parts) + 1):
                path = os.path.join(self.root, *parts[:i])
                if os.path.isdir(path):
                    continue
                if os.path.exists(path):
                    raise IOFailure(f"a file is in the way: {'/'.join(parts[:i])}")
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                if self._durable_mkdirs:
                    _fsync_dir(os.path.dirname(path))
                else:
                    with self._lock:
                        self._dirty_dirs["/".join(parts[: i - 1])] = next(self._marks)

    def write_atomic(self, name: str, data: bytes) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.write_atomic`."""
        path = self._path(name)
        tmp = path + _TMP_SUFFIX
        self._forget(name)  # the old inode goes
        with _translated("write", name):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(os.path.dirname(path))

    def remove_tree(self, name: str) -> None:
        """See :meth:`felix_core.filesystem.FileSystem.remove_tree` (the parent fsynced)."""
        path = self._path(name)
        self._forget_under(name + "/")
        with _translated("remove", name):
            if not os.path.exists(path):
                return
            shutil.rmtree(path)
            _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    """fsync a directory, so that the entries created, renamed or removed in it last."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
