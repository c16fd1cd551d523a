"""Parsing of broker URLs (``quic://host:port``) and the client's connection options."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "SERVER_ENV",
    "BrokerAddress",
    "default_url",
    "parse_url",
]

DEFAULT_HOST = "127.0.0.1"
"""Where ``make run`` listens."""
DEFAULT_PORT = 7447
"""The broker's default QUIC port (kept in step with ``felix_runtime_asyncio``)."""
DEFAULT_URL = f"quic://{DEFAULT_HOST}:{DEFAULT_PORT}"
"""The URL the client and the CLI use when none is given and ``FELIX_SERVER`` is not set."""
SERVER_ENV = "FELIX_SERVER"
"""The environment variable naming the broker when no URL is given."""


def default_url() -> str:
    """The broker URL to use when the caller gives none: ``$FELIX_SERVER``, else
    :data:`DEFAULT_URL` (the same rule for the client, the blocking client and the CLI)."""
    return os.environ.get(SERVER_ENV) or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens."""

    host: str
    """Host name or IP literal (IPv6 without brackets)."""
    port: int
    """UDP port."""

    @property
    def url(self) -> str:
        """The address written back as a ``quic://`` URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"quic://{host}:{self.port}"


def parse_url(url: str) -> BrokerAddress:
    """Parse a broker URL.

    Accepted forms: ``quic://host:port``, ``quic://host`` (default port), ``host:port`` and
    ``host`` (scheme assumed), IPv6 literals in brackets (``quic://[::1]:7433``).

    Args:
        url: the URL.

    Returns:
        The host and port.

    Raises:
        ValueError: the scheme is not ``quic``, the host is missing, the port is not a number
            in 1..65535, or the URL carries a path, query or user part.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty broker URL")
    if "://" not in text:
        text = "quic://" + text
    parts = urlsplit(text)
    if parts.scheme != "quic":
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: use quic://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} must not have a path, query or fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"broker URL {url!r} must not carry credentials: use a token")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in broker URL {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host")
    if port == 0:
        raise ValueError(f"invalid port in broker URL {url!r}")
    return BrokerAddress(host=host, port=DEFAULT_PORT if port is None else port)
