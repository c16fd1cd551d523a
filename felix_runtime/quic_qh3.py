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

* mutual TLS, which qh3 2.1's server does not have at all (it never asks for a client
  certificate), when given :class:`~felix_server.access.ClientCertificates`, with aioquic's
  outcome (:mod:`felix_server.quic`): the ``CertificateRequest`` goes right after the
  ``EncryptedExtensions`` (qh3's module function ``push_encrypted_extensions`` is wrapped,
  once, and adds it only inside a Felix connection's ``ServerHello`` handling, marked by a
  context variable); the server's anticipation of the client's ``Finished`` is turned off
  (by the flag qh3 uses for the same purpose when ALPS adds a client message,
  ``_alps_negotiated``), and the client's ``Certificate`` and ``CertificateVerify`` are
  taken off qh3's receive buffer (``_receive_buffer``) before its ``handle_message`` sees
  them: parsed, added to the transcript, the signature checked (qh3's
  ``verify_with_public_key``) and the chain verified by the runtime's function. The same
  alerts as on aioquic end a refused handshake.

qh3 logs every connection a peer closes, and every protocol error, as a warning on the
``quic`` logger ("Native peer close: ..."); the broker counts those itself
(``connection_closed``), so :class:`_QuietPeerClose` lowers them to debug records.

What qh3 does not offer: its streams' internals. So the session's back-pressure count
(:meth:`FelixQh3Connection.unacknowledged_bytes`) is qh3's unsent stream bytes plus its
bytes in flight (private ``_core.bytes_in_flight``), and flow-control credit is qh3's own
(no fixed sliding windows, and ``credit_held`` has no effect: qh3 grants credit as data
arrives, so the requests of a client that the broker stopped reading are not bounded by
QUIC; the session bounds them itself, by closing such a connection ``OVERLOADED`` once they
go over ``transport.max_data``, see :mod:`felix_server.session`).
"""

from __future__ import annotations

import logging
import struct
from contextvars import ContextVar
from typing import Any

from cryptography import x509
from qh3 import tls
from qh3._hazmat import Buffer, SignatureError, verify_with_public_key
from qh3._hazmat import Certificate as Qh3Certificate
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode
from qh3.quic.tls_bridge import QuicTlsBridge

from felix_server.access import CertificateRefused, ClientCertificates, ClientIdentity

__all__ = ["FelixQh3ClientConnection", "FelixQh3Connection"]

_NOT_BUILT_YET = "packet builder capacity exhausted"
_CLOSED = "connection is closed"


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


class _AlertCertificateRequired(tls.Alert):
    description = tls.AlertDescription.certificate_required


class _AlertUnknownCa(tls.Alert):
    description = tls.AlertDescription.unknown_ca


_ALERTS: dict[str, type[tls.Alert]] = {
    "missing": _AlertCertificateRequired,
    "expired": tls.AlertCertificateExpired,
    "not_yet_valid": tls.AlertCertificateExpired,
    "untrusted": _AlertUnknownCa,
}
"""The TLS alert for each refusal reason (as :mod:`felix_server.quic` sends them)."""

_PKCS1 = frozenset({0x0201, 0x0401, 0x0501, 0x0601})  # not allowed in CertificateVerify
_ED25519 = 0x0807  # not in qh3's default list; aioquic's server accepts it from clients


def _requested(context: tls.Context) -> list[int]:
    """The signature algorithms a client's ``CertificateVerify`` may use: the server's
    own, less RSA PKCS#1 v1.5 (RFC 8446 §4.4.3), plus Ed25519 (as aioquic's)."""
    algorithms = [a for a in context._signature_algorithms if a not in _PKCS1]
    return algorithms if _ED25519 in algorithms else [*algorithms, _ED25519]


_CLIENT_CONTEXT = b"TLS 1.3, client CertificateVerify"

_REQUESTING: ContextVar[tls.Context | None] = ContextVar("felix_qh3_requesting", default=None)
"""The server context whose ``ServerHello`` flight is being written and that asks for a
client certificate (None: any other moment, when the wrapper below does nothing)."""

_push_encrypted_extensions = tls.push_encrypted_extensions


def _certificate_request(algorithms: list[int]) -> bytes:
    """A TLS 1.3 ``CertificateRequest`` (empty context, ``signature_algorithms``)."""
    listed = b"".join(struct.pack("!H", a) for a in algorithms)
    extension = struct.pack("!HHH", 13, len(listed) + 2, len(listed)) + listed
    body = b"\x00" + struct.pack("!H", len(extension)) + extension
    return bytes([13]) + len(body).to_bytes(3, "big") + body


def _push_encrypted_extensions_and_request(buf: Buffer, extensions: Any) -> None:
    _push_encrypted_extensions(buf, extensions)
    context = _REQUESTING.get()
    if context is not None:  # hashed with the EncryptedExtensions: the same transcript
        buf.push_bytes(_certificate_request(_requested(context)))
        context._alps_negotiated = True  # no anticipated client Finished (see above)


tls.push_encrypted_extensions = _push_encrypted_extensions_and_request


class FelixQh3ClientConnection(QuicConnection):
    """qh3's client connection with aioquic's contract for a write after the peer closed:
    the data is dropped and the ``ConnectionTerminated`` event says what happened. qh3's
    core raises ``QuicConnectionError`` ("connection is closed") instead, which the client's
    loop would take for a bug; a broker that refuses the client's certificate closes the
    connection just after the client's side of the handshake completed, when the client
    is writing its ``Hello`` (mutual TLS, :mod:`felix_server.quic`)."""

    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = False) -> None:
        try:
            super().send_stream_data(stream_id, data, end_stream)
        except QuicConnectionError as exc:
            if exc.reason_phrase != _CLOSED:
                raise


class FelixQh3Connection(QuicConnection):
    """A qh3 server ``QuicConnection`` with Felix's ALPN rule and aioquic's error contract."""

    credit_held: bool = False
    """Accepted for symmetry with :class:`~felix_server.quic.FelixQuicConnection`; qh3's
    flow control cannot be held back, so it has no effect (the session bounds the requests
    it holds by ``transport.max_data`` instead)."""
    client_identity: ClientIdentity | None = None
    """The client's verified certificate (mutual TLS), once the handshake checked it."""

    def __init__(
        self, *, client_certificates: ClientCertificates | None = None, **kwargs: Any
    ) -> None:
        self._client_certificates = client_certificates
        self._peer_ders: list[bytes] = []
        super().__init__(**kwargs)

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
        if self._client_certificates is not None:
            self._request_client_certificates(context, self._client_certificates)
        return bridge

    def _request_client_certificates(
        self, context: tls.Context, policy: ClientCertificates
    ) -> None:
        """Mutual TLS on qh3 (the module docstring says how)."""
        handle_hello = context._server_handle_hello
        handle_message = context.handle_message
        expecting = ["hello"]  # hello -> certificate -> verify -> finished

        def hello(input_buf: Any, initial: Any, handshake: Any, onertt: Any) -> None:
            token = _REQUESTING.set(context)
            try:
                handle_hello(input_buf, initial, handshake, onertt)
            finally:
                _REQUESTING.reset(token)
            if context.state == tls.State.SERVER_EXPECT_FINISHED:
                expecting[0] = "certificate"

        def message(input_data: bytes, output_buf: Any, epoch: int = -1) -> None:
            context._receive_buffer += input_data
            while expecting[0] in ("certificate", "verify"):
                pending = context._receive_buffer
                if len(pending) < 4 or len(pending) < 4 + int.from_bytes(pending[1:4], "big"):
                    break
                size = 4 + int.from_bytes(pending[1:4], "big")
                if epoch != tls.Epoch.HANDSHAKE:
                    raise tls.AlertUnexpectedMessage("client certificate outside the handshake")
                context._receive_buffer = pending[size:]
                self._client_message(context, policy, expecting, pending[:size])
            handle_message(b"", output_buf, epoch)

        context._server_handle_hello = hello  # type: ignore[method-assign, assignment]
        context.handle_message = message  # type: ignore[method-assign]

    def _client_message(
        self, context: tls.Context, policy: ClientCertificates, expecting: list[str], data: bytes
    ) -> None:
        """The client's ``Certificate`` or ``CertificateVerify`` (``expecting`` says which
        is due and moves on)."""
        schedule = context.key_schedule
        assert schedule is not None  # set by the ServerHello
        if expecting[0] == "certificate":
            if data[0] != tls.HandshakeType.CERTIFICATE:
                raise tls.AlertUnexpectedMessage("expected the client's Certificate")
            certificate = tls.pull_certificate(Buffer(data=data))
            schedule.update_hash(data)
            if not certificate.certificates:
                if policy.required:
                    policy.refused("missing")
                    raise _AlertCertificateRequired("a client certificate is required")
                expecting[0] = "finished"
                return
            self._peer_ders = [der for der, _ in certificate.certificates]
            expecting[0] = "verify"
            return
        if data[0] != tls.HandshakeType.CERTIFICATE_VERIFY:
            raise tls.AlertUnexpectedMessage("expected the client's CertificateVerify")
        verify = tls.pull_certificate_verify(Buffer(data=data))
        if verify.algorithm not in _requested(context):
            raise tls.AlertDecryptError("CertificateVerify has an algorithm we did not ask for")
        leaf_der, *chain_ders = self._peer_ders
        try:
            verify_with_public_key(
                Qh3Certificate(leaf_der).public_key(),
                verify.algorithm,
                schedule.certificate_verify_data(_CLIENT_CONTEXT),
                verify.signature,
            )
        except SignatureError as exc:
            raise tls.AlertDecryptError(str(exc)) from None
        schedule.update_hash(data)
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
            chain = [x509.load_der_x509_certificate(der) for der in chain_ders]
        except ValueError:
            raise tls.AlertBadCertificate("client certificate could not be parsed") from None
        try:
            self.client_identity = policy.verify(leaf, chain)
        except CertificateRefused as exc:
            policy.refused(exc.reason)
            raise _ALERTS.get(exc.reason, tls.AlertBadCertificate)(str(exc)) from None
        expecting[0] = "finished"
