"""``/metrics`` of a broker with authentication: a bearer credential checked as a Felix
connection's (tokens, shared secrets); an operator sees every series, a tenant the
process-wide ones and its own tenant's per-resource ones; no or a refused credential is 401
with a ``WWW-Authenticate: Bearer`` challenge; ``/live`` and ``/ready`` stay open. Checked on
the pure :class:`~felix_runtime.prometheus.Responder` and over HTTP on every runtime."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import anyio
import pytest
from brokers import Broker, FreshBroker
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from test_auth_network import Issuer, client

from felix_client._top import _fetch
from felix_core.access import AuthError, AuthReason, Principal
from felix_proto import messages as m
from felix_runtime.credentials import broker_authenticator, metrics_credentials
from felix_runtime.prometheus import Responder
from felix_server.access import Refusal
from felix_server.config import ConfigError, ServerConfig

WAIT = 10.0


class _Figures(Collector):
    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("felix_queue_depth", "all queues", value=3)
        per = GaugeMetricFamily("felix_queue_depth_per_queue", "per queue", labels=["tenant", "q"])
        per.add_metric(["a", "q1"], 1)
        per.add_metric(["b", "q2"], 2)
        yield per
        only_b = CounterMetricFamily("felix_quota_refused", "refusals", labels=["tenant", "quota"])
        only_b.add_metric(["b", "connections"], 4)
        yield only_b


def _check(credential: str | None, now: float) -> Principal:
    assert now == 1000.0
    if credential == "op":
        return Principal(subject="ops", tenant="default", issuer="t", operator=True)
    if credential == "a-token":
        return Principal(subject="app", tenant="a", issuer="t")
    raise AuthError(AuthReason.BAD_SECRET, "no")


def _responder(check: bool = True) -> Responder:
    registry = CollectorRegistry()
    registry.register(_Figures())
    return Responder(registry, lambda: True, check=_check if check else None, clock=lambda: 1000.0)


def _get(r: Responder, path: str, *headers: str) -> tuple[str, str]:
    raw = "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", *headers]) + "\r\n\r\n"
    head, _, body = r.response(raw.encode()).decode().partition("\r\n\r\n")
    return head, body


def test_an_operator_sees_every_tenant_and_a_tenant_only_its_own() -> None:
    r = _responder()
    head, everything = _get(r, "/metrics", "Authorization: Bearer op")
    assert head.startswith("HTTP/1.1 200 OK")
    assert 'tenant="a"' in everything and 'tenant="b"' in everything
    head, mine = _get(r, "/metrics", "authorization:   bearer a-token ")  # any case, spaces
    assert head.startswith("HTTP/1.1 200 OK")
    assert 'felix_queue_depth_per_queue{q="q1",tenant="a"} 1.0' in mine
    assert "felix_queue_depth 3.0" in mine  # process-wide series stay
    assert 'tenant="b"' not in mine and "q2" not in mine
    assert "# TYPE felix_quota_refused_total counter" in mine  # the family, without b's rows
    assert _responder(check=False).response(b"GET /metrics HTTP/1.1\r\n\r\n").count(b"tenant=") == 3


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ((), 'WWW-Authenticate: Bearer realm="felix-metrics"'),
        (("Authorization: Basic b3A6b3A=",), 'WWW-Authenticate: Bearer realm="felix-metrics"'),
        (("Authorization: Bearer",), 'WWW-Authenticate: Bearer realm="felix-metrics"'),
        (
            ("Authorization: Bearer stolen",),
            'WWW-Authenticate: Bearer realm="felix-metrics", error="invalid_token"',
        ),
    ],
)
def test_no_or_a_refused_credential_is_401_with_a_challenge(
    headers: tuple[str, ...], challenge: str
) -> None:
    r = _responder()
    head, body = _get(r, "/metrics", *headers)
    assert head.startswith("HTTP/1.1 401 Unauthorized")
    assert challenge in head.splitlines()
    assert body == "unauthorized\n" and "stolen" not in head + body
    assert _get(r, "/live")[0].startswith("HTTP/1.1 200")  # probes stay open
    assert _get(r, "/ready")[0].startswith("HTTP/1.1 200")


def test_metrics_tokens_read_every_series_and_open_no_connection() -> None:
    both = ServerConfig(auth_tokens="conn=acme:publish", metrics_tokens="scrape-1,\n scrape-2")
    check = metrics_credentials(both)
    assert check is not None
    assert check("scrape-2", 0.0).operator
    assert check("conn", 0.0).tenant == "acme" and not check("conn", 0.0).operator
    with pytest.raises(AuthError):
        check("scrape-3", 0.0)
    connections = broker_authenticator(both)
    assert connections is not None
    refusal = connections(m.Hello(versions=[2], token="scrape-1"), 0.0)
    assert isinstance(refusal, Refusal) and refusal.details["reason"] == "bad_secret"
    alone = metrics_credentials(ServerConfig(metrics_tokens="scrape"))  # no authentication
    assert alone is not None and alone("scrape", 0.0).operator
    with pytest.raises(AuthError):
        alone(None, 0.0)
    assert metrics_credentials(ServerConfig()) is None  # open, as before
    with pytest.raises(ConfigError, match="metrics_tokens"):
        ServerConfig(metrics_tokens=" , ").validate()


async def _http(broker: Broker, path: str, token: str | None = None) -> tuple[int, str, str]:
    """GET ``path`` (with ``token`` as a bearer credential): status, head, body."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with anyio.fail_after(WAIT):
        async with await anyio.connect_tcp(*broker.metrics_address) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            data = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), head, body


pytestmark = pytest.mark.anyio


async def test_metrics_of_a_broker_with_authentication(
    fresh_broker: FreshBroker, tmp_path: Path
) -> None:
    issuer = Issuer(tmp_path)
    broker = fresh_broker(
        "--auth-issuer-key",
        str(issuer.public_file),
        "--auth-tokens",
        "scrape-as-operator",
        "--metrics-tokens",
        "prometheus-only",
    )
    for tenant in ("acme", "beta"):
        async with client(broker, issuer.token(tenant), tenant) as c:
            await c.admin.create("tenant", tenant)
            await c.admin.create("namespace", "ns")
            await c.admin.create("queue", f"{tenant}-q")
            await c.enqueue(f"{tenant}-q", b"x")
    assert (await _http(broker, "/live"))[0] == 200
    assert (await _http(broker, "/ready"))[0] == 200
    status, head, _ = await _http(broker, "/metrics")
    assert status == 401 and 'WWW-Authenticate: Bearer realm="felix-metrics"' in head
    status, head, _ = await _http(broker, "/metrics", Issuer(tmp_path, "stranger").token("acme"))
    assert status == 401 and 'error="invalid_token"' in head

    status, _, mine = await _http(broker, "/metrics", issuer.token("acme"))
    assert status == 200
    assert 'queue="acme-q",tenant="acme"} 1.0' in mine and "felix_ready 1.0" in mine
    assert 'tenant="beta"' not in mine and "beta-q" not in mine
    host, port = broker.metrics_address  # felix top sends the context's token
    top = await anyio.to_thread.run_sync(
        _fetch, f"http://{host}:{port}/metrics", WAIT, issuer.token("acme")
    )
    assert 'queue="acme-q",tenant="acme"' in top and "beta-q" not in top
    for operator in ("scrape-as-operator", "prometheus-only"):
        status, _, everything = await _http(broker, "/metrics", operator)
        assert status == 200
        assert 'queue="acme-q",tenant="acme"' in everything
        assert 'queue="beta-q",tenant="beta"' in everything
