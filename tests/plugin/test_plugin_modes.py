"""The plugin's broker modes and durability: an in-process broker (a thread of the test
process, the default) or a subprocess (``--felix-broker-mode`` / ``felix_broker_mode``),
the resources' default durability (``--felix-durability`` / ``felix_durability``), and the
``felix`` marker that overrides them (and the runtime) for one test. Each check runs pytest
in a subprocess, as a user would (``_pytest`` of test_plugin.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plugin import _pytest

IN_PROCESS = """
import os, socket, threading
import pytest
from felix_client.sync import BlockingClient

RUNTIMES = ["asyncio", "anyio-asyncio", "anyio-trio"]

def durability(client, name):
    client.admin("create", "stream", name)
    return client.admin("describe", "stream", name)["settings"]["durability"]

def test_the_default_broker_is_a_thread_of_this_process(felix_broker):
    assert felix_broker.mode == "inprocess" and felix_broker.process is None
    assert felix_broker.thread.is_alive()
    assert "felix-broker-asyncio" in [t.name for t in threading.enumerate()]
    listening = [l for l in felix_broker.log if l.get("msg") == "felix broker listening"]
    assert listening[0]["runtime"] == "asyncio"
    assert listening[0]["quic"] == f"127.0.0.1:{felix_broker.port}"

@pytest.mark.parametrize(
    "runtime", [pytest.param(r, marks=pytest.mark.felix(runtime=r)) for r in RUNTIMES]
)
def test_each_runtime_runs_in_a_thread_and_stops_cleanly(felix_broker_factory, runtime):
    broker = felix_broker_factory()
    assert (broker.runtime, broker.mode) == (runtime, "inprocess")
    with BlockingClient(broker.url, **broker.client_kwargs()) as client:
        assert durability(client, "orders") == "ephemeral"
        client.publish("orders", b"x")
    assert broker.stop() == 0
    assert not broker.thread.is_alive()
    assert broker.log_messages()[-1] == "felix broker stopped"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(broker.address)  # released
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(broker.metrics_address)

def test_without_a_marker_the_clients_use_felix_broker(
    felix_test_broker, felix_broker, felix_blocking_client
):
    assert felix_test_broker is felix_broker
    assert durability(felix_blocking_client, "plain") == "ephemeral"

@pytest.mark.felix(durability="durable")
def test_the_marker_makes_resources_durable(
    felix_test_broker, felix_broker, felix_blocking_client
):
    assert felix_test_broker is not felix_broker
    assert felix_test_broker.mode == "inprocess"
    assert durability(felix_blocking_client, "kept") == "durable"
    assert (felix_test_broker.data_dir / "logs" / "stream").is_dir()

@pytest.mark.felix(runtime="anyio-trio")
def test_a_taken_port_is_exit_code_1_with_the_log(felix_broker_factory, felix_broker):
    taken = f"127.0.0.1:{felix_broker.port}"
    with pytest.raises(RuntimeError, match=r"exit code 1.*cannot start the broker.*in use"):
        felix_broker_factory("--listen", taken)

@pytest.mark.felix(durability="forever")
def test_a_bad_marker_fails_the_test(felix_blocking_client):
    pass
"""


def test_in_process_brokers_and_the_felix_marker(tmp_path: Path) -> None:
    (tmp_path / "test_in_process.py").write_text(IN_PROCESS)
    done = _pytest(tmp_path)
    assert "7 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert "felix marker: unknown durability 'forever'" in done.stdout


SUBPROCESS = """
import os
import pytest

def durability(client, name):
    client.admin("create", "stream", name)
    return client.admin("describe", "stream", name)["settings"]["durability"]

def test_the_broker_is_a_subprocess_with_durable_resources(felix_broker, felix_blocking_client):
    assert felix_broker.mode == "subprocess" and felix_broker.thread is None
    assert felix_broker.process.pid != os.getpid()
    assert durability(felix_blocking_client, "orders") == "durable"

@pytest.mark.felix(mode="inprocess", durability="ephemeral")
def test_the_marker_wins(felix_test_broker, felix_blocking_client):
    assert felix_test_broker.mode == "inprocess"
    assert durability(felix_blocking_client, "orders") == "ephemeral"
"""


def test_mode_from_the_ini_file_and_durability_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "test_subprocess.py").write_text(SUBPROCESS)
    ini = "felix_broker_mode = subprocess\nfelix_durability = ephemeral\n"
    done = _pytest(tmp_path, "--felix-durability", "durable", ini=ini)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("felix_broker_mode = thread\n", "felix_broker_mode: unknown mode 'thread'"),
        ("felix_durability = forever\n", "felix_durability: unknown durability 'forever'"),
    ],
)
def test_an_unknown_mode_or_durability_is_a_usage_error(
    tmp_path: Path, ini: str, message: str
) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    done = _pytest(tmp_path, ini=ini)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert message in done.stderr
