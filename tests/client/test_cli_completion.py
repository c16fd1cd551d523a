"""``felix completion bash|zsh|fish``: the scripts come from the parser, each shell accepts
its script, and each shell's own completion offers what the parser accepts (bash always;
zsh and fish when installed, else those tests skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from felix_client import cli
from felix_client._completion import SHELLS, command_tree, render
from felix_client._contexts import ConfigFile, Context

BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in SHELLS:
        out[shell] = folder / f"felix.{shell}"
        out[shell].write_text(cli.completion_script(shell))
    return out


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """felix on PATH, a config with two contexts, and a directory with known files."""
    cfg = tmp_path / "cfg"
    base = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_")}
    base["FELIX_CONFIG_DIR"] = str(cfg)
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    ConfigFile(cfg / "config.toml", {"dev": Context(), "prod": Context()}).save()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "ca-cert.pem").write_text("x")
    (tmp_path / "work" / "keys").mkdir()
    return base


def test_the_command_prints_each_script(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in SHELLS:
        assert cli.main(["completion", shell]) == 0
        out = capsys.readouterr().out
        assert out == cli.completion_script(shell)
        assert f"{shell} completion for felix" in out
    assert cli.main(["completion", "powershell"]) == 2


def test_the_tree_follows_the_parser() -> None:
    tree = command_tree(cli.build_parser())
    names = [s.path[-1] for s in tree.subcommands]
    assert {"pub", "sub", "queue", "cache", "admin", "broker", "context", "completion"} <= set(
        names
    )
    assert [s.path[-1] for s in tree.find("queue").subcommands] == ["push", "consume"]
    ack = next(o for o in tree.find("pub").options if "--ack" in o.flags)
    assert (ack.takes_value, ack.choices) == (True, ("none", "accepted", "committed"))
    quiet = next(o for o in tree.find("pub").options if "--quiet" in o.flags)
    assert quiet.flags == ("--quiet", "-q") and not quiet.takes_value
    assert tree.find("admin", "create").positionals[0].choices == (
        "tenant",
        "namespace",
        "stream",
        "queue",
        "cache",
    )
    assert tree.find("context", "use").positionals[0].kind == "context"
    assert next(o for o in tree.options if "--ca" in o.flags).kind == "file"
    assert next(o for o in tree.find("token", "keygen").options if "--out" in o.flags).kind == "dir"
    with pytest.raises(KeyError):
        tree.find("queue", "pop")
    with pytest.raises(ValueError, match="unknown shell"):
        render("tcsh", tree, "0")


def test_broker_completes_the_runtimes_flags() -> None:
    from felix_server.config import build_parser as broker_parser

    tree = command_tree(cli.build_parser(), {("broker",): broker_parser()})
    flags = {f for o in tree.find("broker").options for f in o.flags}
    assert {"--runtime", "--backend", "--version", "--listen", "--metrics", "--data-dir"} <= flags
    assert not tree.find("broker").positionals  # REMAINDER is not a positional to complete


def test_bench_completes_its_scenarios_and_flags() -> None:
    from felix_client.bench.parser import build_parser as bench_parser
    from felix_client.bench.settings import SCENARIOS

    tree = command_tree(cli.build_parser(), {("bench",): bench_parser()})
    bench = tree.find("bench")
    assert {"--seconds", "--fanout", "--quic-engine", "--no-redis"} <= {
        f for o in bench.options for f in o.flags
    }
    assert [p.choices for p in bench.positionals] == [SCENARIOS]
    script = cli.completion_script("bash")
    assert "--fanout" in script and "pubsub-latency" in script


# ---------------------------------------------------------------------------------- bash

CASES: list[tuple[str, set[str]]] = [
    ("felix ad", {"admin"}),
    ("felix queue ", {"push", "consume"}),
    ("felix pub orders --ack ", {"none", "accepted", "committed"}),
    ("felix --server quic://h:1 pub orders --ack ", {"none", "accepted", "committed"}),
    ("felix admin create ", {"tenant", "namespace", "stream", "queue", "cache"}),
    ("felix admin create stream ", set()),
    ("felix -o ", {"text", "json"}),
    ("felix sub s --fr", {"--from"}),
    ("felix-broker --runt", {"--runtime"}),
    ("felix broker --lis", {"--listen"}),
    ("felix bench --sec", {"--seconds"}),
    (
        "felix bench ",
        {
            "raw-quic",
            "pubsub-latency",
            "pubsub-throughput",
            "queue",
            "cache",
            "durable",
            "memory",
            "all",
        },
    ),
    ("felix bench queue --no-r", {"--no-redis"}),
    ("felix context use ", {"dev", "prod"}),
    ("felix --context p", {"prod"}),
    ("felix completion ", {"bash", "zsh", "fish"}),
    ("felix --ca ca-", {"ca-cert.pem"}),
]


def _bash_complete(script: Path, line: str, env: dict[str, str], cwd: Path) -> set[str]:
    driver = (
        f"source {script}\n"
        'read -ra COMP_WORDS <<< "$LINE"\n'
        '[[ $LINE == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        "if [[ ${COMP_WORDS[0]} == felix-broker ]]; then _felix_broker; else _felix; fi\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        env={**env, "LINE": line},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {w for w in done.stdout.splitlines() if w}


def test_bash_accepts_the_script(scripts: dict[str, Path]) -> None:
    subprocess.run(["bash", "-n", str(scripts["bash"])], check=True, timeout=60)


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bash_completes(
    scripts: dict[str, Path], env: dict[str, str], tmp_path: Path, line: str, expected: set[str]
) -> None:
    assert _bash_complete(scripts["bash"], line, env, tmp_path / "work") == expected


def test_bash_registers_both_commands(scripts: dict[str, Path]) -> None:
    done = subprocess.run(
        ["bash", "--norc", "-c", f"source {scripts['bash']}; complete -p felix felix-broker"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.split("\n")[:2] == [
        "complete -F _felix felix",
        "complete -F _felix_broker felix-broker",
    ]


def test_bash_completes_directories_for_dir_options(
    scripts: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    got = _bash_complete(scripts["bash"], "felix token keygen --out ", env, tmp_path / "work")
    assert got == {"keys"}


# ----------------------------------------------------------------------------------- zsh

ZSH_STUBS = r"""
compdef() { }
_describe() { local -a arr; arr=("${(@P)${@[-1]}}"); print -rl -- "${arr[@]%%:*}" }
compadd() { if [[ $1 == -a ]]; then print -rl -- "${(@P)2}"; else shift; print -rl -- "$@"; fi }
_files() { print -r -- "<files $*>" }
"""


def _zsh_complete(script: Path, line: str, env: dict[str, str], cwd: Path) -> set[str]:
    """Run ``_felix`` with compsys's helpers stubbed to print what they are offered (zsh
    itself then filters by the typed prefix: the offered set is what is checked)."""
    driver = (
        ZSH_STUBS + f"source {script}\n"
        'words=(${(z)LINE}); [[ $LINE == *" " ]] && words+=("")\n'
        "CURRENT=${#words}; service=${words[1]}\n"
        "_felix || true\n"
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", driver],
        env={**env, "LINE": line},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {w for w in done.stdout.splitlines() if w}


needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")


@needs_zsh
def test_zsh_accepts_the_script(scripts: dict[str, Path]) -> None:
    subprocess.run(["zsh", "-n", str(scripts["zsh"])], check=True, timeout=60)


@needs_zsh
@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_zsh_offers(
    scripts: dict[str, Path], env: dict[str, str], tmp_path: Path, line: str, expected: set[str]
) -> None:
    got = _zsh_complete(scripts["zsh"], line, env, tmp_path / "work")
    prefix = "" if line.endswith(" ") else line.rsplit(maxsplit=1)[-1]
    if line.startswith("felix --ca"):
        assert got == {"<files >"}
    else:
        assert {w for w in got if w.startswith(prefix)} == expected


# ---------------------------------------------------------------------------------- fish

needs_fish = pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")


@needs_fish
def test_fish_accepts_the_script(scripts: dict[str, Path]) -> None:
    subprocess.run(["fish", "--no-execute", str(scripts["fish"])], check=True, timeout=60)


@needs_fish
@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fish_completes(
    scripts: dict[str, Path], env: dict[str, str], tmp_path: Path, line: str, expected: set[str]
) -> None:
    done = subprocess.run(
        ["fish", "--no-config", "-c", f'source {scripts["fish"]}; complete -C "$LINE"'],
        env={**env, "LINE": line},
        cwd=tmp_path / "work",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {w.split("\t")[0] for w in done.stdout.splitlines() if w} == expected
