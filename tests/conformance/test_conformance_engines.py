"""The suite's client on qh3 (conformance.engines), in memory against an aioquic server:
qh3's events come out as aioquic's classes, and a write after the server closed is dropped
(as on aioquic) instead of raising."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from conformance.engines import Qh3Client, client_connection
from felix_proto import ALPN
from felix_runtime.tls import ensure_self_signed

pytest.importorskip("qh3")

CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 7447)


class _Pair:
    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.server_config = config
        self.server: QuicConnection | None = None
        self.client = client_connection(
            "qh3",
            alpn=[ALPN],
            server_name="localhost",
            cafile=str(files.cert_path),
            insecure=False,
        )
        self.now = time.time()
        self.client.connect(SERVER, self.now)
        self.events: list[Any] = []

    def run(self, seconds: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += 0.001
            for data, _ in self.client.datagrams_to_send(self.now):
                if self.server is None:
                    self.server = QuicConnection(
                        configuration=self.server_config,
                        original_destination_connection_id=self.client.original_destination_connection_id,
                    )
                self.server.receive_datagram(data, CLIENT, self.now)
            if self.server is not None:
                for data, _ in self.server.datagrams_to_send(self.now):
                    self.client.receive_datagram(data, SERVER, self.now)
            timer = self.client.get_timer()
            if timer is not None and timer <= self.now:
                self.client.handle_timer(self.now)
            while (event := self.client.next_event()) is not None:
                self.events.append(event)


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown QUIC engine"):
        client_connection("nope", alpn=None, server_name="x", cafile=None, insecure=True)


def test_qh3_events_are_aioquic_classes_and_late_writes_are_dropped(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    assert isinstance(pair.client, Qh3Client)
    pair.run()
    (done,) = [e for e in pair.events if type(e).__name__ == "HandshakeCompleted"]
    assert isinstance(done, qe.HandshakeCompleted) and done.alpn_protocol == ALPN
    assert pair.server is not None
    pair.server.send_stream_data(3, b"hello", end_stream=True)
    pair.run()
    (data,) = [e for e in pair.events if type(e).__name__ == "StreamDataReceived"]
    assert isinstance(data, qe.StreamDataReceived)
    assert (data.stream_id, data.data, data.end_stream) == (3, b"hello", True)
    pair.server.close(error_code=7, reason_phrase="bye")
    pair.run(2.0)
    (end,) = [e for e in pair.events if type(e).__name__ == "ConnectionTerminated"]
    assert isinstance(end, qe.ConnectionTerminated)
    assert (end.error_code, end.reason_phrase) == (7, "bye")
    pair.client.send_stream_data(0, b"late")  # qh3 alone raises "connection is closed"
