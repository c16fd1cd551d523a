"""When a new directory's entry reaches the disk on the real file layer (OsFileSystem):
at once (``durable_mkdirs``, the default), or, for the logs' tree whose directories a
resource's create makes on the event loop, by the next sync of a file below it, on a worker
thread, before that sync returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from felix_runtime import filesystem as osfs
from felix_runtime.filesystem import OsFileSystem


def _spy(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """Record every directory fsync, relative to ``root`` ("." for the root)."""
    seen: list[str] = []
    real = osfs._fsync_dir

    def spy(path: str) -> None:
        seen.append(os.path.relpath(path, root))
        real(path)

    monkeypatch.setattr(osfs, "_fsync_dir", spy)
    return seen


def test_durable_mkdirs_fsync_each_new_parent_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem(tmp_path)
    seen = _spy(monkeypatch, tmp_path)
    fs.make_dirs("a/b/c")
    assert seen == [".", "a", "a/b"]


def test_deferred_mkdirs_are_fsynced_by_the_first_sync_below_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem(tmp_path, durable_mkdirs=False)
    seen = _spy(monkeypatch, tmp_path)
    fs.make_dirs("a/b/c")
    assert seen == []  # nothing blocks the caller
    fs.append("a/b/c/f", b"x")
    fs.sync("a/b/c/f")
    assert seen == ["a/b/c", "a/b", "a", "."]  # the new file's entry, then every new one
    seen.clear()
    fs.append("a/b/c/f", b"y")
    fs.sync("a/b/c/f")
    assert seen == []  # once is enough
    fs.make_dirs("a/b/d")
    fs.append("a/b/c/f", b"z")
    fs.sync("a/b/c/f")  # a/b changed again: a sync below it makes that durable too
    assert seen == ["a/b"]


def test_a_directory_marked_while_a_sync_fsyncs_it_stays_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem(tmp_path, durable_mkdirs=False)
    fs.make_dirs("a")
    fs.append("a/f", b"x")
    real = osfs._fsync_dir
    seen: list[str] = []

    def racing(path: str) -> None:
        seen.append(os.path.relpath(path, tmp_path))
        if path == str(tmp_path):  # the loop creates another directory meanwhile
            fs.make_dirs("late/x")  # marks the root again, and "late"
        real(path)

    monkeypatch.setattr(osfs, "_fsync_dir", racing)
    fs.sync("a/f")
    assert seen == ["a", "."]
    seen.clear()
    fs.append("late/x/g", b"y")
    fs.sync("late/x/g")
    assert seen == ["late/x", "late", "."]  # the root's newer mark was not lost


def test_a_removed_tree_leaves_no_marks(tmp_path: Path) -> None:
    fs = OsFileSystem(tmp_path, durable_mkdirs=False, durable_removes=False)
    fs.make_dirs("t/ns/s/1")
    fs.append("t/ns/s/1/f", b"x")
    fs.remove("t/ns/s/1/f")
    fs.remove_tree("t/ns/s")
    assert set(fs._dirty_dirs) == {"", "t", "t/ns"}  # nothing under the removed tree
