"""Session-level fuzzing: arbitrary valid messages and garbage against a real FelixServer.

A sans-IO pair as in ``test_no_leftover_state.py``: a :class:`FelixServer` and one raw peer
(an aioquic client ``QuicConnection`` writing frames encoded with :mod:`felix_proto.codec`,
not a ``ClientConnection``, so it can send what a well-behaved client never would) exchange
datagrams in memory under a fake clock. Hypothesis draws a sequence of actions: any valid
message (:mod:`felix_proto.testing`), biased so that most requests name the resources that
exist and so reach the engine (tenant ``default``, the streams, queues and caches created
first, small subscription, consumer and delivery ids), with arbitrary settings maps,
start positions, credits, prefetch, TTLs and versions; credit and pings on the control
stream; and garbage frames on their own streams.

Properties: the server never raises; no ``Error`` is ``INTERNAL`` and the observer hears of
no internal error (either means a bug); every request gets exactly one reply (requests
that ask for none, ``ack=NONE`` publishes and id-less acks, get at most an error); and
after the peer leaves (a QUIC close, or vanishing), no session, connection id,
subscription, consumer or in-flight delivery is left and no timer is armed for it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from typing import Any

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from engine_calls import ThroughRouter
from hypothesis import given
from hypothesis import strategies as st

from felix_proto import ALPN
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.connection import REPLY_TYPES
from felix_proto.errors import ErrorCode
from felix_proto.frames import encode_header
from felix_proto.testing import STRATEGIES, any_values, u64
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig, TransportConfig
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer, make_quic_configuration

T, N = "default", "default"
IDLE_TIMEOUT = 5.0
SERVER_ADDR = ("127.0.0.1", 7447)
PEER_ADDR = ("127.0.0.1", 40000)
STREAMS, QUEUES, CACHES = ("s", "s-disc"), ("q", "q-dlq"), ("c",)
NAMES = (*STREAMS, *QUEUES, *CACHES, "missing")

# -- what the peer sends ----------------------------------------------------------------

_small = st.integers(min_value=0, max_value=6)
_number = st.one_of(_small, _small, u64, st.sampled_from([1 << 32, (1 << 63) - 1, 1 << 63]))
_SETTING_NAMES = (
    "retention_max_records",
    "retention_max_bytes",
    "retention_max_age_ms",
    "slow_consumer",
    "batch_max_events",
    "batch_max_bytes",
    "batch_max_delay_us",
    "durability",
    "max_records",
    "max_bytes",
    "visibility_timeout_ms",
    "max_attempts",
    "dead_letter_queue",
    "max_prefetch",
    "default_ttl_ms",
    "max_entries",
    "max_value_bytes",
    "feed_retention_max_records",
    "feed_retention_max_bytes",
    "sweep_batch",
    "description",
)
_setting_value = st.one_of(
    _number,
    st.integers(min_value=-(1 << 63), max_value=-1),
    st.sampled_from(["drop_oldest", "block", "disconnect", "ephemeral", "durable", *NAMES]),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    any_values(max_leaves=3),
)
_settings = st.dictionaries(
    st.sampled_from(_SETTING_NAMES) | st.text(max_size=8), _setting_value, max_size=4
)
_BIASED: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.sampled_from((*STREAMS, *STREAMS, *NAMES)),
    "queue": st.sampled_from((*QUEUES, *QUEUES, *NAMES)),
    "cache": st.sampled_from((*CACHES, *CACHES, *NAMES)),
    "name": st.sampled_from(NAMES),
    "group": st.sampled_from(["default", "default", "g", ""]),
    "source": st.sampled_from(["stream", "stream", "cache"]),
    "settings": _settings,
    "subscription_id": _small,
    "consumer_id": _small,
    "delivery_ids": st.lists(_small, max_size=4),
    "start_value": st.none() | _number,
    "credit_messages": _number,
    "credit_bytes": _number,
    "prefetch": _number,
    "ttl_ms": st.none() | _number,
    "if_version": st.none() | _number,
    "delay_ms": st.none() | _number,
}


@st.composite
def _message(draw: st.DrawFn) -> m.Message:
    every = sorted(STRATEGIES, key=lambda c: c.TYPE)
    cls = draw(st.sampled_from([c for c in every if c in REPLY_TYPES]) | st.sampled_from(every))
    msg = draw(STRATEGIES[cls])
    changes = {
        f.name: draw(_BIASED[f.name])
        for f in dataclasses.fields(msg)  # type: ignore[arg-type]
        if f.name in _BIASED and draw(st.integers(0, 9)) > 0  # mostly biased
    }
    named = hasattr(msg, "tenant") and hasattr(msg, "namespace")  # not Welcome.tenant
    if named and draw(st.integers(0, 9)) > 0:  # the path exists, mostly
        changes["tenant"], changes["namespace"] = T, N
    if isinstance(msg, m.Subscribe) and msg.source == "cache":
        changes["stream"] = draw(st.sampled_from((*CACHES, msg.stream)))
    if isinstance(msg, m.CachePut | m.CacheGet | m.CacheDelete):
        changes["key"] = draw(st.sampled_from(["k", "k2", msg.key]))
    return dataclasses.replace(msg, **changes)


_garbage = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda body: encode_header(len(body)) + body, st.binary(max_size=64)),
    st.builds(lambda n: encode_header(n), st.integers(0, 1 << 20)),  # a frame cut short
)
_request = st.tuples(st.just("request"), _message(), st.integers(0, 3))  # lane 0: a new stream
_action = st.one_of(
    _request,
    _request,
    _request,
    _request,
    st.tuples(st.just("credit"), _small, _number, _number),
    st.tuples(st.just("ping"), u64),
    st.tuples(st.just("garbage"), _garbage),
)


# -- the pair ---------------------------------------------------------------------------


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.internal: list[tuple[str, BaseException]] = []

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.internal.append((where, exc))


class _Peer:
    """A raw Felix peer: QUIC plus the codec, no client state machine."""

    def __init__(self, cafile: str, now: float) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            server_name="localhost",
            max_datagram_size=1452,
            idle_timeout=IDLE_TIMEOUT,
        )
        config.load_verify_locations(cafile)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER_ADDR, now=now)
        self.decoders: dict[int, MessageDecoder] = {}
        self.received: list[tuple[int, m.Message]] = []
        self.connected = False
        self.terminated = False
        self.gone = False

    def pump(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, qe.StreamDataReceived):
                decoder = self.decoders.setdefault(event.stream_id, MessageDecoder())
                decoder.feed(event.data)  # the broker sends only valid frames
                while (msg := decoder.next_message()) is not None:
                    self.received.append((event.stream_id, msg))
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = True

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.quic.send_stream_data(stream_id, data, end)


class _Pair:
    def __init__(self, certs: tuple[str, str], **transport: Any) -> None:
        transport.setdefault("idle_timeout_s", IDLE_TIMEOUT)
        config = ServerConfig(data_dir="unused", transport=TransportConfig(**transport))
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(*certs)
        self.now = 1_000_000.0
        self.observer = _Observer()
        self.server = FelixServer(config, quic_config, now=self.now, observer=self.observer)
        self.peer = _Peer(certs[0], self.now)

    def exchange(self, rounds: int = 400) -> None:
        server, peer = self.server, self.peer
        quiet = 0
        for _ in range(rounds):
            self.now += 0.001
            now = self.now
            self._fire_timers()
            moved = False
            for data, _ in peer.quic.datagrams_to_send(now=now):
                if not peer.gone:
                    server.datagram_received(data, PEER_ADDR, now)
                    moved = True
            for data, _ in server.datagrams_to_send(now):
                if not peer.gone:
                    peer.quic.receive_datagram(data, SERVER_ADDR, now)
                    moved = True
            peer.pump()
            quiet = 0 if moved else quiet + 1
            if quiet >= 5:
                return
        raise AssertionError("the pair did not settle")

    def _fire_timers(self) -> None:
        timer = self.peer.quic.get_timer()
        if timer is not None and timer <= self.now and not self.peer.gone:
            self.peer.quic.handle_timer(self.now)
        timer = self.server.get_timer()
        if timer is not None and timer <= self.now:
            self.server.handle_timer(self.now)

    def advance(self, seconds: float, step: float = 0.25) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += step
            self._fire_timers()
            self.exchange()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    files = ensure_self_signed(tmp_path_factory.mktemp("fuzz-certs"))
    return str(files.cert_path), str(files.key_path)


def _setup(pair: _Pair) -> None:
    broker, now = ThroughRouter(pair.server.router), pair.now
    broker.create("stream", T, N, "s", now=now)
    broker.create(
        "stream",
        T,
        N,
        "s-disc",
        {"slow_consumer": "disconnect", "retention_max_records": 2},
        now=now,
    )
    broker.create("queue", T, N, "q", {"visibility_timeout_ms": 500}, now=now)
    broker.create("queue", T, N, "q-dlq", {"max_attempts": 1, "dead_letter_queue": "q"}, now=now)
    broker.create("cache", T, N, "c", now=now)
    broker.cache_put(T, N, "c", "k", b"v", now=now)
    broker.publish(0, T, N, "s", [b"a", b"b"], now=now)
    broker.enqueue(0, T, N, "q", [b"j1", b"j2"], now=now)


def _expected(msg: m.Message) -> tuple[int, int] | None:
    """(fewest, most) replies carrying the message's request id; None: it has no id."""
    rid = getattr(msg, "request_id", None)
    if rid is None:
        return None
    if isinstance(msg, m.Error):
        return (0, 0)  # an error from the peer is only reported
    if getattr(msg, "ack", None) == m.AckMode.NONE and isinstance(
        msg, m.Publish | m.PublishBatch | m.Enqueue
    ):
        return (0, 1)  # not awaited; a refusal is still sent
    return (1, 1)


@given(
    actions=st.lists(_action, min_size=4, max_size=24), leave=st.sampled_from(["close", "vanish"])
)
def test_fuzzed_session(certs: tuple[str, str], actions: list[tuple[Any, ...]], leave: str) -> None:
    pair = _Pair(certs)
    _setup(pair)
    server, peer = pair.server, pair.peer
    pair.exchange()
    assert peer.connected
    peer.send(0, encode(m.Hello(versions=[2], client_name="fuzz")))
    pair.exchange()
    assert any(isinstance(msg, m.Welcome) for _, msg in peer.received)

    rids = itertools.count(1)
    lanes: dict[int, int] = {}
    expected: dict[int, tuple[int, int]] = {}
    for i, action in enumerate(actions):
        if action[0] == "request":
            msg, lane = action[1], action[2]
            if getattr(msg, "request_id", None) is not None:
                msg = dataclasses.replace(msg, request_id=next(rids))  # type: ignore[type-var]
            want = _expected(msg)
            if want is not None:
                expected[msg.request_id] = want  # type: ignore[attr-defined]
            if lane == 0:
                peer.send(peer.quic.get_next_available_stream_id(), encode(msg), end=True)
            else:
                if lane not in lanes:
                    lanes[lane] = peer.quic.get_next_available_stream_id()
                peer.send(lanes[lane], encode(msg))
        elif action[0] == "credit":
            credit = m.Credit(subscription_id=action[1], messages=action[2], bytes=action[3])
            peer.send(0, encode(credit))
        elif action[0] == "ping":
            peer.send(0, encode(m.Ping(nonce=action[1])))
        else:
            peer.send(peer.quic.get_next_available_stream_id(), action[1], end=True)
        if i % 4 == 3:
            pair.exchange()
    pair.exchange()
    pair.advance(1.0)  # batch delays, visibility timeouts

    errors = [msg for _, msg in peer.received if isinstance(msg, m.Error)]
    assert not [e for e in errors if e.code == ErrorCode.INTERNAL], errors
    assert not pair.observer.internal, pair.observer.internal
    replies = Counter(
        rid
        for _, msg in peer.received
        if not isinstance(msg, m.SubscriptionStreamStart | m.ConsumerStreamStart)
        and (rid := getattr(msg, "request_id", None)) is not None
    )
    for rid, (fewest, most) in expected.items():
        assert fewest <= replies[rid] <= most, (rid, replies[rid], peer.received)
    assert set(replies) <= set(expected)

    if leave == "close":
        peer.quic.close()
    else:
        peer.gone = True
    pair.exchange()
    pair.advance(IDLE_TIMEOUT * 3)
    broker = server.broker
    assert server.sessions == []
    assert server._by_cid == {} and server._dirty == {}
    stats = broker.stats()
    assert (stats["connections"], stats["subscriptions"], stats["consumers"]) == (0, 0, 0)
    assert broker.totals(pair.now).queues.in_flight == 0
    assert server.datagrams_to_send(pair.now) == []
