"""Mutual TLS in the QUIC glue, without sockets: a server connection of each engine
(Felix's, with a client certificate policy) and a client of each engine exchange datagrams
in memory. What the client sees for each kind of certificate, the identity the server
keeps, and a qh3 client writing after the broker closed (data dropped, as on aioquic)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aioquic._buffer import Buffer
from aioquic.quic.packet import pull_quic_header
from certs import DAY, Issued, TestCA

from felix_runtime.quic_engines import load_engine
from felix_runtime.tls_clients import ClientCA
from felix_server.access import ClientCertificates
from felix_server.config import TransportConfig

ENGINES = ("aioquic", "qh3")
CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 7447)


class Pair:
    """A client and a server connection joined by an in-memory network; the client CA is
    ``material/clients.pem``."""

    def __init__(
        self,
        server_engine: str,
        client_engine: str,
        material: Path,
        issued: Issued | None,
        *,
        required: bool = True,
    ) -> None:
        server_ca = TestCA(material, "server-ca")
        broker = server_ca.issue("broker", cn="broker", server=True)
        self.refusals: list[str] = []
        self.policy = ClientCertificates(
            verify=ClientCA((material / "clients.pem").read_bytes()).verify,
            required=required,
            refused=self.refusals.append,
        )
        engine = load_engine(server_engine)
        self.server_config = engine.server_configuration(TransportConfig())
        self.server_config.load_cert_chain(str(broker.cert_file), str(broker.key_file))
        self.server_engine = engine
        files: dict[str, Any] = {}
        if issued is not None:
            files = {"cert_file": str(issued.cert_file), "key_file": str(issued.key_file)}
        client_engine_ = load_engine(client_engine)
        config = client_engine_.client_configuration(
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=10,
            max_data=1 << 20,
            max_stream_data=1 << 20,
            ca_file=str(server_ca.file),
            **files,
        )
        self.client = client_engine_.client_connection(configuration=config)
        self.now = time.time()
        self.client.connect(SERVER, self.now)
        self.server: Any = None
        self.events: list[Any] = []

    def run(self, rounds: int = 60) -> None:
        """Shuttle datagrams both ways, firing the client's timers when nothing moves (a
        closed connection reports ``ConnectionTerminated`` once its closing period ends),
        for at most two simulated seconds (the idle timeout is ten)."""
        end = self.now + 2.0
        for _ in range(rounds):
            self.now += 0.001
            moved = False
            for data, _ in self.client.datagrams_to_send(self.now):
                moved = True
                if self.server is None:
                    header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                    self.server = self.server_engine.server_connection(
                        configuration=self.server_config,
                        original_destination_connection_id=header.destination_cid,
                        client_certificates=self.policy,
                    )
                self.server.receive_datagram(data, CLIENT, self.now)
            if self.server is not None:
                for data, _ in self.server.datagrams_to_send(self.now):
                    moved = True
                    self.client.receive_datagram(data, SERVER, self.now)
            while (event := self.client.next_event()) is not None:
                self.events.append(event)
            if not moved:
                timer = self.client.get_timer()
                if timer is None or timer > end:
                    return
                self.now = max(self.now, timer)
                self.client.handle_timer(self.now)
                while (event := self.client.next_event()) is not None:
                    self.events.append(event)

    def terminated(self) -> Any:
        found = [e for e in self.events if type(e).__name__ == "ConnectionTerminated"]
        return found[0] if found else None


@pytest.fixture
def clients(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "clients")


@pytest.mark.parametrize("server_engine", ENGINES)
@pytest.mark.parametrize("client_engine", ENGINES)
def test_each_kind_of_certificate_on_each_pair_of_engines(
    clients: TestCA, tmp_path: Path, server_engine: str, client_engine: str
) -> None:
    other = TestCA(tmp_path, "other")
    cases: list[tuple[Issued | None, int | None, str | None]] = [
        (None, 0x100 + 116, "missing"),
        (other.issue("forged", cn="f"), 0x100 + 48, "untrusted"),
        (clients.issue("old", cn="o", not_before=-3 * DAY, not_after=-DAY), 0x100 + 45, "expired"),
        (clients.issue("good", uris=("spiffe://felix/tenant/acme/sa/a",)), None, None),
    ]
    for issued, code, reason in cases:
        pair = Pair(server_engine, client_engine, tmp_path, issued)
        pair.run()
        ended = pair.terminated()
        if code is None:
            assert ended is None
            assert pair.server.client_identity.uris == ("spiffe://felix/tenant/acme/sa/a",)
            assert pair.refusals == []
        else:
            assert ended is not None and ended.error_code == code, (issued, pair.events)
            assert pair.refusals == [reason]
            assert pair.server.client_identity is None


@pytest.mark.parametrize("server_engine", ENGINES)
def test_optional_lets_a_client_without_a_certificate_in(
    clients: TestCA, tmp_path: Path, server_engine: str
) -> None:
    for client_engine in ENGINES:
        pair = Pair(server_engine, client_engine, tmp_path, None, required=False)
        pair.run()
        assert pair.terminated() is None
        assert pair.server.client_identity is None


def test_a_qh3_client_writing_after_the_refusal_is_not_an_error(
    clients: TestCA, tmp_path: Path
) -> None:
    pair = Pair("aioquic", "qh3", tmp_path, None)
    pair.run()
    assert pair.terminated() is not None
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"Hello", False)  # dropped, like aioquic
