"""``felix audit tail --follow``: new entries as they are written, across the writer's
rotations, bounded reads, and Ctrl-C exits 0."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from felix_client._audit_cli import Follower, follow
from felix_client.cli import main
from felix_runtime.audit import AuditWriter, audit_files


def write(writer: AuditWriter, *names: str) -> None:
    for name in names:
        writer.write("admin", {"operation": "create", "resource": name})


def resources(lines: list[str]) -> list[str]:
    """The ``resource`` of each entry (the writer's own ``chain_start`` has none)."""
    entries = [json.loads(line) for line in lines]
    return [e["resource"] for e in entries if "resource" in e]


def test_follow_prints_new_entries_after_the_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    write(writer, "a", "b", "c")
    follower = Follower(tmp_path, audit_files(tmp_path)[-1], 0)
    assert resources(follower.poll()) == ["a", "b", "c"]
    assert follower.poll() == []
    write(writer, "d")
    assert resources(follower.poll()) == ["d"]
    writer.close()


def test_follow_moves_on_when_the_writer_rotates(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, rotate_bytes=300, fsync=False)
    write(writer, "a")
    follower = Follower(tmp_path, audit_files(tmp_path)[-1], 0)
    assert resources(follower.poll()) == ["a"]
    write(writer, *(f"r{i}" for i in range(6)))
    assert len(audit_files(tmp_path)) > 2  # rotated more than once in one poll
    assert resources(follower.poll()) == [f"r{i}" for i in range(6)]
    writer.close()


def test_follow_waits_for_a_line_to_be_complete(tmp_path: Path) -> None:
    trail = tmp_path / "audit-000001.jsonl"
    trail.write_bytes(b'{"resource":"a"}\n{"resource":')
    follower = Follower(tmp_path, trail, 0)
    assert resources(follower.poll()) == ["a"]
    with trail.open("ab") as f:
        f.write(b'"b"}\n')
    assert resources(follower.poll()) == ["b"]


def test_follow_reads_a_bounded_chunk_per_poll(tmp_path: Path) -> None:
    trail = tmp_path / "audit-000001.jsonl"
    trail.write_bytes(b"".join(b'{"resource":"%d"}\n' % i for i in range(100)))
    follower = Follower(tmp_path, trail, 0, chunk=64)
    first = follower.poll()
    assert 0 < len(first) <= 4
    seen = list(first)
    for _ in range(200):
        seen += follower.poll()
    assert resources(seen) == [str(i) for i in range(100)]


def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    trail = tmp_path / "audit-000001.jsonl"
    trail.write_bytes(b'{"resource":"a"}\n{"resource":"b"}\n')
    follower = Follower(trail, trail, trail.stat().st_size)
    trail.write_bytes(b'{"resource":"c"}\n')
    assert resources(follower.poll()) == ["c"]


def test_the_command_tails_then_follows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    write(writer, "a", "b", "c")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # an entry lands during the first wait, then Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 1:
            write(writer, "d")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr("felix_client._audit_cli._sleep", sleep)
    code = main(["audit", "tail", str(tmp_path), "-n", "2", "--follow", "--interval", "0.25"])
    assert code == 0
    assert resources(capsys.readouterr().out.splitlines()) == ["b", "c", "d"]
    assert sleeps == [0.25, 0.25]
    writer.close()


def test_follow_stops_after_polls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trail = tmp_path / "audit-000001.jsonl"
    trail.write_bytes(b'{"resource":"a"}\n')
    assert follow(Follower(tmp_path, trail, 0), 0.0, sleep=lambda _: None, polls=3) == 0
    assert resources(capsys.readouterr().out.splitlines()) == ["a"]


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_exits_0(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    write(writer, "a")
    writer.close()
    # Python turns SIGINT into KeyboardInterrupt only when it starts with SIGINT at its
    # default; a suite started in the background of a non-interactive shell (`cmd &`)
    # inherits it ignored, so the child installs the handler a terminal's Python would have.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from felix_client.cli import main; sys.exit(main())"
    )
    args = ["audit", "tail", str(tmp_path), "-n", "1", "--follow", "--interval", "0.05"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # a real pipe
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 10)[0], "no tail within 10 s"
        assert resources([proc.stdout.readline()]) == ["a"]  # it is in the follow loop
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate()
