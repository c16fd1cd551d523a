"""OpenTelemetry traces of the broker, and what the client's traces share with them.

Optional (``pip install felix[otel]``): without ``opentelemetry-api``, or without a tracer
provider configured (the API's default proxy makes only non-recording spans), nothing is
traced and :func:`broker_tracer` is None. The exporter is the SDK's business: run the broker
under ``opentelemetry-instrument`` (it reads the standard ``OTEL_*`` variables) or configure
the SDK in the process that embeds the broker.

W3C trace context (``traceparent``, ``tracestate``, through the globally configured
propagator) travels in record headers: header names are ``str``, values ``bytes``. The
broker's ``append`` span is a child of the producer span in the first record's headers and
links to every record's producer span. Attributes follow the OpenTelemetry messaging
semantic conventions, with ``messaging.system`` = ``felix``.
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
        ``len(headers)`` records: a SERVER span, child of the first record's producer span,
        linked to every record's."""
        contexts = [producer_context(h) for h in headers]
        attributes = messaging_attributes("append", None, name, tenant, namespace)
        attributes["felix.source"] = source
        if len(headers) > 1:
            attributes["messaging.batch.message_count"] = len(headers)
        span = self.tracer.start_span(
            f"append {name}",
            context=contexts[0] if contexts else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links_to(contexts),
        )
        span.end()


def broker_tracer() -> BrokerTracer | None:
    """The broker's tracer, or None (no API, no configured provider): nothing is traced."""
    tracer = configured_tracer(_provider, "felix_server", None)
    return None if tracer is None else BrokerTracer(tracer)
