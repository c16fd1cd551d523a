"""An external issuer's keys fetched over HTTPS, cached, refreshed off the event loop.

Theory of operation
-------------------
:class:`JwksCache` is a :class:`~felix_runtime.exchange.KeySource` whose keys come from a
``jwks_url``. A lookup never waits for the network: it answers from the keys cached so far.
A refresh starts (through ``spawn``: a daemon thread in a broker, the caller's own thread in
tests) when the cache is older than ``max_age`` or when a token names a ``kid`` the cache
does not hold (an issuer rotating its keys), but never sooner than ``min_interval`` after
the previous attempt, so tokens with made-up ``kid`` values cannot make the broker hammer the
issuer. At most one refresh runs at a time. A failed fetch keeps the keys cached before it
(and is reported through ``on_error``). :meth:`JwksCache.refresh` fetches at once: the
broker calls it once at start-up, so the first exchange does not race the first fetch.

:func:`https_fetch` is the default fetcher (httpx, the ``oidc`` extra): HTTPS only (a plain
``http`` URL is allowed for loopback hosts, for a local test issuer), no redirects, a time
limit and a size limit. Tests inject their own fetcher; no test touches the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from felix_runtime.exchange import ExternalKey, StaticKeys, read_external_jwks

__all__ = ["MAX_JWKS_BYTES", "JwksCache", "https_fetch", "spawn_thread"]

MAX_JWKS_BYTES = 1 << 20
"""A JWKS document larger than this is refused."""


def https_fetch(url: str, timeout: float = 5.0) -> bytes:
    """GET ``url`` with httpx and return the body.

    Raises:
        ValueError: not an ``https`` URL (``http`` only for loopback), a status other than
            200, or a body over :data:`MAX_JWKS_BYTES`.
        OSError: the request failed (httpx's errors are translated here).
        ImportError: httpx is not installed (``pip install felix[oidc]``).
    """
    import httpx

    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"{url}: keys are fetched over https only")
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise ValueError(f"{url}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"{url}: JWKS larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise OSError(f"{url}: {exc}") from None


def spawn_thread(work: Callable[[], None]) -> None:
    """Run ``work`` on a daemon thread (a refresh must never block the event loop)."""
    threading.Thread(target=work, name="felix-jwks", daemon=True).start()


class JwksCache:
    """Keys of one ``jwks_url``, cached (module docstring).

    Args:
        url: where the JWKS document is.
        fetch: returns the document's bytes (raises ``OSError`` or ``ValueError``).
        clock: the current time, for the refresh that ``refresh`` itself runs.
        max_age: seconds after which cached keys are refreshed.
        min_interval: seconds between two fetch attempts, at least.
        spawn: runs a refresh in the background.
        on_error: told of a failed fetch (the URL and the error).
    """

    def __init__(
        self,
        url: str,
        *,
        fetch: Callable[[str], bytes] = https_fetch,
        clock: Callable[[], float],
        max_age: float = 300.0,
        min_interval: float = 30.0,
        spawn: Callable[[Callable[[], None]], None] = spawn_thread,
        on_error: Callable[[str, Exception], None] = lambda url, exc: None,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self.max_age = max_age
        self.min_interval = min_interval
        self._spawn = spawn
        self._on_error = on_error
        self._keys = StaticKeys({})
        self._fetched_at: float | None = None  # the last successful fetch
        self._tried_at: float | None = None  # the last attempt
        self._lock = threading.Lock()
        self._running = False
        self.fetches = 0
        """Fetch attempts so far."""

    def key(self, kid: str | None, now: float) -> ExternalKey | None:
        """The cached key ``kid``; starts a background refresh when the cache is stale or
        misses, at most once per ``min_interval``."""
        found = self._keys.key(kid, now)
        stale = self._fetched_at is None or now - self._fetched_at >= self.max_age
        if found is None or stale:
            self._maybe_refresh(now)
        return found

    def _maybe_refresh(self, now: float) -> None:
        with self._lock:
            if self._running:
                return
            if self._tried_at is not None and now - self._tried_at < self.min_interval:
                return
            self._running = True
            self._tried_at = now
        self._spawn(self._background)

    def _background(self) -> None:
        self._refresh_now()

    def refresh(self) -> bool:
        """Fetch now (start-up). Returns whether fresh keys were read."""
        with self._lock:
            if self._running:
                return False
            self._running = True
            self._tried_at = self._clock()
        return self._refresh_now()

    def _refresh_now(self) -> bool:
        try:
            self.fetches += 1
            keys = read_external_jwks(self._fetch(self.url))
        except (OSError, ValueError) as exc:
            self._on_error(self.url, exc)
            return False
        else:
            self._keys = StaticKeys(keys)  # one reference swap: lookups see old or new
            self._fetched_at = self._clock()
            return True
        finally:
            with self._lock:
                self._running = False
