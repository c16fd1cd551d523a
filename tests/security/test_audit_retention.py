"""Audit retention and anchoring: the oldest files go by size or age with a ``retention``
entry naming the cut, so ``verify`` stays green on what remains while a file removed by
hand is still caught; a head kept elsewhere (``felix audit head``, the broker's ``audit
head`` log line) catches lines cut off the end, which the chain alone cannot."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from felix_client.cli import main as felix
from felix_runtime.audit import AuditTrail, AuditWriter, Finding, Verified, audit_files, verify
from felix_server.config import ConfigError, load_config


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def write(writer: AuditWriter, count: int, clock: Clock | None = None) -> None:
    for i in range(count):
        if clock is not None:
            clock.now += 1.0
        writer.write("admin", {"operation": "create", "resource": f"stream t/ns/s{i}"})


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def entries(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in audit_files(directory) for line in lines(f)]


def verified(result: Verified | Finding) -> Verified:
    assert isinstance(result, Verified), result
    return result


def problem(result: Verified | Finding) -> Finding:
    assert isinstance(result, Finding), result
    return result


def test_retention_by_bytes_keeps_verify_green(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, rotate_bytes=1024, retention_bytes=3000, fsync=False)
    write(writer, 80)
    writer.close()
    files = audit_files(tmp_path)
    assert files[0].name != "audit-000001.jsonl"  # the oldest went
    assert sum(f.stat().st_size for f in files) <= 3000 + 1024 + 400
    cuts = [e for e in entries(tmp_path) if e["kind"] == "retention"]
    assert cuts and all(c["reason"] == "bytes" and c["chain"] == writer.chain for c in cuts)
    first = json.loads(lines(files[0])[0])
    assert (first["seq"] - 1, first["prev"]) in {(c["cut_to_seq"], c["cut_head"]) for c in cuts}
    result = verified(verify([tmp_path]))
    assert (result.start, result.chain, result.head) == ("retention", writer.chain, writer.head)
    assert result.first_seq == first["seq"] > 0

    # a file removed by hand on top of retention is still a gap ...
    files[1].unlink()
    assert "removed or moved before this line" in problem(verify([tmp_path])).problem
    # ... and so is the oldest remaining one: no retention entry names that cut
    files[0].unlink()
    assert "does not start at chain_start" in problem(verify([tmp_path])).problem


def test_an_edited_line_after_retention_is_still_named(tmp_path: Path) -> None:
    write(AuditWriter(tmp_path, rotate_bytes=1024, retention_bytes=2500, fsync=False), 60)
    last = audit_files(tmp_path)[-1]
    text = lines(last)
    at = next(i for i, line in enumerate(text) if b"stream t/" in line)
    text[at] = text[at].replace(b"stream t/", b"stream x/", 1)
    last.write_bytes(b"".join(text))
    found = problem(verify([tmp_path]))
    assert (found.path, found.line) == (last, at + 1) and found.problem.startswith("edited")


def test_retention_never_deletes_the_file_being_written(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, rotate_bytes=1024, retention_bytes=1, fsync=False)
    write(writer, 30)
    assert audit_files(tmp_path) == [tmp_path / f"audit-{writer._number:06d}.jsonl"]
    assert verified(verify([tmp_path])).start == "retention"


def test_retention_by_age_and_a_restart_keeps_the_chain(tmp_path: Path) -> None:
    clock = Clock()
    writer = AuditWriter(tmp_path, rotate_bytes=1024, retention_s=3600.0, clock=clock, fsync=False)
    write(writer, 40, clock)  # a few files, all young
    assert audit_files(tmp_path)[0].name == "audit-000001.jsonl"
    writer.close()
    clock.now += 7200.0  # every closed file is now old: a restart cuts them
    again = AuditWriter(tmp_path, rotate_bytes=1024, retention_s=3600.0, clock=clock, fsync=False)
    assert again.chain == writer.chain  # found again in the retention entry
    assert len(audit_files(tmp_path)) == 1
    cut = next(e for e in entries(tmp_path) if e["kind"] == "retention")
    assert cut["reason"] == "age" and cut["cut_from_seq"] == 0
    write(again, 3, clock)
    again.close()
    restarted = AuditWriter(tmp_path, rotate_bytes=1024, clock=clock, fsync=False)
    assert (restarted.chain, restarted.seq) == (writer.chain, again.seq)
    restarted.close()
    assert verified(verify([tmp_path])).chain == writer.chain


def test_an_anchor_catches_a_truncated_tail(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    write(writer, 30)
    writer.close()
    head = verified(verify([tmp_path]))
    anchor = head.anchor_text
    assert anchor == f"{writer.seq}:{writer.head}"
    assert verified(verify([tmp_path], anchor=anchor)).anchor == "entry"
    assert verified(verify([tmp_path], anchor=writer.head)).anchor == "entry"  # bare hash
    last = audit_files(tmp_path)[-1]
    last.write_bytes(b"".join(lines(last)[:-2]))  # two lines cut off the end
    assert verified(verify([tmp_path])).entries == head.entries - 2  # the chain alone: fine
    found = problem(verify([tmp_path], anchor=anchor))
    assert found.path == last and "is not in the trail: lines were cut off the end" in (
        found.problem
    )
    wrong_seq = f"{writer.seq - 5}:{entries(tmp_path)[writer.seq - 4]['hash']}"
    assert "the trail was rewritten" in problem(verify([tmp_path], anchor=wrong_seq)).problem
    with pytest.raises(ValueError, match="not an audit anchor"):
        verify([tmp_path], anchor="12:nothex")


def test_an_anchor_older_than_retention_still_checks(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, rotate_bytes=1024, fsync=False)
    write(writer, 10)
    early = f"{writer.seq}:{writer.head}"
    writer.close()
    writer = AuditWriter(tmp_path, rotate_bytes=1024, retention_bytes=2500, fsync=False)
    write(writer, 60)
    writer.close()
    result = verified(verify([tmp_path], anchor=early))
    assert result.first_seq > 10 and result.anchor == "cut"


def test_cli_head_and_verify_with_anchor_and_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = AuditWriter(tmp_path, rotate_bytes=1024, fsync=False)
    write(writer, 30)
    writer.close()
    assert felix(["audit", "head", str(tmp_path)]) == 0
    head = json.loads(capsys.readouterr().out)
    assert head == {
        "anchor": f"{writer.seq}:{writer.head}",
        "seq": writer.seq,
        "hash": writer.head,
        "entries": writer.seq + 1,
        "chain": writer.chain,
    }
    assert felix(["audit", "verify", str(tmp_path), "--anchor", head["anchor"]]) == 0
    assert "anchor found" in capsys.readouterr().out
    files = audit_files(tmp_path)
    files[-1].write_bytes(b"".join(lines(files[-1])[:-1]))
    assert felix(["audit", "verify", str(tmp_path), "--anchor", head["anchor"]]) == 1
    assert "is not in the trail" in capsys.readouterr().err
    assert felix(["audit", "verify", str(tmp_path), "--anchor", "x"]) == 1
    assert "not an audit anchor" in capsys.readouterr().err
    # a later file alone, with the hash it continues from
    before = json.loads(lines(files[1])[-1])["hash"]
    assert felix(["audit", "verify", str(files[2])]) == 1
    assert "does not start at chain_start" in capsys.readouterr().err
    assert felix(["audit", "verify", str(files[2]), "--start", before]) == 0
    assert "continues from the given start" in capsys.readouterr().out
    assert felix(["audit", "head", str(files[2])]) == 1


def test_the_trail_logs_its_head_periodically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    trail = AuditTrail(writer, anchor_every_s=0.05)
    with caplog.at_level(logging.INFO, logger="felix"):
        trail.record("admin", operation="create")
        assert trail.flush()
        for _ in range(200):  # the worker logs within anchor_every_s, even when idle
            heads = [r for r in caplog.records if r.getMessage() == "audit head"]
            if heads:
                break
            time.sleep(0.01)
        trail.close()
    assert heads, "no audit head logged"
    fields = heads[-1].fields  # type: ignore[attr-defined]
    assert fields["anchor"] == f"{writer.seq}:{writer.head}" and fields["seq"] == 1
    assert verified(verify([tmp_path], anchor=fields["anchor"])).anchor == "entry"


def test_retention_settings() -> None:
    default, _ = load_config([], {}, lambda p: b"")
    assert (default.audit_retention_bytes, default.audit_retention_s) == (1 << 30, 0.0)
    assert default.audit_anchor_log_s == 300.0
    flags, _ = load_config(
        ["--audit-retention-bytes", "2MiB", "--audit-retention-s", "86400"], {}, lambda p: b""
    )
    assert (flags.audit_retention_bytes, flags.audit_retention_s) == (2 << 20, 86400.0)
    with pytest.raises(ConfigError, match="audit_retention_bytes"):
        load_config(["--audit-retention-bytes", "-1"], {}, lambda p: b"")
    with pytest.raises(ConfigError, match="audit_anchor_log_s"):
        load_config(["--audit-anchor-log-s", "-1"], {}, lambda p: b"")
