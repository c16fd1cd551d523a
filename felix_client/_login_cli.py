"""``felix login``: exchange an identity token for a Felix token.

::

    felix login --id-token /var/run/secrets/tokens/felix        # prints the Felix token
    felix login --id-token id.jwt --save ~/.config/felix/token  # writes it, mode 0600

The identity token (an OIDC ID token, a Kubernetes projected service-account token) is read
from ``FILE`` (``-``: stdin) and exchanged over a Felix connection (``TokenExchange``,
capability ``token-exchange``); the broker answers with a Felix token for the tenant and
permissions its rules map the identity to.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from ._cli_commands import _emit
from .client import Client, token_expiry, token_tenant

__all__ = ["cmd_login", "read_id_token", "save_token"]


def read_id_token(path: str) -> str:
    """The identity token in ``path`` (``-``: stdin), surrounding whitespace removed.

    Raises:
        ValueError: the file is empty.
        OSError: it cannot be read.
    """
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    token = text.strip()
    if not token:
        raise ValueError(f"{path}: no identity token in it")
    return token


def save_token(path: str, token: str) -> None:
    """Write ``token`` to ``path``, readable by its owner only (0600, also when the file
    existed with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)


async def cmd_login(args: argparse.Namespace) -> int:
    """Run ``felix login``."""
    client = Client(
        args.server,
        ca_file=args.ca,
        insecure=args.insecure,
        id_token=read_id_token(args.id_token),
        tenant=args.tenant,
        namespace=args.namespace,
        timeout=args.timeout,
        client_name="felix-cli",
        quic_engine=args.quic_engine,
    )
    async with client:
        token = client.token
    assert token is not None  # a login sets it, or raised
    expires = token_expiry(token)
    when = "" if expires is None else datetime.fromtimestamp(expires, UTC).isoformat()
    info = {"tenant": token_tenant(token), "expires_at": when}
    if args.save:
        save_token(args.save, token)
        text = f"Felix token for tenant {info['tenant']} (expires {when}) written to {args.save}"
        _emit(args, text, {**info, "saved": args.save})
    else:
        _emit(args, token, {**info, "token": token})
    return 0
