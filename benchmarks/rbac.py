"""What authorization costs a publish: single-record publishes through the server's router
(the one check, then the engine), in process, no network.

Measures publishes per second (one 100-byte record each, the request answered and taken
from the connection's mailbox as a session does) for a connection whose principal is:

* ``operator``: the anonymous operator (the check's shortest path);
* ``own``: a token's own permission ``publish:default/*`` among 20 others;
* ``role``: the same permission from a role bound to one of its groups, in a tenant with
  100 other roles and bindings (resolved once, when the connection is identified: the
  per-publish check is the ``own`` case's). Skipped on a tree without roles.

and, for reference, ``engine``: the same publishes straight to the engine's route, with no
check at all. ``--rounds N`` repeats the set and prints the median of each.

Usage: ``python benchmarks/rbac.py [--seconds S] [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_core import Broker, BrokerConfig
from felix_core.access import ANONYMOUS, Permission, Principal
from felix_proto import messages as m
from felix_server.local_route import LocalRoute
from felix_server.observer import ServerObserver
from felix_server.router import UNIDENTIFIED, Router

T, NS = "default", "default"
PAYLOAD = b"x" * 100


def _timed(step: Callable[[], int], seconds: float) -> float:
    for _ in range(200):  # warm-up
        step()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            done += step()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def _admin(router: Router, kind: str, name: str = "", ns: str = "", **settings: Any) -> None:
    router.submit(
        0,
        0,
        m.AdminCreate(
            request_id=0, kind=kind, tenant=T, namespace=ns, name=name, settings=settings
        ),
        0.0,
    )
    router.take(0, 0.0)


def _router() -> Router:
    router = Router(LocalRoute(Broker(BrokerConfig(memory_limit_bytes=1 << 34))), ServerObserver())
    router.attach(0, 0.0)  # the operator that sets up
    _admin(router, "stream", "bench", NS, retention_max_records=1000)
    return router


def _principal(grants: list[str], **extra: Any) -> Principal:
    noise = [f"subscribe:other-{i}/*" for i in range(20)]
    return Principal(
        subject="bench",
        tenant=T,
        permissions=frozenset(Permission.parse(g) for g in [*noise, *grants]),
        issuer="felix",
        **extra,
    )


def bench(case: str, seconds: float) -> float:
    """Publishes per second for one case (see the module docstring)."""
    router = _router()
    if case == "role":
        for i in range(100):
            _admin(router, "role", f"r{i}", permissions=[f"publish:ns-{i}/*"])
            _admin(router, "binding", f"b{i}", role=f"r{i}", groups=[f"g{i}"])
        _admin(router, "role", "writer", permissions=["publish:default/*"])
        _admin(router, "binding", "writers", role="writer", groups=["writers"])
        who = _principal([], groups=("writers",))
    elif case == "own":
        who = _principal(["publish:default/*"])
    else:
        who = ANONYMOUS
    router.attach(1, 0.0, UNIDENTIFIED)
    router.identify(1, who)
    numbers = itertools.count(1)
    msg = m.Publish(request_id=0, tenant=T, namespace=NS, stream="bench", payload=PAYLOAD)
    if case == "engine":
        route = router.local

        def step() -> int:
            route.submit(1, next(numbers), msg, 1.0)
            route.take_events(1.0)
            return 1

    else:
        submit, take = router.submit, router.take

        def step() -> int:
            submit(1, next(numbers), msg, 1.0)
            take(1, 1.0)
            return 1

    return _timed(step, seconds)


def cases() -> list[str]:
    """The cases this tree can run (``role`` needs roles)."""
    if "groups" not in Principal.__dataclass_fields__:
        return ["engine", "operator", "own"]
    return ["engine", "operator", "own", "role"]


def main(argv: list[str] | None = None) -> int:
    """Run the cases ``--rounds`` times, interleaved, and print each one's median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are printed)")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {case: [] for case in cases()}
    for _ in range(args.rounds):
        for case, values in runs.items():
            values.append(bench(case, args.seconds))
    medians = {case: statistics.median(values) for case, values in runs.items()}
    if args.json:
        print(json.dumps({"python": platform.python_version(), **medians}, indent=2))
        return 0
    print(f"publish through the router (Python {platform.python_version()}, in-process)")
    for case, value in medians.items():
        ratio = value / medians["engine"]
        print(f"  {case:10s} {value:>12,.0f} publishes/s  ({ratio:.2f} of engine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
