"""``felix token``: Ed25519 issuer keys, Felix tokens, and a look inside a token.

::

    felix token keygen --out keys/               # private.pem (0600), public.pem, jwks.json
    felix token issue --key keys/private.pem --tenant acme \\
        --allow 'publish:default/orders' --allow 'subscribe:default/*' --ttl 15m
    felix token issue --key ops-keys/private.pem --operator   # every tenant (iss felix-operator)
    felix token inspect TOKEN                    # claims, NOT verified
    felix token inspect TOKEN --verify --jwks keys/jwks.json

The token format and its checks live in :mod:`felix_runtime.tokens`; this module only reads
files, the clock and the OS's randomness around it, and imports it (and so felix_core)
only when a ``token`` command runs, so every other ``felix`` command starts as fast as
before. Expected errors print one line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from felix_core.access import Permission

__all__ = ["add_token_commands", "parse_ttl", "run_token_command"]

PRIVATE_KEY = "private.pem"
PUBLIC_KEY = "public.pem"
JWKS = "jwks.json"
DEFAULT_TTL = "15m"
DEFAULT_NAME = "felix"  # felix_runtime.tokens.DEFAULT_ISSUER and DEFAULT_AUDIENCE
OPERATOR_ISSUER = "felix-operator"  # felix_runtime.tokens.DEFAULT_OPERATOR_ISSUER

_TTL = re.compile(r"(\d+)([smhd])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """A combination of arguments argparse cannot express (exit code 2)."""


def parse_ttl(text: str) -> float:
    """Read a lifetime such as ``90s``, ``15m``, ``12h`` or ``7d`` into seconds.

    Raises:
        argparse.ArgumentTypeError: anything else, or zero.
    """
    found = _TTL.fullmatch(text.strip())
    if not found or int(found.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: a positive whole number with s, m, h or d (15m, 12h)"
        )
    return float(int(found.group(1)) * _TTL_UNITS[found.group(2)])


def _permission(text: str) -> Permission:
    from felix_core.access import Permission

    try:
        return Permission.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        from felix_core.names import is_valid_name

        if not is_valid_name(text):
            raise argparse.ArgumentTypeError(
                f"invalid {what} name {text!r}: 1-128 characters of A-Z a-z 0-9 . _ -, "
                "not starting with '.' or '-'"
            )
        return text

    return check


def add_token_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``token keygen|issue|inspect`` on the ``felix`` subcommand parsers."""
    t = sub.add_parser("token", help="Felix tokens: make keys, issue tokens, inspect them")
    actions = t.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "keygen",
        help="write a new Ed25519 issuer key pair",
        description=f"Write {PRIVATE_KEY} (mode 0600), {PUBLIC_KEY} and {JWKS} (the public "
        "key with its kid, the RFC 7638 thumbprint) into DIR. Existing files are never "
        "overwritten.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory (created if needed)")
    p.set_defaults(token_run=_keygen)

    p = actions.add_parser(
        "issue",
        help="sign a Felix token and print it",
        description="Sign a Felix token (EdDSA) with an issuer's private key and print it. "
        "PERM is ACTION[:NAMESPACE/NAME], ACTION one of publish, subscribe, enqueue, consume, "
        "cache.read, cache.write, admin or *, NAMESPACE and NAME patterns with * wildcards.",
    )
    p.add_argument("--key", required=True, metavar="FILE", help="the issuer's private.pem")
    p.add_argument(
        "--tenant",
        type=_name("tenant"),
        help="the token's tenant (required, but for --operator: default 'default')",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        type=_permission,
        metavar="PERM",
        help="a permission (repeatable), e.g. publish:default/orders",
    )
    p.add_argument(
        "--role",
        action="append",
        default=[],
        type=_name("role"),
        metavar="ROLE",
        help="a role name (repeatable)",
    )
    p.add_argument(
        "--ttl",
        type=parse_ttl,
        default=parse_ttl(DEFAULT_TTL),
        metavar="DURATION",
        help=f"lifetime: 90s, 15m, 12h, 7d (default {DEFAULT_TTL})",
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="a group name (repeatable): roles bound to the group apply",
    )
    p.add_argument(
        "--operator",
        action="store_true",
        help="an operator token (every tenant, every permission): the claim operator: true, "
        f"iss {OPERATOR_ISSUER} unless --issuer; brokers honour it only from the issuer of "
        "their auth_operator_keys",
    )
    p.add_argument("--subject", help="sub claim (default: your user name)")
    p.add_argument(
        "--issuer", help=f"iss (default {DEFAULT_NAME}; {OPERATOR_ISSUER} with --operator)"
    )
    p.add_argument("--audience", default=DEFAULT_NAME, help=f"aud (default {DEFAULT_NAME})")
    p.set_defaults(token_run=_issue)

    p = actions.add_parser(
        "inspect",
        help="show a token's header and claims",
        description="Print a token's header and claims as JSON. Without --verify nothing is "
        "checked: anyone can write such a token. With --verify --jwks FILE the signature, "
        "issuer, audience and times are checked as a broker would.",
    )
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    p.add_argument("--verify", action="store_true", help="verify it (needs --jwks)")
    p.add_argument("--jwks", metavar="FILE", help="the issuer's jwks.json (implies --verify)")
    p.add_argument(
        "--issuer",
        default=DEFAULT_NAME,
        help=f"with --verify: the trusted issuer (default {DEFAULT_NAME})",
    )
    p.add_argument(
        "--audience",
        default=DEFAULT_NAME,
        help=f"with --verify: the expected audience (default {DEFAULT_NAME})",
    )
    p.set_defaults(token_run=_inspect)


def run_token_command(args: argparse.Namespace) -> int:
    """Run a parsed ``felix token ...`` command and return its exit code (0, 1 on an
    expected error, 2 on a usage error); errors are printed as one line on stderr."""
    run: Callable[[argparse.Namespace], int] = args.token_run
    try:
        return run(args)
    except UsageError as exc:
        print(f"felix: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:
        print(f"felix: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from felix_runtime.tokens import jwks_document, key_id

    out = Path(args.out)
    if not out.is_dir():
        out.mkdir(mode=0o700, parents=True)
        out.chmod(0o700)  # only its owner may even list it, whatever the umask
    paths = [out / PRIVATE_KEY, out / PUBLIC_KEY, out / JWKS]
    existing = [p for p in paths if p.exists()]
    if existing:
        raise ValueError(
            f"{existing[0]} already exists: keygen never overwrites (pick a new --out)"
        )
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    kid = key_id(public)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(paths[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(private_pem)
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_public(paths[1], public_pem)
    _write_public(paths[2], (json.dumps(jwks_document({kid: public}), indent=2) + "\n").encode())
    print(f"kid {kid}")
    print(f"private key {paths[0]} (mode 0600: keep it secret)")
    print(f"public key  {paths[1]}")
    print(f"JWKS        {paths[2]} (give this to brokers)")
    return 0


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(data)


def _issue(args: argparse.Namespace) -> int:
    from felix_runtime.tokens import issue_token, load_private_key

    if not (args.allow or args.role or args.group or args.operator):
        raise UsageError(
            "give at least one --allow PERM, --role ROLE or --group GROUP, or --operator "
            "(a token must grant something)"
        )
    if args.tenant is None and not args.operator:
        raise UsageError("--tenant is required (but for an --operator token)")
    try:
        key = load_private_key(Path(args.key).read_bytes())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{args.key}: not an unencrypted Ed25519 private key ({exc})") from None
    token = issue_token(
        key,
        subject=args.subject or _user(),
        tenant=args.tenant or "default",
        now=time.time(),
        ttl=args.ttl,
        token_id=secrets.token_urlsafe(16),
        permissions=args.allow,
        roles=args.role,
        groups=args.group,
        issuer=args.issuer or (OPERATOR_ISSUER if args.operator else DEFAULT_NAME),
        audience=args.audience,
        operator=args.operator,
    )
    print(token)
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "felix-cli"


def _inspect(args: argparse.Namespace) -> int:
    from felix_core.access import AuthError
    from felix_runtime.tokens import TokenVerifier, read_jwks, read_unverified

    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()
    if args.verify and not args.jwks:
        raise UsageError("--verify needs --jwks FILE (the issuer's public keys)")
    try:
        header, claims = read_unverified(token)
        if args.jwks:
            keys = read_jwks(Path(args.jwks).read_bytes())
            verifier = TokenVerifier(
                {args.issuer: keys}, audience=args.audience, operator_issuers=[OPERATOR_ISSUER]
            )
            verifier.verify(token, time.time())
    except AuthError as exc:
        raise ValueError(f"token refused ({exc.reason}): {exc}") from None
    if not args.jwks:
        print(
            "felix token: NOT VERIFIED: claims decoded without checking the signature "
            "(use --verify --jwks FILE)",
            file=sys.stderr,
        )
    shown: dict[str, Any] = {"verified": bool(args.jwks), "header": header, "claims": claims}
    for claim in ("iat", "nbf", "exp"):
        value = claims.get(claim)
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                when = datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
            except (OverflowError, OSError, ValueError):
                continue
            shown.setdefault("times", {})[claim] = when
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0
