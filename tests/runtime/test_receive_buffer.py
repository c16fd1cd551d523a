"""``transport.receive_buffer``: the broker's socket asks the kernel for that receive buffer
(a short queue: one client's flood does not hold every other client's datagrams for
hundreds of milliseconds), while the client's socket keeps its large one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from felix_runtime.udp import RECEIVE_BUFFER, SOCKET_BUFFER, bind_udp, udp_socket
from felix_runtime_asyncio.app import BrokerProcess
from felix_server.config import ConfigError, ServerConfig, TransportConfig, load_config


def _granted(requested: int) -> int:
    """What Linux grants for an ``SO_RCVBUF`` request: twice the request, capped at twice
    ``net.core.rmem_max`` (unprivileged)."""
    try:
        cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    except OSError:
        pytest.skip("no /proc/sys/net/core/rmem_max: not Linux")
    return 2 * min(requested, cap)


def _no_file(path: str) -> bytes:
    raise FileNotFoundError(2, "No such file or directory", path)


def _rcvbuf(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def test_the_setting_defaults_to_256_kib_and_takes_units() -> None:
    assert ServerConfig().transport.receive_buffer == RECEIVE_BUFFER == 256 * 1024
    config, _sources = load_config(["--set", "transport.receive_buffer=1MiB"], {}, _no_file)
    assert config.transport.receive_buffer == 1024 * 1024
    with pytest.raises(ConfigError, match=r"transport\.receive_buffer"):
        load_config(["--set", "transport.receive_buffer=0"], {}, _no_file)


def test_the_broker_socket_asks_for_its_buffer_the_client_for_the_large_one() -> None:
    broker = bind_udp("127.0.0.1", 0, 128 * 1024)
    client = udp_socket(socket.AF_INET)
    try:
        assert _rcvbuf(broker) == _granted(128 * 1024)
        assert _rcvbuf(client) == _granted(SOCKET_BUFFER)
    finally:
        broker.close()
        client.close()


@pytest.mark.anyio
async def test_the_runtime_binds_with_the_configured_buffer(tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        transport=TransportConfig(receive_buffer=96 * 1024),
    )
    proc = await BrokerProcess(config).start()
    try:
        sock = proc.runtime._sock
        assert sock is not None
        assert _rcvbuf(sock) == _granted(96 * 1024)
    finally:
        await proc.close()
