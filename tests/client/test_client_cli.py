"""The ``felix`` CLI without a broker: argument parsing, defaults, and one-line errors."""

from __future__ import annotations

import socket

import pytest

from felix_client import cli
from felix_client._url import DEFAULT_URL
from felix_client.types import Start
from felix_proto.messages import StartKind


def test_common_flags_before_or_after_the_subcommand() -> None:
    a = cli.parse_args(["--server", "quic://h:1", "sub", "orders", "-o", "json"], env={})
    b = cli.parse_args(["sub", "orders", "--server", "quic://h:1", "--output", "json"], env={})
    for args in (a, b):
        assert (args.server, args.output, args.stream) == ("quic://h:1", "json", "orders")
        assert (args.tenant, args.namespace, args.timeout) == (None, "default", 10.0)


def test_server_from_environment_and_default() -> None:
    assert cli.parse_args(["cache", "get", "c", "k"], env={}).server == DEFAULT_URL
    env = {"FELIX_SERVER": "quic://e:2", "FELIX_TOKEN": "tok"}
    args = cli.parse_args(["cache", "get", "c", "k"], env=env)
    assert (args.server, args.token) == ("quic://e:2", "tok")
    assert cli.parse_args(["-s", "quic://f:3", "cache", "get", "c", "k"], env=env).server == (
        "quic://f:3"
    )


def test_subcommand_arguments() -> None:
    args = cli.parse_args(["pub", "s", "--count", "5", "--size", "10", "--rate", "100"], env={})
    assert (args.count, args.size, args.rate, args.message) == (5, 10, 100.0, None)
    args = cli.parse_args(["cache", "put", "c", "k", "v", "--ttl", "1.5", "--if-absent"], env={})
    assert (args.cache, args.key, args.value, args.ttl, args.if_absent) == (
        "c",
        "k",
        "v",
        1.5,
        True,
    )
    args = cli.parse_args(
        ["admin", "create", "stream", "s", "--set", "a=1", "--set", "b=x"], env={}
    )
    assert (args.kind, args.name, args.settings) == ("stream", "s", ["a=1", "b=x"])
    args = cli.parse_args(["queue", "consume", "q", "-g", "workers", "-c", "3"], env={})
    assert (args.queue, args.group, args.count) == ("q", "workers", 3)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pub"],
        ["sub", "s", "--count", "0"],
        ["admin", "create", "widget", "x"],
        ["cache", "fetch", "c", "k"],
        ["-o", "yaml", "sub", "s"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--server", "http://h:1", "sub", "s"], "unsupported URL scheme"),
        (["--ca", "/nonexistent/ca.pem", "sub", "s"], "does not exist"),
    ],
)
def test_bad_connection_flags_print_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("felix: error: ") and needle in err


def test_invalid_from_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sub", "s", "--from", "tomorrowish"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid --from" in err and "Traceback" not in err


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_no_broker_is_one_clear_line(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"quic://127.0.0.1:{_free_udp_port()}"
    code = cli.main(
        ["--server", url, "--insecure", "--timeout", "3", "--loop", loop, "cache", "get", "c", "k"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("felix: error: ")
    assert "CONNECTION_LOST" in err or "TIMEOUT" in err
    assert "Traceback" not in err


def test_parse_start() -> None:
    assert cli.parse_start("earliest").kind == StartKind.EARLIEST
    assert cli.parse_start("LATEST").kind == StartKind.LATEST
    assert cli.parse_start("42") == Start.offset(42)
    assert cli.parse_start("5m", now=1000.0) == Start(StartKind.TIMESTAMP, 700_000)
    assert cli.parse_start("1.5s", now=10.0) == Start(StartKind.TIMESTAMP, 8_500)
    assert cli.parse_start("1970-01-01T00:00:10") == Start(StartKind.TIMESTAMP, 10_000)
    assert cli.parse_start("1970-01-01T01:00:10+01:00") == Start(StartKind.TIMESTAMP, 10_000)
    with pytest.raises(ValueError):
        cli.parse_start("-3")


def test_broker_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["broker", "--runtime", "asyncio", "--backend", "trio"]) == 2
    assert "--runtime anyio" in capsys.readouterr().err
    assert cli.main(["broker", "--runtime", "uvloop"]) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--ttl", "inf"), "INVALID_ARGUMENT: ttl must be a finite number"),
        (("--ttl", "nan"), "INVALID_ARGUMENT: ttl must be a finite number"),
        (("--ttl", "-1"), "INVALID_ARGUMENT: ttl must be a finite number"),
        (("--if-absent", "--if-version", "3"), "INVALID_ARGUMENT: --if-absent and --if-version"),
    ],
)
def test_cache_put_refuses_bad_conditions_and_ttls_in_one_line(
    args: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 has no broker: these fail before connecting.
    code = cli.main(["--server", "quic://127.0.0.1:1", "cache", "put", "c", "k", "v", *args])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.count("\n") == 1 and err.startswith("felix: error: ") and needle in err
