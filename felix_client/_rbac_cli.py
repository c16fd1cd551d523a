"""``felix admin role ...`` and ``felix admin binding ...``: the RBAC roles and bindings of a
tenant (admin requests with kinds ``role`` and ``binding``; docs/security.md, RBAC).

::

    felix admin role create reader --allow 'subscribe:default/*' --allow cache.read
    felix admin role update reader --allow 'subscribe:default/*'   # replaces the list
    felix admin role list
    felix admin role describe reader
    felix admin role delete reader
    felix admin binding create ci-reads --role reader --subject ci --group analysts
    felix admin binding list
    felix admin binding describe ci-reads
    felix admin binding delete ci-reads

They act in the client's tenant (``--tenant``, else the token's) and need ``admin`` on the
tenant's roles or bindings (``admin:*/*``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["RBAC_COMMANDS", "add_rbac_commands", "cmd_binding", "cmd_role"]


def add_rbac_commands(admin: Any, cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``role`` and ``binding`` under ``felix admin`` (``admin`` is its subparsers)."""
    role = admin.add_parser("role", help="manage the tenant's RBAC roles")
    r_sub = role.add_subparsers(dest="role_command", metavar="ACTION", required=True)
    for action, text in (("create", "create a role"), ("update", "replace a role's grants")):
        p = cmd(action, text, r_sub)
        p.add_argument("name")
        p.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="PERM",
            help="a permission ACTION[:NAMESPACE/NAME] (repeatable)",
        )
        p.add_argument("--description", help="free text")
    cmd("list", "list the roles", r_sub)
    for action, text in (("describe", "describe a role"), ("delete", "delete a role")):
        cmd(action, text, r_sub).add_argument("name")

    binding = admin.add_parser("binding", help="manage the tenant's RBAC role bindings")
    b_sub = binding.add_subparsers(dest="binding_command", metavar="ACTION", required=True)
    p = cmd("create", "bind a role to subjects and groups", b_sub)
    p.add_argument("name")
    p.add_argument("--role", required=True, help="the role it grants")
    p.add_argument(
        "--subject", action="append", default=[], help="a subject (a token's sub; repeatable)"
    )
    p.add_argument(
        "--group", action="append", default=[], help="a group (a token's groups; repeatable)"
    )
    p.add_argument("--description", help="free text")
    cmd("list", "list the bindings", b_sub)
    for action, text in (("describe", "describe a binding"), ("delete", "delete a binding")):
        cmd(action, text, b_sub).add_argument("name")


def _describe(resource: dict[str, Any]) -> str:
    settings = resource.get("settings", {})
    lines = [f"{resource.get('kind')}: {resource.get('name')}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items() if value]
    return "\n".join(lines)


async def _run(args: argparse.Namespace, kind: str, action: str, settings: dict[str, Any]) -> int:
    from ._cli_commands import _client, _emit  # the QUIC client: only when a command runs

    async with _client(args) as client:
        admin = client.admin
        if action == "list":
            items = await admin.list(kind)
            _emit(args, "\n".join(_row(kind, r) for r in items) or "(none)", items)
        elif action == "create":
            res = await admin.create(kind, args.name, settings)
            _emit(args, f"created {kind} {args.name}", res)
        elif action == "update":
            res = await admin.update(kind, args.name, settings)
            _emit(args, f"updated {kind} {args.name}", res)
        elif action == "describe":
            res = await admin.describe(kind, args.name)
            _emit(args, _describe(res), res)
        else:
            await admin.delete(kind, args.name)
            _emit(args, f"deleted {kind} {args.name}", {"deleted": True})
    return 0


def _row(kind: str, resource: dict[str, Any]) -> str:
    """One line of a listing: the name and what it grants, or whom."""
    s = resource.get("settings", {})
    if kind == "role":
        return f"{resource.get('name')}\t{' '.join(s.get('permissions', []))}"
    members = [f"subject:{x}" for x in s.get("subjects", [])]
    members += [f"group:{x}" for x in s.get("groups", [])]
    return f"{resource.get('name')}\trole:{s.get('role')}\t{' '.join(members)}"


async def cmd_role(args: argparse.Namespace) -> int:
    """``felix admin role ACTION [NAME]``."""
    settings: dict[str, Any] = {}
    if args.role_command in ("create", "update"):
        if args.allow or args.role_command == "create":
            settings["permissions"] = list(args.allow)
        if args.description is not None:
            settings["description"] = args.description
    return await _run(args, "role", args.role_command, settings)


async def cmd_binding(args: argparse.Namespace) -> int:
    """``felix admin binding ACTION [NAME]``."""
    settings: dict[str, Any] = {}
    if args.binding_command == "create":
        settings = {"role": args.role, "subjects": args.subject, "groups": args.group}
        if args.description is not None:
            settings["description"] = args.description
    return await _run(args, "binding", args.binding_command, settings)


RBAC_COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "admin role": cmd_role,
    "admin binding": cmd_binding,
}
"""Subcommand to its implementation (beside ``_cli_commands.COMMANDS``)."""
