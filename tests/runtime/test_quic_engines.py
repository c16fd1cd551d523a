"""The QUIC engine choice (felix_runtime.quic_engines): the setting, every client/broker pair
of engines shaking hands in round trips alone, and the calls where the engines differ."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from felix_proto import ALPN
from felix_runtime.quic_engines import (
    ENGINES,
    EngineMissing,
    engine_from_env,
    load_engine,
    server_quic,
)
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ConfigError, ServerConfig, load_config
from felix_server.quic_engine import EVENTS, send_buffered

pytest.importorskip("qh3")

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 7447)


def _config(argv: list[str], env: dict[str, str] | None = None) -> ServerConfig:
    config, _ = load_config(argv, env or {}, lambda path: b"")
    return config


def test_the_setting_comes_from_the_flag_the_environment_and_defaults_to_aioquic() -> None:
    assert _config([]).quic_engine == "aioquic"
    assert _config(["--quic-engine", "qh3"]).quic_engine == "qh3"
    assert _config([], {"FELIX_QUIC_ENGINE": "qh3"}).quic_engine == "qh3"
    with pytest.raises(ConfigError, match="quic_engine"):
        _config(["--quic-engine", "quiche"])


def test_the_client_default_comes_from_the_environment() -> None:
    assert engine_from_env({}) == "aioquic"
    assert engine_from_env({"FELIX_QUIC_ENGINE": "qh3"}) == "qh3"
    with pytest.raises(ValueError, match="unknown QUIC engine"):
        engine_from_env({"FELIX_QUIC_ENGINE": "quiche"})


def test_a_missing_engine_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_qh3(name: str, *args: Any) -> Any:
        if name.startswith("qh3"):
            raise ImportError(name)
        return real(name, *args)

    load_engine.cache_clear()
    monkeypatch.setattr(importlib, "import_module", no_qh3)
    try:
        with pytest.raises(EngineMissing, match=r"felix\[qh3\]"):
            load_engine("qh3")
    finally:
        load_engine.cache_clear()


def test_the_broker_configuration_carries_felix_settings_on_both_engines() -> None:
    for name in ENGINES:
        config = ServerConfig(quic_engine=name)
        quic, factory = server_quic(config)
        transport = config.transport
        assert quic.alpn_protocols == [ALPN]
        assert (quic.max_datagram_size, quic.max_data, quic.max_stream_data) == (
            transport.max_datagram_size,
            transport.max_data,
            transport.max_stream_data,
        )
        assert quic.idle_timeout == transport.idle_timeout_s
        assert factory is load_engine(name).server_connection


class _Pair:
    """A client and a broker-side connection of given engines, datagrams passed by hand and
    timers fired on a simulated clock."""

    def __init__(
        self,
        client_engine: str,
        server_engine: str,
        cert: Path,
        key: Path,
        alpn: list[str] | None = [ALPN],  # noqa: B006 - never mutated
    ) -> None:
        server = load_engine(server_engine)
        self.server_config = server.server_configuration(ServerConfig().transport)
        self.server_config.load_cert_chain(str(cert), str(key))
        self.server_factory = server.server_connection
        client = load_engine(client_engine)
        config = client.client_configuration(
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=60.0,
            max_data=8 << 20,
            max_stream_data=4 << 20,
            ca_file=str(cert),
        )
        config.alpn_protocols = alpn
        self.client = client.client_connection(configuration=config)
        self.server: Any = None
        self.start = self.now = 1000.0
        self.client.connect(SERVER_ADDR, now=self.now)
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []

    def step(self) -> None:
        """Client to broker and back, then on to the next timer (at most 1 ms on)."""
        for data, _ in self.client.datagrams_to_send(now=self.now):
            if self.server is None:
                self.server = self.server_factory(
                    configuration=self.server_config,
                    original_destination_connection_id=data[6 : 6 + data[5]],
                )
            self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)
        if self.server is not None:
            for data, _ in self.server.datagrams_to_send(now=self.now):
                self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
        ends = [self.client] + ([self.server] if self.server is not None else [])
        timers = [t for t in (end.get_timer() for end in ends) if t is not None]
        self.now = max(self.now + 1e-4, min([self.now + 0.001, *timers]))
        for end in ends:
            timer = end.get_timer()
            if timer is not None and timer <= self.now:
                end.handle_timer(now=self.now)
        self._drain()

    def _drain(self) -> None:
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        while self.server is not None and (event := self.server.next_event()) is not None:
            self.server_events.append(event)

    def run(self, seconds: float) -> None:
        """Step for ``seconds`` of simulated time."""
        until = self.now + seconds
        while self.now < until:
            self.step()

    def handshaken(self) -> bool:
        return any(isinstance(e, EVENTS.handshake_completed) for e in self.client_events)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    files = ensure_self_signed(tmp_path_factory.mktemp("cert"))
    return files.cert_path, files.key_path


@pytest.mark.parametrize("server_engine", ENGINES)
@pytest.mark.parametrize("client_engine", ENGINES)
def test_every_pair_shakes_hands_quickly_and_exchanges_data(
    client_engine: str, server_engine: str, cert: tuple[Path, Path]
) -> None:
    """The handshake takes no retransmission (50 ms of simulated time; a loss would cost a
    probe timeout, 200 ms or more). An aioquic client's first Initial leaves qh3's broker
    too small an anti-amplification budget for its Handshake packet, and qh3's own
    ``datagrams_to_send`` then lost the Initial it had built in the same call."""
    pair = _Pair(client_engine, server_engine, *cert)
    pair.run(0.05)
    assert pair.handshaken(), [type(e).__name__ for e in pair.client_events]
    assert any(isinstance(e, EVENTS.handshake_completed) for e in pair.server_events)
    pair.client.send_stream_data(0, b"ping", end_stream=True)
    pair.run(0.01)
    got = [e for e in pair.server_events if isinstance(e, EVENTS.stream_data)]
    assert b"".join(e.data for e in got) == b"ping" and got[-1].end_stream


@pytest.mark.parametrize("client_engine", ENGINES)
@pytest.mark.parametrize("offered", [None, ["h3"]])
def test_the_qh3_broker_keeps_felix_alpn_rule(
    client_engine: str, offered: list[str] | None, cert: tuple[Path, Path]
) -> None:
    """No ALPN offered: accepted; only other protocols: ``no_application_protocol``."""
    pair = _Pair(client_engine, "qh3", *cert, alpn=offered)
    pair.run(0.05 if offered is None else 2.0)  # the client reports the close once drained
    if offered is None:
        assert pair.handshaken(), [type(e).__name__ for e in pair.client_events]
        return
    closed = [e for e in pair.client_events if isinstance(e, EVENTS.terminated)]
    assert closed and closed[0].error_code == 0x100 + 120, pair.client_events


def test_qh3_stream_errors_are_value_errors_and_send_buffered_counts_unacknowledged(
    cert: tuple[Path, Path],
) -> None:
    pair = _Pair("qh3", "qh3", *cert)
    pair.run(0.05)
    pair.client.send_stream_data(0, b"x", end_stream=False)
    pair.run(0.005)
    server = pair.server
    server.send_stream_data(0, b"y" * 5000)
    assert send_buffered(server) >= 5000  # written, nothing sent yet
    sent = server.datagrams_to_send(now=pair.now)
    assert send_buffered(server) >= 5000  # sent, not acknowledged: still counted
    for data, _ in sent:
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.run(0.05)  # the client acknowledges
    assert send_buffered(server) == 0
    server.reset_stream(0, 0)
    with pytest.raises(ValueError):
        server.send_stream_data(0, b"after the reset")


def test_ssl_is_not_verified_when_insecure() -> None:
    config = load_engine("qh3").client_configuration(
        server_name="localhost",
        max_datagram_size=1452,
        idle_timeout=60.0,
        max_data=1 << 20,
        max_stream_data=1 << 20,
        insecure=True,
    )
    assert config.verify_mode == ssl.CERT_NONE
