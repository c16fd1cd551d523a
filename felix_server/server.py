"""The server-wide sans-IO object: UDP datagrams in, UDP datagrams out, one timer.

Theory of operation
-------------------
:class:`FelixServer` is what a runtime adapter drives. It owns the
:class:`~felix_core.broker.Broker`, one :class:`~felix_server.session.Session` per QUIC
connection, and the demultiplexing of datagrams to connections by destination connection
ID (what ``aioquic.asyncio.server.QuicServer`` does, minus the I/O). Inputs and outputs, in
the manner of aioquic's ``QuicConnection``:

Inputs
    * :meth:`FelixServer.datagram_received` ``(data, addr, now)``;
    * :meth:`FelixServer.handle_timer` ``(now)`` when :meth:`FelixServer.get_timer` is due;
    * :meth:`FelixServer.begin_shutdown` ``(now)`` on SIGTERM;
    * :meth:`FelixServer.storage_job_done` ``(job, outcome, now)`` when a storage job run
      on a worker thread is over (durable logs only, :mod:`felix_server.storage`).

Outputs
    * :meth:`FelixServer.datagrams_to_send` ``(now)`` -> ``[(bytes, addr)]``: call it once
      per loop pass, after feeding every datagram that arrived in that pass (the adapters
      pass ``send``, which takes each connection's datagrams as soon as they are built);
      also inside a pass, between two datagrams, once :attr:`FelixServer.transmit_due`;
    * :meth:`FelixServer.take_storage_jobs` ``(now)``: after each pass, the fsyncs and cold
      reads to run on worker threads (none without a durable log store);
    * :meth:`FelixServer.get_timer`: the earliest deadline of the broker, the durable log
      store's fsync interval, every session (QUIC and Felix) and the shutdown;
    * :attr:`FelixServer.ready` and :attr:`FelixServer.finished` for health and exit.

Timers. Each session's deadline is kept in a :class:`~felix_proto.deadlines.Deadlines` heap
and recomputed only for the sessions touched since the last :meth:`get_timer`: those that
received a datagram, had a timer fire, transmitted or were told to shut down. Nothing else
changes a session's deadline, so an idle connection costs nothing per loop pass.

Each call to :meth:`datagrams_to_send` first fires the engine's deadlines that are due (the
end of a pass is when a stream's partial batches are delivered), then asks the
:class:`~felix_server.router.Router` which connections have engine events waiting and
transmits those and every session touched by an input, in that order: the connections that
only receive in this pass (subscribers, consumers) before those that sent its input (whose
replies are acknowledgements), so a record's datagrams to its readers are built first and
leave first, and a reader is woken before the publisher whose ack would compete with it for
a CPU. Each takes its mail (a distinct
:class:`~felix_core.log.LogSlice` is encoded once per pass,
:class:`~felix_server.batches.EncodedBatches`, and the same bytes are written to every
subscription stream it goes to), moves its Felix writes into QUIC and returns QUIC's
datagrams. Back-pressure is applied there too (see :mod:`felix_server.session`). A transmit
can give other connections mail (a cancelled consumer's messages go to its group's other
consumers), so the poll is repeated, a bounded number of times. Sessions never call the
server: it drives them and polls them.

Fair turns: the server's :class:`~felix_server.fair.FairShare` gives each tenant at most
:data:`~felix_server.fair.PASS_QUANTUM` records of one pass; a session past its tenant's
turn yields until the next pass (its timer is due at once). Each :meth:`datagrams_to_send`
ends the pass and renews every turn.

Time: ``now`` is wall-clock seconds since the Unix epoch for everything (the engine stamps
records with it; aioquic only needs a clock that is consistent between calls).

Refusing connections: a new connection over ``transport.max_connections``, or any new
connection once shutting down, is answered statelessly with a QUIC ``CONNECTION_CLOSE``
(transport error ``CONNECTION_REFUSED``, reason ``broker at max_connections`` or ``broker
shutting down``; :func:`~felix_server.quic.refusal_datagram`), so the client fails at once
with the reason instead of timing out. No session, ``QuicConnection`` or engine state is
created. To keep a flood of Initials from making this a CPU or traffic amplifier, at most
:data:`MAX_REFUSALS_PER_PASS` refusals are answered per :meth:`datagrams_to_send` pass; the
rest are dropped (a dropped client retransmits its Initial and is refused then). Every
refused Initial is counted in ``stats.refused``, the answered ones also in
``stats.refusals_sent``.

Graceful shutdown: :meth:`begin_shutdown` makes the server not ready, refuses new
connections (as above), makes the engine refuse new work with ``SHUTTING_DOWN``
(:meth:`~felix_core.broker.Broker.stop_accepting`) and sends ``GoAway`` with the
grace period as its deadline to every client. Subscriptions and consumers are then drained,
not cut: a :class:`~felix_server.drain.Drain` keeps every connection open until its feeds
have caught up and the client has acknowledged what was written to it, ends its feeds with
reason ``shutdown`` and closes it; at the end of the grace period it reports what was not
delivered and closes the rest. :attr:`finished` turns true when no connection is left, and
``shutdown_drain_s`` bounds the whole shutdown (connections still open then are abandoned).
Refused connections are reported to the observer (``connection_refused``) with the label
``max_connections`` or ``shutting_down``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicHeader,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from felix_core.broker import Broker
from felix_core.disklog import DiskLogStore, StorageJob
from felix_core.metadata import MetadataStore
from felix_proto import ALPN
from felix_proto.connection import TOKEN_EXCHANGE, TOKEN_REFRESH
from felix_proto.deadlines import Deadlines
from felix_server.access import Authenticate, Exchange, accept_anonymous, for_connection
from felix_server.batches import EncodedBatches
from felix_server.config import ServerConfig
from felix_server.drain import Drain
from felix_server.fair import FairShare
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver
from felix_server.quic import FelixQuicConnection, refusal_datagram
from felix_server.quic_engine import QuicConnectionLike
from felix_server.router import Router
from felix_server.session import Session, SessionLimits
from felix_server.storage import StorageGlue

__all__ = ["MAX_REFUSALS_PER_PASS", "FelixServer", "Send", "make_quic_configuration"]

Send = Callable[[list[tuple[bytes, NetworkAddress]]], None]
"""What :meth:`FelixServer.datagrams_to_send` may hand each connection's datagrams to."""

TRANSMIT_AFTER_REQUESTS = 16
"""Requests served in one pass after which :attr:`FelixServer.transmit_due` asks the
adapter to transmit before it reads the rest of its batch."""
MAX_REFUSALS_PER_PASS = 16
"""Most refused connections answered with ``CONNECTION_REFUSED`` between two
:meth:`FelixServer.datagrams_to_send` calls; further refused Initials are dropped."""


def make_quic_configuration(config: ServerConfig) -> QuicConfiguration:
    """The server-side aioquic configuration for a broker (certificate not loaded yet).

    The caller loads the certificate chain (``load_cert_chain``): reading files is I/O.
    The runtimes build the configured engine's with
    :func:`felix_runtime.quic_engines.server_quic` (this one for aioquic).
    """
    transport = config.transport
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        max_datagram_size=transport.max_datagram_size,
        max_data=transport.max_data,
        max_stream_data=transport.max_stream_data,
        idle_timeout=transport.idle_timeout_s,
    )


@dataclass(slots=True)
class _Stats:
    accepted: int = 0
    refused: int = 0
    refusals_sent: int = 0
    version_negotiations: int = 0
    dropped_datagrams: int = 0


class FelixServer:
    """Every QUIC connection of a broker, the broker itself and one timer. See the module
    docstring.

    Args:
        config: the broker configuration.
        quic_configuration: the QUIC engine's server configuration with the certificate
            loaded (aioquic's, or qh3's with a qh3 ``connection_factory``).
        now: the current time (wall clock, seconds).
        observer: receives metrics and log hooks (does nothing by default).
        broker: an engine to serve (a new one from ``config.broker`` when None).
        connection_factory: builds QUIC connections (default: aioquic's, with Felix's ALPN
            rule, :class:`~felix_server.quic.FelixQuicConnection`; the runtimes pass the
            configured engine's, :mod:`felix_runtime.quic_engines`).
        authenticate: decides each client's ``Hello``. Required when ``config`` turns
            authentication on (a runtime builds it with
            ``felix_runtime.credentials.broker_authenticator``, which reads the key files);
            without authentication every client is the anonymous operator.
        logs: a durable log store for the new engine (None: every log in memory, and
            ``durability=durable`` refused); its jobs are the adapter's to run
            (:meth:`take_storage_jobs`, :mod:`felix_server.storage`).
        metadata: where resource definitions are kept (None: in memory); the engine is fed
            what it holds.
        exchange: answers ``TokenExchange`` (capability ``token-exchange``: identity tokens
            of external issuers for Felix tokens; ``felix_runtime.exchange``); None: not
            offered. Needs ``authenticate``.

    Raises:
        ValueError: ``config`` turns authentication on and no ``authenticate`` is given.
    """

    def __init__(
        self,
        config: ServerConfig,
        quic_configuration: Any,
        *,
        now: float,
        observer: ServerObserver | None = None,
        broker: Broker | None = None,
        connection_factory: Callable[..., QuicConnectionLike] = FelixQuicConnection,
        authenticate: Authenticate | None = None,
        logs: DiskLogStore | None = None,
        metadata: MetadataStore | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        self.config = config
        if authenticate is None and config.auth_enabled:
            raise ValueError("authentication is configured: pass its authenticate function")
        self._authenticate = authenticate or accept_anonymous
        self._limits = SessionLimits.from_config(config)
        if authenticate is not None:  # clients authenticate: they may renew their token
            offered = (TOKEN_REFRESH, TOKEN_EXCHANGE) if exchange else (TOKEN_REFRESH,)
            self._limits = replace(self._limits, capabilities=offered)
        elif exchange is not None:
            raise ValueError("a token exchange needs an authenticate function")
        self._exchange = exchange
        self.quic_configuration = quic_configuration
        self.observer = observer or ServerObserver()
        self.broker = broker if broker is not None else Broker(config.broker, logs=logs, now=now)
        route = LocalRoute(self.broker, metadata, now=now)
        self.storage = StorageGlue(logs, self.broker, route) if logs is not None else None
        self.router = Router(route, self.observer)
        self.batches = EncodedBatches()
        self.share = FairShare()
        """Each tenant's turn of the current loop pass (:mod:`felix_server.fair`)."""
        self._factory = connection_factory
        self._by_cid: dict[bytes, Session] = {}
        self._cid_end = 1 + quic_configuration.connection_id_length  # short header's CID end
        self._sessions: dict[int, Session] = {}
        self._dirty: dict[int, Session] = {}
        self._touched: dict[int, Session] = {}  # deadlines to recompute
        self._deadlines: Deadlines[int] = Deadlines()  # conn id -> its session's deadline
        self._stateless: list[tuple[bytes, NetworkAddress]] = []
        self._refusals_left = MAX_REFUSALS_PER_PASS  # in this datagrams_to_send pass
        self._next_conn_id = 1
        self._shutdown_at: float | None = None
        self._drain: Drain | None = None
        self._drain_until: float | None = None
        self.stats = _Stats()

    # ------------------------------------------------------------------------- state

    @property
    def ready(self) -> bool:
        """Whether the broker accepts new connections and work (``/ready``)."""
        return self._shutdown_at is None

    @property
    def finished(self) -> bool:
        """After :meth:`begin_shutdown`: no connection is left, or the drain bound passed."""
        return self._shutdown_at is not None and not self._sessions

    @property
    def sessions(self) -> list[Session]:
        """The live sessions (for metrics and tests)."""
        return list(self._sessions.values())

    # ------------------------------------------------------------------------ inputs

    def datagram_received(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """Feed one UDP datagram.

        Unparseable datagrams are dropped. A datagram for an unknown connection ID starts a
        new connection if it is a large enough Initial packet and the server is ready and
        below ``max_connections`` (otherwise it is refused with ``CONNECTION_REFUSED``, see
        the module docstring); an unsupported QUIC version is answered with version
        negotiation.
        """
        # The common case first: a short-header (1-RTT) packet of a known connection. Its
        # destination CID is the bytes after the first one; the full parse below finds the
        # same session, so only what it would drop or answer takes that path.
        cid_end = self._cid_end
        if len(data) >= cid_end and data[0] & 0xC0 == 0x40:
            session = self._by_cid.get(data[1:cid_end])
            if session is not None:
                session.datagram_received(data, addr, now)
                self._after_input(session)
                return
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.quic_configuration.connection_id_length
            )
        except ValueError:
            self.stats.dropped_datagrams += 1
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self.quic_configuration.supported_versions
        ):
            self.stats.version_negotiations += 1
            self._stateless.append(
                (
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=self.quic_configuration.supported_versions,
                    ),
                    addr,
                )
            )
            return
        session = self._by_cid.get(header.destination_cid)
        if session is None:
            if header.packet_type != QuicPacketType.INITIAL or (
                len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            ):
                self.stats.dropped_datagrams += 1
                return
            if not self.ready:
                self._refuse(header, addr, "shutting_down", "broker shutting down")
                return
            if len(self._sessions) >= self.config.transport.max_connections:
                self._refuse(header, addr, "max_connections", "broker at max_connections")
                return
            session = self._accept(header.destination_cid, now)
        session.datagram_received(data, addr, now)
        self._after_input(session)

    def _refuse(self, header: QuicHeader, addr: NetworkAddress, why: str, reason: str) -> None:
        """Answer a new connection with ``CONNECTION_REFUSED``, within this pass's budget.

        ``why`` is the observer's label (``max_connections`` or ``shutting_down``),
        ``reason`` the QUIC reason phrase."""
        self.stats.refused += 1
        self.observer.connection_refused(why)
        if self._refusals_left <= 0:
            return
        self._refusals_left -= 1
        self.stats.refusals_sent += 1
        self._stateless.append((refusal_datagram(header, reason), addr))

    def _accept(self, original_cid: bytes, now: float) -> Session:
        quic = self._factory(
            configuration=self.quic_configuration,
            original_destination_connection_id=original_cid,
        )
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        session = Session(
            quic,
            conn_id,
            now,
            router=self.router,
            observer=self.observer,
            limits=self._limits,
            authenticate=for_connection(self._authenticate, quic),
            batches=self.batches,
            exchange=self._exchange,
            share=self.share,
        )
        self._sessions[conn_id] = session
        self._by_cid[original_cid] = session
        self._by_cid[quic.host_cid] = session
        self.stats.accepted += 1
        self.observer.connection_opened()
        return session

    def _after_input(self, session: Session) -> None:
        """Bookkeeping after a session handled input: CIDs, liveness, dirtiness."""
        for cid in session.take_issued_cids():
            self._by_cid[cid] = session
        for cid in session.take_retired_cids():
            if self._by_cid.get(cid) is session:
                del self._by_cid[cid]
        self._dirty[session.conn_id] = session
        self._touched[session.conn_id] = session

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.conn_id, None)
        self._dirty.pop(session.conn_id, None)
        self._touched.pop(session.conn_id, None)
        self._deadlines.discard(session.conn_id)
        for cid in [c for c, s in self._by_cid.items() if s is session]:
            del self._by_cid[cid]

    @property
    def transmit_due(self) -> bool:
        """Whether the requests served since the last :meth:`datagrams_to_send` reach
        :data:`TRANSMIT_AFTER_REQUESTS`: an adapter reading a batch of datagrams then
        transmits before it feeds the next one, so the first replies of a long pass leave
        (and the client works on them) while the broker serves the rest."""
        return self.router.submitted >= TRANSMIT_AFTER_REQUESTS

    def get_timer(self) -> float | None:
        """The earliest absolute deadline of anything the server holds, or None."""
        drain = self._drain.get_timer() if self._drain is not None else None
        self._refresh_deadlines()
        earliest = self._deadlines.earliest()
        for d in (
            self.router.get_timer(),
            self.storage.get_timer() if self.storage is not None else None,
            drain,
            self._drain_until,
        ):
            if d is not None and (earliest is None or d < earliest):
                earliest = d
        return earliest

    def _refresh_deadlines(self) -> None:
        """Recompute the cached deadline of every session touched since the last call."""
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        deadlines = self._deadlines
        for conn_id, session in touched.items():
            deadlines.set(conn_id, session.get_timer())

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now`` (early or repeated calls are harmless)."""
        self.router.handle_timer(now)
        if self.storage is not None:  # the jobs it wants come with take_storage_jobs
            self.storage.handle_timer(now)
        if self._drain is not None:  # before the sessions: the grace ends with a report
            deadline = self._drain.get_timer()
            if deadline is not None and deadline <= now:
                for session in self._drain.handle_timer(now, self.sessions):
                    self._mark(session)
        self._refresh_deadlines()
        for conn_id in self._deadlines.pop_due(now):  # recomputed once handled (touched)
            session = self._sessions[conn_id]
            session.handle_timer(now)
            self._after_input(session)
        if self._drain_until is not None and now >= self._drain_until:
            self._drain_until = None
            for session in list(self._sessions.values()):
                session.abandon(now)
                self._forget(session)

    def begin_shutdown(self, now: float) -> None:
        """Start the graceful shutdown (idempotent). See the module docstring."""
        if self._shutdown_at is not None:
            return
        self._shutdown_at = now
        grace = self.config.shutdown_grace_s
        grace_ms = int(grace * 1000)
        self._drain_until = now + self.config.shutdown_drain_s
        self.router.stop_accepting()
        self.observer.log("info", "shutting down", connections=len(self._sessions), grace_s=grace)
        for session in self._sessions.values():
            session.go_away(grace_ms, now)
            self._mark(session)
        # The grace ends when the clients' GoAway deadline does (the same float).
        self._drain = Drain(
            self.router, self.observer, self._sessions.values(), now + grace_ms / 1000, now
        )

    # ----------------------------------------------------------------------- outputs

    def datagrams_to_send(
        self, now: float, send: Send | None = None
    ) -> list[tuple[bytes, NetworkAddress]]:
        """Everything to transmit now. Call once per loop pass, after the inputs.

        Args:
            now: the current time.
            send: when given, each connection's datagrams are handed to it as soon as that
                connection has transmitted, in order, and the list returned is empty: the
                adapter writes them to the socket at once, so the first reader's datagram
                leaves while the next connections' are built.

        Returns:
            ``(datagram, address)`` pairs, in order (empty when ``send`` took them).
        """
        self.router.submitted = 0
        out = self._stateless
        self._stateless = []
        if send is not None and out:
            send(out)
            out = []
        self._refusals_left = MAX_REFUSALS_PER_PASS
        # The pass ends: flush what is due, such as the partial batches of this pass's
        # publishes (their deadline is the pass itself: felix_core.streams, "Batching").
        self.router.handle_timer(now)
        sessions, dirty = self._sessions, self._dirty
        for _ in range(4):  # a transmit can give other connections mail; bounded
            mailed: dict[int, Session] = {}
            for conn_id in self.router.ready(now):  # the router names who has mail
                session = sessions.get(conn_id)
                if session is not None and conn_id not in dirty:
                    mailed[conn_id] = session
            if mailed:  # those that only receive first, then those that sent input
                mailed.update(dirty)
                dirty = mailed
            if not dirty:
                break
            self._dirty = {}
            touched = self._touched
            for session in dirty.values():
                if send is None:
                    out.extend(session.transmit(now))
                else:
                    datagrams = session.transmit(now)
                    if datagrams:
                        send(datagrams)
                touched[session.conn_id] = session  # sending moves QUIC's timers
                if session.finished:
                    self._forget(session)
            dirty = self._dirty
        self.batches.flush(self.observer)
        self.share.new_pass()  # the pass ends: every tenant has a new turn
        return out

    # ----------------------------------------------------------------------- storage

    def take_storage_jobs(self, now: float) -> list[StorageJob]:
        """The storage jobs to run now: call after every :meth:`datagrams_to_send`; run
        each ``job.run()`` on a worker thread and hand the outcome to
        :meth:`storage_job_done` on the loop thread (none without a durable store)."""
        return self.storage.take_jobs(now) if self.storage is not None else []

    def storage_job_done(self, job: StorageJob, outcome: object, now: float) -> None:
        """A storage job's ``run`` returned ``outcome`` (or raised it): the engine learns
        what it means (committed publishes complete, pending reads go on, a failed log
        refuses writes); transmit afterwards."""
        assert self.storage is not None
        self.storage.job_done(job, outcome, now)
        self.router.collect(now)

    def _mark(self, session: Session) -> None:
        """A session has something to send and its deadline may have moved."""
        self._dirty[session.conn_id] = session
        self._touched[session.conn_id] = session
