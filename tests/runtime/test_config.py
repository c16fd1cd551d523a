"""Configuration loading: precedence flags > FELIX_* env > TOML file > defaults, and errors."""

from __future__ import annotations

import pytest

from felix_server.config import (
    DEFAULT_LISTEN_PORT,
    ConfigError,
    ServerConfig,
    config_keys,
    config_to_toml,
    load_config,
    parse_address,
)

TOML = b"""
listen = "127.0.0.1:9001"
metrics = "127.0.0.1:9101"
log_format = "json"

[transport]
max_datagram_size = 1350

[broker]
batch_max_events = 10
memory_limit_bytes = "64MiB"
"""


def files(**contents: bytes):  # type: ignore[no-untyped-def]
    def read(path: str) -> bytes:
        if path not in contents:
            raise FileNotFoundError(2, "No such file or directory")
        return contents[path]

    return read


def load(argv: list[str], env: dict[str, str] | None = None, **contents: bytes) -> ServerConfig:
    return load_config(argv, env or {}, files(**contents))[0]


def test_defaults() -> None:
    config = load([])
    assert config.listen_address == ("127.0.0.1", DEFAULT_LISTEN_PORT)
    assert config.metrics_address == ("127.0.0.1", 8080)
    assert config.dev_mode and config.log_format == "text"
    assert config.transport.max_datagram_size == 1452
    assert config.broker.slow_consumer_policy == "drop_oldest"


def test_precedence_flags_over_env_over_file_over_defaults() -> None:
    env = {"FELIX_METRICS": "127.0.0.1:9202", "FELIX_BROKER_BATCH_MAX_EVENTS": "20"}
    config = load(
        ["--config", "f.toml", "--broker-batch-max-events", "30"], env, **{"f.toml": TOML}
    )
    assert config.listen == "127.0.0.1:9001"  # file
    assert config.metrics == "127.0.0.1:9202"  # env beats file
    assert config.broker.batch_max_events == 30  # flag beats env and file
    assert config.broker.memory_limit_bytes == 64 * 1024 * 1024  # file, with a unit
    assert config.transport.max_datagram_size == 1350
    assert config.log_format == "json"
    assert config.broker.batch_max_bytes == 64 * 1024  # default


def test_config_file_from_env_and_set_flag() -> None:
    env = {"FELIX_CONFIG": "f.toml"}
    config = load(
        ["--set", "transport.max_data=1MiB", "--set", "broker.durability=ephemeral"],
        env,
        **{"f.toml": TOML},
    )
    assert config.listen == "127.0.0.1:9001"
    assert config.transport.max_data == 1024 * 1024


def test_every_engine_limit_is_settable() -> None:
    keys = config_keys()
    assert "broker.max_subscriptions_per_connection" in keys
    assert "broker.slow_consumer_policy" in keys
    assert "transport.connection_buffer_limit" in keys
    config = load(["--broker-stream-retention-max-records", "none"])
    assert config.broker.stream_retention_max_records is None


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--listen", "nohostport"], {}, "HOST:PORT"),
        (["--listen", "127.0.0.1:70000"], {}, "out of range"),
        ([], {"FELIX_BROKER_BATCH_MAX_EVENTS": "many"}, "FELIX_BROKER_BATCH_MAX_EVENTS"),
        (["--metrics-enabled", "maybe"], {}, "--metrics-enabled"),
        (["--log-format", "xml"], {}, "log_format"),
        (["--tls-cert", "c.pem"], {}, "together"),
        (["--broker-batch-max-events", "0"], {}, "batch_max_events"),
        (["--set", "nope=1"], {}, "known key"),
        (["--no-such-flag"], {}, "unrecognized"),
        (["--config", "missing.toml"], {}, "missing.toml"),
        (["--transport-connection-buffer-resume", "99MiB"], {}, "connection_buffer_resume"),
    ],
)
def test_bad_settings_name_their_source(
    argv: list[str], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("-", r"\-")):
        load(argv, env)


def test_bad_toml() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load(["--config", "f"], f=b"[broker]\nno_such = 1\n")
    with pytest.raises(ConfigError, match="expects int"):
        load(["--config", "f"], f=b"[transport]\nmax_data = true\n")
    with pytest.raises(ConfigError, match="config file f"):
        load(["--config", "f"], f=b"not = toml = at all")


def test_print_config_round_trips() -> None:
    config = load(["--listen", "[::1]:7000", "--broker-batch-max-events", "9"])
    assert parse_address(config.listen) == ("::1", 7000)
    text = config_to_toml(config).encode()
    again = load(["--config", "c"], c=text)
    assert again == config


def test_auth_tokens_from_env_or_flag() -> None:
    assert not load([]).auth_enabled  # authentication off by default
    assert load([], env={"FELIX_AUTH_TOKENS": "a, b ,,"}).auth_tokens == "a, b ,,"
    assert load(["--auth-tokens", "c"], env={"FELIX_AUTH_TOKENS": "a"}).auth_tokens == "c"


@pytest.mark.parametrize(
    ("argv", "env", "contents", "expected"),
    [
        (["--listen", "nohost"], {}, {}, "(listen from flag --listen)"),
        ([], {"FELIX_METRICS": "x"}, {}, "(metrics from environment FELIX_METRICS)"),
        (
            ["--config", "f.toml"],
            {},
            {"f.toml": b"shutdown_grace_s = 30.0\n"},
            "(shutdown_grace_s from config file f.toml; shutdown_drain_s: default)",
        ),
        (
            ["--set", "transport.connection_buffer_cap=1MiB"],
            {},
            {},
            "(transport.connection_buffer_limit: default; "
            "transport.connection_buffer_cap from --set transport.connection_buffer_cap)",
        ),
        (
            ["--broker-stream-retention-max-bytes", "4GiB"],
            {},
            {},
            "(broker.stream_retention_max_bytes from flag --broker-stream-retention-max-bytes; "
            "broker.stream_max_retention_bytes: default)",
        ),
    ],
)
def test_validation_errors_say_where_each_setting_came_from(
    argv: list[str], env: dict[str, str], contents: dict[str, bytes], expected: str
) -> None:
    """docs/broker.md: a bad setting stops the broker with one line naming the setting and
    where it came from, also for address and cross-field checks (issue 16 item 12)."""
    with pytest.raises(ConfigError) as info:
        load(argv, env, **contents)
    assert str(info.value).endswith(expected)


def test_a_durable_default_and_the_fsync_defaults_are_settings() -> None:
    config = load(["--broker-durability", "durable", "--broker-fsync-interval-ms", "20"])
    assert config.broker.durability == "durable"
    assert config.broker.fsync == "interval" and config.broker.fsync_interval_ms == 20
    assert load(["--broker-fsync", "none"]).broker.fsync == "none"
    with pytest.raises(ConfigError) as info:
        load(["--broker-fsync", "always"])
    assert str(info.value).endswith("(broker.fsync from flag --broker-fsync)")
    with pytest.raises(ConfigError):
        load(["--broker-fsync-interval-ms", "0"])


def test_auth_issuer_keys_jwks_issuer_audience_from_every_layer() -> None:
    config = load(
        ["--auth-issuer-key", "a.pem", "--auth-issuer-key", "b.pem", "--auth-audience", "eu"],
        env={"FELIX_AUTH_JWKS": "keys.json", "FELIX_AUTH_ISSUER": "corp"},
    )
    assert config.issuer_key_files == ["a.pem", "b.pem"]
    assert (config.auth_jwks, config.auth_issuer, config.auth_audience) == (
        "keys.json",
        "corp",
        "eu",
    )
    assert config.auth_enabled
    both = load(["--auth-issuer-keys", "a.pem", "--auth-issuer-key", "c.pem"])
    assert both.issuer_key_files == ["a.pem", "c.pem"]
    text = config_to_toml(config)
    assert 'auth_issuer_keys = "a.pem,b.pem"' in text and 'auth_audience = "eu"' in text
    assert "# insecure_no_auth" not in text and "insecure_no_auth = false" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "[::1]", "localhost"])
def test_no_auth_is_fine_on_loopback(host: str) -> None:
    assert not load(["--listen", f"{host}:7000"]).auth_enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "10.0.0.1", "broker.example"])
def test_no_auth_elsewhere_refuses_to_start_unless_insecure(host: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address and authentication is off"):
        load(["--listen", f"{host}:7000"])
    assert load(["--listen", f"{host}:7000", "--insecure-no-auth"]).insecure_no_auth
    assert load(["--listen", f"{host}:7000"], env={"FELIX_INSECURE_NO_AUTH": "1"})
    assert load(["--listen", f"{host}:7000", "--auth-tokens", "s=t:*"]).auth_enabled
    assert load(["--listen", f"{host}:7000", "--auth-jwks", "k.json"]).auth_enabled
