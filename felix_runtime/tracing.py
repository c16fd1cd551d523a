"""OpenTelemetry traces of the broker, and what the client's traces share with them.

Optional (``pip install felix[otel]``): without ``opentelemetry-api``, or without a tracer
provider configured (the API's default proxy makes only non-recording spans), nothing is
traced and :func:`broker_tracer` is None. The exporter is the SDK's business: run the broker
under ``opentelemetry-instrument`` (it reads the standard ``OTEL_*`` variables) or configure
the SDK in the process that embeds the broker.

W3C trace context (``traceparent``, ``tracestate``, through the globally configured
propagator) travels in record headers: header names are ``str``, values ``bytes``. The
broker makes three kinds of span, one per batch (never one per record):

- ``append {name}`` (SERVER): an accepted publish or enqueue;
- ``deliver {name}`` (PRODUCER, ``messaging.operation.type`` ``send``): an event batch
  written to a subscription, or queue deliveries written to a consumer in one frame;
- ``ack {queue}`` / ``nack {queue}`` (SERVER, ``settle``): an accepted ack or nack (no
  parent or links: the broker keeps no delivery's trace context).

An ``append`` or ``deliver`` span is a child of the producer span in the first traced
record's headers and links to the producer spans of the batch's records: only the first
:data:`MAX_TRACED_RECORDS` records that carry headers are read, so a batch costs at most
that many context extractions however large it is (``messaging.batch.message_count``
still counts every record). Attributes follow the OpenTelemetry messaging semantic
conventions, with ``messaging.system`` = ``felix``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter, Setter
    from opentelemetry.trace import Link, SpanKind

    class _HeaderSetter(Setter[dict[str, bytes]]):
        """Writes propagation fields into record headers (``str`` names, ``bytes``)."""

        def set(self, carrier: dict[str, bytes], key: str, value: str) -> None:
            carrier[key] = value.encode()

    class _HeaderGetter(Getter[Mapping[str, bytes]]):
        """Reads propagation fields from record headers."""

        def get(self, carrier: Mapping[str, bytes], key: str) -> list[str] | None:
            value = carrier.get(key)
            return None if value is None else [value.decode("ascii", "replace")]

        def keys(self, carrier: Mapping[str, bytes]) -> list[str]:
            return list(carrier)

    HEADER_SETTER = _HeaderSetter()
    HEADER_GETTER = _HeaderGetter()
    API = True
    """Whether ``opentelemetry-api`` is installed."""
except ImportError:  # the otel extra is not installed: tracing is off
    API = False

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "API",
    "MAX_TRACED_RECORDS",
    "SYSTEM",
    "BrokerTracer",
    "broker_tracer",
    "configured_tracer",
    "messaging_attributes",
    "producer_context",
    "use_tracer_provider",
]

SYSTEM = "felix"
"""The ``messaging.system`` attribute of every Felix span."""

MAX_TRACED_RECORDS = 32
"""A broker span reads the trace context of at most this many records of its batch (the
first ones with headers): its parent and links come from those."""

_provider: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace brokers started from now on with ``provider`` (None: the global provider
    again), like the ``tracer_provider`` argument of OpenTelemetry's instrumentations."""
    global _provider
    _provider = provider


def configured_tracer(
    provider: TracerProvider | None, name: str, version: str | None
) -> Tracer | None:
    """A tracer of ``provider`` (default: the global one), or None when the API is missing or
    no real provider is configured."""
    if not API:
        return None
    chosen = provider or trace.get_tracer_provider()
    if isinstance(chosen, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return chosen.get_tracer(name, version)


def messaging_attributes(
    operation: str, kind: str | None, destination: str, tenant: str, namespace: str
) -> dict[str, Any]:
    """The messaging semantic conventions' attributes of one Felix operation (``kind``: the
    ``messaging.operation.type``, None where none fits, as for cache operations)."""
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "felix.tenant": tenant,
        "felix.namespace": namespace,
    }
    if kind is not None:
        attributes["messaging.operation.type"] = kind
    return attributes


def producer_context(headers: Mapping[str, bytes] | None) -> Context | None:
    """The trace context a producer wrote into a record's headers (None: no headers)."""
    if not headers:
        return None
    return propagate.extract(headers, getter=HEADER_GETTER)


def links_to(contexts: Sequence[Context | None]) -> list[Link]:
    """One link per distinct valid span context among ``contexts``."""
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for context in contexts:
        if context is None:
            continue
        span_context = trace.get_current_span(context).get_span_context()
        ident = (span_context.trace_id, span_context.span_id)
        if span_context.is_valid and ident not in seen:
            seen.add(ident)
            links.append(Link(span_context))
    return links


def batch_contexts(headers: Sequence[Mapping[str, bytes] | None]) -> list[Context | None]:
    """The producer contexts of the first :data:`MAX_TRACED_RECORDS` records with headers."""
    contexts: list[Context | None] = []
    for h in headers:
        if h:
            contexts.append(producer_context(h))
            if len(contexts) == MAX_TRACED_RECORDS:
                break
    return contexts


class BrokerTracer:
    """Makes the broker's spans from what the observer hook reports."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def appended(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
    ) -> None:
        """One accepted publish (``source`` ``stream``) or enqueue (``queue``) of
        ``len(headers)`` records: a SERVER span, child of the first traced record's producer
        span, linked to the traced records' (see :data:`MAX_TRACED_RECORDS`)."""
        self._batch_span("append", None, SpanKind.SERVER, source, tenant, namespace, name, headers)

    def dispatched(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
        first_offset: int,
    ) -> None:
        """One batch of ``len(headers)`` records from ``first_offset`` on written to a
        subscription (``source`` ``stream``) or a consumer (``queue``): a PRODUCER span,
        child of the first traced record's producer span, linked to the traced records'."""
        self._batch_span(
            "deliver",
            "send",
            SpanKind.PRODUCER,
            source,
            tenant,
            namespace,
            name,
            headers,
            {"felix.offset": first_offset},
        )

    def settled(
        self, operation: str, tenant: str, namespace: str, queue: str, deliveries: int
    ) -> None:
        """An accepted ``ack`` or ``nack`` of ``deliveries`` deliveries: a SERVER span."""
        attributes = messaging_attributes(operation, "settle", queue, tenant, namespace)
        if deliveries > 1:
            attributes["messaging.batch.message_count"] = deliveries
        span = self.tracer.start_span(
            f"{operation} {queue}", kind=SpanKind.SERVER, attributes=attributes
        )
        span.end()

    def _batch_span(
        self,
        operation: str,
        kind: str | None,
        span_kind: SpanKind,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        contexts = batch_contexts(headers)
        attributes = messaging_attributes(operation, kind, name, tenant, namespace)
        attributes["felix.source"] = source
        if len(headers) > 1:
            attributes["messaging.batch.message_count"] = len(headers)
        if extra:
            attributes.update(extra)
        span = self.tracer.start_span(
            f"{operation} {name}",
            context=contexts[0] if contexts else None,
            kind=span_kind,
            attributes=attributes,
            links=links_to(contexts),
        )
        span.end()


def broker_tracer() -> BrokerTracer | None:
    """The broker's tracer, or None (no API, no configured provider): nothing is traced."""
    tracer = configured_tracer(_provider, "felix_server", None)
    return None if tracer is None else BrokerTracer(tracer)
