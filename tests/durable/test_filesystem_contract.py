"""The FileSystem contract, run against both implementations: the real one
(:class:`felix_runtime.filesystem.OsFileSystem` on a tmp dir) and the twin the storage tests
use (:class:`felix_core.filesystem.MemoryFileSystem`), so the twin cannot drift from what the
operating system does. Then what only the real one has: the bounded descriptor table, the
ENOSPC/EIO translation, leftovers of write_atomic, syncs racing appends on threads."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from felix_core.filesystem import FileSystem, IOFailure, MemoryFileSystem, NoSpace
from felix_runtime.filesystem import OsFileSystem

Make = Callable[[], FileSystem]


@pytest.fixture(params=["os", "memory"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> FileSystem:
    if request.param == "os":
        return OsFileSystem(tmp_path / "tree", max_open_files=4)
    return MemoryFileSystem()


def test_append_read_size(fs: FileSystem) -> None:
    fs.make_dirs("a/b")
    fs.append("a/b/f.log", b"hello ")
    fs.append("a/b/f.log", b"world")
    assert fs.size("a/b/f.log") == 11
    assert fs.read("a/b/f.log", 0, 100) == b"hello world"
    assert fs.read("a/b/f.log", 6, 3) == b"wor"
    assert fs.read("a/b/f.log", 11, 5) == b""
    assert fs.exists("a/b/f.log") and fs.exists("a/b") and not fs.exists("a/c")


def test_list_dir_sorted_and_missing_is_empty(fs: FileSystem) -> None:
    fs.make_dirs("d/sub")
    fs.append("d/z", b"1")
    fs.append("d/a", b"2")
    assert fs.list_dir("d") == ["a", "sub", "z"]
    assert fs.list_dir("") == ["d"]
    assert fs.list_dir("nope") == []


def test_append_without_its_directory_fails(fs: FileSystem) -> None:
    with pytest.raises(IOFailure):
        fs.append("missing/f", b"x")


def test_missing_files_are_io_failures(fs: FileSystem) -> None:
    with pytest.raises(IOFailure):
        fs.read("nope", 0, 1)
    with pytest.raises(IOFailure):
        fs.size("nope")
    with pytest.raises(IOFailure):
        fs.sync("nope")


def test_truncate_then_append_goes_at_the_new_end(fs: FileSystem) -> None:
    fs.append("f", b"0123456789")
    fs.truncate("f", 4)
    fs.append("f", b"ab")
    assert fs.read("f", 0, 100) == b"0123ab"
    with pytest.raises(ValueError):
        fs.truncate("f", 100)


def test_sync_keeps_content(fs: FileSystem) -> None:
    fs.append("f", b"abc")
    fs.sync("f")
    fs.append("f", b"def")
    fs.sync("f")
    assert fs.read("f", 0, 10) == b"abcdef"


def test_remove_and_remove_tree(fs: FileSystem) -> None:
    fs.make_dirs("t/u")
    fs.append("t/u/f", b"x")
    fs.append("g", b"y")
    fs.remove("g")
    fs.remove("g")  # already gone: nothing happens
    assert not fs.exists("g")
    fs.remove_tree("t")
    assert not fs.exists("t") and not fs.exists("t/u/f")
    fs.remove_tree("t")
    assert fs.list_dir("") == []


def test_write_atomic_replaces(fs: FileSystem) -> None:
    fs.make_dirs("m")
    fs.write_atomic("m/state", b"one")
    fs.write_atomic("m/state", b"two!")
    assert fs.read("m/state", 0, 100) == b"two!"
    assert fs.list_dir("m") == ["state"]  # no temporary file left


def test_a_file_recreated_after_remove_starts_empty(fs: FileSystem) -> None:
    fs.append("f", b"old")
    fs.remove("f")
    fs.append("f", b"new")
    assert fs.read("f", 0, 10) == b"new"


@pytest.mark.parametrize("bad", ["/abs", "a/../b", "a//b", ".", ""])
def test_bad_names_are_value_errors(fs: FileSystem, bad: str) -> None:
    with pytest.raises(ValueError):
        fs.append(bad, b"x")


# -- the real one only ------------------------------------------------------------------


def test_descriptors_stay_bounded(tmp_path: Path) -> None:
    fs = OsFileSystem(tmp_path, max_open_files=3)
    for i in range(10):
        fs.append(f"f{i}", b"x" * i)
    assert fs.open_files == 3
    for i in range(10):  # evicted files reopen on demand
        fs.append(f"f{i}", b"y")
        assert fs.read(f"f{i}", 0, 100) == b"x" * i + b"y"
    assert fs.open_files == 3
    fs.close()
    assert fs.open_files == 0


def test_files_are_real(tmp_path: Path) -> None:
    fs = OsFileSystem(tmp_path / "root")
    fs.make_dirs("x")
    fs.append("x/f", b"data")
    fs.sync("x/f")
    assert (tmp_path / "root" / "x" / "f").read_bytes() == b"data"
    fs.write_atomic("x/g", b"atomic")
    assert (tmp_path / "root" / "x" / "g").read_bytes() == b"atomic"


def test_enospc_is_no_space_and_other_errors_io_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem(tmp_path)
    fs.append("f", b"ok")

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(NoSpace):
        fs.append("f", b"more")
    with pytest.raises(NoSpace):
        fs.write_atomic("g", b"x")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(IOFailure) as info:
        fs.sync("f")
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert fs.read("f", 0, 10) == b"ok"
    assert sorted(os.listdir(tmp_path)) == ["f"]  # the failed write_atomic left no tmp


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = OsFileSystem(tmp_path)
    real = os.write

    def one_byte(fd: int, data: bytes) -> int:
        return real(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    fs.append("f", b"abcdef")
    monkeypatch.undo()
    assert fs.read("f", 0, 10) == b"abcdef"


def test_sync_of_a_new_file_fsyncs_its_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem(tmp_path, max_open_files=1)
    fs.make_dirs("d")
    synced: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    fs.append("d/f", b"x")
    fs.append("d/other", b"y")  # evicts d/f's descriptor: the duty to sync the entry stays
    fs.sync("d/f")
    assert synced == [False, True]
    synced.clear()
    fs.append("d/f", b"z")
    fs.sync("d/f")
    assert synced == [False]


def test_syncs_and_reads_on_threads_while_appending(tmp_path: Path) -> None:
    fs = OsFileSystem(tmp_path, max_open_files=2)
    names = [f"f{i}" for i in range(6)]
    for name in names:
        fs.append(name, b"")
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            while not stop.is_set():
                for name in names:
                    fs.sync(name)
                    data = fs.read(name, 0, 1 << 20)
                    assert data == name.encode() * (len(data) // len(name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(300):
        for name in names:  # every append evicts: descriptors close under the workers
            fs.append(name, name.encode())
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    for name in names:
        assert fs.read(name, 0, 1 << 20) == name.encode() * 300


@pytest.mark.parametrize("durable_removes", [True, False])
def test_when_a_removal_reaches_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable_removes: bool
) -> None:
    """Durable removes fsync the directory at once; the logs' tree (retention on the loop
    thread) leaves it to the next sync of a file there, on a worker thread."""
    fs = OsFileSystem(tmp_path, durable_removes=durable_removes)
    fs.make_dirs("d")
    for name in ("d/old", "d/new"):
        fs.append(name, b"x")
        fs.sync(name)
    dirs: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            dirs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    fs.remove("d/old")
    assert dirs == ([str(tmp_path / "d")] if durable_removes else [])
    fs.append("d/new", b"y")
    fs.sync("d/new")
    assert dirs == [str(tmp_path / "d")]
    fs.append("d/new", b"z")
    fs.sync("d/new")  # once is enough
    assert dirs == [str(tmp_path / "d")]
