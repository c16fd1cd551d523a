"""aioquic's server connection with Felix's ALPN rule.

The contract (docs/wire-protocol.md §1 and §4): a client offering ALPN
must offer ``felix/2`` (otherwise the TLS handshake fails with ``no_application_protocol``,
as aioquic does by itself), but a client offering *no* ALPN at all is accepted and the
in-band frame version decides (a version-1 client gets a version-1 error listing the
versions we speak). aioquic's server refuses a ClientHello without ALPN whenever ALPN is
configured, so :class:`FelixQuicConnection` peeks at the ClientHello and, only when it
carries no ALPN extension, negotiates that one handshake without ALPN.

It also lets the session hold back flow-control credit: while :attr:`credit_held` is true
no ``MAX_DATA``, ``MAX_STREAM_DATA`` or ``MAX_STREAMS`` goes out (aioquic would otherwise
raise the windows as data arrives, whether or not the application read it), so a peer whose
requests the broker stopped reading is throttled by QUIC once its credit is spent. Frames
lost meanwhile are sent when the hold ends.

This reaches into private members of aioquic (``QuicConnection._initialize``,
``_write_connection_limits``, ``_write_stream_limits`` and
``tls.Context._server_handle_hello``); ``tests/runtime`` exercises every path so that an
aioquic upgrade that moves them fails loudly.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

__all__ = ["FelixQuicConnection"]


class FelixQuicConnection(QuicConnection):
    """A server ``QuicConnection`` that also accepts clients offering no ALPN, and whose
    flow-control credit the session can hold back."""

    credit_held: bool = False
    """While true, no flow-control credit (``MAX_DATA``, ``MAX_STREAM_DATA``,
    ``MAX_STREAMS``) is sent."""

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        if not self.credit_held:
            super()._write_connection_limits(builder=builder, space=space)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        if not self.credit_held:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)

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
