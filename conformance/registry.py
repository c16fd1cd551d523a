"""The registry of checks: each one names the section of docs/wire-protocol.md it enforces.

A check is an ``async def check(ctx: Context) -> None`` registered with :func:`check`. It
passes by returning, fails by raising :class:`~conformance.wire.CheckFailed` (or any other
exception, which is reported as a failure of the check, with its type), and is skipped by
raising :class:`Skip` with the reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.context import Context

__all__ = ["CHECKS", "Check", "CheckFn", "Skip", "check", "select"]

CheckFn = Callable[["Context"], Awaitable[None]]


class Skip(Exception):
    """The check cannot run against this broker; the message is the reason."""


@dataclass(frozen=True, slots=True)
class Check:
    """One registered check."""

    name: str
    """Dotted id, ``group.what`` (stable: used by ``-k`` and in JUnit)."""
    section: str
    """The section of docs/wire-protocol.md enforced, e.g. ``§2 Framing``."""
    summary: str
    """One line: what must hold."""
    fn: CheckFn
    """The coroutine function."""
    timeout: float
    """Seconds the whole check may take."""
    last: bool
    """Runs after every other check (it may stop the broker, e.g. GoAway)."""


CHECKS: list[Check] = []
"""Every check, in registration (= report) order."""


def check(
    name: str, section: str, summary: str, *, timeout: float = 10.0, last: bool = False
) -> Callable[[CheckFn], CheckFn]:
    """Register a check.

    Args:
        name: the dotted id; must be unique.
        section: the spec section it enforces (``§N Title``).
        summary: what must hold, in one line.
        timeout: bound on the whole check, in seconds.
        last: run it after all others.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """

    def register(fn: CheckFn) -> CheckFn:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate check {name}")
        CHECKS.append(Check(name, section, summary, fn, timeout, last))
        return fn

    return register


def select(checks: list[Check], expr: str | None) -> list[Check]:
    """Checks selected by a ``-k`` expression.

    The expression is a comma-separated list of terms; a check is selected when any
    term matches. A term that is a check's full name selects exactly that check;
    otherwise it is a glob pattern (``queue.*``) or a substring of the name or the section.
    A term starting with ``not `` or ``!`` excludes instead.

    Args:
        checks: the candidates.
        expr: the expression, or None for all.

    Returns:
        The selected checks, ``last`` ones at the end.
    """
    chosen = checks
    if expr:
        terms = [t.strip() for t in expr.split(",") if t.strip()]
        names = {c.name for c in checks}
        include = [t for t in terms if not _negated(t)]
        exclude = [_strip_not(t) for t in terms if _negated(t)]
        include = [_exact(t) if t in names else t for t in include]
        exclude = [_exact(t) if t in names else t for t in exclude]
        chosen = [
            c
            for c in checks
            if (not include or any(_matches(c, t) for t in include))
            and not any(_matches(c, t) for t in exclude)
        ]
    return [c for c in chosen if not c.last] + [c for c in chosen if c.last]


def _negated(term: str) -> bool:
    return term.startswith(("not ", "!"))


def _strip_not(term: str) -> str:
    return term[4:].strip() if term.startswith("not ") else term[1:].strip()


def _exact(name: str) -> str:
    return "=" + name


def _matches(c: Check, term: str) -> bool:
    if term.startswith("="):
        return c.name == term[1:]
    if any(ch in term for ch in "*?["):
        return fnmatch.fnmatchcase(c.name, term)
    return term in c.name or term in c.section
