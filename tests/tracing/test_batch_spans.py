"""The broker's per-batch spans, without a network: a batch reads the trace context of at
most ``MAX_TRACED_RECORDS`` records, and what a session remembers for its trace reports
(each open feed's resource) stays bounded as feeds come and go."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from felix_core.log import LogSlice
from felix_proto import messages as m
from felix_runtime.tracing import MAX_TRACED_RECORDS, BrokerTracer
from felix_server.feed_traces import FeedTraces
from felix_server.observer import ServerObserver
from felix_server.outbox import FeedKey


def traceparent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{i + 1:016x}-01".encode()


def test_a_large_batch_links_to_the_first_traced_records_only() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = BrokerTracer(provider.get_tracer("test"))
    headers: list[dict[str, bytes] | None] = [None]  # an untraced record first
    headers += [{"traceparent": traceparent(i)} for i in range(100)]
    tracer.dispatched("stream", "t", "ns", "s", headers, 7)
    (span,) = memory.get_finished_spans()
    assert span.name == "deliver s" and span.kind == SpanKind.PRODUCER
    attrs = span.attributes or {}
    assert attrs["messaging.batch.message_count"] == 101
    assert attrs["felix.offset"] == 7
    assert [link.context.span_id for link in span.links] == list(range(1, MAX_TRACED_RECORDS + 1))
    assert span.parent is not None and span.parent.span_id == 1  # the first traced record


class Reports(ServerObserver):
    traces = True

    def __init__(self) -> None:
        self.dispatches: list[tuple[str, str, str, str, int, int]] = []
        self.settles: list[tuple[str, str, int]] = []

    def dispatched(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
        first_offset: int,
    ) -> None:
        self.dispatches.append((source, tenant, namespace, name, len(headers), first_offset))

    def settled(
        self, operation: str, tenant: str, namespace: str, queue: str, deliveries: int
    ) -> None:
        self.settles.append((operation, queue, deliveries))


def test_feed_names_are_reported_and_bounded() -> None:
    reports = Reports()
    open_feeds: set[FeedKey] = set()
    traces = FeedTraces(reports, open_feeds.__contains__)
    for sid in range(1000):  # subscriptions open and close, three open at a time
        sub = m.Subscribe(request_id=sid, tenant="t", namespace="ns", stream=f"s{sid}")
        traces.request_done(sub, m.Subscribed(request_id=sid, subscription_id=sid, first_offset=0))
        open_feeds.add((True, sid))
        open_feeds.discard((True, sid - 3))
        assert len(traces) <= 2 * 3 + 16
    consume = m.Consume(request_id=1, tenant="t", namespace="ns", queue="q")
    traces.request_done(consume, m.Consuming(request_id=1, consumer_id=5))

    traces.stream_batch(999, LogSlice(4, [b"a", b"b"], [0, 0], None, None, 2))
    traces.stream_batch(12345, LogSlice(0, [b"a"], [0], None, None, 1))  # unknown: no report
    assert reports.dispatches == [("stream", "t", "ns", "s999", 2, 4)]
    traces.request_done(m.Ack(consumer_id=5, delivery_ids=[1, 2]), None)
    traces.request_done(m.Nack(consumer_id=5, delivery_ids=[3]), None)
    assert reports.settles == [("ack", "q", 2), ("nack", "q", 1)]
