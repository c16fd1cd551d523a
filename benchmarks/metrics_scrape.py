"""``/metrics`` scrape cost: open, with an operator credential, and with a tenant's token.

A broker with authentication checks the scrape's bearer credential (a shared secret: one
SHA-256 per configured secret; a Felix token: one Ed25519 verification) and, for a tenant,
filters the samples by their ``tenant`` label (:class:`felix_runtime.prometheus.TenantView`).
This times :meth:`Responder.response` in-process on the real registry of
:class:`PrometheusObserver` plus the per-queue and per-cache families exactly as the engine
collector builds them, at ``metrics_resource_limit`` resources of each kind spread over
``--tenants`` tenants. The three variants run in turn in every round (ABCABC, so they see
the same machine load); it prints the median, fastest and slowest round per scrape and the
median ratios to the open scrape.

Usage: ``python benchmarks/metrics_scrape.py [--tenants N] [--resources N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from felix_core.access import Permission
from felix_runtime.credentials import BearerAuthenticator, SharedSecretAuthenticator
from felix_runtime.prometheus import PrometheusObserver, Responder, _per_resource
from felix_runtime.tokens import TokenVerifier, issue_token, key_id
from felix_server.stats import CACHE_FIGURES, QUEUE_FIGURES


class _Resources(Collector):
    """The per-queue and per-cache families of ``resources`` queues and caches."""

    def __init__(self, tenants: int, resources: int) -> None:
        self.queues = {
            (f"t{i % tenants}", "ns", f"q{i}"): dict.fromkeys(QUEUE_FIGURES, float(i))
            for i in range(resources)
        }
        self.caches = {
            (f"t{i % tenants}", "ns", f"c{i}"): dict.fromkeys(CACHE_FIGURES, float(i))
            for i in range(resources)
        }

    def collect(self) -> Iterable[Metric]:
        yield from _per_resource("queue", QUEUE_FIGURES, self.queues)
        yield from _per_resource("cache", CACHE_FIGURES, self.caches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--resources", type=int, default=100, help="queues, and caches")
    parser.add_argument("--number", type=int, default=50, help="scrapes per round")
    parser.add_argument("--repeat", type=int, default=15, help="rounds")
    args = parser.parse_args()

    observer = PrometheusObserver()
    observer.registry.register(_Resources(args.tenants, args.resources))
    key = Ed25519PrivateKey.generate()
    verifier = TokenVerifier({"felix": {key_id(key.public_key()): key.public_key()}})
    check = BearerAuthenticator(
        verifier=verifier, secrets=SharedSecretAuthenticator.from_setting("scrape-secret")
    ).authenticate
    now = time.time()
    token = issue_token(
        key,
        subject="app",
        tenant="t3",
        now=now,
        ttl=3600,
        token_id="bench",
        permissions=[Permission.parse("*")],
    )
    open_ = Responder(observer.registry, lambda: True)
    checked = Responder(observer.registry, lambda: True, check=check)

    def request(credential: str | None) -> bytes:
        auth = f"Authorization: Bearer {credential}\r\n" if credential else ""
        return f"GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()

    cases: dict[str, tuple[Responder, bytes]] = {
        "open (no authentication)": (open_, request(None)),
        "operator (shared secret)": (checked, request("scrape-secret")),
        "tenant (Felix token)": (checked, request(token)),
    }
    sizes = {name: len(r.response(head)) for name, (r, head) in cases.items()}
    assert all(r.response(h).startswith(b"HTTP/1.1 200") for r, h in cases.values())
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, (responder, head) in cases.items():
            call: Callable[[bytes], bytes] = responder.response
            start = time.perf_counter()
            for _ in range(args.number):
                call(head)
            rounds[name].append((time.perf_counter() - start) / args.number)
    samples = args.resources * (len(QUEUE_FIGURES) + len(CACHE_FIGURES))
    print(
        f"/metrics scrape: {args.resources} queues + {args.resources} caches over "
        f"{args.tenants} tenants ({samples} per-resource samples); "
        f"{args.repeat} rounds x {args.number} scrapes; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    base = statistics.median(rounds["open (no authentication)"])
    for name, times in rounds.items():
        median = statistics.median(times)
        print(
            f"  {name:26} median {median * 1e3:7.3f} ms  min {min(times) * 1e3:7.3f}  "
            f"max {max(times) * 1e3:7.3f}  x{median / base:4.2f} of open  "
            f"{sizes[name]:>7} bytes"
        )


if __name__ == "__main__":
    main()
