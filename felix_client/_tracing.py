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

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from felix_runtime import tracing as shared
from felix_runtime.tracing import SYSTEM, links_to, messaging_attributes, producer_context

if shared.API:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode

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

_provider: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace clients made from now on with ``provider`` (None: the global provider again),
    like the ``tracer_provider`` argument of OpenTelemetry's instrumentations."""
    global _provider
    _provider = provider


def tracer() -> Tracer | None:
    """The client's tracer, or None when the API is missing or no provider is configured
    (the API's proxy and no-op providers would only make non-recording spans)."""
    from . import __version__

    return shared.configured_tracer(_provider, "felix_client", __version__)


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
        caller's dicts are left alone); a context already there (a forwarded record's) is
        replaced, so the record carries this publish's.
    """
    attributes = messaging_attributes(operation, "send", destination, tenant, namespace)
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    span = tr.start_span(
        f"{operation} {destination}", kind=SpanKind.PRODUCER, attributes=attributes
    )
    carrier: dict[str, bytes] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span), setter=shared.HEADER_SETTER)
    given = list(headers) if headers is not None else [None] * count
    return span, [h | carrier if h else dict(carrier) for h in given]


def finish(span: Span, exc: BaseException | None, first_offset: int | None = None) -> None:
    """End a span, with the error that ended its operation or the offset it produced."""
    if exc is not None:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        span.set_attribute("error.type", type(exc).__name__)
    elif first_offset is not None:
        span.set_attribute("felix.offset", first_offset)
    span.end()


_UNTRACED: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
"""What :func:`ending` gives without a span: one shared object, so an untraced ack pays no
generator."""


def ending(span: Span | None) -> contextlib.AbstractContextManager[None]:
    """End ``span`` (when there is one) as the block ends: with the exception that ended
    the block, or as a success."""
    return _UNTRACED if span is None else _ending(span)


@contextlib.contextmanager
def _ending(span: Span) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        finish(span, exc)
        raise
    finish(span, None)


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
    parent = producer_context(headers)
    attributes = messaging_attributes("receive", "receive", destination, tenant, namespace)
    attributes["felix.offset"] = offset
    if attempt is not None:
        attributes["messaging.message.delivery_attempt"] = attempt
    span = tr.start_span(
        f"receive {destination}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links_to([parent]),
    )
    span.end()
    return trace.set_span_in_context(span)


def settle_batch_span(operation: str, delivered: Sequence[Delivered]) -> Span:
    """Start the CLIENT span of an ``ack_many`` / ``nack_many`` on one consumer: no parent
    (the messages may belong to many traces), a link to each message's receive span, and
    the batch size; end it with :func:`finish`."""
    tr, _, queue, tenant, namespace = delivered[0]
    attributes = messaging_attributes(operation, "settle", queue, tenant, namespace)
    attributes["messaging.batch.message_count"] = len(delivered)
    return tr.start_span(
        f"{operation} {queue}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        links=links_to([context for _, context, _, _, _ in delivered]),
    )


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
        attributes=messaging_attributes(operation, kind, destination, tenant, namespace),
    )
