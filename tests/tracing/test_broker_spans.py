"""The broker's OpenTelemetry spans, from an in-process broker traced into the SDK's
in-memory exporter: the asyncio runtime (``felix_runtime_asyncio.app.BrokerProcess``) and
the anyio runtime on trio. An accepted publish or enqueue gives an ``append`` span, a batch
written to a subscription or consumer a ``deliver`` span: each a child of the client's
producer span (its W3C trace context read from the record headers) and linked to the
producer spans of its records; an ack gives an ``ack`` span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from brokers import unique_name
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from felix_client import Client, _tracing
from felix_runtime import tracing
from felix_runtime.prometheus import PrometheusObserver
from felix_runtime.storage import build_server, open_storage
from felix_runtime.tls_server import ServerTls
from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_runtime_asyncio.app import BrokerProcess
from felix_server.config import ServerConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """BrokerProcess is the asyncio runtime's in-process broker."""
    return "asyncio"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Brokers and clients made inside the test trace into one in-memory exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    _tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_tracer_provider(None)
        _tracing.use_tracer_provider(None)
        provider.shutdown()


@asynccontextmanager
async def traced_broker(tmp_path: Path, backend: str) -> AsyncIterator[tuple[str, str]]:
    """A broker in this process on ``backend``'s runtime (asyncio: ``BrokerProcess``;
    trio: the anyio runtime, assembled as its ``run`` does, without the signals); yields
    its URL and CA file."""
    config = ServerConfig(
        listen="127.0.0.1:0", metrics="127.0.0.1:0", data_dir=str(tmp_path / "data")
    )
    if backend == "asyncio":
        proc = await BrokerProcess(config).start()
        try:
            yield f"quic://127.0.0.1:{proc.address[1]}", str(proc.cert_path)
        finally:
            await proc.shutdown()
            await proc.close()
        return
    tls = ServerTls(config)
    observer = PrometheusObserver()
    storage = open_storage(config)
    server, _ = build_server(
        config, tls.configuration, storage, observer, connection_factory=tls.connection_factory
    )
    runtime = AnyioUdpRuntime(server)
    _, port = runtime.bind("127.0.0.1", 0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runtime.serve)
            yield f"quic://127.0.0.1:{port}", str(tls.cert_path)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runtime.close_storage()
        storage.close()
        runtime.close()


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def check_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context is not None and parent.context is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


async def test_append_spans_are_children_of_the_producer_spans(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0", metrics="127.0.0.1:0", data_dir=str(tmp_path / "data")
    )
    proc = await BrokerProcess(config).start()
    stream, queue = unique_name("s"), unique_name("q")
    try:
        url = f"quic://127.0.0.1:{proc.address[1]}"
        async with Client(url, ca_file=str(proc.cert_path), timeout=5.0) as client:
            await client.admin.create("stream", stream)
            await client.admin.create("queue", queue)
            await client.publish_batch(stream, [b"a", b"b"])
            await client.enqueue(queue, b"job")
    finally:
        await proc.shutdown()
        await proc.close()

    spans = list(exporter.get_finished_spans())
    publish, enqueue = only(spans, f"publish {stream}"), only(spans, f"enqueue {queue}")
    appended = only(spans, f"append {stream}")
    assert appended.kind == SpanKind.SERVER
    attrs = appended.attributes or {}
    assert attrs["messaging.system"] == "felix"
    assert attrs["messaging.operation.name"] == "append"
    assert attrs["messaging.destination.name"] == stream
    assert attrs["messaging.batch.message_count"] == 2
    assert attrs["felix.source"] == "stream"
    check_child(appended, publish)
    assert publish.context is not None
    assert [link.context.span_id for link in appended.links] == [publish.context.span_id]
    to_queue = only(spans, f"append {queue}")
    assert (to_queue.attributes or {})["felix.source"] == "queue"
    check_child(to_queue, enqueue)


def test_an_untraced_broker_is_not_asked_for_headers() -> None:
    # No provider configured: the observer declines the per-append call altogether.
    observer = PrometheusObserver()
    assert observer.tracing is None and not observer.traces


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_deliver_spans_link_to_the_producers(
    tmp_path: Path, exporter: InMemorySpanExporter, anyio_backend: str
) -> None:
    stream, queue = unique_name("s"), unique_name("q")
    async with (
        traced_broker(tmp_path, anyio_backend) as (url, ca_file),
        Client(url, ca_file=ca_file, timeout=5.0) as client,
    ):
        await client.admin.create("stream", stream)
        await client.admin.create("queue", queue)
        await client.publish(stream, b"a")
        await client.publish(stream, b"b")
        await client.publish(stream, b"c", headers={"h": b"v"})
        await client.enqueue(queue, b"job")
        with anyio.fail_after(5):
            async with client.subscribe(stream, start="earliest") as sub:
                for _ in range(3):
                    await sub.__anext__()
            async with client.consume(queue) as consumer:
                msg = await consumer.__anext__()
                await msg.ack_sync()

    spans = list(exporter.get_finished_spans())
    publishes = [s for s in spans if s.name == f"publish {stream}"]
    assert len(publishes) == 3
    delivers = [s for s in spans if s.name == f"deliver {stream}"]
    assert delivers, [s.name for s in spans]
    first = min(delivers, key=lambda s: (s.attributes or {})["felix.offset"])
    assert first.kind == SpanKind.PRODUCER
    attrs = first.attributes or {}
    assert attrs["messaging.operation.name"] == "deliver"
    assert attrs["messaging.operation.type"] == "send"
    assert attrs["messaging.destination.name"] == stream
    assert attrs["felix.source"] == "stream" and attrs["felix.offset"] == 0
    check_child(first, publishes[0])
    # One span per batch, linked to each record's producer span (the client writes its
    # publish span's context into every record it sends).
    linked = {link.context.span_id for d in delivers for link in d.links}
    assert linked == {p.context.span_id for p in publishes if p.context is not None}
    counted = sum((d.attributes or {}).get("messaging.batch.message_count", 1) for d in delivers)
    assert counted == 3

    enqueue = only(spans, f"enqueue {queue}")
    to_consumer = only(spans, f"deliver {queue}")
    assert (to_consumer.attributes or {})["felix.source"] == "queue"
    check_child(to_consumer, enqueue)
    assert enqueue.context is not None
    assert [link.context.span_id for link in to_consumer.links] == [enqueue.context.span_id]
    acked = [s for s in spans if s.name == f"ack {queue}" and s.kind == SpanKind.SERVER]
    assert len(acked) == 1
    assert (acked[0].attributes or {})["messaging.operation.type"] == "settle"
