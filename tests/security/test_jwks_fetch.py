"""Keys fetched from a jwks_url: cached, refreshed when stale or on an unknown kid, rate
limited, failures keep the old keys. An injected fetcher stands in for HTTPS."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fake_issuers import NOW
from oidc_issuers import OidcIssuer

from felix_core.access import AuthReason
from felix_runtime.exchange import ExchangeRefused, TokenExchanger, load_exchange_config
from felix_runtime.jwks_fetch import JwksCache, https_fetch

URL = "https://idp.example.com/jwks"


class FakeFetcher:
    """Serves a JWKS document (or fails) and counts requests."""

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.calls = 0
        self.fail: Exception | None = None

    def __call__(self, url: str) -> bytes:
        assert url == URL
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.document


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _run_now(work: Callable[[], None]) -> None:
    work()


def _cache(fetch: FakeFetcher, clock: Clock, **kwargs: object) -> JwksCache:
    return JwksCache(URL, fetch=fetch, clock=clock, spawn=_run_now, **kwargs)  # type: ignore[arg-type]


def test_keys_are_fetched_once_then_cached() -> None:
    idp = OidcIssuer()
    fetch, clock = FakeFetcher(idp.jwks()), Clock()
    cache = _cache(fetch, clock)
    assert cache.refresh()
    for _ in range(5):
        found = cache.key(idp.kid, clock.now)
        assert found is not None and found.algorithm == "RS256"
    assert fetch.calls == 1
    clock.now += 301  # older than max_age: looked up again (in the background)
    assert cache.key(idp.kid, clock.now) is not None
    assert fetch.calls == 2


def test_an_unknown_kid_refreshes_at_most_once_per_interval() -> None:
    old, new = OidcIssuer(kid="old"), OidcIssuer(kid="new")
    fetch, clock = FakeFetcher(old.jwks()), Clock()
    cache = _cache(fetch, clock, min_interval=30.0)
    cache.refresh()
    fetch.document = new.jwks()  # the issuer rotated its key
    clock.now += 31
    # the lookup that misses starts the refresh; with the inline spawn it is done at once,
    # in a broker the next exchange finds the key
    assert cache.key("new", clock.now) is None
    assert cache.key("new", clock.now) is not None
    calls = fetch.calls
    for kid in ("made-up-1", "made-up-2", "made-up-3"):  # within the interval: no fetch
        assert cache.key(kid, clock.now) is None
    assert fetch.calls == calls
    clock.now += 31
    for kid in ("made-up-1", "made-up-2", "made-up-3"):  # one attempt, then the interval
        assert cache.key(kid, clock.now) is None
    assert fetch.calls == calls + 1


def test_a_failed_fetch_keeps_the_cached_keys() -> None:
    idp = OidcIssuer()
    fetch, clock = FakeFetcher(idp.jwks()), Clock()
    errors: list[str] = []
    cache = _cache(fetch, clock, on_error=lambda url, exc: errors.append(str(exc)))
    cache.refresh()
    fetch.fail = OSError("connection refused")
    clock.now += 400
    assert cache.key(idp.kid, clock.now) is not None
    assert errors == ["connection refused"]
    fetch.fail = None
    fetch.document = b"not json"
    clock.now += 400
    assert cache.key(idp.kid, clock.now) is not None
    assert "not JSON" in errors[-1]


def test_an_exchange_with_fetched_keys() -> None:
    idp = OidcIssuer()
    fetch, clock = FakeFetcher(idp.jwks()), Clock()
    caches: list[JwksCache] = []

    def remote(url: str) -> JwksCache:
        caches.append(_cache(fetch, clock))
        return caches[-1]

    config = load_exchange_config(
        f"""
        [[issuer]]
        issuer = "{idp.url}"
        audience = "felix"
        jwks_url = "{URL}"
        [[rule]]
        subject = "alice"
        tenant = "acme"
        roles = ["reader"]
        """,
        read_file=lambda p: b"",
        remote_keys=remote,
    )
    assert config.remote == tuple(caches)
    exchange = TokenExchanger(config.issuers, config.rules, Ed25519PrivateKey.generate())
    with pytest.raises(ExchangeRefused) as caught:  # nothing fetched yet
        exchange.exchange(idp.token(), NOW)
    assert caught.value.reason is AuthReason.UNKNOWN_KEY
    assert set(exchange.exchange(idp.token(), NOW).principal.roles) == {"reader"}
    assert fetch.calls == 1


@pytest.mark.parametrize("url", ["http://idp.example.com/jwks", "ftp://x/jwks", "file:///etc"])
def test_https_only(url: str) -> None:
    with pytest.raises(ValueError, match="https only"):
        https_fetch(url)


def test_https_fetch_reads_a_loopback_http_server() -> None:
    """The real fetcher against a local HTTP server on 127.0.0.1 (no outside network)."""
    document = OidcIssuer().jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/jwks" else 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert json.loads(https_fetch(f"http://127.0.0.1:{port}/jwks")) == json.loads(document)
        with pytest.raises(ValueError, match="HTTP 404"):
            https_fetch(f"http://127.0.0.1:{port}/missing")
    finally:
        server.shutdown()
        server.server_close()
