"""The shared metrics path (felix_server.stats + felix_runtime.prometheus), without sockets.

Both runtimes export exactly this: the collector is attached by each app and reads
:func:`felix_server.stats.engine_figures`; :class:`felix_runtime.prometheus.Responder` answers
every HTTP request, whichever runtime carried it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from engine_calls import Calls, ThroughRouter

from felix_core.broker import Broker
from felix_runtime.process import load_certificate
from felix_runtime.prometheus import PrometheusObserver, Responder
from felix_server.config import ConfigError, ServerConfig
from felix_server.server import FelixServer, make_quic_configuration
from felix_server.stats import CACHE_FIGURES, QUEUE_FIGURES, engine_figures

T, N = "default", "default"


def _broker() -> Calls:
    b = Calls(Broker(now=0.0))
    b.create("queue", T, N, "q", now=0.0)
    b.create("cache", T, N, "c", now=0.0)
    b.enqueue(0, T, N, "q", [b"secret-payload"], now=10.0)
    b.cache_put(T, N, "c", "k", b"value", now=10.0)
    assert b.cache_get(T, N, "c", "k", now=10.0) is not None
    return b


def test_engine_figures_totals_and_bounded_detail() -> None:
    calls = _broker()
    b = calls.broker
    figures = engine_figures(b, 12.0, detail_limit=5)
    totals = figures.totals
    assert totals["queue_depth"] == 1 and totals["queue_oldest_age_seconds"] == 2.0
    assert totals["cache_entries"] == 1 and totals["cache_hits"] == 1
    assert {f"queue_{k}" for k in QUEUE_FIGURES} | {f"cache_{k}" for k in CACHE_FIGURES} <= set(
        totals
    )
    assert figures.queues == {
        (T, N, "q"): {
            "depth": 1.0,
            "in_flight": 0.0,
            "redeliveries": 0.0,
            "dead_lettered": 0.0,
            "records": 1.0,
            "bytes": 14.0,
            "oldest_age_seconds": 2.0,
        }
    }
    assert figures.caches[(T, N, "c")]["bytes"] == 6.0
    assert figures.capped == frozenset()

    calls.create("queue", T, N, "q2", now=12.0)
    capped = engine_figures(b, 12.0, detail_limit=1)  # two queues > 1; one cache fits
    assert capped.queues == {} and set(capped.caches) == {(T, N, "c")}
    assert capped.capped == {"queue"}
    assert engine_figures(b, 12.0).capped == {"queue", "cache"}  # limit 0: totals only
    assert engine_figures(Broker(), 0.0).capped == frozenset()  # nothing to cap
    assert engine_figures(Broker(), 0.0).totals["queue_oldest_age_seconds"] == 0.0


def test_scrape_names_labels_and_no_message_data(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=str(tmp_path), metrics_resource_limit=1)
    quic = make_quic_configuration(config)
    load_certificate(config, quic)
    observer = PrometheusObserver()
    server = FelixServer(config, quic, now=time.time(), observer=observer)
    observer.attach(server)
    b = ThroughRouter(server.router)
    b.create("queue", T, N, "q", now=time.time())
    b.create("cache", T, N, "c1", now=time.time())
    b.create("cache", T, N, "c2", now=time.time())
    b.enqueue(0, T, N, "q", [b"secret-payload"], now=time.time())
    responder = Responder(observer.registry, lambda: server.ready)
    response = responder.response(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    text = body.decode()
    for line in (
        "felix_queue_depth 1.0",
        "felix_queue_in_flight 0.0",
        "felix_queue_redeliveries_total 0.0",
        "felix_queue_dead_lettered_total 0.0",
        "felix_queue_oldest_age_seconds ",
        "felix_cache_entries 0.0",
        "felix_cache_hits_total 0.0",
        'felix_queue_depth_per_queue{namespace="default",queue="q",tenant="default"} 1.0',
        'felix_queue_redeliveries_per_queue_total{namespace="default",queue="q",tenant="default"}',
        'felix_metrics_resource_series_capped{kind="queue"} 0.0',
        'felix_metrics_resource_series_capped{kind="cache"} 1.0',  # two caches > limit 1
    ):
        assert line in text, line
    assert "per_cache" not in text
    assert "secret" not in text  # labels never carry message data


def test_responder_answers_every_path() -> None:
    ready = [True]
    r = Responder(PrometheusObserver().registry, lambda: ready[0])
    assert r.response(b"GET /live HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\nok\n")
    assert r.response(b"HEAD /ready?x=1 HTTP/1.1\r\n\r\n").endswith(b"Connection: close\r\n\r\n")
    ready[0] = False
    assert r.response(b"GET /ready HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503 ")
    assert r.response(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 Not Found")
    assert r.response(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")


def test_resource_limit_is_validated() -> None:
    with pytest.raises(ConfigError, match="metrics_resource_limit"):
        ServerConfig(metrics_resource_limit=-1).validate()


def test_held_request_overflows_are_counted() -> None:
    observer = PrometheusObserver()
    observer.held_overflow(5000)
    observer.held_overflow(7000)
    value = observer.registry.get_sample_value("felix_held_request_overflows_total")
    assert value == 2
