"""The broker's OpenTelemetry spans, from an in-process asyncio broker
(``felix_runtime_asyncio.app.BrokerProcess``) traced into the SDK's in-memory exporter: an
accepted publish or enqueue gives an ``append`` span that is a child of the client's
producer span (its W3C trace context read from the record headers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import unique_name
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from felix_client import Client, _tracing
from felix_runtime import tracing
from felix_runtime.prometheus import PrometheusObserver
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
