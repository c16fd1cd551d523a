"""``felix`` as a user runs it: separate processes against a real broker on 127.0.0.1 (one
per runtime: ``broker`` comes from ``tests/conftest.py``)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from brokers import Broker, FreshBroker, child_env

_names = itertools.count()
TIMEOUT = 20


def felix_command() -> list[str]:
    """The installed ``felix`` script when there is one, else ``python -m felix_client.cli``."""
    script = shutil.which("felix", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "felix_client.cli"]


def run(broker: Broker, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``felix`` command against the test broker (bounded)."""
    cmd = [*felix_command(), "--server", broker.url, "--ca", broker.ca_file, *args]
    return subprocess.run(
        cmd,
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
    )


def name(prefix: str) -> str:
    return f"cli-{prefix}-{os.getpid()}-{next(_names)}"


def test_pub_then_sub_from_earliest(broker: Broker) -> None:
    stream = name("s")
    assert run(broker, "admin", "create", "stream", stream).returncode == 0
    single = run(broker, "pub", stream, "first")
    assert single.returncode == 0 and "offset 0" in single.stdout
    lines = run(broker, "pub", stream, stdin="second\nthird\n")
    assert lines.returncode == 0, lines.stderr
    sub = run(broker, "sub", stream, "--from", "earliest", "--count", "3")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.splitlines() == ["first", "second", "third"]
    js = run(broker, "-o", "json", "sub", stream, "--from", "1", "--count", "1")
    record = json.loads(js.stdout)
    assert (record["offset"], record["payload"]) == (1, "second")


def test_live_sub_sees_a_pub_from_another_process(broker: Broker) -> None:
    stream = name("live")
    assert run(broker, "admin", "create", "stream", stream).returncode == 0
    cmd = [
        *felix_command(),
        *("--server", broker.url, "--ca", broker.ca_file),
        *("sub", stream, "--count", "2", "--idle", "10"),
    ]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    ) as sub:
        try:
            time.sleep(1.0)  # let it subscribe (from latest)
            assert run(broker, "pub", stream, "--count", "2", "--size", "8", "-q").returncode == 0
            out, err = sub.communicate(timeout=TIMEOUT)
        finally:
            if sub.poll() is None:
                sub.kill()
    assert sub.returncode == 0, err
    assert out.splitlines() == ["xxxxxxxx", "xxxxxxxx"]


def test_queue_consume_acks_committed(broker: Broker) -> None:
    queue = name("q")
    assert run(broker, "admin", "create", "queue", queue).returncode == 0
    assert run(broker, "queue", "push", queue, stdin="a\nb\nc\n").returncode == 0
    took = run(broker, "queue", "consume", queue, "--count", "2", "--ack", "committed")
    assert took.returncode == 0, took.stderr
    assert took.stdout.splitlines() == ["a", "b"]
    rest = run(broker, "queue", "consume", queue, "--count", "2", "--idle", "1")
    assert rest.stdout.splitlines() == ["c"]  # a and b were acked


def test_cache_put_get_del(broker: Broker) -> None:
    cache = name("c")
    assert run(broker, "admin", "create", "cache", cache).returncode == 0
    put = run(broker, "cache", "put", cache, "alice", "42", "--ttl", "60")
    assert put.returncode == 0 and put.stdout.startswith("OK version")
    assert run(broker, "cache", "get", cache, "alice").stdout == "42\n"
    got = json.loads(run(broker, "-o", "json", "cache", "get", cache, "alice").stdout)
    assert got["found"] and got["value"] == "42" and 0 < got["ttl"] <= 60
    assert run(broker, "cache", "del", cache, "alice").stdout == "(integer) 1\n"
    assert run(broker, "cache", "get", cache, "alice").stdout == "(nil)\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("pub", "no-such-stream", "x"), "NOT_FOUND"),
        (("cache", "get", "no-such-cache", "k"), "NOT_FOUND"),
        (("admin", "describe", "queue", "no-such-queue"), "NOT_FOUND"),
    ],
)
def test_errors_are_one_line_and_exit_1(broker: Broker, args: tuple[str, ...], needle: str) -> None:
    result = run(broker, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and needle in result.stderr
    assert result.stderr.startswith("felix: error: ")


def test_untrusted_certificate_says_what_to_do(broker: Broker) -> None:
    cmd = [*felix_command(), "--server", broker.url, "cache", "get", "c", "k"]
    result = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT, env=child_env()
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--ca" in result.stderr


def test_admin_list_prints_the_names_of_tenants_and_namespaces(broker: Broker) -> None:
    tenant, namespace, stream = name("t"), name("n"), name("s")
    assert run(broker, "admin", "create", "tenant", tenant).returncode == 0
    assert (
        run(broker, "--tenant", tenant, "admin", "create", "namespace", namespace).returncode == 0
    )
    assert (
        run(
            broker,
            "--tenant",
            tenant,
            "--namespace",
            namespace,
            "admin",
            "create",
            "stream",
            stream,
        ).returncode
        == 0
    )
    tenants = run(broker, "admin", "list", "tenant")
    assert tenants.returncode == 0 and tenant in tenants.stdout.splitlines()
    assert "" not in tenants.stdout.splitlines()
    namespaces = run(broker, "--tenant", tenant, "admin", "list", "namespace")
    assert namespaces.stdout.splitlines() == [namespace]
    streams = run(broker, "--tenant", tenant, "--namespace", namespace, "admin", "list", "stream")
    assert streams.stdout.splitlines() == [stream]
    empty = run(broker, "--tenant", tenant, "--namespace", namespace, "admin", "list", "queue")
    assert empty.stdout == "(none)\n"


def test_sub_says_in_one_line_that_a_restarted_broker_lost_the_stream(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "restart"  # both brokers: the same certificate
    first = fresh_broker("--shutdown-grace-s", "0.2", "--shutdown-drain-s", "1", data_dir=data_dir)
    assert run(first, "admin", "create", "stream", "st").returncode == 0
    assert run(first, "pub", "st", "one").returncode == 0
    cmd = [
        *felix_command(),
        "--server",
        first.url,
        "--ca",
        first.ca_file,
        "sub",
        "st",
        "--from",
        "earliest",
    ]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    ) as sub:
        try:
            assert sub.stdout is not None and sub.stdout.readline() == "one\n"
            assert first.stop() == 0
            # "st" is ephemeral: its definition survives (with a new uid), its records not.
            fresh_broker(data_dir=data_dir, port=first.port)
            out, err = sub.communicate(timeout=TIMEOUT)
        finally:
            if sub.poll() is None:
                sub.kill()
    assert sub.returncode == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("felix: error: NOT_FOUND: stream 'st'")
    assert "its log is new" in err
