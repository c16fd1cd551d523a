"""qh3's server connection with Felix's ALPN rule (the second QUIC engine; optional).

qh3 2.1 keeps aioquic's sans-IO calls and event names but runs packets, loss recovery and
crypto in Rust; its Python ``QuicConnection`` is a facade over that core. What
:class:`FelixQh3Connection` adds, each next to the aioquic version in
:mod:`felix_server.quic`:

* the ALPN rule (docs/wire-protocol.md §1): a client offering no ALPN is accepted, one
  offering ALPN without ``felix/2`` fails with ``no_application_protocol`` (qh3 alone would
  answer ``handshake_failure`` to both). It wraps the TLS context's
  ``_server_handle_hello`` as :mod:`felix_server.quic` does, reached through
  ``QuicConnection._create_tls`` (both private to qh3 2.1);
* aioquic's error contract for the calls the session makes: writing to or resetting a
  stream that is gone raises ``ValueError`` (qh3 raises ``QuicConnectionError`` for what
  its core refuses);
* a transmit the core cannot build yet is not fatal: qh3 2.1's server pads its first
  Initial to a full datagram and then fails the Handshake packet with "packet builder
  capacity exhausted" while the client's Initial (aioquic pads it with bytes after the
  packet, which qh3 does not count towards the anti-amplification budget) leaves it too
  little room. qh3's ``datagrams_to_send`` raises then, losing the Initial it had already
  built in that call; here the call returns what was built, and the Handshake follows once
  the client's next datagram (its ACK) raises the budget. qh3 clients are not affected.

qh3 logs every connection a peer closes, and every protocol error, as a warning on the
``quic`` logger ("Native peer close: ..."); the broker counts those itself
(``connection_closed``), so :class:`_QuietPeerClose` lowers them to debug records.

What qh3 does not offer: its streams' internals. So the session's back-pressure count
(:meth:`FelixQh3Connection.unacknowledged_bytes`) is qh3's unsent stream bytes plus its
bytes in flight (private ``_core.bytes_in_flight``), and flow-control credit is qh3's own
(no fixed sliding windows, and ``credit_held`` has no effect: qh3 grants credit as data
arrives, so the requests of a client that the broker stopped reading are not bounded by
QUIC; a gap of this engine).
"""

from __future__ import annotations

import logging
from typing import Any

from qh3 import tls
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode
from qh3.quic.tls_bridge import QuicTlsBridge

__all__ = ["FelixQh3Connection"]

_NOT_BUILT_YET = "packet builder capacity exhausted"


class _QuietPeerClose(logging.Filter):
    """Turns qh3's per-connection close warnings into debug records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("Native "):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("quic").addFilter(_QuietPeerClose())


class _AlertNoApplicationProtocol(tls.Alert):
    description = tls.AlertDescription.no_application_protocol


class FelixQh3Connection(QuicConnection):
    """A qh3 server ``QuicConnection`` with Felix's ALPN rule and aioquic's error contract."""

    credit_held: bool = False
    """Accepted for symmetry with :class:`~felix_server.quic.FelixQuicConnection`; qh3's
    flow control cannot be held back, so it has no effect."""

    def unacknowledged_bytes(self) -> int:
        """Stream bytes written and not yet acknowledged, as aioquic's send buffers count
        them: qh3's unsent stream bytes (``get_send_buffer_size``) plus its bytes in flight
        (sent, not acknowledged nor declared lost: whole packets, so headers and other
        frames are counted too). The broker's back-pressure and its shutdown drain (which
        closes a connection once the client has acknowledged everything) read this."""
        core = self._core
        in_flight = 0 if core is None else core.bytes_in_flight
        return self.get_send_buffer_size() + in_flight

    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = False) -> None:
        try:
            super().send_stream_data(stream_id, data, end_stream)
        except QuicConnectionError as exc:
            raise ValueError(str(exc)) from exc

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        try:
            super().reset_stream(stream_id, error_code)
        except QuicConnectionError as exc:
            raise ValueError(str(exc)) from exc

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        # qh3's own loop (through the private ``_core``), except that a datagram the core
        # cannot build yet ends the loop instead of raising: qh3's version would lose the
        # datagrams it already took from the core in this call (the server's first Initial).
        core = self._core
        out: list[tuple[bytes, Any]] = []
        if core is None:
            return out
        while True:
            try:
                transmit = core.poll_transmit(now)
            except RuntimeError as exc:
                if str(exc) == _NOT_BUILT_YET:
                    return out  # see the module docstring
                raise QuicConnectionError(QuicErrorCode.INTERNAL_ERROR, None, str(exc)) from exc
            if transmit is None:
                return out
            out.append((transmit[0], transmit[1]))

    def _create_tls(self, remote_source_cid: bytes | None) -> QuicTlsBridge:
        bridge = super()._create_tls(remote_source_cid)
        context = bridge.tls
        original = context._server_handle_hello

        def handle_hello(input_buf: Any, initial: Any, handshake: Any, onertt: Any) -> None:
            start = input_buf.tell()
            try:
                offered = tls.pull_client_hello(input_buf).alpn_protocols
            except Exception:  # malformed: let qh3 reject it its own way
                offered = []
            input_buf.seek(start)
            if offered is None:
                saved = context._alpn_protocols
                context._alpn_protocols = None
                try:
                    original(input_buf, initial, handshake, onertt)
                finally:
                    context._alpn_protocols = saved
                return
            alpn = context._alpn_protocols
            if alpn is not None and offered and not set(alpn) & set(offered):
                raise _AlertNoApplicationProtocol("no common ALPN protocol")
            original(input_buf, initial, handshake, onertt)

        context._server_handle_hello = handle_hello  # type: ignore[method-assign, assignment]
        return bridge
