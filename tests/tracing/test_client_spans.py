"""OpenTelemetry spans of the client against a real broker (``broker`` from
``tests/conftest.py``), recorded by the SDK's in-memory exporter: a producer's span and the
consumer's span of the same record share a trace (W3C trace context in the record's
headers), with the messaging semantic conventions' attributes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from brokers import Broker
from brokers import unique_name as unique
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from felix_client import Client, NotFound, _tracing

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Clients made inside the test trace into an in-memory exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        _tracing.use_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
async def client(broker: Broker, exporter: InMemorySpanExporter) -> AsyncIterator[Client]:
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as c:
        yield c


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def check_messaging(span: ReadableSpan, operation: str, kind: str, destination: str) -> None:
    attrs = span.attributes or {}
    assert attrs["messaging.system"] == "felix"
    assert attrs["messaging.operation.name"] == operation
    assert attrs["messaging.operation.type"] == kind
    assert attrs["messaging.destination.name"] == destination
    assert attrs["felix.tenant"] == "default"
    assert attrs["felix.namespace"] == "default"


def check_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context is not None and parent.context is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


async def test_publish_and_subscribe_spans_are_linked(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    # A forwarded record's stale context is replaced by this publish's own.
    stale = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sent = await client.publish(stream, b"a", headers={"h": b"v", "traceparent": stale})
    assert sent is not None
    with anyio.fail_after(5):
        async with client.subscribe(stream, start="earliest") as sub:
            event = await sub.__anext__()
    assert event.headers is not None and event.headers["h"] == b"v"
    assert event.headers["traceparent"].startswith(b"00-")
    assert event.headers["traceparent"] != stale

    spans = list(exporter.get_finished_spans())
    publish = only(spans, f"publish {stream}")
    receive = only(spans, f"receive {stream}")
    assert publish.kind == SpanKind.PRODUCER and receive.kind == SpanKind.CONSUMER
    check_messaging(publish, "publish", "send", stream)
    check_messaging(receive, "receive", "receive", stream)
    assert (publish.attributes or {})["felix.offset"] == sent.first_offset
    assert (receive.attributes or {})["felix.offset"] == sent.first_offset
    check_child(receive, publish)
    assert publish.context is not None
    assert [link.context.span_id for link in receive.links] == [publish.context.span_id]


async def test_batch_publish_carries_one_context_per_record(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    stream = unique("s")
    await client.admin.create("stream", stream)
    await client.publish_batch(stream, [b"a", b"b"], headers=[None, {"h": b"v"}])
    with anyio.fail_after(5):
        async with client.subscribe(stream, start="earliest") as sub:
            events = [await sub.__anext__(), await sub.__anext__()]
    publish = only(list(exporter.get_finished_spans()), f"publish {stream}")
    assert (publish.attributes or {})["messaging.batch.message_count"] == 2
    receives = [s for s in exporter.get_finished_spans() if s.name == f"receive {stream}"]
    assert len(receives) == 2
    for span in receives:
        check_child(span, publish)
    assert events[1].headers is not None and events[1].headers["h"] == b"v"


async def test_enqueue_consume_and_ack_spans_form_one_trace(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, b"job")
    with anyio.fail_after(5):
        async with client.consume(queue) as consumer:
            msg = await consumer.__anext__()
            assert msg.attempt == 1
            await msg.ack_sync()

    spans = list(exporter.get_finished_spans())
    enqueue = only(spans, f"enqueue {queue}")
    receive = only(spans, f"receive {queue}")
    ack = only(spans, f"ack {queue}")
    assert enqueue.kind == SpanKind.PRODUCER
    assert receive.kind == SpanKind.CONSUMER and ack.kind == SpanKind.CLIENT
    check_messaging(enqueue, "enqueue", "send", queue)
    check_messaging(receive, "receive", "receive", queue)
    check_messaging(ack, "ack", "settle", queue)
    assert (receive.attributes or {})["messaging.message.delivery_attempt"] == 1
    check_child(receive, enqueue)
    check_child(ack, receive)


async def test_failed_publish_ends_its_span_with_the_error(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    stream = unique("missing")
    with pytest.raises(NotFound):
        await client.publish(stream, b"a")
    span = only(list(exporter.get_finished_spans()), f"publish {stream}")
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "NotFound"


async def test_without_a_tracer_provider_nothing_is_traced(broker: Broker) -> None:
    # No provider handed over and none set globally: the API's proxy makes no real spans,
    # so the client holds no tracer and leaves headers alone.
    async with Client(broker.url, ca_file=broker.ca_file, timeout=5.0) as client:
        assert client.tracer is None
        stream = unique("s")
        await client.admin.create("stream", stream)
        await client.publish(stream, b"a", headers={"h": b"v"})
        with anyio.fail_after(5):
            async with client.subscribe(stream, start="earliest") as sub:
                event = await sub.__anext__()
    assert event.headers == {"h": b"v"}


def test_without_the_api_there_is_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an install without the otel extra sees (the import of opentelemetry failed).
    _tracing.use_tracer_provider(TracerProvider())
    try:
        assert _tracing.tracer() is not None
        monkeypatch.setattr(_tracing.shared, "API", False)
        assert _tracing.tracer() is None
    finally:
        _tracing.use_tracer_provider(None)


def test_the_client_imports_and_runs_untraced_without_the_api() -> None:
    # A fresh interpreter in which importing opentelemetry fails, as without the otel extra.
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import felix_client, felix_client._tracing as t\n"
        "assert not t.shared.API and t.tracer() is None\n"
        "assert felix_client.Client('quic://127.0.0.1:1').tracer is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_cache_operations_get_client_spans(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    name = unique("c")
    await client.admin.create("cache", name)
    cache = client.cache(name)
    await cache.put("k", b"v")
    assert await cache.get("k") is not None
    assert await cache.get("absent") is None
    assert await cache.delete("k")
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith(f" {name}")]
    assert [s.name.split()[0] for s in spans] == ["put", "get", "get", "delete"]
    for span, op in zip(spans, ["put", "get", "get", "delete"], strict=True):
        assert span.kind == SpanKind.CLIENT
        attrs = span.attributes or {}
        assert attrs["messaging.system"] == "felix"
        assert attrs["messaging.operation.name"] == op
        assert attrs["messaging.destination.name"] == name
    assert [(s.attributes or {})["felix.cache.hit"] for s in spans[1:3]] == [True, False]


async def test_ack_many_and_nack_many_make_one_span_linked_to_every_receive(
    client: Client, exporter: InMemorySpanExporter
) -> None:
    queue = unique("q")
    await client.admin.create("queue", queue)
    await client.enqueue(queue, [b"a", b"b", b"c"])
    with anyio.fail_after(5):
        async with client.consume(queue, prefetch=8) as consumer:
            msgs = [await consumer.__anext__() for _ in range(3)]
            await consumer.nack_many(msgs[2:], wait=True)
            await consumer.ack_many(msgs[:2], wait=True)

    spans = list(exporter.get_finished_spans())
    receives = {s.context.span_id for s in spans if s.name == f"receive {queue}"}
    ack = only(spans, f"ack {queue}")
    nack = only(spans, f"nack {queue}")
    assert ack.kind == SpanKind.CLIENT and nack.kind == SpanKind.CLIENT
    check_messaging(ack, "ack", "settle", queue)
    check_messaging(nack, "nack", "settle", queue)
    assert (ack.attributes or {})["messaging.batch.message_count"] == 2
    assert (nack.attributes or {})["messaging.batch.message_count"] == 1
    assert ack.parent is None and nack.parent is None  # the messages may be many traces'
    assert len({link.context.span_id for link in ack.links}) == 2
    assert {link.context.span_id for link in [*ack.links, *nack.links]} <= receives
