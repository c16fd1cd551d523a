"""OpenTelemetry traces of the client's messaging calls (optional: ``pip install felix[otel]``).

Spans follow the OpenTelemetry messaging semantic conventions (``messaging.system`` is
``felix``): a PRODUCER span per publish or enqueue call, a CONSUMER span per record a
subscription hands out and per queue message a consumer receives, a CLIENT span per ack or
nack and per cache operation. The producer's W3C trace context (``traceparent`` and
``tracestate``, through the globally configured propagator) is written into every record's
headers, so the consumer's span is a child of the producer's span and links to it.

The tracer is chosen once, when a :class:`~felix_client.client.Client` is made: with no
``opentelemetry-api`` installed, or no tracer provider configured (the API's default proxy),
the client holds ``None`` and every hook is one ``is None`` test. Configure the SDK (or run
under ``opentelemetry-instrument``, which reads the standard ``OTEL_*`` variables) before
creating the client, or hand a provider to :func:`use_tracer_provider`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter, Setter
    from opentelemetry.trace import Link, SpanKind, StatusCode

    class _BytesSetter(Setter[dict[str, bytes]]):
        """Writes propagation fields into record headers (``str`` names, ``bytes``)."""

        def set(self, carrier: dict[str, bytes], key: str, value: str) -> None:
            carrier[key] = value.encode()

    class _BytesGetter(Getter[Mapping[str, bytes]]):
        """Reads propagation fields from record headers."""

        def get(self, carrier: Mapping[str, bytes], key: str) -> list[str] | None:
            value = carrier.get(key)
            return None if value is None else [value.decode("ascii", "replace")]

        def keys(self, carrier: Mapping[str, bytes]) -> list[str]:
            return list(carrier)

    _SETTER = _BytesSetter()
    _GETTER = _BytesGetter()
    API = True
    """Whether ``opentelemetry-api`` is installed."""
except ImportError:  # the otel extra is not installed: tracing is off
    API = False

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "SYSTEM",
    "Delivered",
    "consumer_span",
    "finish",
    "operation_span",
    "send_span",
    "tracer",
    "use_tracer_provider",
]

SYSTEM = "felix"
"""The ``messaging.system`` attribute of every Felix span."""

_provider: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace clients made from now on with ``provider`` (None: the global provider again),
    like the ``tracer_provider`` argument of OpenTelemetry's instrumentations."""
    global _provider
    _provider = provider


def tracer() -> Tracer | None:
    """The Felix tracer, or None when the API is missing or no provider is configured (the
    API's proxy and no-op providers would only make non-recording spans)."""
    if not API:
        return None
    provider = _provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    from . import __version__

    return provider.get_tracer("felix_client", __version__)


def _attributes(
    operation: str, kind: str | None, destination: str, tenant: str, namespace: str
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "felix.tenant": tenant,
        "felix.namespace": namespace,
    }
    if kind is not None:  # messaging's operation types do not cover cache operations
        attributes["messaging.operation.type"] = kind
    return attributes


def send_span(
    tr: Tracer,
    operation: str,
    destination: str,
    tenant: str,
    namespace: str,
    headers: Sequence[dict[str, bytes] | None] | None,
    count: int,
) -> tuple[Span, list[dict[str, bytes] | None]]:
    """Start the PRODUCER span of a publish or enqueue of ``count`` records.

    Returns:
        The span, and the records' headers with its trace context added (copies: the
        caller's dicts are left alone).
    """
    attributes = _attributes(operation, "send", destination, tenant, namespace)
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    span = tr.start_span(
        f"{operation} {destination}", kind=SpanKind.PRODUCER, attributes=attributes
    )
    carrier: dict[str, bytes] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span), setter=_SETTER)
    given = list(headers) if headers is not None else [None] * count
    return span, [carrier | h if h else dict(carrier) for h in given]


def finish(span: Span, exc: BaseException | None, first_offset: int | None = None) -> None:
    """End a span, with the error that ended its operation or the offset it produced."""
    if exc is not None:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        span.set_attribute("error.type", type(exc).__name__)
    elif first_offset is not None:
        span.set_attribute("felix.offset", first_offset)
    span.end()


Delivered = tuple["Tracer", "Context", str, str, str]
"""What a received queue message keeps for its ack's span: tracer, the receive span's
context, queue, tenant, namespace."""


def consumer_span(
    tr: Tracer,
    destination: str,
    tenant: str,
    namespace: str,
    headers: Mapping[str, bytes] | None,
    offset: int,
    attempt: int | None = None,
) -> Context:
    """Record the CONSUMER span of one record handed to the application: a child of the
    producer's span (its context read from the record's headers) that also links to it.

    Returns:
        The span's context (a queue message's ack span is its child).
    """
    parent = propagate.extract(headers, getter=_GETTER) if headers else None
    links = []
    if parent is not None:
        producer = trace.get_current_span(parent).get_span_context()
        if producer.is_valid:
            links.append(Link(producer))
    attributes = _attributes("receive", "receive", destination, tenant, namespace)
    attributes["felix.offset"] = offset
    if attempt is not None:
        attributes["messaging.message.delivery_attempt"] = attempt
    span = tr.start_span(
        f"receive {destination}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    span.end()
    return trace.set_span_in_context(span)


def operation_span(
    tr: Tracer,
    operation: str,
    kind: str | None,
    destination: str,
    tenant: str,
    namespace: str,
    parent: Context | None = None,
) -> Span:
    """Start a CLIENT span (an ack or nack: ``kind`` ``settle``; a cache operation: no
    messaging operation type); end it with :func:`finish`."""
    return tr.start_span(
        f"{operation} {destination}",
        context=parent,
        kind=SpanKind.CLIENT,
        attributes=_attributes(operation, kind, destination, tenant, namespace),
    )
