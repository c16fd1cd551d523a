"""``felix context``: the config file (strict reading, atomic 0600 writing, the TOML writer),
the precedence flag > FELIX_* environment > context > default for every setting, and the
commands, which never print a token unless asked."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from brokers import Broker, child_env
from hypothesis import given
from hypothesis import strategies as st

from felix_client import _cli_commands, cli
from felix_client._contexts import (
    DEFAULT_METRICS_URL,
    SETTINGS,
    ConfigError,
    ConfigFile,
    Context,
    config_dir,
    dump_toml,
    resolve,
)
from felix_client._url import DEFAULT_URL

TOKEN = "tok-3f9a-secret"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config directory in FELIX_CONFIG_DIR, and no other FELIX_* variable."""
    for name in list(os.environ):
        if name.startswith("FELIX_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "felix-config"
    monkeypatch.setenv("FELIX_CONFIG_DIR", str(folder))
    return folder


def felix(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------- the file


def test_config_dir_order() -> None:
    assert config_dir({"FELIX_CONFIG_DIR": "/a", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path(
        "/a"
    )
    assert config_dir({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/felix")
    assert config_dir({"HOME": "/h"}) == Path("/h/.config/felix")
    assert config_dir({"XDG_CONFIG_HOME": "", "HOME": "/h"}) == Path("/h/.config/felix")
    assert config_dir({}) is None


_strings = st.text(max_size=40)


@given(
    current=st.none() | _strings,
    contexts=st.dictionaries(
        _strings, st.dictionaries(_strings, _strings | st.booleans(), max_size=4), max_size=4
    ),
)
def test_writer_round_trips_through_tomllib(
    current: str | None, contexts: dict[str, dict[str, str | bool]]
) -> None:
    expected: dict[str, Any] = {} if current is None else {"current": current}
    expected["contexts"] = contexts
    parsed = tomllib.loads(dump_toml(current, contexts))
    parsed.setdefault("contexts", {})
    assert parsed == expected


def test_save_and_load(cfg: Path) -> None:
    config = ConfigFile.load({"FELIX_CONFIG_DIR": str(cfg)})
    assert (config.contexts, config.current) == ({}, None)  # no file yet
    config.contexts["a"] = Context(server="quic://h:1", insecure=True, token='q"\\\n')
    config.current = "a"
    config.save()
    again = ConfigFile.load({"FELIX_CONFIG_DIR": str(cfg)})
    assert again.contexts == config.contexts and again.current == "a"
    assert stat.S_IMODE((cfg / "config.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o700


def test_save_replaces_a_loose_file_with_a_0600_one(cfg: Path) -> None:
    cfg.mkdir()
    (cfg / "config.toml").write_text('[contexts.a]\nserver = "quic://h:1"\n')
    (cfg / "config.toml").chmod(0o644)
    config = ConfigFile.load({"FELIX_CONFIG_DIR": str(cfg)})
    config.save()
    assert stat.S_IMODE((cfg / "config.toml").stat().st_mode) == 0o600


def test_a_failed_save_leaves_the_old_file_and_no_temporary(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ConfigFile.load({"FELIX_CONFIG_DIR": str(cfg)})
    config.contexts["a"] = Context(server="quic://h:1")
    config.save()
    before = (cfg / "config.toml").read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    config.contexts["b"] = Context(server="quic://h:2")
    with pytest.raises(ConfigError, match="No space left"):
        config.save()
    assert (cfg / "config.toml").read_bytes() == before
    assert sorted(p.name for p in cfg.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("current = ", "config.toml"),  # not TOML
        ('colour = "red"\n', "unknown key"),
        ("current = 3\n", "current must be a string"),
        ('contexts = "x"\n', "contexts must be a table"),
        ('[contexts.a]\nsever = "quic://h:1"\n', "unknown setting 'sever'"),
        ("[contexts.a]\ninsecure = 'yes'\n", "insecure must be a bool"),
        ("[contexts.a]\ntenant = 1\n", "tenant must be a str"),
        ('[contexts."-x"]\n', "invalid context name"),
        ("[contexts]\na = 1\n", "contexts.a must be a table"),
    ],
)
def test_invalid_files_are_one_clear_error(
    cfg: Path, text: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg.mkdir()
    (cfg / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=needle):
        ConfigFile.load({"FELIX_CONFIG_DIR": str(cfg)})
    code, _, err = felix(capsys, "cache", "get", "c", "k")  # any connecting command
    assert code == 1 and err.count("\n") == 1 and err.startswith("felix: error: ")
    assert needle in err


# ------------------------------------------------------------------------ precedence


_LAYER_VALUES: dict[str, tuple[Any, str, Any]] = {
    # setting: (flag value, environment text, context value)
    "server": ("quic://flag:1", "quic://env:2", "quic://ctx:3"),
    "ca": ("/flag.pem", "/env.pem", "/ctx.pem"),
    "insecure": (False, "true", True),
    "cert": ("/flag.pem", "/env.pem", "/ctx.pem"),
    "cert_key": ("/flag.key", "/env.key", "/ctx.key"),
    "token": ("flag-token", "env-token", "ctx-token"),
    "tenant": ("flag-tenant", "env-tenant", "ctx-tenant"),
    "namespace": ("flag-ns", "env-ns", "ctx-ns"),
    "metrics": ("http://flag:1/metrics", "http://env:2/metrics", "http://ctx:3/metrics"),
}


def test_every_setting_has_layer_values() -> None:
    assert set(_LAYER_VALUES) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_precedence_of_each_setting(name: str) -> None:
    flag, env_text, ctx_value = _LAYER_VALUES[name]
    variable, default = SETTINGS[name]
    env_value = True if name == "insecure" else env_text
    context = ("c", Context(**{name: ctx_value}))
    flags = {name: flag}
    env = {variable: env_text}

    got = resolve(flags, env, context)[name]
    assert (got.value, got.source) == (flag, "flag")
    got = resolve({}, env, context)[name]
    assert (got.value, got.source) == (env_value, f"env {variable}")
    got = resolve({}, {variable: ""}, context)[name]  # an empty variable is unset
    assert (got.value, got.source) == (ctx_value, "context c")
    got = resolve({}, {}, ("c", Context()))[name]
    assert (got.value, got.source) == (default, "default")
    assert resolve({}, {}, None)[name].value == default


def test_defaults() -> None:
    values = {k: v.value for k, v in resolve({}, {}, None).items()}
    assert values == {
        "server": DEFAULT_URL,
        "ca": None,
        "insecure": False,
        "cert": None,
        "cert_key": None,
        "token": None,
        "tenant": None,  # the token's tenant, else "default" (felix_client.Client)
        "namespace": "default",
        "metrics": DEFAULT_METRICS_URL,
    }


def test_the_client_certificate_and_its_key_come_from_one_layer() -> None:
    context = ("c", Context(cert="/c.pem", cert_key="/c.key"))

    def pair(flags: dict[str, Any], env: dict[str, str]) -> tuple[Any, Any, str, str]:
        got = resolve(flags, env, context)
        return (
            got["cert"].value,
            got["cert_key"].value,
            got["cert"].source,
            got["cert_key"].source,
        )

    assert pair({}, {}) == ("/c.pem", "/c.key", "context c", "context c")
    # A flag's certificate is not matched with the environment's or the context's key.
    assert pair({"cert": "/f.pem"}, {"FELIX_CERT_KEY": "/e.key"}) == (
        "/f.pem",
        None,
        "flag",
        "flag",
    )
    assert pair({}, {"FELIX_CERT_KEY": "/e.key"}) == (
        None,
        "/e.key",
        "env FELIX_CERT_KEY",
        "env FELIX_CERT_KEY",
    )
    assert pair({"cert": "/f.pem", "cert_key": "/f.key"}, {}) == (
        "/f.pem",
        "/f.key",
        "flag",
        "flag",
    )
    both = {"FELIX_CERT": "/e.pem", "FELIX_CERT_KEY": "/e.key"}  # one layer, two variables
    assert pair({}, both) == ("/e.pem", "/e.key", "env FELIX_CERT", "env FELIX_CERT_KEY")


@pytest.mark.parametrize(("text", "value"), [("1", True), ("YES", True), ("off", False)])
def test_felix_insecure_values(text: str, value: bool) -> None:
    assert resolve({}, {"FELIX_INSECURE": text}, None)["insecure"].value is value


def test_felix_insecure_garbage_is_an_error() -> None:
    with pytest.raises(ConfigError, match="FELIX_INSECURE"):
        resolve({}, {"FELIX_INSECURE": "maybe"}, None)


def _write(cfg: Path, current: str | None, **contexts: dict[str, Any]) -> None:
    config = ConfigFile(cfg / "config.toml", {n: Context(**c) for n, c in contexts.items()})
    config.current = current
    config.save()


def test_cli_layers_through_parse_args(cfg: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    _write(
        cfg,
        "a",
        a={"server": "quic://a:1", "tenant": "ta", "insecure": True, "ca": str(ca)},
        b={"server": "quic://b:2", "namespace": "nb", "token": TOKEN},
    )
    env = {"FELIX_CONFIG_DIR": str(cfg)}
    args = cli.parse_args(["cache", "get", "c", "k"], env=env)  # the current context
    assert (args.server, args.tenant, args.insecure, args.ca) == ("quic://a:1", "ta", True, str(ca))
    assert (args.namespace, args.token) == ("default", None)
    assert args.sources["server"] == "context a" and args.sources["namespace"] == "default"
    # FELIX_CONTEXT beats current, --context beats FELIX_CONTEXT
    args = cli.parse_args(["cache", "get", "c", "k"], env={**env, "FELIX_CONTEXT": "b"})
    assert (args.server, args.namespace, args.token, args.tenant) == (
        "quic://b:2",
        "nb",
        TOKEN,
        None,  # the Client takes the token's tenant, else "default"
    )
    args = cli.parse_args(
        ["--context", "a", "cache", "get", "c", "k"], env={**env, "FELIX_CONTEXT": "b"}
    )
    assert args.server == "quic://a:1"
    args = cli.parse_args(["cache", "get", "c", "k", "--context", "b"], env=env)
    assert args.server == "quic://b:2"
    # the environment beats the context, a flag beats both
    env2 = {**env, "FELIX_SERVER": "quic://e:3", "FELIX_TENANT": "te", "FELIX_INSECURE": "0"}
    args = cli.parse_args(["cache", "get", "c", "k"], env=env2)
    assert (args.server, args.tenant, args.insecure) == ("quic://e:3", "te", False)
    args = cli.parse_args(
        ["cache", "get", "c", "k", "-s", "quic://f:4", "--tenant", "tf"], env=env2
    )
    assert (args.server, args.tenant) == ("quic://f:4", "tf")
    # --no-insecure overrides a context that says insecure
    args = cli.parse_args(["--no-insecure", "cache", "get", "c", "k"], env=env)
    assert (args.insecure, args.sources["insecure"]) == (False, "flag")


def test_a_context_gives_the_client_certificate(cfg: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "me.pem", tmp_path / "me.key"
    cert.write_text("x")
    key.write_text("x")
    _write(
        cfg,
        "m",
        m={"server": "quic://m:1", "cert": str(cert), "cert_key": str(key)},
        half={"server": "quic://h:1", "cert": str(cert)},
        gone={"server": "quic://g:1", "cert": str(cert), "cert_key": str(tmp_path / "no.key")},
    )
    env = {"FELIX_CONFIG_DIR": str(cfg)}
    args = cli.parse_args(["cache", "get", "c", "k"], env=env)
    assert (args.cert, args.cert_key) == (str(cert), str(key))
    assert args.sources["cert"] == args.sources["cert_key"] == "context m"
    client = _cli_commands._client(args)
    assert (client._options.cert_file, client._options.key_file) == (str(cert), str(key))
    # flags replace the pair, never half of it
    other = tmp_path / "other.pem"
    other.write_text("x")
    with pytest.raises(ValueError, match="--cert and --cert-key go together"):
        cli.parse_args(["cache", "get", "c", "k", "--cert", str(other)], env=env)
    args = cli.parse_args(
        ["cache", "get", "c", "k", "--cert", str(other), "--cert-key", str(key)], env=env
    )
    assert (args.cert, args.cert_key) == (str(other), str(key))
    with pytest.raises(ValueError, match=r"go together \(from context half\)"):
        cli.parse_args(["--context", "half", "cache", "get", "c", "k"], env=env)
    with pytest.raises(ValueError, match=r"--cert-key file .* \(from context gone\) does not"):
        cli.parse_args(["--context", "gone", "cache", "get", "c", "k"], env=env)


def test_selected_context_must_exist(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(cfg, None, a={"server": "quic://a:1"})
    code, _, err = felix(capsys, "--context", "nope", "cache", "get", "c", "k")
    assert code == 1 and "--context names no context 'nope' (known: a)" in err
    monkeypatch.setenv("FELIX_CONTEXT", "gone")
    code, _, err = felix(capsys, "cache", "get", "c", "k")
    assert code == 1 and "FELIX_CONTEXT names no context 'gone'" in err


def test_bad_values_from_a_context_say_where_they_came_from(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(cfg, "a", a={"server": "http://a:1"}, b={"ca": "/nonexistent/ca.pem"})
    code, _, err = felix(capsys, "cache", "get", "c", "k")
    assert code == 2 and "(from context a)" in err and "unsupported URL scheme" in err
    code, _, err = felix(capsys, "--context", "b", "cache", "get", "c", "k")
    assert code == 2 and "'/nonexistent/ca.pem' (from context b) does not exist" in err


def test_without_a_home_there_is_no_context() -> None:
    args = cli.parse_args(["cache", "get", "c", "k"], env={})
    assert args.server == DEFAULT_URL and args.sources["server"] == "default"


# -------------------------------------------------------------------------- commands


def test_add_use_list_show_rm(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.chdir(tmp_path)
    assert felix(capsys, "context", "list")[1].startswith("(no contexts")
    code, out, _ = felix(
        capsys,
        "context",
        "add",
        "dev",
        "--server",
        "quic://127.0.0.1:7447",
        "--ca",
        "ca.pem",
        "--cert",
        "ca.pem",
        "--cert-key",
        "ca.pem",
        "--insecure",
        "--use",
    )
    assert (code, out) == (0, "added context dev (current)\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    code, out, _ = felix(
        capsys,
        "context",
        "add",
        "prod",
        "-s",
        "quic://prod:7447",
        "--token",
        "-",
        "--tenant",
        "acme",
        "-n",
        "orders",
        "--metrics",
        "http://prod:8080/metrics",
    )
    assert (code, out) == (0, "added context prod\n")

    stored = tomllib.loads((cfg / "config.toml").read_text())
    assert stored["current"] == "dev"
    assert stored["contexts"]["dev"] == {
        "server": "quic://127.0.0.1:7447",
        "ca": str(ca.resolve()),  # absolute: the context works from any directory
        "insecure": True,
        "cert": str(ca.resolve()),
        "cert_key": str(ca.resolve()),
    }
    assert stored["contexts"]["prod"]["token"] == TOKEN

    code, out, _ = felix(capsys, "context", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "SERVER", "TENANT", "NAMESPACE", "TOKEN"]
    assert lines[1].split()[:2] == ["*", "dev"]
    assert lines[2].split() == ["prod", "quic://prod:7447", "acme", "orders", "(hidden)"]
    assert felix(capsys, "context", "list", "-q")[1] == "dev\nprod\n"

    code, out, _ = felix(capsys, "context", "list", "-o", "json")
    records = json.loads(out)
    assert [(r["name"], r["current"], r["token_set"]) for r in records] == [
        ("dev", True, False),
        ("prod", False, True),
    ]
    assert records[1]["metrics"] == "http://prod:8080/metrics" and "token" not in records[1]

    assert felix(capsys, "context", "use", "prod") == (0, "current context: prod\n", "")
    code, out, _ = felix(capsys, "context", "show")
    assert out.splitlines()[:3] == ["name: prod", "current: true", "server: quic://prod:7447"]
    assert "token: (hidden: --show-token prints it)" in out
    code, out, _ = felix(capsys, "context", "show", "dev", "-o", "json")
    assert json.loads(out) == {
        "name": "dev",
        "current": False,
        "server": "quic://127.0.0.1:7447",
        "ca": str(ca.resolve()),
        "insecure": True,
        "cert": str(ca.resolve()),
        "cert_key": str(ca.resolve()),
        "token_set": False,
    }

    assert felix(capsys, "context", "rm", "prod") == (0, "removed context prod\n", "")
    assert "current" not in tomllib.loads((cfg / "config.toml").read_text())
    code, out, err = felix(capsys, "context", "show")
    assert code == 1 and "no context selected" in err


def test_a_token_is_printed_only_with_show_token(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(cfg, "p", p={"server": "quic://p:1", "token": TOKEN})
    for argv in (
        ["context", "list"],
        ["context", "list", "-o", "json"],
        ["context", "show"],
        ["context", "show", "p", "-o", "json"],
    ):
        code, out, err = felix(capsys, *argv)
        assert code == 0 and TOKEN not in out + err, argv
        code, out, _ = felix(capsys, *argv, "--show-token")
        assert code == 0 and TOKEN in out, argv


def test_add_refuses_mistakes(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert felix(capsys, "context", "add", "a", "-s", "quic://a:1")[0] == 0
    for argv, needle in (
        (["a", "-s", "quic://a:2"], "exists: --force replaces it"),
        (["b", "-s", "http://b:1"], "unsupported URL scheme"),
        (["_bad", "-s", "quic://b:1"], "invalid context name"),
        (["b.c/d", "-s", "quic://b:1"], "invalid context name"),
        (["b", "--ca", "/nonexistent/ca.pem"], "does not exist"),
        (["b", "--token", "-"], "empty token"),
        (["b", "--cert", "ca.pem"], "--cert and --cert-key go together"),
        (["b", "--cert-key", "ca.pem"], "--cert and --cert-key go together"),
        (
            ["b", "--cert", "/nonexistent/me.pem", "--cert-key", "/nonexistent/me.key"],
            "does not exist",
        ),
    ):
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code, _, err = felix(capsys, "context", "add", *argv)
        assert code in (1, 2) and needle in err, (argv, err)
    assert sorted(ConfigFile.load(os.environ).contexts) == ["a"]
    assert felix(capsys, "context", "add", "a", "-s", "quic://a:2", "--force")[0] == 0
    assert ConfigFile.load(os.environ).contexts["a"].server == "quic://a:2"


def test_add_stores_only_what_it_is_given(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FELIX_* variables set in the shell are not copied into a new context."""
    monkeypatch.setenv("FELIX_SERVER", "quic://env:1")
    monkeypatch.setenv("FELIX_TOKEN", TOKEN)
    assert felix(capsys, "context", "add", "a", "--tenant", "t")[0] == 0
    assert ConfigFile.load(os.environ).contexts["a"] == Context(tenant="t")


def test_use_and_rm_of_unknown_names(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("use", "rm", "show"):
        code, _, err = felix(capsys, "context", action, "ghost")
        assert code == 1 and "there is no context 'ghost'" in err


def test_use_notes_an_overriding_felix_context(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(cfg, None, a={}, b={})
    monkeypatch.setenv("FELIX_CONTEXT", "b")
    code, _, err = felix(capsys, "context", "use", "a")
    assert code == 0 and "FELIX_CONTEXT=b overrides it" in err
    code, out, _ = felix(capsys, "context", "list", "-o", "json")
    assert [r["current"] for r in json.loads(out)] == [False, True]  # what commands use


def test_a_token_file_others_can_read_gets_a_warning(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(cfg, None, a={"token": TOKEN})
    assert felix(capsys, "context", "list")[2] == ""
    (cfg / "config.toml").chmod(0o644)
    err = felix(capsys, "context", "list")[2]
    assert "holds tokens and others can read it" in err and TOKEN not in err


def test_a_context_reaches_a_live_broker(broker: Broker, tmp_path: Path) -> None:
    """Only the context names the broker and its certificate: no flag, no FELIX_SERVER."""
    env = {**child_env(), "FELIX_CONFIG_DIR": str(tmp_path / "cfg")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "felix_client.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = run("context", "add", "local", "-s", broker.url, "--ca", broker.ca_file, "--use")
    assert added.returncode == 0, added.stderr
    done = run("cache", "get", "ctx-e2e-missing", "k")
    assert done.returncode == 1 and "NOT_FOUND" in done.stderr  # the broker answered
    assert "CONNECTION_LOST" not in done.stderr
    created = run("admin", "create", "stream", "ctx-e2e", "-o", "json")
    assert created.returncode == 0, created.stderr
    listed = run("admin", "list", "stream")
    assert "ctx-e2e" in listed.stdout.split()
