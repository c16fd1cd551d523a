"""The audit trail's file format and its check: the hash chain, rotation, resuming after a
restart, every kind of tampering ``verify`` must name, the buffer's overflow policy, and a
write refused by the disk."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from brokers import ENTRY, child_env

from felix_runtime import audit
from felix_runtime.audit import AuditTrail, AuditWriter, Finding, Verified, audit_files, verify
from felix_server.config import ConfigError, config_to_toml, load_config


def make_trail(directory: Path, count: int = 10, rotate_bytes: int = 1 << 20) -> AuditWriter:
    writer = AuditWriter(directory, rotate_bytes=rotate_bytes, fsync=False)
    for i in range(count):
        writer.write("admin", {"operation": "create", "resource": f"stream t/ns/s{i}"})
    writer.close()
    return writer


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def finding(paths: Iterable[Path]) -> Finding:
    result = verify(paths)
    assert isinstance(result, Finding), result
    return result


def finding_of(result: Verified | Finding) -> str:
    assert isinstance(result, Finding), result
    return result.problem


def test_chain_links_every_line(tmp_path: Path) -> None:
    writer = make_trail(tmp_path, 3)
    (path,) = audit_files(tmp_path)
    entries = [json.loads(line) for line in lines_of(path)]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["kind"] == "chain_start" and len(entries[0]["chain"]) == 32
    assert entries[0]["prev"] == ""
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    result = verify([tmp_path])
    assert isinstance(result, Verified)
    assert (result.entries, result.chain, result.head) == (4, writer.chain, writer.head)
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_two_trails_have_different_chain_ids(tmp_path: Path) -> None:
    a, b = make_trail(tmp_path / "a", 1), make_trail(tmp_path / "b", 1)
    assert a.chain != b.chain


def test_rotation_keeps_the_chain(tmp_path: Path) -> None:
    make_trail(tmp_path, 40, rotate_bytes=1024)
    files = audit_files(tmp_path)
    assert len(files) >= 4
    assert all(f.stat().st_size < 1024 + 400 for f in files)
    result = verify([tmp_path])
    assert isinstance(result, Verified) and result.entries == 41
    # the first line of each later file links to the last of the file before
    for before, after in itertools.pairwise(files):
        assert json.loads(lines_of(after)[0])["prev"] == json.loads(lines_of(before)[-1])["hash"]
    # a later file alone is refused (its start is not vouched for), unless the caller
    # gives the hash it continues from (the last of the file before, kept elsewhere)
    alone = finding([files[2]])
    assert (alone.path, alone.line) == (files[2], 1)
    assert "does not start at chain_start" in alone.problem
    before = json.loads(lines_of(files[1])[-1])["hash"]
    given = verify([files[2]], start=before)
    assert isinstance(given, Verified) and given.start == "given" and given.first_seq > 0
    assert "does not continue from the given start" in finding_of(
        verify([files[2]], start="0" * 64)
    )
    # a whole file taken out of the middle is a gap
    gone = finding([files[0], *files[2:]])
    assert (gone.path, gone.line) == (files[2], 1)
    assert "removed or moved before this line" in gone.problem


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    first = make_trail(tmp_path, 3)
    again = AuditWriter(tmp_path, fsync=False)
    assert (again.chain, again.seq, again.head) == (first.chain, 3, first.head)
    again.write("handshake_accepted", {"conn": 1})
    again.close()
    result = verify([tmp_path])
    assert isinstance(result, Verified) and result.entries == 5


def test_a_line_cut_short_by_a_crash_is_cut_off_and_said(tmp_path: Path) -> None:
    make_trail(tmp_path, 3)
    (path,) = audit_files(tmp_path)
    with path.open("ab") as f:
        f.write(b'{"seq":4,"ts":1.0,"kin')
    assert "cut short" in finding([path]).problem
    again = AuditWriter(tmp_path, fsync=False)
    again.close()
    last = json.loads(lines_of(path)[-1])
    assert (last["seq"], last["kind"], last["cut_bytes"]) == (4, "resumed", 22)
    assert isinstance(verify([tmp_path]), Verified)


def test_a_damaged_last_line_stops_the_writer_with_a_clear_error(tmp_path: Path) -> None:
    make_trail(tmp_path, 2)
    (path,) = audit_files(tmp_path)
    path.write_bytes(path.read_bytes() + b"not an entry\n")
    with pytest.raises(OSError, match="the last line is not an audit entry"):
        AuditWriter(tmp_path, fsync=False)


# ---------------------------------------------------------------- tampering, one by one


def tampered(tmp_path: Path, change: Any) -> Finding:
    make_trail(tmp_path, 8)
    (path,) = audit_files(tmp_path)
    lines = lines_of(path)
    path.write_bytes(b"".join(change(lines)))
    return finding([path])


def test_edited_content_names_the_line(tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        lines[4] = lines[4].replace(b"s3", b"s9")
        return lines

    found = tampered(tmp_path, edit)
    assert (found.line, found.problem) == (5, "edited (its content does not match its hash)")


def test_edited_last_line_is_named(tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        lines[-1] = lines[-1].replace(b'"create"', b'"delete"')
        return lines

    assert tampered(tmp_path, edit).line == 9


def test_edited_hash_names_the_line(tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        entry = json.loads(lines[2])
        lines[2] = lines[2].replace(entry["hash"].encode(), b"0" * 64)
        return lines

    assert tampered(tmp_path, edit).line == 3


def test_rewritten_line_with_a_fresh_hash_is_named_by_the_next(tmp_path: Path) -> None:
    """Someone who recomputes the edited line's own hash breaks the next line's link."""

    def forge(lines: list[bytes]) -> list[bytes]:
        entry = json.loads(lines[3])
        del entry["hash"]
        entry["resource"] = "stream t/ns/innocent"
        lines[3] = audit.seal(entry) + b"\n"
        return lines

    found = tampered(tmp_path, forge)
    assert found.line == 5 and "does not follow the line before" in found.problem


def test_not_json_is_edited(tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        lines[1] = b"hello\n"
        return lines

    assert tampered(tmp_path, edit).problem == "edited (not JSON)"


def test_removed_line_is_named(tmp_path: Path) -> None:
    found = tampered(tmp_path, lambda lines: lines[:3] + lines[4:])
    assert (found.line, found.problem) == (
        4,
        "1 line(s) removed or moved before this line (seq 4 after 2)",
    )


def test_removed_first_lines_are_named(tmp_path: Path) -> None:
    """Without its chain_start, and no retention entry naming the cut, the trail lost its
    start: the first line is named."""
    make_trail(tmp_path, 8)
    (path,) = audit_files(tmp_path)
    original = lines_of(path)
    for cut in (1, 3):
        path.write_bytes(b"".join(original[cut:]))
        found = finding([path])
        assert found.line == 1 and f"does not start at chain_start (seq {cut})" in found.problem


def test_inserted_copy_is_named(tmp_path: Path) -> None:
    found = tampered(tmp_path, lambda lines: [*lines[:5], lines[2], *lines[5:]])
    assert (found.line, found.problem) == (6, "inserted or reordered (seq 2 after 4)")


def test_inserted_forged_line_is_named_by_the_line_after(tmp_path: Path) -> None:
    def insert(lines: list[bytes]) -> list[bytes]:
        before = json.loads(lines[4])
        forged = {"seq": before["seq"] + 1, "ts": 1.0, "kind": "admin", "prev": before["hash"]}
        return [*lines[:5], audit.seal(forged) + b"\n", *lines[5:]]

    found = tampered(tmp_path, insert)
    assert (found.line, found.problem) == (7, "inserted or reordered (seq 5 after 5)")


def test_reordered_lines_are_named(tmp_path: Path) -> None:
    def swap(lines: list[bytes]) -> list[bytes]:
        lines[3], lines[4] = lines[4], lines[3]
        return lines

    found = tampered(tmp_path, swap)
    assert (found.line, found.problem) == (
        4,
        "1 line(s) removed or moved before this line (seq 4 after 2)",
    )


def test_files_given_out_of_order_are_named(tmp_path: Path) -> None:
    make_trail(tmp_path, 30, rotate_bytes=1024)
    files = audit_files(tmp_path)
    found = finding([files[1], files[0]])
    assert (found.path, found.line) == (files[0], 1)
    assert found.problem.startswith("inserted or reordered")


# ---------------------------------------------------------------- the buffer and the disk


class SlowWriter(AuditWriter):
    """Blocks every write until ``gate`` is set."""

    def __init__(self, directory: Path) -> None:
        self.gate = threading.Event()
        self.gate.set()  # the chain_start goes through
        super().__init__(directory, fsync=False)
        self.gate.clear()

    def write_many(self, events: Iterable[tuple[str, Mapping[str, Any], float | None]]) -> None:
        assert self.gate.wait(10)
        super().write_many(events)


def test_a_full_buffer_counts_what_it_loses_and_writes_it_down(tmp_path: Path) -> None:
    writer = SlowWriter(tmp_path)
    trail = AuditTrail(writer, max_pending=5)
    trail.record("access_denied", n=0)  # taken by the worker, which then waits
    assert not trail.flush(timeout=0.2)
    for n in range(1, 6):
        trail.record("access_denied", n=n)  # fills the buffer
    for n in range(6, 9):
        trail.record("access_denied", n=n)  # lost, counted
    trail.record("admin", n=9)  # lost, counted
    writer.gate.set()
    assert trail.flush()
    trail.close()
    entries = [json.loads(line) for f in audit_files(tmp_path) for line in lines_of(f)]
    kinds = [e["kind"] for e in entries]
    assert kinds == ["chain_start", *["access_denied"] * 6, "audit_overflow"]
    assert entries[-1]["lost"] == {"access_denied": 3, "admin": 1}
    assert isinstance(verify([tmp_path]), Verified)


def test_a_refused_write_leaves_no_partial_line_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    real_write = os.write
    failures = [2]

    def disk_full(fd: int, data: bytes) -> int:
        if failures[0]:
            failures[0] -= 1
            real_write(fd, data[: len(data) // 2])  # half a line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(audit.os, "write", disk_full)
    trail = AuditTrail(writer, retry_s=0.01)
    trail.record("handshake_refused", reason="expired")
    assert trail.flush()
    trail.close()
    assert trail.failures == 2 and trail.written == 1
    result = verify([tmp_path])
    assert isinstance(result, Verified) and result.entries == 2


def test_record_after_close_is_ignored_and_close_is_bounded(tmp_path: Path) -> None:
    trail = AuditTrail(AuditWriter(tmp_path, fsync=False))
    trail.record("admin", operation="create")
    trail.close()
    trail.record("admin", operation="delete")
    result = verify([tmp_path])
    assert isinstance(result, Verified) and result.entries == 2


# ---------------------------------------------------------------- settings and start-up


def test_audit_settings_from_env_flags_and_defaults() -> None:
    default, _ = load_config(["--data-dir", "d/"], {}, lambda p: b"")
    assert (default.audit, default.audit_directory) == (True, "d/audit")
    assert "audit = true" in config_to_toml(default)
    env = {"FELIX_AUDIT": "false", "FELIX_AUDIT_PATH": "/var/log/felix-audit"}
    from_env, _ = load_config([], env, lambda p: b"")
    assert (from_env.audit, from_env.audit_directory) == (False, "/var/log/felix-audit")
    flags, _ = load_config(["--audit", "true", "--audit-rotate-bytes", "1MiB"], env, lambda p: b"")
    assert (flags.audit, flags.audit_rotate_bytes) == (True, 1 << 20)
    with pytest.raises(ConfigError, match="audit_rotate_bytes"):
        load_config(["--audit-rotate-bytes", "10"], {}, lambda p: b"")


def test_a_broker_that_cannot_open_its_trail_does_not_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *args, "--audit-path", str(blocker / "audit")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot start the broker" in done.stderr and "a-file" in done.stderr
