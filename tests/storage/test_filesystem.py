"""MemoryFileSystem: the page cache vs disk model and the faults it injects."""

from __future__ import annotations

import pytest

from felix_core.filesystem import FileSystem, IOFailure, MemoryFileSystem, NoSpace, check_name


def _fs() -> MemoryFileSystem:
    fs = MemoryFileSystem()
    fs.make_dirs("a/b")
    return fs


def test_is_a_filesystem() -> None:
    assert isinstance(MemoryFileSystem(), FileSystem)


def test_append_read_size_list() -> None:
    fs = _fs()
    fs.append("a/b/x.log", b"hello")
    fs.append("a/b/x.log", b" world")
    assert fs.size("a/b/x.log") == 11
    assert fs.read("a/b/x.log", 6, 100) == b"world"
    assert fs.read("a/b/x.log", 11, 5) == b""
    assert fs.list_dir("a") == ["b"]
    assert fs.list_dir("a/b") == ["x.log"]
    assert fs.list_dir("") == ["a"]
    assert fs.list_dir("nope") == []
    assert fs.exists("a/b/x.log") and fs.exists("a/b") and not fs.exists("a/c")


def test_missing_file_and_directory_are_io_failures() -> None:
    fs = _fs()
    with pytest.raises(IOFailure):
        fs.size("a/b/none")
    with pytest.raises(IOFailure):
        fs.read("a/b/none", 0, 1)
    with pytest.raises(IOFailure):
        fs.append("a/c/x", b"1")


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/./b", "a/../b", "a\\b"])
def test_bad_names_are_caller_bugs(bad: str) -> None:
    with pytest.raises(ValueError):
        check_name(bad)


def test_crash_keeps_synced_prefix_and_drops_never_synced_files() -> None:
    fs = _fs()
    fs.append("a/b/x", b"12345")
    fs.sync("a/b/x")
    fs.append("a/b/x", b"6789")
    fs.append("a/b/y", b"never synced")
    assert fs.unsynced_bytes("a/b/x") == 4
    fs.crash()
    assert fs.read("a/b/x", 0, 100) == b"12345"
    assert not fs.exists("a/b/y")


def test_crash_tears_the_last_write() -> None:
    fs = _fs()
    fs.append("a/b/x", b"12345")
    fs.sync("a/b/x")
    fs.append("a/b/x", b"6789")
    fs.crash(tear_at=2)
    assert fs.read("a/b/x", 0, 100) == b"1234567"
    fs.append("a/b/x", b"Z")
    fs.crash(tear_at={"a/b/x": 100})
    assert fs.read("a/b/x", 0, 100) == b"1234567Z"


def test_truncate_lowers_the_synced_length() -> None:
    fs = _fs()
    fs.append("a/b/x", b"12345")
    fs.sync("a/b/x")
    fs.truncate("a/b/x", 2)
    fs.append("a/b/x", b"ab")
    fs.crash()
    assert fs.read("a/b/x", 0, 100) == b"12"


def test_injected_failures_are_queued_and_partial() -> None:
    fs = _fs()
    fs.fail_next_append(NoSpace("full"), partial=3)
    with pytest.raises(NoSpace):
        fs.append("a/b/x", b"abcdef")
    assert fs.read("a/b/x", 0, 10) == b"abc"
    fs.fail_next_sync(IOFailure("EIO"))
    with pytest.raises(IOFailure):
        fs.sync("a/b/x")
    fs.sync("a/b/x")  # the twin lets a test call it again; the engine never does
    fs.fail_next("read", IOFailure("bad sector"))
    with pytest.raises(IOFailure):
        fs.read("a/b/x", 0, 1)
    assert fs.read("a/b/x", 0, 1) == b"a"


def test_quota_writes_what_fits_then_refuses() -> None:
    fs = MemoryFileSystem(quota=10)
    fs.append("x", b"123456")
    with pytest.raises(NoSpace):
        fs.append("x", b"abcdefgh")
    assert fs.read("x", 0, 100) == b"123456abcd"
    fs.truncate("x", 6)
    fs.quota = None
    fs.append("x", b"abcdefgh")
    assert fs.size("x") == 14


def test_write_atomic_is_durable_and_all_or_nothing() -> None:
    fs = _fs()
    fs.write_atomic("a/b/i", b"old")
    fs.write_atomic("a/b/i", b"new!")
    fs.crash()
    assert fs.read("a/b/i", 0, 10) == b"new!"
    small = MemoryFileSystem(quota=5)
    small.write_atomic("i", b"abc")
    with pytest.raises(NoSpace):
        small.write_atomic("i", b"abcdef")
    assert small.read("i", 0, 10) == b"abc"


def test_remove_and_remove_tree() -> None:
    fs = _fs()
    fs.append("a/b/x", b"1")
    fs.append("a/y", b"2")
    fs.remove("a/b/x")
    fs.remove("a/b/x")
    assert fs.list_dir("a/b") == []
    fs.remove_tree("a")
    assert fs.list_dir("") == []
    fs.remove_tree("a")


def test_corrupt_flips_a_byte() -> None:
    fs = _fs()
    fs.append("a/b/x", b"\x00\x01")
    fs.corrupt("a/b/x", 1)
    assert fs.read("a/b/x", 0, 2) == b"\x00\xfe"
    fs.corrupt("a/b/x", 0, 7)
    assert fs.read("a/b/x", 0, 2) == b"\x07\xfe"
