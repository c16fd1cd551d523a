"""``felix log verify``, ``dump`` and ``truncate`` on segments a real DiskLog wrote through
OsFileSystem: a healthy log verifies (exit 0), damage in the middle of a segment, a gap
between segments and a lying index exit 1, a torn tail of the last segment is a note (the
broker truncates it), dump prints the records from an offset, as text or JSON, and
truncate cuts a damaged log at its first damage (only with ``--yes``, never under a
running broker's lock) so that the broker serves it writable again."""

from __future__ import annotations

import fcntl
import io
import json
import os
from pathlib import Path

import pytest

from felix_client._log_cli import run_log_command
from felix_client.cli import build_parser
from felix_core.disklog import DiskLog, DiskLogConfig, DiskLogStore
from felix_core.segments import decode_index, encode_index, index_name, log_name
from felix_runtime.filesystem import OsFileSystem

LOG = "stream/default/default/orders/0"


class _Meter:
    def adjust(self, delta: int) -> None:
        pass


def write_log(root: Path, batches: int = 40) -> Path:
    """A durable stream's log with several closed segments (indexes written) and a tail."""
    fs = OsFileSystem(root)
    store = DiskLogStore(fs, DiskLogConfig(segment_bytes=4096, index_interval=512), root="")
    log = store.open_log(
        "stream", ("default", "default", "orders"), {"durability": "durable"}, _Meter()
    )
    for i in range(batches):
        log.append_batch(
            [b"payload-%d-%d" % (i, j) + b"x" * 100 for j in range(3)],
            1_000 + i,
            keys=[b"k%d" % i, None, None],
            headers=[None, {"h": b"v"}, None],
        )
        for _ in range(10):  # sync (and write the rolled segments' indexes)
            store.handle_timer(10.0 + i)
            jobs = store.take_jobs()
            if not jobs:
                break
            for job in jobs:
                job.finish(job.run(), 10.0 + i)
    fs.close()
    return root / LOG


def felix_log(*argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["log", *argv])
    out = io.StringIO()
    return run_log_command(args, out), out.getvalue()


def test_a_healthy_log_verifies(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    segments = sorted(directory.glob("*.log"))
    assert len(segments) > 2 and any(directory.glob("*.index"))
    code, out = felix_log("verify", str(tmp_path))
    assert code == 0, out
    assert out.endswith(f"1 logs, {len(segments)} segments, 0 damaged\n")
    assert "DAMAGED" not in out


def test_damage_in_the_middle_of_a_segment_exits_1(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    first = directory / log_name(0)
    data = bytearray(first.read_bytes())
    data[60] ^= 0xFF  # inside the first batch's records
    first.write_bytes(bytes(data))
    code, out = felix_log("verify", str(tmp_path))
    assert code == 1
    assert f"{first}: DAMAGED" in out and "bad batch followed by more data" in out
    assert out.endswith(" 1 damaged\n")


def test_a_torn_tail_is_a_note_not_damage(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    last = sorted(directory.glob("*.log"))[-1]
    with last.open("ab") as f:
        f.write(b"FX\x01\x00\xff\x00")  # a batch header cut short
    code, out = felix_log("verify", str(tmp_path))
    assert code == 0, out
    assert "note: torn tail" in out


def test_a_missing_segment_is_a_gap(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    middle = sorted(directory.glob("*.log"))[1]
    middle.unlink()
    code, out = felix_log("verify", str(tmp_path))
    assert code == 1 and "the previous segment ends at" in out


def test_an_index_pointing_elsewhere_is_damage(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    index = directory / index_name(0)
    segment = directory / log_name(0)
    decoded = decode_index(index.read_bytes(), 0, segment.stat().st_size)
    assert decoded is not None and len(decoded.positions) > 1
    decoded.positions[1] += 1
    index.write_bytes(encode_index(decoded))
    code, out = felix_log("verify", str(tmp_path))
    assert code == 1 and "no such batch there" in out


def test_dump_from_an_offset_as_text_and_json(tmp_path: Path) -> None:
    directory = write_log(tmp_path)
    code, out = felix_log("dump", str(directory), "--from", "4", "--count", "3")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["4", "5", "6"]
    assert lines[0].startswith("4 ts=1001 h=v payload-1-1x")  # batch 1, record 1: headers
    assert lines[1].startswith("5 ts=1001 payload-1-2x")
    assert lines[2].startswith("6 ts=1002 key=k2 payload-2-0x")
    code, out = felix_log("dump", str(directory), "--from", "117", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in records] == [117, 118, 119]
    assert records[0] == {
        "offset": 117,
        "timestamp_ms": 1039,
        "key": "k39",
        "payload": "payload-39-0" + "x" * 100,
    }
    code, out = felix_log("dump", str(directory / log_name(0)), "--count", "1")
    assert code == 0 and out.startswith("0 ts=1000 key=k0 payload-0-0")


def test_dump_stops_at_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_log(tmp_path)
    first = directory / log_name(0)
    data = bytearray(first.read_bytes())
    data[60] ^= 0xFF
    first.write_bytes(bytes(data))
    code, out = felix_log("dump", str(first))
    assert code == 1 and out == ""
    assert "unreadable from byte 0 (corrupt)" in capsys.readouterr().err


def test_bad_paths(tmp_path: Path) -> None:
    assert felix_log("verify", str(tmp_path / "nope"))[0] == 1
    (tmp_path / "x.txt").write_text("x")
    assert felix_log("dump", str(tmp_path / "x.txt"))[0] == 1


def open_log(root: Path) -> DiskLog:
    fs = OsFileSystem(root)
    store = DiskLogStore(fs, DiskLogConfig(segment_bytes=4096, index_interval=512), root="")
    log = store.open_log(
        "stream", ("default", "default", "orders"), {"durability": "durable"}, _Meter()
    )
    assert isinstance(log, DiskLog)
    return log


def test_truncate_cuts_a_log_at_its_first_damage_so_the_broker_serves_it_again(
    tmp_path: Path,
) -> None:
    """Damage inside the second segment (without its index, so that the broker scans it at
    open): the broker opens the log read-only below the bad batch; ``felix log truncate``
    prints the cut and changes nothing, with ``--yes`` cuts there (that segment truncated,
    the later segments deleted); the log then verifies, and opens writable with every
    record below the cut."""
    directory = write_log(tmp_path)
    segments = sorted(directory.glob("*.log"))
    second = segments[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a batch with more after it
    second.write_bytes(bytes(data))
    (directory / index_name(int(second.stem))).unlink()  # else trusted, not scanned at open
    log = open_log(tmp_path)
    lost = log.recovery.corrupt_offset
    assert lost is not None and lost > int(second.stem) and log.failed is not None
    log.close()
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    code, out = felix_log("truncate", str(directory))
    assert code == 0 and out.endswith("nothing changed (run again with --yes to do it)\n")
    assert f"records from offset {lost} on are lost" in out
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    code, out = felix_log("truncate", str(directory), "--yes")
    assert code == 0 and out.endswith("done\n"), out
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [segments[0].name, index_name(0), second.name]
    )
    assert felix_log("verify", str(directory))[0] == 0
    log = open_log(tmp_path)
    assert log.failed is None and log.recovery.corrupt_offset is None
    assert (log.first_offset, log.next_offset) == (0, lost)
    log.close()
    assert felix_log("truncate", str(directory)) == (0, f"{directory}: no damage to cut\n")


def test_truncate_cuts_at_a_gap_and_refuses_while_a_broker_holds_the_lock(
    tmp_path: Path,
) -> None:
    directory = write_log(tmp_path / "data" / "logs")
    segments = sorted(directory.glob("*.log"))
    segments[1].unlink()
    code, out = felix_log("truncate", str(directory), "--yes")
    assert code == 0 and f"records from offset {int(segments[1].stem)} on are lost" in out
    assert sorted(directory.glob("*.log")) == [segments[0]]
    segments[0].write_bytes(segments[0].read_bytes() + b"FX\x01\x00\xff\x00" + b"\x07" * 40)
    fd = os.open(tmp_path / "data" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a broker runs on data/
        damaged = segments[0].read_bytes()
        assert felix_log("truncate", str(directory), "--yes")[0] == 1
        assert segments[0].read_bytes() == damaged
    finally:
        os.close(fd)
    assert felix_log("truncate", str(directory), "--yes")[0] == 0
    assert felix_log("verify", str(directory))[0] == 0
