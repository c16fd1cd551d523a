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

And it makes the receive windows fixed-size sliding windows: aioquic doubles the
connection's ``MAX_DATA`` once more than half of it is used, and a stream's
``MAX_STREAM_DATA`` once more than half of it is received ("auto-tuning"), so on a
long-lived connection the credit a peer holds, hence what it can have in flight to the broker
and what waits unread while the session holds credit back, grows without bound. Here the
limit granted is always *received + window* (the configured ``max_data`` /
``max_stream_data``), raised once less than half a window is left: the peer never holds more
than one window of credit, connection-wide or per stream.

And it does mutual TLS when given :class:`~felix_server.access.ClientCertificates`: the
server sends a ``CertificateRequest``, and once the client's ``CertificateVerify`` proved it
holds the key, the chain is verified by the runtime's function (X.509 path validation
against the client CA; aioquic's server checks only that signature). The verified
certificate is kept as :attr:`FelixQuicConnection.client_identity` for the authenticator. A
refused certificate fails the handshake with a TLS alert: ``certificate_required`` (116)
without a certificate where one is required, ``certificate_expired`` (45) outside its
validity, ``unknown_ca`` (48) otherwise; the client sees QUIC's ``CRYPTO_ERROR`` + alert.

This reaches into private members of aioquic, which is why felix pins aioquic to 1.7.x:

* ``QuicConnection._initialize`` and ``tls.Context._server_handle_hello``: the ALPN rule;
* ``tls.Context._request_client_certificate``, ``_server_handle_certificate`` and
  ``_server_handle_certificate_verify`` (and ``_peer_certificate`` /
  ``_peer_certificate_chain``, what they set): mutual TLS;
* ``QuicConnection._write_connection_limits`` and ``_write_stream_limits``: overridden to hold
  credit back and to slide the windows; aioquic's versions still write the frames (and, for
  the connection, batch ``MAX_STREAMS``);
* ``QuicConnection._local_max_data`` (its ``used`` and ``value``: bytes received and the limit
  granted) and ``QuicStream.max_stream_data_local`` / ``receiver.highest_offset`` (the same
  per stream): set to the sliding limit before aioquic runs, and the received count is shown
  to aioquic as 0 for the duration of its call, so its doubling test (``received * 2 >
  limit``) never fires. A stream whose limit equals ``max_stream_data_local_sent`` (nothing
  to announce) skips aioquic's call altogether: it runs for every stream of every packet.
* ``QuicConnection._streams`` and ``QuicStreamSender._buffer_start`` / ``_buffer_stop``:
  :func:`send_buffered`, the bytes a connection's send buffers hold (the session's
  back-pressure count);
* ``QuicConnection._spaces[Epoch.ONE_RTT].ack_at``: :func:`ack_with_data`, which lets an
  ACK that aioquic holds back for its ack delay ride in the packet about to carry data, and
  :func:`ack_due` / :func:`ack_by`, which read and advance it;
* ``QuicConnection._ack_delay`` (the delay aioquic adds to the first unacknowledged
  ack-eliciting packet's arrival to get ``ack_at``): :func:`set_ack_delay`.
* what ``QuicConnection.datagrams_to_send`` tests before it writes each frame (the list is
  in :func:`nothing_to_send`'s docstring): :func:`nothing_to_send`, which tells that the
  call would send nothing without building a packet, for aioquic's class and this
  module's (``tests/client/test_nothing_to_send.py`` pins the source of the methods it
  mirrors).

``tests/runtime`` exercises every path so that an aioquic upgrade that moves them fails
loudly (``test_receive_window.py`` for the windows).

And its pacer lets out what the loop can actually wait for (:class:`LoopPacer`): aioquic's
releases at most 16 datagrams at once and then asks for a wait of microseconds, which an
event loop turns into its next pass or a whole millisecond; a broker busy reading one
client's flood then sends 16 datagrams per pass to every other, and a subscriber fell
behind a publisher by the stream's whole retention (docs/performance.md, "One subscriber
keeps up").

:func:`refusal_datagram` answers a connection the broker will not take (over
``max_connections``, or shutting down) statelessly: one Initial packet, protected with the
Initial keys that the client's destination connection ID alone determines (RFC 9001 §5.2),
carrying a transport ``CONNECTION_CLOSE`` with ``CONNECTION_REFUSED`` (0x02) and a reason.
No ``QuicConnection`` and no TLS handshake is involved, so a refusal costs one key derivation
and one small AEAD seal (``tests/runtime/test_refusal.py``).
"""

from __future__ import annotations

from typing import Any, cast

from aioquic import tls
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import END_STATES as _END_STATES
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicHeader, QuicPacketType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import K_MICRO_SECOND, QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream

from felix_server.access import CertificateRefused, ClientCertificates, ClientIdentity

__all__ = [
    "PACING_BURST_S",
    "FelixQuicConnection",
    "LoopPacer",
    "nothing_to_send",
    "refusal_datagram",
]

PACING_BURST_S = 0.002
"""The most sending time the pacer lets out at once: two of asyncio's timer ticks (it waits
in whole milliseconds), or the whole congestion window when the round trip is shorter."""


class LoopPacer(QuicPacketPacer):
    """aioquic's pacer (a token bucket of sending time, refilled at *window / round trip*),
    whose bucket holds at least :data:`PACING_BURST_S` of sending (capped at one round
    trip: the whole congestion window).

    aioquic caps the bucket at 16 datagrams (or a quarter of the window) and asks for the
    next send a few microseconds later. A loop cannot wait that short: the broker sends
    again on its next pass, and the bucket has only refilled to its cap by then, so a
    connection's rate became 16 datagrams per pass, whatever its window. On a pass of 5 ms
    (the broker reading a publisher's flood) that is 4.6 MB/s, a third of what one
    subscriber reads: it fell behind by the stream's retention. Across a wide-area path
    (round trip well over the burst) the bucket is aioquic's, or 2 ms of the rate when
    that is more; congestion control still bounds what is in flight.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window=congestion_window, smoothed_rtt=smoothed_rtt)
        burst = min(max(smoothed_rtt, K_MICRO_SECOND), PACING_BURST_S)
        self.bucket_max = max(self.bucket_max, burst)


class FelixQuicConnection(QuicConnection):
    """A server ``QuicConnection`` that also accepts clients offering no ALPN, whose
    receive windows slide at a fixed size, whose flow-control credit the session can hold
    back, and whose pacer is a :class:`LoopPacer`."""

    credit_held: bool = False
    """While true, no flow-control credit (``MAX_DATA``, ``MAX_STREAM_DATA``,
    ``MAX_STREAMS``) is sent."""
    client_identity: ClientIdentity | None = None
    """The client's verified certificate (mutual TLS), once the handshake checked it."""

    def __init__(
        self, *, client_certificates: ClientCertificates | None = None, **kwargs: Any
    ) -> None:
        self._client_certificates = client_certificates
        super().__init__(**kwargs)
        self._loss._pacer = LoopPacer(max_datagram_size=self._max_datagram_size)

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        if self.credit_held:
            return
        limit = self._local_max_data
        received = limit.used
        limit.value = _slide(limit.value, received, self._configuration.max_data)
        limit.used = 0  # hide it from aioquic's doubling test; nothing else there reads it
        try:
            super()._write_connection_limits(builder=builder, space=space)
        finally:
            limit.used = received

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        local = stream.max_stream_data_local
        if self.credit_held or not local:  # 0: a send-only stream
            return
        receiver = stream.receiver
        received = receiver.highest_offset
        window = self._configuration.max_stream_data
        if local - received < window // 2:  # _slide, inlined: this runs for every stream
            local = stream.max_stream_data_local = received + window  # of every packet
        if local == stream.max_stream_data_local_sent:
            return  # nothing to announce (aioquic's version would write nothing either)
        receiver.highest_offset = 0  # hide it from aioquic's doubling test, as above
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = received

    def limits_announced(self) -> bool:
        """Whether the two limit writers above would write nothing now (for
        :func:`nothing_to_send`): no credit while it is held; else the windows slide as
        those writers slide them (the same change to the same state, which they would make
        at the next packet anyway) and nothing is new to announce."""
        if self.credit_held:
            return True
        limit = self._local_max_data
        limit.value = _slide(limit.value, limit.used, self._configuration.max_data)
        if limit.value != limit.sent or not _max_streams_announced(self):
            return False
        window = self._configuration.max_stream_data
        for stream in self._streams.values():
            local = stream.max_stream_data_local
            if not local:
                continue  # a send-only stream: the writer returns at once
            received = stream.receiver.highest_offset
            if local - received < window // 2:  # _slide, inlined as in the writer
                local = stream.max_stream_data_local = received + window
            if local != stream.max_stream_data_local_sent:
                return False
        return True

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
        if self._client_certificates is not None:
            self._request_client_certificates(context, self._client_certificates)

    def _request_client_certificates(
        self, context: tls.Context, policy: ClientCertificates
    ) -> None:
        """Mutual TLS: ask for the client's certificate and verify its chain with
        ``policy`` once its ``CertificateVerify`` signature checked out."""
        context._request_client_certificate = True
        handle_certificate = context._server_handle_certificate
        handle_verify = context._server_handle_certificate_verify

        def certificate(input_buf: Any) -> None:
            handle_certificate(input_buf)
            if policy.required and context._peer_certificate is None:
                policy.refused("missing")
                raise _ALERTS["missing"]("a client certificate is required")

        def certificate_verify(input_buf: Any) -> None:
            handle_verify(input_buf)
            assert context._peer_certificate is not None  # set by the Certificate message
            try:
                identity = policy.verify(
                    context._peer_certificate, list(context._peer_certificate_chain)
                )
            except CertificateRefused as exc:
                policy.refused(exc.reason)
                raise _ALERTS.get(exc.reason, tls.AlertBadCertificate)(str(exc)) from None
            self.client_identity = identity

        context._server_handle_certificate = certificate  # type: ignore[method-assign]
        context._server_handle_certificate_verify = certificate_verify  # type: ignore[method-assign]


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
"""The TLS alert for each :attr:`CertificateRefused.reason
<felix_server.access.CertificateRefused.reason>`."""


def _slide(limit: int, received: int, window: int) -> int:
    """The receive limit to grant: *received + window* once less than half a window of
    credit is left (so updates go out every half window, not every packet), else *limit*."""
    return received + window if limit - received < window // 2 else limit


def refusal_datagram(header: QuicHeader, reason: str) -> bytes:
    """A server Initial that closes the connection a client's Initial (*header*) opens, with
    the transport error ``CONNECTION_REFUSED`` and *reason* as the reason phrase.

    The client sees ``ConnectionTerminated(error_code=0x02, reason_phrase=reason)`` at once.
    The packet's source connection ID is the client's original destination connection ID
    (any value will do: the client never sends again). *header.version* must be supported.
    """
    assert header.version is not None
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    builder = QuicPacketBuilder(
        host_cid=header.destination_cid,
        peer_cid=header.source_cid,
        version=header.version,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
    )
    phrase = reason.encode()
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16 + len(phrase))
    buf.push_uint_var(QuicErrorCode.CONNECTION_REFUSED)
    buf.push_uint_var(QuicFrameType.PADDING)  # no frame caused it
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return datagrams[0]


def send_buffered(quic: QuicConnection) -> int:
    """Bytes held in the send buffers of every stream of ``quic``: written by the
    application and not yet acknowledged by the peer (sent or not). That is the memory the
    connection's outgoing stream data costs: aioquic copies each write into the stream's
    own buffer and frees it only as acknowledgements arrive.

    Reads ``QuicConnection._streams`` and ``QuicStreamSender._buffer_start`` /
    ``_buffer_stop`` (the acknowledged and written offsets), private to aioquic 1.7.
    """
    total = 0
    for stream in quic._streams.values():
        sender = stream.sender
        total += sender._buffer_stop - sender._buffer_start
    return total


def ack_with_data(quic: QuicConnection, now: float) -> bool:
    """Let a pending ACK go out in the next packet, which is about to carry stream data.

    aioquic delays every ACK by its ack delay (1 ms, ``K_GRANULARITY``) and writes one only
    into a packet sent once that delay has passed, so a reply sent sooner (a broker's
    ``PublishAck``, a client's next request) leaves without it, and a packet carrying the
    ACK alone follows 1 ms later: a second datagram and a wake-up of both ends per request.
    Marking the ACK due now (RFC 9000 §13.2.1 lets any packet carry one) makes the data's
    packet carry it. With nothing pending, or before the handshake's 1-RTT keys, nothing
    changes. :class:`~felix_server.quic_engine.AckWithData` decides how often to call this.

    Sets ``QuicConnection._spaces[Epoch.ONE_RTT].ack_at``, private to aioquic 1.7.

    Returns:
        Whether an ACK was pending and now goes with the data.
    """
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    if space is None or space.ack_at is None:
        return False
    space.ack_at = min(space.ack_at, now)
    return True


def ack_due(quic: QuicConnection) -> float | None:
    """When aioquic will send the pending 1-RTT ACK (None: nothing to acknowledge, or no
    1-RTT keys yet).

    Reads ``QuicConnection._spaces[Epoch.ONE_RTT].ack_at``, private to aioquic 1.7.
    """
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    return None if space is None else space.ack_at


def ack_by(quic: QuicConnection, at: float) -> None:
    """Make the pending 1-RTT ACK due no later than ``at`` (nothing pending: no change).

    Sets ``QuicConnection._spaces[Epoch.ONE_RTT].ack_at``, private to aioquic 1.7.
    """
    space = quic._spaces.get(tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and at < space.ack_at:
        space.ack_at = at


def set_ack_delay(quic: QuicConnection, delay: float) -> None:
    """Hold each ACK for ``delay`` seconds after the first packet it acknowledges
    (aioquic's default: 1 ms, ``K_GRANULARITY``). ``delay`` must stay within the
    ``max_ack_delay`` the connection announced to its peer (aioquic announces 25 ms), which
    the peer's loss detection allows for.

    Sets ``QuicConnection._ack_delay``, private to aioquic 1.7.
    """
    quic._ack_delay = delay


def nothing_to_send(quic: QuicConnection, now: float) -> bool:
    """Whether ``quic.datagrams_to_send(now)`` would return no datagram, told without
    building a packet; when true, the connection is left as that call would have left it.

    A reader's transmit after each record (a subscriber's, a consumer's) builds nothing most
    passes, its ACK being held (:mod:`felix_client._quic_acks`), yet aioquic's
    ``datagrams_to_send`` costs about 25 us for it: a packet builder, a packet started and
    dropped, the pacer, every frame writer's test. This function makes the same tests in
    the same order, on the same state, and answers false (call ``datagrams_to_send``)
    whenever any of them would write a frame, or on any path it does not mirror:

    * before the handshake is confirmed (Initial and Handshake packets), while a close is
      pending or once closing, with 0-RTT keys only, on a connection with more than one
      network path or a server's preferred address to probe (the migration paths);
    * an ACK due by ``now``; an unvalidated path's PATH_CHALLENGE; HANDSHAKE_DONE;
      PATH_RESPONSE; NEW_CONNECTION_ID not yet sent; RETIRE_CONNECTION_ID; STREAMS_BLOCKED;
      MAX_DATA / MAX_STREAMS (aioquic's doubling and batching rules) and MAX_STREAM_DATA of
      any stream; a PING asked for or a probe (PTO) pending; 1-RTT CRYPTO data; a DATAGRAM
      frame; and, per stream in the send queue, a finished stream to discard (which makes
      room for MAX_STREAMS), STOP_SENDING, RESET_STREAM, or stream data (new or lost and
      queued again: a loss puts the frames back in these same flags and buffers).

    The one thing such a call changes is the pacing state: with no ACK due by ``now``, it
    asks the pacer for the next send time (which moves the pacer's bucket to ``now``) and
    keeps it in ``_pacing_at`` (``None``: not held); this does the same, so ``get_timer``
    answers as after the call. Congestion control and the anti-amplification limit only
    ever hold back frames, so they cannot make the call send anything this misses.

    Only for aioquic's own ``QuicConnection`` and :class:`FelixQuicConnection` (whose limit
    writers :meth:`FelixQuicConnection.limits_announced` mirrors); another subclass may
    write other frames, so the caller checks the class
    (:func:`felix_server.quic_engine.quiet_test`). aioquic 1.7, whose private members this
    reads:
    ``_state``, ``_close_pending``, ``_handshake_confirmed``, ``_handshake_complete``,
    ``_network_paths``, ``_remote_preferred_address``, ``_cryptos``, ``_crypto_streams``,
    ``_spaces`` (``ack_at``), ``_loss._pacer``, ``_pacing_at``, ``_handshake_done_pending``,
    ``_host_cids``, ``_retire_connection_ids``, ``_streams_blocked_pending``,
    ``_local_max_data`` / ``_local_max_streams_bidi`` / ``_local_max_streams_uni``,
    ``_streams``, ``_streams_queue``, ``_ping_pending``, ``_probe_pending``,
    ``_datagrams_pending``. ``tests/client/test_nothing_to_send.py`` pins the source of
    the aioquic methods it mirrors and checks it against ``datagrams_to_send`` on real
    connections (losses, probes, pacing, every frame type above).
    """
    if (
        quic._close_pending
        or not quic._handshake_confirmed
        or quic._state in _END_STATES
        or quic._remote_preferred_address is not None
    ):
        return False
    paths = quic._network_paths
    if len(paths) != 1:
        return False
    path = paths[0]
    if not quic._cryptos[tls.Epoch.ONE_RTT].send.is_valid():
        return False
    ack_at = quic._spaces[tls.Epoch.ONE_RTT].ack_at
    if ack_at is not None and ack_at <= now:
        return False  # an ACK is due (and pacing does not hold ACKs)
    # datagrams_to_send resets _pacing_at, then, with no ACK due, asks the pacer first.
    pacer = quic._loss._pacer  # next_send_time returns None too (typed float in 1.7)
    pacing_at = quic._pacing_at = cast("float | None", pacer.next_send_time(now=now))
    if pacing_at is not None:
        return True  # held by pacing: the call would stop before its first packet
    if (
        not (path.is_validated or path.local_challenge_sent)
        or quic._handshake_done_pending
        or path.remote_challenges
        or quic._retire_connection_ids
        or quic._streams_blocked_pending
        or quic._ping_pending
        or quic._probe_pending
        or quic._datagrams_pending
        or not quic._crypto_streams[tls.Epoch.ONE_RTT].sender.buffer_is_empty
    ):
        return False
    for cid in quic._host_cids:
        if not cid.was_sent:
            return False
    if type(quic) is FelixQuicConnection:
        if not quic.limits_announced():
            return False
    elif not _limits_announced(quic):
        return False
    for stream in quic._streams_queue:
        sender = stream.sender
        if (
            stream.is_finished
            or stream.receiver.stop_pending
            or sender.reset_pending
            or not (stream.is_blocked or sender.buffer_is_empty)
        ):
            return False
    return True


def _limits_announced(quic: QuicConnection) -> bool:
    """Whether aioquic's ``_write_connection_limits`` and ``_write_stream_limits`` would
    write nothing now (MAX_DATA / MAX_STREAMS by its doubling and batching rules,
    MAX_STREAM_DATA of any stream)."""
    max_data = quic._local_max_data
    if max_data.used * 2 > max_data.value or max_data.value != max_data.sent:
        return False
    if not _max_streams_announced(quic):
        return False
    for stream in quic._streams.values():
        local = stream.max_stream_data_local
        if (
            local and stream.receiver.highest_offset * 2 > local
        ) or stream.max_stream_data_local_sent != local:
            return False
    return True


def _max_streams_announced(quic: QuicConnection) -> bool:
    """Whether aioquic's MAX_STREAMS batching holds back both stream limits' updates."""
    for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
        sent = limit.sent
        if limit.value != sent and sent - limit.used < limit.value - sent:
            return False  # not batched any longer: MAX_STREAMS goes out
    return True
