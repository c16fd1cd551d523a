"""Client unit tests that need no network: URLs, errors, start positions, the publisher's
in-flight bound and the subscription's credit, gaps and resume (against fakes)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from felix_client import errors
from felix_client._local import check_headers, delay_ms, ttl_ms
from felix_client._streams import MAX_IDLE_SENDERS, Publisher, RecordBatch, Subscription
from felix_client._url import DEFAULT_PORT, parse_url
from felix_client.types import Event, Headers, PublishResult, Start
from felix_proto import events as ev
from felix_proto.errors import RETRYABLE, ErrorCode
from felix_proto.messages import AckMode, EventBatch, StartKind

# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("quic://127.0.0.1:7447", "127.0.0.1", 7447),
        ("quic://broker.example", "broker.example", DEFAULT_PORT),
        ("localhost:9000", "localhost", 9000),
        ("quic://[::1]:5000", "::1", 5000),
        ("  quic://h:1/ ", "h", 1),
    ],
)
def test_parse_url_accepts(url: str, host: str, port: int) -> None:
    addr = parse_url(url)
    assert (addr.host, addr.port) == (host, port)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://h:1",
        "quic://h:0",
        "quic://h:70000",
        "quic://h:x",
        "quic://h/path",
        "quic://u:p@h:1",
        "quic://:5",
        "quic://h:1?x=1",
    ],
)
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_url_round_trip() -> None:
    assert parse_url("quic://[::1]:5").url == "quic://[::1]:5"
    assert parse_url("h").url == f"quic://h:{DEFAULT_PORT}"


# ---------------------------------------------------------------------------- errors


def test_every_code_has_its_own_class() -> None:
    classes = {errors.error_class(code) for code in ErrorCode}
    assert len(classes) == len(ErrorCode)
    for code in ErrorCode:
        exc = errors.error_from_code(code, "boom", details={"x": 1})
        assert type(exc) is errors.error_class(code)
        assert isinstance(exc, errors.FelixError)
        assert exc.code == code
        assert exc.retryable == (code in RETRYABLE)
        assert exc.details == {"x": 1}
        assert str(exc) == f"{code.name}: boom"


def test_broker_retryable_flag_wins_and_unknown_codes_survive() -> None:
    assert errors.error_from_code(ErrorCode.NOT_FOUND, "m", retryable=True).retryable
    exc = errors.error_from_code(999, "future code")
    assert type(exc) is errors.FelixError
    assert exc.code == 999
    assert "code 999" in str(exc)


def test_local_errors_are_builtin_kinds_too() -> None:
    assert isinstance(errors.RequestTimeout("t"), TimeoutError)
    assert isinstance(errors.ConnectionLost("c"), ConnectionError)
    too_old = errors.error_from_code(ErrorCode.CURSOR_TOO_OLD, "old", details={"first_offset": 7})
    assert isinstance(too_old, errors.CursorTooOld)
    assert too_old.first_offset == 7


# -------------------------------------------------------------------- start positions


def test_start_coercion() -> None:
    assert Start.coerce("latest").kind == StartKind.LATEST
    assert Start.coerce("earliest").kind == StartKind.EARLIEST
    assert Start.coerce(42) == Start(StartKind.OFFSET, 42)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert Start.coerce(when) == Start(StartKind.TIMESTAMP, int(when.timestamp() * 1000))
    for bad in ("soon", -1, True):
        with pytest.raises(ValueError):
            Start.coerce(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- publisher


class FakeBroker:
    """Acks batches after a delay, recording the in-flight byte peak it saw."""

    def __init__(self, delay: float = 0.001, fail_at: int | None = None) -> None:
        self.delay = delay
        self.fail_at = fail_at
        self.in_flight = 0
        self.peak = 0
        self.batches: list[list[bytes]] = []
        self.next_offset = 0

    async def send(self, batch: RecordBatch, ack: AckMode) -> PublishResult | None:
        size = batch.size
        self.in_flight += size
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.delay)
            if self.fail_at is not None and len(self.batches) >= self.fail_at:
                raise errors.NotFound("stream x does not exist")
            self.batches.append(list(batch.payloads))
            first = self.next_offset
            self.next_offset += len(batch)
            return None if ack == AckMode.NONE else PublishResult(first, self.next_offset - 1)
        finally:
            self.in_flight -= size


@pytest.mark.anyio
async def test_publisher_bounds_in_flight_bytes_and_keeps_order() -> None:
    broker = FakeBroker()
    limit = 10_000
    async with Publisher(
        broker.send,
        max_batch_records=10,
        max_batch_bytes=2_000,
        max_in_flight_bytes=limit,
        linger=0.001,
    ) as pub:
        for i in range(500):
            await pub.publish(b"%05d" % i + b"." * 95)
            assert pub.in_flight_bytes <= limit
    assert broker.peak <= limit
    assert pub.peak_in_flight_bytes <= limit
    assert pub.acked_records == pub.sent_records == 500
    assert pub.last_offset == 499
    got = [p for batch in broker.batches for p in batch]
    assert len(got) == 500 and all(len(b) <= 10 for b in broker.batches)
    # acks may complete out of order, but every record went exactly once
    assert sorted(got) == [b"%05d" % i + b"." * 95 for i in range(500)]


@pytest.mark.anyio
async def test_publisher_linger_sends_partial_batch() -> None:
    broker = FakeBroker()
    async with Publisher(broker.send, max_batch_records=100, linger=0.01) as pub:
        await pub.publish(b"one")
        with anyio.fail_after(2):
            while not broker.batches:
                await anyio.sleep(0.005)
        assert broker.batches == [[b"one"]]


@pytest.mark.anyio
async def test_publisher_linger_counts_from_each_batch_first_record() -> None:
    broker = FakeBroker()
    async with Publisher(broker.send, max_batch_records=2, linger=0.05) as pub:
        for payload in (b"a", b"b", b"c"):  # a full batch goes at once, "c" lingers
            await pub.publish(payload)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert pub.sent_records == 2
        with anyio.fail_after(2):
            while pub.sent_records < 3:
                await anyio.sleep(0.005)
        await pub.publish(b"d")  # and the linger task goes on with the next batch
        with anyio.fail_after(2):
            while pub.sent_records < 4:
                await anyio.sleep(0.005)
        await anyio.sleep(0.2)  # quiet for longer than linger: the linger task idles
        await pub.publish(b"e")  # and the next batch's first record wakes it
        with anyio.fail_after(2):
            while pub.sent_records < 5:
                await anyio.sleep(0.005)
    assert broker.batches == [[b"a", b"b"], [b"c"], [b"d"], [b"e"]]


@pytest.mark.anyio
async def test_publisher_batches_keys_headers_and_text_as_columns() -> None:
    sent: list[tuple[list[bytes], Any, Any, int]] = []

    async def send(batch: RecordBatch, ack: AckMode) -> PublishResult | None:
        sent.append((list(batch.payloads), batch.keys, batch.headers, batch.size))
        return PublishResult(0, len(batch) - 1)

    async with Publisher(send, max_batch_records=4, linger=0) as pub:
        await pub.publish(b"a")
        await pub.publish(b"b", key=b"kk")
        await pub.publish("\u00e9", headers={"h": b"vvv"})  # type: ignore[arg-type]
        await pub.publish(b"d")
        await pub.publish(b"e")  # a batch of plain records again: no columns
    assert sent[0] == (
        [b"a", b"b", "\u00e9".encode(), b"d"],
        [None, b"kk", None, None],
        [None, None, {"h": b"vvv"}, None],
        1 + 1 + 2 + 2 + 1 + 3 + 1,
    )
    assert sent[1] == ([b"e"], None, None, 1)


@pytest.mark.anyio
async def test_publisher_reuses_its_sender_tasks() -> None:
    broker = FakeBroker()
    senders: set[int] = set()
    send = broker.send

    async def traced(batch: RecordBatch, ack: AckMode) -> PublishResult | None:
        senders.add(anyio.get_current_task().id)
        return await send(batch, ack)

    async with Publisher(traced, max_batch_records=2, linger=0) as pub:
        for i in range(20):
            await pub.publish(b"%d" % i)
            if i % 4 == 3:
                await pub.flush()  # every sender idles: the next batches reuse them
    assert pub.acked_records == 20
    assert len(senders) <= 2, senders  # a batch costs a wake-up, not a task


@pytest.mark.anyio
async def test_publisher_keeps_a_bounded_number_of_idle_senders() -> None:
    release = anyio.Event()
    waiting = [0]

    async def send(batch: RecordBatch, ack: AckMode) -> PublishResult | None:
        waiting[0] += 1
        await release.wait()  # every batch in flight at once: one sender each
        return None

    burst = MAX_IDLE_SENDERS + 20
    async with Publisher(send, max_batch_records=1, linger=0) as pub:
        for _ in range(burst):
            await pub.publish(b"x")
        with anyio.fail_after(2):
            while waiting[0] < burst:
                await anyio.lowlevel.checkpoint()
        release.set()
        await pub.flush()
        await anyio.wait_all_tasks_blocked()
        assert len(pub._idle) == MAX_IDLE_SENDERS  # the others ended with their batch
    assert pub.acked_records == burst


@pytest.mark.anyio
async def test_publisher_oversized_record_still_goes_alone() -> None:
    broker = FakeBroker()
    async with Publisher(broker.send, max_batch_bytes=10, max_in_flight_bytes=10) as pub:
        await pub.publish(b"x" * 100)
        await pub.publish(b"y" * 100)
    assert broker.batches == [[b"x" * 100], [b"y" * 100]]


@pytest.mark.anyio
async def test_publisher_surfaces_the_first_failure() -> None:
    class FailsWhenReleased(FakeBroker):
        """Fails the second batch only once the test says so (no race with the loop)."""

        def __init__(self) -> None:
            super().__init__(fail_at=1)
            self.calls = 0
            self.release = anyio.Event()
            self.failed = anyio.Event()

        async def send(self, batch: RecordBatch, ack: AckMode) -> PublishResult | None:
            self.calls += 1
            if self.calls == 1:
                return await super().send(batch, ack)
            await self.release.wait()  # every later batch: after the first has been acked
            try:
                return await super().send(batch, ack)
            finally:
                self.failed.set()

    broker = FailsWhenReleased()
    with pytest.raises(errors.NotFound):
        async with Publisher(broker.send, max_batch_records=1, linger=0) as pub:
            for i in range(50):
                await pub.publish(b"z")
                if i == 5:  # six publishes sent; now the second batch's ack fails
                    broker.release.set()
                    with anyio.fail_after(5):
                        await broker.failed.wait()
                    await anyio.wait_all_tasks_blocked()  # the publisher has the failure
    assert pub.sent_records == 6


@pytest.mark.anyio
async def test_publisher_retries_overloaded_then_gives_up() -> None:
    class Flaky(FakeBroker):
        refusals = 2

        async def send(self, batch: RecordBatch, ack: AckMode) -> PublishResult | None:
            if self.refusals:
                self.refusals -= 1
                raise errors.Overloaded("slow subscriber")
            return await super().send(batch, ack)

    broker = Flaky()
    async with Publisher(broker.send, max_batch_records=1, linger=0) as pub:
        await pub.publish(b"a")
    assert broker.batches == [[b"a"]] and pub.retries == 2
    broker = Flaky()
    broker.refusals = 100
    with pytest.raises(errors.Overloaded):
        async with Publisher(broker.send, linger=0, overload_retries=1) as pub:
            await pub.publish(b"b")


@pytest.mark.anyio
async def test_publisher_waits_the_retry_after_the_broker_names() -> None:
    class OverQuota(FakeBroker):
        refused = False

        async def send(self, batch: RecordBatch, ack: AckMode) -> PublishResult | None:
            if not self.refused:
                self.refused = True
                raise errors.Overloaded("over quota", details={"retry_after_ms": 200})
            return await super().send(batch, ack)

    broker = OverQuota()
    start = anyio.current_time()
    async with Publisher(broker.send, max_batch_records=1, linger=0) as pub:
        await pub.publish(b"a")
    assert anyio.current_time() - start >= 0.2  # not the first backoff step (10 ms)
    assert broker.batches == [[b"a"]] and pub.retries == 1


@pytest.mark.anyio
async def test_publisher_requires_async_with() -> None:
    pub = Publisher(FakeBroker().send)
    with pytest.raises(RuntimeError):
        await pub.publish(b"a")


# ---------------------------------------------------------------------- subscription


class FakeFeedBackend:
    """Hands out subscriptions whose inboxes the test fills by hand."""

    def __init__(self, reconnect: bool = False) -> None:
        self._reconnect = reconnect
        self.identity: tuple[int, int] | None = (1, 1000)
        """What ``log_identity`` answers; None: the stream is gone (NotFound)."""
        self.identity_reads = 0
        self.opened: list[Start] = []
        self.credits: list[tuple[int, int, int]] = []
        self.closed: list[int] = []
        self.inboxes: list[MemoryObjectSendStream[Any]] = []

    @property
    def reconnect(self) -> bool:
        return self._reconnect

    async def open_feed(
        self, kind: str, spec: dict[str, Any]
    ) -> tuple[object, ev.Event, MemoryObjectReceiveStream[Any]]:
        start = spec["start"]
        self.opened.append(start)
        send, receive = anyio.create_memory_object_stream[Any](100)
        self.inboxes.append(send)
        sid = len(self.opened)
        first = start.value if start.kind == StartKind.OFFSET else 0
        return (
            "conn",
            ev.SubscriptionStarted(request_id=sid, subscription_id=sid, first_offset=first),
            receive,
        )

    async def credit(self, conn: object, sub_id: int, messages: int, nbytes: int) -> None:
        self.credits.append((sub_id, messages, nbytes))

    async def close_feed(self, conn: object, kind: str, ident: int) -> None:
        self.closed.append(ident)

    async def settle(self, *args: object) -> None:
        raise AssertionError("not used")

    async def log_identity(self, spec: dict[str, Any]) -> tuple[int, int] | None:
        self.identity_reads += 1
        if self.identity is None:
            raise errors.NotFound("stream s not found")
        return self.identity


def _spec(credit: int = 4) -> dict[str, Any]:
    return {
        "tenant": "t",
        "namespace": "n",
        "stream": "s",
        "credit_messages": credit,
        "credit_bytes": 1 << 20,
        "source": "stream",
    }


def _batch(sid: int, base: int, n: int) -> ev.EventsReceived:
    return ev.EventsReceived(
        subscription_id=sid,
        batch=EventBatch(
            base_offset=base,
            payloads=[b"p%d" % (base + i) for i in range(n)],
            timestamps_ms=[1000 + base + i for i in range(n)],
        ),
    )


@pytest.mark.anyio
async def test_subscription_yields_events_gaps_and_returns_credit() -> None:
    backend = FakeFeedBackend()
    async with Subscription(backend, _spec(credit=4), Start.earliest()) as sub:
        inbox = backend.inboxes[0]
        await inbox.send(_batch(1, 0, 3))
        await inbox.send(ev.GapReported(subscription_id=1, missed=5, next_offset=8))
        await inbox.send(_batch(1, 8, 2))
        await inbox.send(ev.SubscriptionEnded(subscription_id=1, reason="unsubscribed"))
        got = [e async for e in sub]
    assert [e.offset for e in got] == [0, 1, 2, 8, 9]
    assert [e.gap_before for e in got] == [0, 0, 0, 5, 0]
    assert got[0].payload == b"p0" and got[0].timestamp_ms == 1000
    assert sub.missed == 5 and sub.next_offset == 10
    assert backend.credits and all(c[1] == 2 for c in backend.credits)  # half the window


@pytest.mark.anyio
async def test_a_read_cancelled_while_credit_is_returned_loses_no_record() -> None:
    class SlowCredit(FakeFeedBackend):
        async def credit(self, conn: object, sub_id: int, messages: int, nbytes: int) -> None:
            await anyio.sleep(0.05)  # the Credit frame's flush, slowed down
            await super().credit(conn, sub_id, messages, nbytes)

    backend = SlowCredit()
    async with Subscription(backend, _spec(credit=4), Start.earliest()) as sub:
        await backend.inboxes[0].send(_batch(1, 0, 4))
        got = [(await sub.__anext__()).offset for _ in range(2)]  # half the credit: due
        with anyio.move_on_after(0.01):  # cancelled while the top-up waits
            got.append((await sub.__anext__()).offset)
        assert sub.next_offset == 2  # nothing was taken by the cancelled read
        got += [(await sub.__anext__()).offset for _ in range(2)]
    assert got == [0, 1, 2, 3]


@pytest.mark.anyio
async def test_subscription_events_carry_every_field_and_are_immutable() -> None:
    backend = FakeFeedBackend()
    async with Subscription(backend, _spec(credit=100), Start.earliest()) as sub:
        inbox = backend.inboxes[0]
        await inbox.send(ev.GapReported(subscription_id=1, missed=2, next_offset=7))
        await inbox.send(
            ev.EventsReceived(
                subscription_id=1,
                batch=EventBatch(
                    base_offset=7,
                    payloads=[b"a", b"b"],
                    timestamps_ms=[1500, 1501],
                    keys=[b"k", None],
                    headers=[None, {"h": b"v"}],
                ),
            )
        )
        await inbox.send(
            ev.EventsReceived(subscription_id=1, batch=EventBatch(base_offset=9, payloads=[b"c"]))
        )
        await inbox.send(ev.SubscriptionEnded(subscription_id=1, reason="unsubscribed"))
        got = [e async for e in sub]
    assert got == [
        Event(offset=7, payload=b"a", timestamp_ms=1500, key=b"k", gap_before=2),
        Event(offset=8, payload=b"b", timestamp_ms=1501, headers={"h": b"v"}),
        Event(offset=9, payload=b"c", timestamp_ms=0),
    ]
    first = got[0]
    assert type(first) is Event
    assert (first.offset, first.payload, first.timestamp_ms) == (7, b"a", 1500)
    assert (first.key, first.headers, first.gap_before) == (b"k", None, 2)
    assert first.timestamp == 1.5 and got[1].headers == {"h": b"v"}
    assert repr(got[2]) == (
        "Event(offset=9, payload=b'c', timestamp_ms=0, key=None, headers=None, gap_before=0)"
    )
    for name in ("offset", "payload", "timestamp_ms", "key", "headers", "gap_before", "extra"):
        with pytest.raises(AttributeError):
            setattr(first, name, 1)
    assert first._replace(gap_before=0).gap_before == 0 and first.gap_before == 2
    with_headers = got[1]
    assert hash(with_headers) == hash(Event(8, b"b", 1501, headers=Headers({"h": b"v"})))
    assert len(set(got)) == 3 and {with_headers: 1}[with_headers._replace()] == 1


def test_headers_read_like_a_dict_and_cannot_change() -> None:
    headers = Headers({"a": b"1", "b": b"2"})
    assert headers == {"a": b"1", "b": b"2"} and isinstance(headers, dict)
    assert headers["a"] == b"1" and dict(headers) == {"a": b"1", "b": b"2"}
    assert hash(headers) == hash(Headers({"b": b"2", "a": b"1"}))
    assert pickle.loads(pickle.dumps(headers)) == headers
    assert copy.copy(headers) == headers and copy.deepcopy(headers) == headers
    changes: list[Callable[[], object]] = [
        lambda: headers.__setitem__("c", b"3"),
        lambda: headers.__delitem__("a"),
        headers.clear,
        lambda: headers.pop("a"),
        headers.popitem,
        lambda: headers.setdefault("c", b"3"),
        lambda: headers.update(c=b"3"),
    ]
    for change in changes:
        with pytest.raises(TypeError):
            change()
    assert headers == {"a": b"1", "b": b"2"}


def test_the_documented_error_classes_are_exported() -> None:
    import felix_client

    for name in (
        "BadFrameError",
        "UnsupportedVersionError",
        "UnknownMessage",
        "UnexpectedMessage",
        "InternalError",
        "ErrorCode",
        "Headers",
    ):
        assert name in felix_client.__all__ and hasattr(felix_client, name)
    for cls in set(errors.__all__) - {"error_class", "error_from_code"}:
        assert getattr(felix_client, cls) is getattr(errors, cls)


# ----------------------------------------------------------------- local arguments


@pytest.mark.parametrize(
    ("seconds", "wire"),
    [(None, None), (0, 0), (0.0, 0), (0.0004, 1), (1e-9, 1), (0.0015, 2), (0.3, 300), (60, 60_000)],
)
def test_a_positive_ttl_is_at_least_one_millisecond(seconds: float | None, wire: int) -> None:
    assert ttl_ms(seconds) == wire


@pytest.mark.parametrize(
    "bad", [-1, -0.0001, float("inf"), float("-inf"), float("nan"), 2.0**64, "60", True]
)
def test_a_bad_ttl_or_delay_is_invalid_argument(bad: Any) -> None:
    with pytest.raises(errors.InvalidArgument):
        ttl_ms(bad)
    with pytest.raises(errors.InvalidArgument):
        delay_ms(bad)


@pytest.mark.parametrize("bad", [{"h": "text"}, {"h": 1}, {1: b"v"}, [("h", b"v")]])
def test_header_types_are_checked(bad: Any) -> None:
    with pytest.raises(errors.InvalidArgument):
        check_headers(bad)
    check_headers({"h": b"v"})
    check_headers(None)


@pytest.mark.anyio
async def test_subscription_abnormal_end_raises_typed_error() -> None:
    backend = FakeFeedBackend()
    async with Subscription(backend, _spec(), Start.latest()) as sub:
        await backend.inboxes[0].send(
            ev.SubscriptionEnded(subscription_id=1, reason="deleted", message="stream deleted")
        )
        with pytest.raises(errors.NotFound, match="stream deleted"):
            await anext(sub)


@pytest.mark.anyio
async def test_subscription_resumes_from_last_offset_when_reconnecting() -> None:
    backend = FakeFeedBackend(reconnect=True)
    async with Subscription(backend, _spec(credit=100), Start.earliest()) as sub:
        await backend.inboxes[0].send(_batch(1, 0, 3))
        assert (await anext(sub)).offset == 0
        assert (await anext(sub)).offset == 1
        await backend.inboxes[0].aclose()  # connection lost; offset 2 is still pending
        assert (await anext(sub)).offset == 2
        assert len(backend.opened) == 1
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def feed_resumed() -> None:
                    while len(backend.inboxes) < 2:
                        await anyio.sleep(0.001)
                    await backend.inboxes[1].send(_batch(2, 3, 1))

                tg.start_soon(feed_resumed)
                event = await anext(sub)
        assert event.offset == 3
        assert backend.opened[1] == Start.offset(3)
        assert sub.resumes == 1
        assert backend.identity_reads == 2  # at the start, and before resuming


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("identity", "needle"), [(None, "no longer exists"), ((2, 5000), "re-created")]
)
async def test_subscription_does_not_resume_into_another_log(
    identity: tuple[int, int] | None, needle: str
) -> None:
    backend = FakeFeedBackend(reconnect=True)
    async with Subscription(backend, _spec(credit=100), Start.earliest()) as sub:
        assert sub.log_identity == (1, 1000)
        await backend.inboxes[0].send(_batch(1, 0, 2))
        assert [(await anext(sub)).offset for _ in range(2)] == [0, 1]
        backend.identity = identity  # the broker restarted (and the stream was re-created)
        await backend.inboxes[0].aclose()
        with anyio.fail_after(2), pytest.raises(errors.NotFound, match=needle):
            await anext(sub)
        assert len(backend.opened) == 1 and sub.resumes == 0
        with pytest.raises(StopAsyncIteration):
            await anext(sub)


@pytest.mark.anyio
async def test_subscription_whose_identity_cannot_be_read_leaves_nothing_behind() -> None:
    backend = FakeFeedBackend(reconnect=True)
    backend.identity = None  # deleted between Subscribe and describe
    sub = Subscription(backend, _spec(), Start.earliest())
    with pytest.raises(errors.NotFound):
        await sub.open()
    assert backend.closed == [1]
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


@pytest.mark.anyio
async def test_subscription_without_reconnect_raises_connection_lost() -> None:
    backend = FakeFeedBackend()
    async with Subscription(backend, _spec(), Start.latest()) as sub:
        await backend.inboxes[0].aclose()
        with pytest.raises(errors.ConnectionLost):
            await anext(sub)


def test_the_broker_url_defaults_to_felix_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the CLI: no URL given -> $FELIX_SERVER, else quic://127.0.0.1:7447."""
    from felix_client import Client

    monkeypatch.delenv("FELIX_SERVER", raising=False)
    assert Client().address.url == "quic://127.0.0.1:7447"
    monkeypatch.setenv("FELIX_SERVER", "quic://[::1]:9001")
    assert Client().address.url == "quic://[::1]:9001"
    assert Client("quic://127.0.0.1:7000").address.url == "quic://127.0.0.1:7000"
