"""aioquic's server connection with Felix's ALPN rule.

The contract (docs/wire-protocol.md §1 and §4): a client offering ALPN
must offer ``felix/2`` (otherwise the TLS handshake fails with ``no_application_protocol``,
as aioquic does by itself), but a client offering *no* ALPN at all is accepted and the
in-band frame version decides (a version-1 client gets a version-1 error listing the
versions we speak). aioquic's server refuses a ClientHello without ALPN whenever ALPN is
configured, so :class:`FelixQuicConnection` peeks at the ClientHello and, only when it
carries no ALPN extension, negotiates that one handshake without ALPN.

This reaches into two private members of aioquic (``QuicConnection._initialize`` and
``tls.Context._server_handle_hello``); ``tests/runtime`` exercises both paths so that an
aioquic upgrade that moves them fails loudly.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic.connection import QuicConnection

__all__ = ["FelixQuicConnection"]


class FelixQuicConnection(QuicConnection):
    """A server ``QuicConnection`` that also accepts clients offering no ALPN."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        context = self.tls
        original = context._server_handle_hello

        def handle_hello(input_buf: Any, initial_buf: Any, handshake_buf: Any) -> None:
            start = input_buf.tell()
            try:
                offered = tls.pull_client_hello(input_buf).alpn_protocols
            except Exception:  # malformed: let aioquic reject it its own way
                offered = []
            input_buf.seek(start)
            if offered is not None:
                original(input_buf, initial_buf, handshake_buf)
                return
            saved = context._alpn_protocols
            context._alpn_protocols = None
            try:
                original(input_buf, initial_buf, handshake_buf)
            finally:
                context._alpn_protocols = saved

        context._server_handle_hello = handle_hello  # type: ignore[method-assign]
