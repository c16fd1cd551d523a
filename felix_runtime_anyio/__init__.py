"""felix_runtime_anyio: the broker on anyio (asyncio and trio backends).

It attaches felix_server's sans-IO glue to a UDP socket under anyio (:mod:`.runtime`: move
datagrams, arm one timer, dispatch) and provides the broker binary (:func:`main`, used by
``felix broker --runtime anyio --backend asyncio|trio`` and ``python -m
felix_runtime_anyio``), with the metrics and health endpoint served on anyio
(:mod:`.http`) and graceful shutdown on SIGTERM / SIGINT (:mod:`.app`). Certificates,
logs, the Prometheus observer and the process preamble are :mod:`felix_runtime`'s, shared
with the asyncio runtime; the settings loader is felix_server's.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker with command-line ``argv`` (``sys.argv[1:]`` when None):
    ``--backend asyncio|trio`` plus every ``felix-broker`` setting. Returns the exit code."""
    from felix_runtime_anyio.app import main as app_main

    return app_main(argv)
