"""Validation of resource names (tenants, namespaces, streams, queues, caches, groups).

The rule, also written in ``docs/engine.md``: a name is 1 to 128 characters of ASCII
letters, digits, ``.``, ``_`` and ``-``, and does not start with ``.`` or ``-``. Names are
case-sensitive. The rule keeps names safe as path segments (the durable log puts them in
directory names) and as metric label values.
"""

from __future__ import annotations

import re

from felix_core.errors import InvalidArgument

__all__ = ["MAX_NAME_LENGTH", "is_valid_name", "validate_name"]

MAX_NAME_LENGTH = 128
"""The longest name accepted."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def is_valid_name(name: object) -> bool:
    """Say whether ``name`` follows the naming rule.

    Args:
        name: the candidate (any object; non-strings are invalid).

    Returns:
        True when ``name`` is a valid resource name.
    """
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def validate_name(what: str, name: object) -> str:
    """Check a name and return it.

    Args:
        what: what the name names ("tenant", "stream" ...), for the error message.
        name: the candidate.

    Returns:
        ``name``, unchanged.

    Raises:
        InvalidArgument: ``name`` does not follow the rule; ``details`` carry ``field``.
    """
    if not is_valid_name(name):
        raise InvalidArgument(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME_LENGTH} characters of "
            "A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
            details={"field": what},
        )
    assert isinstance(name, str)
    return name
