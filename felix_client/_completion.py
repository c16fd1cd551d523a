"""``felix completion bash|zsh|fish``: shell completion scripts generated from the parser.

Theory of operation. :func:`command_tree` walks the ``argparse`` parser of ``felix`` into
plain records: each command path (``()``, ``("queue",)``, ``("queue", "push")`` ...) with
its subcommands, its options (which take a value, their choices) and its positional
arguments. What a value is completed with follows the argument's metavar: ``FILE`` completes
file names, ``DIR`` directories, ``CONTEXT`` the names ``felix context list -q`` prints;
``choices`` complete themselves.

Each shell gets the same tables (keyed ``"PATH|FLAG"`` or ``"PATH|INDEX"``) and the same
small walk over the words before the cursor: an option that takes a value skips the next
word, a word naming a subcommand of the current path descends into it, any other word is
the next positional argument. So the scripts never drift from the parser: they are
regenerated from it, and the tests drive each shell's real completion machinery.

``felix broker`` hands its arguments to the runtime, so its options are the broker's own
parser's (:func:`felix_server.config.build_parser`) merged in; ``felix-broker`` completes
like ``felix broker``. shtab (which generates completion from argparse) writes no fish
scripts, hence this module.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["SHELLS", "Command", "Option", "Positional", "command_tree", "render"]

SHELLS = ("bash", "zsh", "fish")

_KINDS = {"FILE": "file", "DIR": "dir", "CONTEXT": "context"}
"""Metavar -> how such a value is completed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One option of a command."""

    flags: tuple[str, ...]
    """``("--server", "-s")``."""
    takes_value: bool
    choices: tuple[str, ...] = ()
    kind: str = ""
    """``file``, ``dir``, ``context`` or empty."""
    help: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Positional:
    """One positional argument of a command."""

    choices: tuple[str, ...] = ()
    kind: str = ""
    help: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A command path and what may follow it."""

    path: tuple[str, ...]
    help: str = ""
    subcommands: tuple[Command, ...] = ()
    options: tuple[Option, ...] = ()
    positionals: tuple[Positional, ...] = ()

    def walk(self) -> Iterator[Command]:
        """This command and every command under it, depth first."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()

    def find(self, *path: str) -> Command:
        """The command at ``path`` under this one.

        Raises:
            KeyError: there is none.
        """
        node = self
        for name in path:
            found = [s for s in node.subcommands if s.path[-1] == name]
            if not found:
                raise KeyError(" ".join(path))
            node = found[0]
        return node


def _help(action: argparse.Action) -> str:
    text = action.help if action.help and action.help != argparse.SUPPRESS else ""
    return " ".join(text.split())


def _kind(action: argparse.Action) -> str:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return _KINDS.get(metavar, "")


def _choices(action: argparse.Action) -> tuple[str, ...]:
    return tuple(str(c) for c in action.choices) if action.choices else ()


def command_tree(
    parser: argparse.ArgumentParser,
    merge: Mapping[tuple[str, ...], argparse.ArgumentParser] | None = None,
    path: tuple[str, ...] = (),
    help: str = "",
) -> Command:
    """The commands of ``parser`` as :class:`Command` records.

    Args:
        parser: the parser (or a subcommand's parser).
        merge: extra parsers whose options and positionals a path also accepts: the
            parser its ``REMAINDER`` is handed to (``felix broker``'s runtime flags, ``felix
            bench``'s scenarios and flags); their subcommands are ignored.
        path: the subcommand words leading to ``parser``.
        help: the one-line help of that subcommand.
    """
    merge = merge or {}
    options: list[Option] = []
    positionals: list[Positional] = []
    subcommands: list[Command] = []
    seen: set[str] = set()
    extra = merge.get(path)
    actions = list(parser._actions) + (list(extra._actions) if extra is not None else [])
    for action in actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _help(a) for a in action._choices_actions}
            for name, sub in action.choices.items():
                subcommands.append(command_tree(sub, merge, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            flags = tuple(f for f in action.option_strings if f not in seen)
            if not flags:
                continue  # the same flag from the merged parser
            seen.update(flags)
            options.append(
                Option(
                    flags=flags,
                    takes_value=action.nargs != 0,
                    choices=_choices(action),
                    kind=_kind(action),
                    help=_help(action),
                )
            )
        elif action.nargs != argparse.REMAINDER:
            positionals.append(
                Positional(choices=_choices(action), kind=_kind(action), help=_help(action))
            )
    return Command(
        path=path,
        help=help,
        subcommands=tuple(subcommands),
        options=tuple(options),
        positionals=tuple(positionals),
    )


# ---------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class _Tables:
    """What every script needs, keyed by path: ``felix`` and the subcommand words, joined
    by spaces (``felix queue push``)."""

    subs: dict[str, list[str]]
    opts: dict[str, list[str]]
    argopts: dict[str, list[str]]
    choices: dict[str, list[str]]
    """``"PATH|FLAG"`` or ``"PATH|INDEX"`` -> the values offered."""
    kinds: dict[str, str]
    """``"PATH|FLAG"`` or ``"PATH|INDEX"`` -> file, dir or context."""
    helps: dict[str, str]
    """``"PATH|NAME"`` (a subcommand) or ``"PATH|FLAG"`` -> its help."""


def _at(cmd: Command) -> str:
    return " ".join(("felix", *cmd.path))


def _tables(root: Command) -> _Tables:
    t = _Tables({}, {}, {}, {}, {}, {})
    for cmd in root.walk():
        at = _at(cmd)
        t.subs[at] = [s.path[-1] for s in cmd.subcommands]
        for s in cmd.subcommands:
            t.helps[f"{at}|{s.path[-1]}"] = s.help
        t.opts[at] = [f for o in cmd.options for f in o.flags]
        t.argopts[at] = [f for o in cmd.options if o.takes_value for f in o.flags]
        for o in cmd.options:
            for f in o.flags:
                t.helps[f"{at}|{f}"] = o.help
                if o.choices:
                    t.choices[f"{at}|{f}"] = list(o.choices)
                if o.kind:
                    t.kinds[f"{at}|{f}"] = o.kind
        for i, p in enumerate(cmd.positionals):
            if p.choices:
                t.choices[f"{at}|{i}"] = list(p.choices)
            if p.kind:
                t.kinds[f"{at}|{i}"] = p.kind
    return t


def _assoc(name: str, table: Mapping[str, list[str] | str]) -> str:
    """A bash / zsh associative array assignment (each value one string)."""
    items = []
    for key, value in table.items():
        text = " ".join(value) if isinstance(value, list) else value
        items.append(f"    [{shlex.quote(key)}]={shlex.quote(text)}")
    return f"{name}=(\n" + "\n".join(items) + "\n)"


def _zsh_assoc(name: str, table: Mapping[str, list[str] | str]) -> str:
    """A zsh associative array assignment as key value pairs (works in every zsh)."""
    items = []
    for key, value in table.items():
        text = " ".join(value) if isinstance(value, list) else value
        items.append(f"    {shlex.quote(key)} {shlex.quote(text)}")
    return f"{name}=(\n" + "\n".join(items) + "\n)"


def _header(shell: str, version: str, install: str) -> str:
    return (
        f"# {shell} completion for felix and felix-broker (felix {version}).\n"
        f"# Generated by `felix completion {shell}` from felix's own argument parser.\n"
        f"# {install}\n"
    )


# ------------------------------------------------------------------------------ bash

_BASH_BODY = r"""
_felix_complete() {
    # $1: the path of the command typed ("felix", or "felix broker" for felix-broker)
    local cur="${COMP_WORDS[COMP_CWORD]}" at="$1" word key kind i npos=0 expect=""
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        if [[ -n $expect ]]; then
            expect=""
            continue
        fi
        if [[ $word == -* ]]; then
            if [[ $word != *=* && " ${_felix_argopts[$at]} " == *" $word "* ]]; then
                expect="$word"
            fi
            continue
        fi
        if ((npos == 0)) && [[ " ${_felix_subs[$at]} " == *" $word "* ]]; then
            at="$at $word"
        else
            npos=$((npos + 1))
        fi
    done
    if [[ -n $expect ]]; then
        key="$at|$expect"
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_felix_opts[$at]}" -- "$cur"))
        return 0
    else
        key="$at|$npos"
    fi
    kind="${_felix_kinds[$key]}"
    case "$kind" in
        file)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        dir)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -- "$cur"))
            ;;
        context)
            COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" context list -q 2>/dev/null)" -- "$cur"))
            ;;
        *)
            local words="${_felix_choices[$key]}"
            if [[ -z $expect ]] && ((npos == 0)); then
                words="$words ${_felix_subs[$at]}"
            fi
            COMPREPLY=($(compgen -W "$words" -- "$cur"))
            ;;
    esac
    return 0
}

_felix() { _felix_complete felix; }
_felix_broker() { _felix_complete "felix broker"; }
complete -F _felix felix
complete -F _felix_broker felix-broker
"""


def _bash(t: _Tables, version: str) -> str:
    install = (
        "Install: felix completion bash > ~/.local/share/bash-completion/completions/felix\n"
        "#     or: source <(felix completion bash)    (in ~/.bashrc; needs bash 4.2+)"
    )
    parts = [
        _header("bash", version, install),
        "declare -gA _felix_subs _felix_opts _felix_argopts _felix_choices _felix_kinds",
        _assoc("_felix_subs", t.subs),
        _assoc("_felix_opts", t.opts),
        _assoc("_felix_argopts", t.argopts),
        _assoc("_felix_choices", t.choices),
        _assoc("_felix_kinds", t.kinds),
    ]
    return "\n".join(parts) + "\n" + _BASH_BODY


# ------------------------------------------------------------------------------- zsh

_ZSH_BODY = r"""
_felix() {
    local at=felix cur="${words[CURRENT]}" word key kind expect="" i npos=0
    [[ $service == felix-broker ]] && at="felix broker"
    for ((i = 2; i < CURRENT; i++)); do
        word="${words[i]}"
        if [[ -n $expect ]]; then
            expect=""
            continue
        fi
        if [[ $word == -* ]]; then
            if [[ $word != *=* && " ${_felix_argopts[$at]} " == *" $word "* ]]; then
                expect="$word"
            fi
            continue
        fi
        if ((npos == 0)) && [[ " ${_felix_subs[$at]} " == *" $word "* ]]; then
            at="$at $word"
        else
            npos=$((npos + 1))
        fi
    done
    local -a items
    local name
    if [[ -n $expect ]]; then
        key="$at|$expect"
    elif [[ $cur == -* ]]; then
        for name in ${=_felix_opts[$at]}; do
            items+=("${name//:/\\:}:${_felix_helps[$at|$name]}")
        done
        _describe -t options option items
        return
    else
        key="$at|$npos"
    fi
    kind="${_felix_kinds[$key]}"
    case "$kind" in
        file) _files ;;
        dir) _files -/ ;;
        context)
            items=(${(f)"$("${words[1]}" context list -q 2>/dev/null)"})
            compadd -a items
            ;;
        *)
            if [[ -z $expect ]] && ((npos == 0)); then
                for name in ${=_felix_subs[$at]}; do
                    items+=("${name//:/\\:}:${_felix_helps[$at|$name]}")
                done
                (( ${#items} )) && _describe -t commands command items
            fi
            local -a values
            values=(${=_felix_choices[$key]})
            (( ${#values} )) && compadd -a values
            ;;
    esac
}

if [[ $funcstack[1] == _felix ]]; then
    _felix "$@"  # autoloaded from $fpath: complete now
else
    compdef _felix felix felix-broker  # sourced
fi
"""


def _zsh(t: _Tables, version: str) -> str:
    install = (
        'Install: felix completion zsh > "${fpath[1]}/_felix"  (then restart zsh)\n'
        "#     or: source <(felix completion zsh)    (in ~/.zshrc, after compinit)"
    )
    parts = [
        "#compdef felix felix-broker",
        _header("zsh", version, install),
        "typeset -gA _felix_subs _felix_opts _felix_argopts _felix_choices _felix_kinds "
        "_felix_helps",
        _zsh_assoc("_felix_subs", t.subs),
        _zsh_assoc("_felix_opts", t.opts),
        _zsh_assoc("_felix_argopts", t.argopts),
        _zsh_assoc("_felix_choices", t.choices),
        _zsh_assoc("_felix_kinds", t.kinds),
        _zsh_assoc("_felix_helps", t.helps),
    ]
    return "\n".join(parts) + "\n" + _ZSH_BODY


# ------------------------------------------------------------------------------ fish

_FISH_BODY = r"""
function __felix_state --description 'felix: the command path and positional index at the cursor'
    set -l tokens (commandline -opc)
    set -l at felix
    if string match -q -- '*felix-broker' $tokens[1]
        set at 'felix broker'
    end
    set -l expect ''
    set -l npos 0
    for word in $tokens[2..-1]
        if test -n "$expect"
            set expect ''
            continue
        end
        if string match -q -- '-*' $word
            if not string match -q -- '*=*' $word; and contains -- "$at|$word" $__felix_argopts
                set expect $word
            end
            continue
        end
        if test $npos -eq 0; and contains -- "$at|$word" $__felix_subs
            set at "$at $word"
        else
            set npos (math $npos + 1)
        end
    end
    echo "$at"
    echo $npos
    echo "$expect"
end

function __felix_in --description 'felix: the cursor is in command path $argv[1]'
    set -l state (__felix_state)
    test "$state[1]" = "$argv[1]"
end

function __felix_arg --description 'felix: the cursor is at positional $argv[2] of $argv[1]'
    set -l state (__felix_state)
    test "$state[1]" = "$argv[1]"; and test "$state[2]" = "$argv[2]"; and test -z "$state[3]"
end

function __felix_contexts --description 'felix: the context names'
    set -l tokens (commandline -opc)
    $tokens[1] context list -q 2>/dev/null
end
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(at: str, o: Option) -> str:
    parts = [f"complete -c {{cmd}} -n {_fish_quote('__felix_in ' + _fish_quote(at))}"]
    for f in o.flags:
        if f.startswith("--"):
            parts.append(f"-l {f[2:]}")
        elif len(f) == 2:
            parts.append(f"-s {f[1]}")
        else:
            parts.append(f"-o {f[1:]}")
    if o.takes_value:
        if o.kind == "file":
            parts.append("-r -F")
        elif o.kind == "dir":
            parts.append("-x -a '(__fish_complete_directories)'")
        elif o.kind == "context":
            parts.append("-x -a '(__felix_contexts)'")
        elif o.choices:
            parts.append(f"-x -a {_fish_quote(' '.join(o.choices))}")
        else:
            parts.append("-x")
    if o.help:
        parts.append(f"-d {_fish_quote(o.help)}")
    return " ".join(parts)


def _fish(root: Command, version: str) -> str:
    install = (
        "Install: felix completion fish > ~/.config/fish/completions/felix.fish\n"
        "#     (and the same file as felix-broker.fish for felix-broker)"
    )
    t = _tables(root)
    subs = [f"{at}|{name}" for at, names in t.subs.items() for name in names]
    argopts = [f"{at}|{f}" for at, flags in t.argopts.items() for f in flags]
    lines = [
        _header("fish", version, install),
        "set -g __felix_subs " + " ".join(_fish_quote(s) for s in subs),
        "set -g __felix_argopts " + " ".join(_fish_quote(s) for s in argopts),
        _FISH_BODY,
    ]
    rules: list[str] = []
    for cmd in root.walk():
        at = _at(cmd)
        cond_in = _fish_quote(f"__felix_arg {_fish_quote(at)} 0")
        for s in cmd.subcommands:
            rules.append(
                f"complete -c {{cmd}} -n {cond_in} -a {_fish_quote(s.path[-1])}"
                + (f" -d {_fish_quote(s.help)}" if s.help else "")
            )
        for o in cmd.options:
            rules.append(_fish_option(at, o))
        for i, p in enumerate(cmd.positionals):
            cond = _fish_quote(f"__felix_arg {_fish_quote(at)} {i}")
            if p.kind == "file":
                rules.append(f"complete -c {{cmd}} -n {cond} -F")
            elif p.kind == "dir":
                rules.append(f"complete -c {{cmd}} -n {cond} -a '(__fish_complete_directories)'")
            elif p.kind == "context":
                rules.append(f"complete -c {{cmd}} -n {cond} -a '(__felix_contexts)'")
            elif p.choices:
                rules.append(f"complete -c {{cmd}} -n {cond} -a {_fish_quote(' '.join(p.choices))}")
    for command in ("felix", "felix-broker"):
        lines.append(f"complete -c {command} -f")
        lines.extend(r.replace("{cmd}", command) for r in rules)
    return "\n".join(lines) + "\n"


def render(shell: str, root: Command, version: str) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`).

    Raises:
        ValueError: an unknown shell.
    """
    if shell == "bash":
        return _bash(_tables(root), version)
    if shell == "zsh":
        return _zsh(_tables(root), version)
    if shell == "fish":
        return _fish(root, version)
    raise ValueError(f"unknown shell {shell!r}: one of {', '.join(SHELLS)}")
