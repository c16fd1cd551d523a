"""A client announcing a small ``Hello.max_frame_size`` is never met with silence.

In memory (:mod:`.memory_net`), through the whole server: QUIC, the session, the engine.
Before the fix: with ``max_frame_size`` 200 no ``Welcome`` was sent, with 0 a
``LocalProtocolError`` escaped ``FelixServer.datagram_received`` (in a runtime: "Exception
in callback UdpRuntime._readable"), a ``CacheGet`` or ``AdminList`` whose reply did not fit
was never answered, and a subscription or consumer whose next record did not fit stalled
with no frame at all. Now (docs/wire-protocol.md §5.4) a ``Hello`` below 4096 is refused with
``Error(INVALID_ARGUMENT)`` and the close, a reply that does not fit is
``Error(TOO_LARGE)``, a batch is split into frames that fit, and a record that fits no frame
ends its subscription or consumer with reason ``error``. And a reply that raises while it is
encoded is still answered (``INTERNAL``), with the observer told.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from felix_proto import events as fe
from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import ErrorCode
from felix_proto.frames import HEADER_SIZE
from felix_server import session as session_module
from felix_server.config import ConfigError, TransportConfig
from felix_server.observer import ServerObserver

from .memory_net import MemoryClient, MemoryNet, N, T

SMALL = 4096
BIG = 6000


class _Observer(ServerObserver):
    def __init__(self) -> None:
        self.internal: list[tuple[str, BaseException]] = []
        self.finished: list[tuple[str, int]] = []
        self.failed_handshakes: list[int] = []

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.internal.append((where, exc))

    def request_finished(self, token: object, kind: str, error_code: int) -> None:
        self.finished.append((kind, error_code))

    def handshake_failed(self, error_code: int) -> None:
        self.failed_handshakes.append(error_code)


def _net(tmp_path: Path) -> tuple[MemoryNet, _Observer]:
    observer = _Observer()
    return MemoryNet(tmp_path, observer=observer), observer


def _messages(data: bytes) -> list[m.Message]:
    decoder, out = MessageDecoder(), []
    decoder.feed(data)
    while (msg := decoder.next_message()) is not None:
        out.append(msg)
    return out


@pytest.mark.parametrize("size", [0, 200, 600])
def test_a_hello_below_the_minimum_gets_an_error_and_the_close(tmp_path: Path, size: int) -> None:
    net, observer = _net(tmp_path)
    raw = net.client(raw=True)
    raw.quic.send_stream_data(0, encode(m.Hello(versions=[2], max_frame_size=size)))
    net.until(lambda: raw.terminated is not None)  # nothing escapes into the "runtime"
    assert raw.terminated is not None and raw.terminated.error_code == ErrorCode.INVALID_ARGUMENT
    (error,) = _messages(bytes(raw.received[0]))
    assert isinstance(error, m.Error) and error.code == ErrorCode.INVALID_ARGUMENT
    assert observer.failed_handshakes == [ErrorCode.INVALID_ARGUMENT]
    assert not observer.internal
    healthy = net.client()  # the broker goes on
    assert healthy.of(fe.Welcomed)


def _small(net: MemoryNet) -> MemoryClient:
    client = net.client(max_frame_size=SMALL)
    assert client.felix is not None
    return client


def _failure(client: MemoryClient, rid: int) -> fe.RequestFailed:
    (failed,) = [e for e in client.of(fe.RequestFailed) if e.request_id == rid]
    return failed


def test_replies_that_do_not_fit_are_answered_too_large(tmp_path: Path) -> None:
    net, observer = _net(tmp_path)
    net.broker.create("cache", T, N, "c", now=net.now)
    net.broker.cache_put(T, N, "c", "big", b"v" * BIG, now=net.now)
    for i in range(40):  # an AdminList answer of about 6 KiB
        net.broker.create(
            "stream", T, N, f"stream-with-a-long-name-{i:03d}" + "x" * 60, now=net.now
        )
    client = _small(net)
    felix = client.felix
    assert felix is not None
    get = felix.cache_get(T, N, "c", "big", now=net.now)
    listing = felix.admin(m.AdminList, kind="stream", tenant=T, namespace=N, now=net.now)
    net.until(lambda: len(client.of(fe.RequestFailed)) == 2)
    for rid in (get, listing):
        failed = _failure(client, rid)
        assert failed.code == ErrorCode.TOO_LARGE
        assert failed.details["max_frame_size"] == SMALL
    assert ("cache_get", ErrorCode.TOO_LARGE) in observer.finished
    assert ("admin_list", ErrorCode.TOO_LARGE) in observer.finished
    other = felix.cache_get(T, N, "c", "missing", now=net.now)  # the connection goes on
    net.until(lambda: any(e.request_id == other for e in client.of(fe.CacheValueReceived)))
    assert not observer.internal


def test_a_subscription_gets_batches_split_and_ends_at_a_record_that_fits_no_frame(
    tmp_path: Path,
) -> None:
    net, observer = _net(tmp_path)
    net.broker.create("stream", T, N, "s", now=net.now)
    medium = [bytes([65 + i]) * 1500 for i in range(4)]
    net.broker.publish(999, T, N, "s", [*medium, b"x" * BIG, b"after"], now=net.now)
    client = _small(net)
    felix = client.felix
    assert felix is not None
    felix.subscribe(T, N, "s", start=m.StartKind.EARLIEST, now=net.now)
    net.until(lambda: bool(client.of(fe.SubscriptionEnded)))
    (end,) = client.of(fe.SubscriptionEnded)
    assert end.reason == m.EndReason.ERROR and end.next_offset == 4
    assert "max_frame_size 4096" in end.message
    batches = client.of(fe.EventsReceived)
    assert len(batches) >= 2  # one 6 KiB batch became frames of at most 4 KiB
    assert [p for b in batches for p in b.batch.payloads] == medium
    net.broker.publish(999, T, N, "s", [b"later"], now=net.now)  # the engine forgot it
    net.settle()
    assert len(client.of(fe.EventsReceived)) == len(batches)
    assert not client.of(fe.ProtocolViolation)
    assert not observer.internal


def test_a_consumer_whose_delivery_fits_no_frame_ends_and_the_message_goes_elsewhere(
    tmp_path: Path,
) -> None:
    net, observer = _net(tmp_path)
    net.broker.create("queue", T, N, "q", now=net.now)
    client = _small(net)
    assert client.felix is not None
    client.felix.consume(T, N, "q", group="g", prefetch=4, now=net.now)
    net.until(lambda: bool(client.of(fe.ConsumerStarted)))
    net.broker.enqueue(999, T, N, "q", [b"q" * BIG], now=net.now)
    net.until(lambda: bool(client.of(fe.ConsumerEnded)))
    (end,) = client.of(fe.ConsumerEnded)
    assert end.reason == m.EndReason.ERROR and "max_frame_size" in end.message
    assert not client.of(fe.DeliveryReceived)
    other = net.client()
    assert other.felix is not None
    other.felix.consume(T, N, "q", group="g", now=net.now)
    net.until(lambda: bool(other.of(fe.DeliveryReceived)))
    assert other.of(fe.DeliveryReceived)[0].delivery.payload == b"q" * BIG
    assert not observer.internal


def test_frames_to_a_small_client_never_exceed_its_limit(tmp_path: Path) -> None:
    net, _ = _net(tmp_path)
    net.broker.create("stream", T, N, "s", now=net.now)
    net.broker.publish(999, T, N, "s", [b"r" * 1000] * 30, now=net.now)
    raw = net.client(raw=True)
    raw.quic.send_stream_data(0, encode(m.Hello(versions=[2], max_frame_size=SMALL)))
    net.until(lambda: bool(raw.received.get(0)))  # Welcome
    sub = m.Subscribe(request_id=1, tenant=T, namespace=N, stream="s", start=m.StartKind.EARLIEST)
    raw.quic.send_stream_data(4, encode(sub))
    net.until(lambda: sum(len(v) for k, v in raw.received.items() if k % 4 == 3) > 30_000)
    for data in raw.received.values():
        pos = 0
        while pos < len(data):
            length = int.from_bytes(data[pos + 8 : pos + 12], "big")
            assert length <= SMALL
            pos += HEADER_SIZE + length


def test_a_reply_that_raises_while_encoded_is_answered_internal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, observer = _net(tmp_path)
    net.broker.create("cache", T, N, "c", now=net.now)
    client = net.client()
    assert client.felix is not None

    def unencodable(msg: m.Message, done: Any) -> m.Message:
        rid = getattr(msg, "request_id", 0)
        return m.CacheValue(request_id=rid, found=True, value=b"v", ttl_remaining_ms=1 << 64)

    monkeypatch.setattr(session_module, "reply_to", unencodable)
    rid = client.felix.cache_get(T, N, "c", "k", now=net.now)
    net.until(lambda: bool(client.of(fe.RequestFailed)))
    assert _failure(client, rid).code == ErrorCode.INTERNAL
    assert [where for where, _ in observer.internal] == ["cache_get"]
    assert ("cache_get", ErrorCode.INTERNAL) in observer.finished


def test_the_broker_cannot_be_configured_below_the_minimum() -> None:
    with pytest.raises(ConfigError, match="max_frame_size"):
        TransportConfig(max_frame_size=SMALL - 1).validate()
    TransportConfig(max_frame_size=SMALL).validate()
