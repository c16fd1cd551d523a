"""In-memory benchmark of one idle loop pass of the sans-IO server: no sockets, fake clock.

A :class:`~felix_server.server.FelixServer` accepts N connections (aioquic client
``QuicConnection`` + Felix ``Hello``, datagrams moved by hand); once they are idle, one
loop pass is what a runtime adapter does when nothing arrived: ``datagrams_to_send(now)``
then ``get_timer()``. The figure is the mean cost of that pass, with 1 and with 1,000 idle
connections: it should not grow with the connections that did nothing.

Usage: ``python benchmarks/server_pass.py [--json] [--connections 1,1000] [--passes P]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

SERVER_ADDR = ("127.0.0.1", 7447)


def _idle_server(connections: int, tmp: Path) -> tuple[FelixServer, float]:
    files = ensure_self_signed(tmp)
    config = ServerConfig(data_dir=str(tmp))
    quic_config = make_quic_configuration(config)
    quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
    now = 1_000_000.0
    server = FelixServer(config, quic_config, now=now)
    client_config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], server_name="localhost", max_datagram_size=1452
    )
    client_config.load_verify_locations(str(files.cert_path))
    for i in range(connections):
        addr = ("127.0.0.1", 10000 + i)
        client = QuicConnection(configuration=client_config)
        client.connect(SERVER_ADDR, now=now)
        hello_sent = False
        for _ in range(50):
            now += 0.001
            for data, _ in client.datagrams_to_send(now=now):
                server.datagram_received(data, addr, now)
            for data, _ in server.datagrams_to_send(now):
                client.receive_datagram(data, SERVER_ADDR, now)
            while (event := client.next_event()) is not None:
                if isinstance(event, qe.HandshakeCompleted) and not hello_sent:
                    client.send_stream_data(0, encode(m.Hello(versions=[2], client_name="b")))
                    hello_sent = True
        assert hello_sent
    assert len(server.sessions) == connections
    return server, now


def _pass_cost(server: FelixServer, now: float, passes: int) -> float:
    """Mean seconds of one idle pass (``datagrams_to_send`` + ``get_timer``)."""
    for _ in range(100):
        server.datagrams_to_send(now)
        server.get_timer()
    start = time.perf_counter()
    for _ in range(passes):
        server.datagrams_to_send(now)
        server.get_timer()
    return (time.perf_counter() - start) / passes


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--connections", default="1,1000", help="comma-separated counts")
    parser.add_argument("--passes", type=int, default=2000, help="passes measured per count")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    for count in (int(c) for c in args.connections.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            server, now = _idle_server(count, Path(tmp))
            results[f"idle_pass_us_{count}_connections"] = (
                _pass_cost(server, now + 0.01, args.passes) * 1e6
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:40} {value:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
