"""Prometheus metrics and health: what ``/metrics``, ``/live`` and ``/ready`` answer.

:class:`PrometheusObserver` plugs into the shared glue's observer hook
(:class:`felix_server.observer.ServerObserver`) and counts what it reports; engine figures
(queue depth, in-flight, cache entries ...) are read at scrape time through
:func:`felix_server.stats.engine_figures`, the same code path for every runtime.
Names follow the reference broker where one exists (``felix_publish_requests_total``,
``felix_publish_bytes_total``, ``felix_subscribe_dropped_total``,
``felix_quic_protocol_violation_total``). Labels are request kinds, end reasons and error
codes, and on the bounded per-queue and per-cache series resource names: never message
data.

:class:`Responder` turns one HTTP request head into the complete response bytes; it is pure
(no socket, no event loop). Each runtime carries requests to it over its own small HTTP
server on the broker's own event loop (not prometheus-client's thread), so a scrape reads
the engine without racing it: ``felix_runtime_asyncio.http`` and ``felix_runtime_anyio.http``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from felix_core.access import Action, AuthError
from felix_core.disklog import DiskLogStore, StorageJob, SyncJob
from felix_runtime.logs import log_fields, logger
from felix_runtime.tracing import broker_tracer
from felix_server.access import CheckCredential
from felix_server.observer import ServerObserver
from felix_server.server import FelixServer
from felix_server.stats import CACHE_FIGURES, QUEUE_FIGURES, engine_figures

if TYPE_CHECKING:
    from felix_runtime.tls_server import TlsRefusal

__all__ = ["PrometheusObserver", "Responder", "TenantView"]

_perf_counter = time.perf_counter

_LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
    1.0,
)

# Broker.stats() keys with a better name (and type) than the generic felix_engine_<key>.
_ENGINE: dict[str, tuple[str, str, str]] = {
    "connections": ("felix_engine_connections", "gauge", "Connections attached to the engine"),
    "subscriptions": ("felix_subscriptions", "gauge", "Live subscriptions"),
    "consumers": ("felix_queue_consumers", "gauge", "Live queue consumers"),
    "streams": ("felix_streams", "gauge", "Streams with a live engine"),
    "queues": ("felix_queues", "gauge", "Queues with a live engine"),
    "caches": ("felix_caches", "gauge", "Caches with a live engine"),
    "memory_used_bytes": ("felix_memory_used_bytes", "gauge", "Bytes held by logs and caches"),
    "memory_limit_bytes": ("felix_memory_limit_bytes", "gauge", "Engine memory limit"),
    "memory_high_water_bytes": ("felix_memory_high_water_bytes", "gauge", "Most bytes held"),
    "memory_refusals": ("felix_memory_refusals", "counter", "Work refused for memory"),
    "stream_published_records": ("felix_stream_published_records", "counter", "Records"),
    "stream_delivered_records": ("felix_stream_delivered_records", "counter", "Records"),
    "stream_gap_records": ("felix_stream_gap_records", "counter", "Records skipped by gaps"),
    "stream_lagged_subscriptions": ("felix_stream_lagged_subscriptions", "counter", "Ended"),
    "stream_blocked_publishes": ("felix_stream_blocked_publishes", "counter", "Refused"),
    "queue_depth": ("felix_queue_depth", "gauge", "Queue messages waiting (all queues)"),
    "queue_in_flight": ("felix_queue_in_flight", "gauge", "Queue deliveries not yet settled"),
    "queue_oldest_age_seconds": (
        "felix_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest unfinished message (0: none)",
    ),
    "queue_redeliveries": ("felix_queue_redeliveries", "counter", "Queue redeliveries"),
    "queue_dead_lettered": ("felix_queue_dead_lettered", "counter", "Dead-lettered messages"),
    "cache_entries": ("felix_cache_entries", "gauge", "Cache entries"),
    "cache_bytes": ("felix_cache_bytes", "gauge", "Bytes held by cache entries"),
    "cache_hits": ("felix_cache_hits", "counter", "Cache gets that hit"),
    "cache_misses": ("felix_cache_misses", "counter", "Cache gets that missed"),
    "cache_evictions": ("felix_cache_evictions", "counter", "Cache entries evicted"),
    "cache_expirations": ("felix_cache_expirations", "counter", "Cache entries expired"),
    "cache_puts": ("felix_cache_puts", "counter", "Cache puts that stored"),
    "queue_records": ("felix_queue_records", "gauge", "Messages retained in queue logs"),
    "queue_bytes": ("felix_queue_bytes", "gauge", "Bytes retained in queue logs"),
}


class _EngineCollector(Collector):
    """Reads the engine's figures and the server's session table at scrape time.

    Per-queue and per-cache series carry the labels ``tenant``, ``namespace`` and ``queue``
    (``cache``): resource names only. They are named after the total with ``_per_queue``
    (``_per_cache``) appended, so ``sum()`` over them never double-counts the total, and
    they are exported only while the broker holds at most ``metrics_resource_limit``
    resources of that kind; above it ``felix_metrics_resource_series_capped{kind}`` is 1 and
    only the totals are exported.
    """

    def __init__(self, server: FelixServer) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        server = self.server
        sessions = server.sessions
        yield GaugeMetricFamily("felix_connections", "Open QUIC connections", value=len(sessions))
        yield GaugeMetricFamily(
            "felix_connections_paused",
            "Connections whose deliveries are paused by back-pressure",
            value=sum(1 for s in sessions if s.paused),
        )
        yield GaugeMetricFamily(
            "felix_connection_buffered_bytes",
            "Bytes queued for clients and not yet sent (all connections)",
            value=sum(s.buffered_bytes for s in sessions),
        )
        yield GaugeMetricFamily("felix_ready", "1 while the broker is ready", value=server.ready)
        figures = engine_figures(server.broker, time.time(), server.config.metrics_resource_limit)
        for key, value in figures.totals.items():
            name, kind, doc = _ENGINE.get(key, (f"felix_engine_{key}", "gauge", key))
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)
        yield from _per_resource("queue", QUEUE_FIGURES, figures.queues)
        yield from _per_resource("cache", CACHE_FIGURES, figures.caches)
        capped = GaugeMetricFamily(
            "felix_metrics_resource_series_capped",
            "1 when a kind has more resources than metrics_resource_limit (totals only)",
            labels=["kind"],
        )
        for kind in ("queue", "cache"):
            capped.add_metric([kind], kind in figures.capped)
        yield capped
        quota = CounterMetricFamily(
            "felix_quota_refused",
            "Requests refused by a per-tenant quota, by tenant and quota",
            labels=["tenant", "quota"],
        )
        for (tenant, name), count in sorted(server.broker.quotas.refused.items()):
            quota.add_metric([tenant, name], count)
        yield quota
        used = GaugeMetricFamily(
            "felix_quota_used",
            "What a tenant holds against its quotas: connections, subscriptions, consumers, "
            "cache bytes, in-flight bytes (tenants holding none are absent)",
            labels=["tenant", "quota"],
        )
        for (tenant, name), held in sorted(server.broker.quotas.usage().items()):
            used.add_metric([tenant, name], held)
        yield used
        held_back = CounterMetricFamily(
            "felix_quota_held_back",
            "Times a consumer group held deliveries back for a tenant's in-flight bytes quota",
            labels=["tenant", "quota"],
        )
        for (tenant, name), count in sorted(server.broker.quotas.held_back.items()):
            held_back.add_metric([tenant, name], count)
        yield held_back


def _per_resource(
    kind: str, keys: Iterable[str], rows: dict[tuple[str, str, str], dict[str, float]]
) -> Iterable[Metric]:
    if not rows:
        return
    for key in keys:
        name, metric_kind, doc = _ENGINE[f"{kind}_{key}"]
        family = CounterMetricFamily if metric_kind == "counter" else GaugeMetricFamily
        metric = family(
            f"{name}_per_{kind}", f"{doc}, per {kind}", labels=["tenant", "namespace", kind]
        )
        for path, values in rows.items():
            metric.add_metric(list(path), values[key])
        yield metric


_STORAGE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class _StorageCollector(Collector):
    """The durable logs' figures at scrape time, summed over the open logs (their
    :class:`~felix_core.disklog.DiskLogStats`). A deleted resource's log takes its counts
    with it, as the engine's per-resource counters do."""

    def __init__(self, store: DiskLogStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        logs = list(self.store.logs())
        yield GaugeMetricFamily(
            "felix_storage_logs", "Durable logs open (one per durable resource)", len(logs)
        )
        yield GaugeMetricFamily(
            "felix_storage_unsynced_bytes",
            "Bytes written to durable logs and not yet fsynced",
            sum(log.unsynced_bytes for log in logs),
        )
        yield GaugeMetricFamily(
            "felix_storage_segments",
            "Segments retained by durable logs",
            sum(log.segment_count for log in logs),
        )
        yield GaugeMetricFamily(
            "felix_storage_recovery_truncated_bytes",
            "Bytes of torn tails cut off when the durable logs were recovered at start",
            sum(log.stats.truncated_bytes for log in logs),
        )
        yield GaugeMetricFamily(
            "felix_storage_failed_logs",
            "Durable logs that failed (an fsync or write error, or damage): they refuse writes",
            sum(1 for log in logs if log.failed is not None),
        )
        for name, doc, field in (
            ("felix_storage_segments_rolled", "Segments closed by size or age", "segments_rolled"),
            (
                "felix_storage_retention_segments_deleted",
                "Segments deleted by retention (and queue trims)",
                "segments_deleted",
            ),
            ("felix_storage_appends", "Batches appended to durable logs", "appends"),
            ("felix_storage_append_bytes", "Bytes appended to durable logs", "append_bytes"),
            (
                "felix_storage_append_failures",
                "Appends refused by the file system (disk full, I/O error)",
                "append_failures",
            ),
            ("felix_storage_syncs", "Sync jobs finished (group commits)", "syncs"),
            ("felix_storage_sync_failures", "Sync jobs that failed", "sync_failures"),
            ("felix_storage_cold_reads", "Reads of records not in memory", "cold_reads"),
        ):
            yield CounterMetricFamily(name, doc, sum(getattr(log.stats, field) for log in logs))


class _RequestMetrics(Collector):
    """``felix_requests_total{kind,code}`` and ``felix_request_duration_seconds{kind}``.

    They are counted on every request, so they are plain lists here: one ``bisect`` and a
    few additions per request, instead of a labelled ``Counter.inc`` and
    ``Histogram.observe`` (a lock and a Python loop over the buckets each). No lock is
    needed: the observer and the scrape both run on the broker's event loop. At scrape time
    they become exactly the samples prometheus_client's ``Counter`` and ``Histogram``
    expose: ``_total`` and ``_created``; cumulative ``_bucket`` (``le`` as Go prints it),
    ``_count``, ``_sum`` and ``_created``.
    """

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [*map(floatToGoString, self.bounds), "+Inf"]
        self.latency: dict[str, list[float]] = {}
        """kind -> a count per bucket (the last one ``+Inf``), then the sum, then the
        creation time."""
        self.requests: dict[tuple[str, int], list[float]] = {}
        """(kind, error code) -> [count, creation time]."""

    def finished(self, kind: str, error_code: int, seconds: float | None) -> None:
        """Count one request of ``kind`` (and its duration, when measured)."""
        if seconds is not None:
            row = self.latency.get(kind)
            if row is None:
                row = self.latency[kind] = [0.0] * (len(self._les) + 1) + [time.time()]
            row[bisect_left(self.bounds, seconds)] += 1  # the first bucket with seconds <= le
            row[-2] += seconds
        counter = self.requests.get((kind, error_code))
        if counter is None:
            counter = self.requests[(kind, error_code)] = [0.0, time.time()]
        counter[0] += 1

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "felix_requests", "Requests handled, by kind and result code", labels=["kind", "code"]
        )
        for (kind, code), (count, created) in self.requests.items():
            requests.add_metric([kind, str(code)], count, created=created)
        yield requests
        name = "felix_request_duration_seconds"
        latency = Metric(name, "Time to handle a request in the broker", "histogram")
        buckets = len(self._les)
        for kind, row in self.latency.items():
            total = 0.0
            for le, count in zip(self._les, row, strict=False):
                total += count
                latency.add_sample(f"{name}_bucket", {"kind": kind, "le": le}, total)
            latency.add_sample(f"{name}_count", {"kind": kind}, total)
            latency.add_sample(f"{name}_sum", {"kind": kind}, row[buckets])
            latency.add_sample(f"{name}_created", {"kind": kind}, row[buckets + 1])
        yield latency


class PrometheusObserver(ServerObserver):
    """Counts what the glue reports into a Prometheus registry (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.tracing = broker_tracer()
        """The broker's OpenTelemetry spans (None: not traced, see felix_runtime.tracing)."""
        self.traces = self.tracing is not None
        self.connections_total = Counter(
            "felix_connections_accepted", "QUIC connections accepted", registry=registry
        )
        self.connections_closed = Counter(
            "felix_connections_closed",
            "Connections closed, by error code",
            ["code"],
            registry=registry,
        )
        self.refused = Counter(
            "felix_connections_refused",
            "New connections refused (Initial packets, answered or dropped), by reason",
            ["reason"],
            registry=registry,
        )
        for reason in ("max_connections", "shutting_down"):
            self.refused.labels(reason)  # exported at 0 from the start
        self.shutdown_undelivered_records = Counter(
            "felix_shutdown_undelivered_records",
            "Records feeds had not received when the shutdown grace ended, by source",
            ["source"],
            registry=registry,
        )
        self.shutdown_unacked = Counter(
            "felix_shutdown_unacked_deliveries",
            "Queue deliveries not settled when the shutdown grace ended",
            registry=registry,
        )
        self.handshakes = Counter(
            "felix_handshakes", "Felix handshakes, by result", ["result"], registry=registry
        )
        self.tls_client_refused = Counter(
            "felix_tls_client_refused",
            "Client certificates refused during the TLS handshake (mutual TLS), by reason",
            ["reason"],
            registry=registry,
        )
        for reason in ("missing", "untrusted", "expired", "not_yet_valid"):
            self.tls_client_refused.labels(reason)  # exported at 0 from the start
        self.requests = _RequestMetrics(_LATENCY_BUCKETS)
        registry.register(self.requests)
        self.publish_requests = Counter(
            "felix_publish_requests", "Publish requests accepted", registry=registry
        )
        self.publish_records = Counter(
            "felix_publish_records", "Records published", registry=registry
        )
        self.publish_bytes = Counter(
            "felix_publish_bytes", "Payload bytes published", registry=registry
        )
        self.enqueue_records = Counter(
            "felix_enqueue_records", "Messages enqueued", registry=registry
        )
        self.enqueue_bytes = Counter(
            "felix_enqueue_bytes", "Payload bytes enqueued", registry=registry
        )
        self.deliveries = Counter(
            "felix_deliveries", "Records written to feeds", ["source"], registry=registry
        )
        self.delivered_bytes = Counter(
            "felix_delivered_bytes",
            "Payload bytes written to feeds",
            ["source"],
            registry=registry,
        )
        self._delivered_by_source: dict[str, tuple[Counter, Counter]] = {}
        self.batches_encoded = Counter(
            "felix_event_batches_encoded", "Event batches encoded (once each)", registry=registry
        )
        self.batch_writes = Counter(
            "felix_event_batch_writes",
            "Event batch writes (one per subscriber)",
            registry=registry,
        )
        self.dropped = Counter(
            "felix_subscribe_dropped",
            "Records a subscriber lost, by reason",
            ["reason"],
            registry=registry,
        )
        self.ended = Counter(
            "felix_subscriptions_ended",
            "Subscriptions ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.auth_denied_total = Counter(
            "felix_auth_denied",
            "Requests refused by authorization (FORBIDDEN, or NOT_FOUND for another tenant's "
            "resource), by the permission's action",
            ["action"],
            registry=registry,
        )
        for action in Action:
            self.auth_denied_total.labels(str(action))  # exported at 0 from the start
        self.dead_letters = Counter(
            "felix_dead_lettered",
            "Queue messages dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.violations = Counter(
            "felix_quic_protocol_violation",
            "Protocol violations by clients, by error code",
            ["code"],
            registry=registry,
        )
        self.pauses = Counter(
            "felix_backpressure_pauses",
            "Times deliveries to a connection were paused",
            registry=registry,
        )
        self.held_overflows = Counter(
            "felix_held_request_overflows",
            "Connections closed OVERLOADED: requests held over the buffer cap went over"
            " transport.max_data",
            registry=registry,
        )
        self.internal_errors = Counter(
            "felix_internal_errors",
            "Unexpected exceptions turned into INTERNAL",
            registry=registry,
        )
        self.storage_append = Histogram(
            "felix_storage_append_duration_seconds",
            "Time to write one batch to a durable log's segment (page cache)",
            buckets=_STORAGE_BUCKETS,
            registry=registry,
        )
        self.storage_sync = Histogram(
            "felix_storage_sync_duration_seconds",
            "Time of one sync job: the fsyncs of a durable log's written files",
            buckets=_STORAGE_BUCKETS,
            registry=registry,
        )
        self.storage_recovery = Gauge(
            "felix_storage_recovery_duration_seconds",
            "Time to open and recover every durable log at start",
            registry=registry,
        )

    def attach(self, server: FelixServer) -> None:
        """Also export the engine's and the sessions' gauges at scrape time."""
        self.registry.register(_EngineCollector(server))

    # -- storage --------------------------------------------------------------------------

    def attach_storage(self, store: DiskLogStore, recovery_seconds: float) -> None:
        """Also export the durable logs' figures, and how long their recovery took."""
        self.storage_recovery.set(recovery_seconds)
        self.registry.register(_StorageCollector(store))

    def storage_appended(self, seconds: float) -> None:
        """One append to a segment took ``seconds`` (the write into the page cache)."""
        self.storage_append.observe(seconds)

    def storage_job_ran(self, job: StorageJob, seconds: float) -> None:
        """A storage job's ``run`` took ``seconds`` (on a worker thread; the histogram is
        thread-safe). Only syncs are timed."""
        if isinstance(job, SyncJob):
            self.storage_sync.observe(seconds)

    # -- ServerObserver -------------------------------------------------------------------
    def connection_opened(self) -> None:
        self.connections_total.inc()

    def connection_closed(self, error_code: int) -> None:
        self.connections_closed.labels(str(error_code)).inc()

    def connection_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def shutdown_undelivered(self, source: str, records: int, unacked: int) -> None:
        self.shutdown_undelivered_records.labels(source).inc(records)
        self.shutdown_unacked.inc(unacked)

    def handshake_completed(self, version: int) -> None:
        self.handshakes.labels("ok").inc()

    def handshake_failed(self, error_code: int) -> None:
        self.handshakes.labels(str(error_code)).inc()

    def client_certificate_refused(self, reason: str) -> None:
        """A client certificate was refused in the TLS handshake (``missing``,
        ``expired``, ``not_yet_valid``, ``untrusted``): mutual TLS, before any Felix
        message, so no handshake of :meth:`handshake_failed` counts it."""
        self.tls_client_refused.labels(reason).inc()

    def tls_refused(self, refusal: TlsRefusal) -> None:
        """A client certificate was refused in the TLS handshake
        (:attr:`felix_runtime.tls_server.ServerTls.on_refused`): counted by reason; the
        audit observer also writes it down."""
        self.client_certificate_refused(refusal.reason)

    def request_started(self, kind: str) -> object:
        return _perf_counter()

    def request_finished(self, token: object, kind: str, error_code: int) -> None:
        seconds = _perf_counter() - token if isinstance(token, float) else None
        self.requests.finished(kind, error_code, seconds)

    def published(self, records: int, nbytes: int) -> None:
        self.publish_requests.inc()
        self.publish_records.inc(records)
        self.publish_bytes.inc(nbytes)

    def enqueued(self, records: int, nbytes: int) -> None:
        self.enqueue_records.inc(records)
        self.enqueue_bytes.inc(nbytes)

    def appended(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
    ) -> None:
        if self.tracing is not None:
            self.tracing.appended(source, tenant, namespace, name, headers)

    def dispatched(
        self,
        source: str,
        tenant: str,
        namespace: str,
        name: str,
        headers: Sequence[Mapping[str, bytes] | None],
        first_offset: int,
    ) -> None:
        if self.tracing is not None:
            self.tracing.dispatched(source, tenant, namespace, name, headers, first_offset)

    def settled(
        self, operation: str, tenant: str, namespace: str, queue: str, deliveries: int
    ) -> None:
        if self.tracing is not None:
            self.tracing.settled(operation, tenant, namespace, queue, deliveries)

    def delivered(self, source: str, records: int, nbytes: int) -> None:
        # Called per queue delivery: labels() costs more than the increments, so each
        # source's children are looked up once ("stream" and "queue": bounded).
        children = self._delivered_by_source.get(source)
        if children is None:
            children = (self.deliveries.labels(source), self.delivered_bytes.labels(source))
            self._delivered_by_source[source] = children
        children[0].inc(records)
        children[1].inc(nbytes)

    def event_batch_encoded(self, subscribers: int, nbytes: int) -> None:
        self.batches_encoded.inc()
        self.batch_writes.inc(subscribers)

    def subscription_dropped(self, reason: str, records: int) -> None:
        self.dropped.labels(reason).inc(records)

    def subscription_ended(self, reason: str) -> None:
        self.ended.labels(reason).inc()

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def auth_denied(self, action: str) -> None:
        self.auth_denied_total.labels(action).inc()

    def protocol_violation(self, error_code: int, fatal: bool) -> None:
        self.violations.labels(str(error_code)).inc()

    def backpressure(self, paused: bool) -> None:
        if paused:
            self.pauses.inc()

    def held_overflow(self, held_bytes: int) -> None:
        self.held_overflows.inc()

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.internal_errors.inc()
        logger.error("internal error in %s", where, exc_info=exc)

    def log(self, level: str, message: str, **fields: object) -> None:
        logger.log(_LEVELS.get(level, 20), message, extra=log_fields(**fields))


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""
REALM = "felix-metrics"
"""The ``realm`` of the ``WWW-Authenticate`` challenge ``/metrics`` answers 401 with."""

Response = tuple[int, str, bytes, tuple[tuple[str, str], ...]]
"""Status, content type, body and extra headers."""


class TenantView(Collector):
    """What a tenant's credential may see of ``registry``: every sample without a
    ``tenant`` label (process-wide series) and those whose ``tenant`` is ``tenant``.

    One pass over the samples a scrape produces anyway; a family whose samples are all
    another tenant's stays, empty (its ``HELP`` and ``TYPE`` tell nothing about any
    tenant)."""

    def __init__(self, registry: Collector, tenant: str) -> None:
        self.registry = registry
        self.tenant = tenant

    def collect(self) -> Iterable[Metric]:
        tenant = self.tenant
        for metric in self.registry.collect():
            kept = [s for s in metric.samples if s.labels.get("tenant", tenant) == tenant]
            if len(kept) != len(metric.samples):
                metric.samples = kept  # a fresh Metric per scrape: ours to change
            yield metric


class Responder:
    """What the metrics and health endpoint answers; pure, shared by both HTTP carriers.

    ``/live`` and ``/ready`` are open (orchestration probes). ``/metrics`` is open on a
    broker without authentication; with ``check`` (a broker with authentication) it needs
    ``Authorization: Bearer CREDENTIAL``, checked as a Felix connection's credential (a
    Felix token or a shared secret): an operator sees everything, any other principal the
    process-wide series and its own tenant's per-resource series only
    (:class:`TenantView`); no credential or a refused one is ``401`` with a
    ``WWW-Authenticate: Bearer`` challenge (RFC 6750), which names no reason beyond
    ``invalid_token``.

    Args:
        registry: what ``/metrics`` exposes; None when metrics are disabled (``/metrics`` is
            then 404, while ``/live`` and ``/ready`` still answer: probes do not depend on
            metrics).
        is_ready: answers ``/ready`` (200 when true, 503 otherwise).
        check: the broker's bearer credential check
            (:func:`felix_runtime.credentials.broker_credentials`); None: no authentication.
        clock: the time credentials are checked at (seconds since the epoch).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        is_ready: Callable[[], bool],
        *,
        check: CheckCredential | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.is_ready = is_ready
        self.check = check
        self.clock = clock

    def respond(self, path: str, authorization: str | None = None) -> Response:
        """The status, content type, body and extra headers for a GET of ``path``, with
        the request's ``Authorization`` header value (None: absent)."""
        path = path.split("?", 1)[0]
        if path == "/metrics" and self.registry is not None:
            return self._metrics(self.registry, authorization)
        if path == "/live":
            return 200, "text/plain", b"ok\n", ()
        if path == "/ready":
            ready = self.is_ready()
            body = b"ready\n" if ready else b"draining\n"
            return (200 if ready else 503), "text/plain", body, ()
        return 404, "text/plain", b"not found\n", ()

    def _metrics(self, registry: CollectorRegistry, authorization: str | None) -> Response:
        if self.check is None:
            return 200, METRICS_CONTENT_TYPE, generate_latest(registry), ()
        scheme, _, credential = (authorization or "").strip().partition(" ")
        challenge = f'Bearer realm="{REALM}"'
        if scheme.lower() != "bearer" or not credential.strip():
            return 401, "text/plain", b"unauthorized\n", (("WWW-Authenticate", challenge),)
        try:
            principal = self.check(credential.strip(), self.clock())
        except AuthError:
            challenge += ', error="invalid_token"'
            return 401, "text/plain", b"unauthorized\n", (("WWW-Authenticate", challenge),)
        view: Collector = registry if principal.operator else TenantView(registry, principal.tenant)
        return 200, METRICS_CONTENT_TYPE, generate_latest(view), ()

    def response(self, head: bytes) -> bytes:
        """The complete HTTP/1.1 response (``Connection: close``) to a request head.

        Args:
            head: the request line and headers, up to and including the blank line.

        Returns:
            Status line, headers and, for ``GET``, the body; ``405`` for methods other than
            ``GET`` and ``HEAD``.
        """
        request_line, *lines = head.split(b"\r\n")
        method, _, rest = request_line.partition(b" ")
        path = rest.split(b" ", 1)[0].decode("latin-1")
        extra: tuple[tuple[str, str], ...] = ()
        if method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        else:
            status, ctype, body, extra = self.respond(path, _header(lines, b"authorization"))
        headers = "".join(f"{name}: {value}\r\n" for name, value in extra)
        response = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        return response + (body if method == b"GET" else b"")


def _header(lines: list[bytes], name: bytes) -> str | None:
    """The value of the first header ``name`` (lower case) among ``lines``, or None."""
    for line in lines:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None
