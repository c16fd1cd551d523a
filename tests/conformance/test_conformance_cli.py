"""The command line: --list, -k, the report lines, the summary, the exit code, --junit,
and the ``vectors`` command (passes on our codec's output, fails on a tampered file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import anyio
import pytest
from conformance_broker import broker
from test_conformance_faults import rewriting, wrong_nonce

from conformance.cli import main, parse_server
from conformance.vectorcheck import VECTORS_DIR, check_results, emit, load_vectors

pytestmark = pytest.mark.anyio


async def _cli(*args: str) -> tuple[int, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "conformance", *args], check=False, cwd=Path(__file__).parents[2]
    )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def _server_args(running: object) -> list[str]:
    host, port = running.runtime.address  # type: ignore[attr-defined]
    return [
        "--server",
        f"quic://{host}:{port}",
        "--ca",
        str(running.cert),  # type: ignore[attr-defined]
        "--server-name",
        "localhost",
    ]


def test_list_names_every_check_with_its_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(" checks") and int(out[-1].split()[0]) >= 70
    assert all("§" in line for line in out[:-1])
    assert main(["--list", "-k", "queue.*,not queue.nack*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert names and all(n.startswith("queue.") and not n.startswith("queue.nack") for n in names)


def test_server_url() -> None:
    assert parse_server("quic://127.0.0.1:4433") == ("127.0.0.1", 4433)
    assert parse_server("localhost:1") == ("localhost", 1)
    with pytest.raises(ValueError):
        parse_server("http://x:1")


async def test_report_summary_exit_code_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    async with broker(tmp_path) as running:
        code, out = await _cli(
            *_server_args(running),
            "-k",
            "session.ping,payload.unknown-type,session.bad-token",
            "--junit",
            str(junit),
        )
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0] == "PASS session.ping [§5 Session]"
    assert lines[1].startswith("SKIP session.bad-token [§5 Session]: no --token")
    assert lines[-1] == "2 passed, 0 failed, 1 skipped"
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "0", "1")


async def test_a_failure_gives_exit_code_1(tmp_path: Path) -> None:
    async with broker(tmp_path, connection_factory=rewriting(wrong_nonce)) as running:
        code, out = await _cli(*_server_args(running), "-k", "session.ping")
    assert code == 1, out
    assert out.splitlines()[0].startswith("FAIL session.ping [§5 Session]: Pong.nonce is 1")
    assert out.strip().splitlines()[-1] == "0 passed, 1 failed, 0 skipped"


async def test_unreachable_broker_fails_every_check_quickly() -> None:
    code, out = await _cli(
        "--server",
        "quic://127.0.0.1:9",
        "--insecure",
        "--wait",
        "0.5",
        "-k",
        "session.ping,cache.miss",
    )
    assert code == 1
    assert out.strip().splitlines()[-1] == "0 passed, 2 failed, 0 skipped"


# -- vectors ---------------------------------------------------------------------------------


def test_our_own_decoded_vectors_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "decoded.json"
    assert main(["vectors", "--emit", str(out)]) == 0
    assert main(["vectors", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    count = len(list(VECTORS_DIR.glob("*.json")))
    assert lines[-1] == f"{count} passed, 0 failed, 0 skipped"


def test_a_tampered_file_fails_per_vector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = emit(load_vectors())
    results = doc["results"]
    results["publish"]["fields"]["stream"] = "elsewhere"
    results["ok"]["fields"]["request_id"] = True  # a bool is not an int
    results["ping"]["frame_hex"] = results["pong"]["frame_hex"]
    results["error_unknown_flag"]["fatal"] = False
    results["error_unknown_type"]["error_code"] = 100
    del results["hello"]
    results["welcome"]["fields"]["region"] = "extra"  # absent in the frame, not the default
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(doc))
    assert main(["vectors", str(path)]) == 1
    failed = {
        line.split()[1].rstrip(":")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("FAIL")
    }
    assert failed == {
        "publish",
        "ok",
        "ping",
        "error_unknown_flag",
        "error_unknown_type",
        "hello",
        "welcome",
    }


def test_defaults_and_nulls_are_accepted() -> None:
    doc = emit(load_vectors())
    doc["results"]["hello_minimal"]["fields"].update(client_name="", capabilities=[], token=None)
    verdict = dict(check_results(doc, load_vectors()))
    assert verdict["hello_minimal"] is None


def test_a_malformed_document_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[]")
    assert main(["vectors", str(path)]) == 2


def test_quic_engine_reaches_the_connections(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engines: list[str] = []

    def refuse(engine: str, **kwargs: object) -> object:
        engines.append(engine)
        raise ConnectionError("not this time")

    monkeypatch.setattr("conformance.wire.client_connection", refuse)
    argv = ["--server", "quic://127.0.0.1:9", "--insecure", "-k", "session.ping"]
    assert main([*argv, "--quic-engine", "qh3"]) == 1
    assert main(argv) == 1
    assert engines == ["qh3", "aioquic"]
    with pytest.raises(SystemExit):
        main([*argv, "--quic-engine", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_a_restricted_token_needs_its_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--server", "quic://127.0.0.1:9", "--insecure", "--restricted-token", "T"]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "--restricted-token needs --tenant and --namespace" in capsys.readouterr().err
