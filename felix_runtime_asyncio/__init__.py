"""felix_runtime_asyncio: the broker on asyncio.

It attaches felix_server's sans-IO glue to a UDP socket under asyncio (:mod:`.runtime`:
move datagrams, arm one timer, dispatch), carries the metrics and health endpoint over an
asyncio TCP server (:mod:`.http`) and wires the broker binary (:func:`main`, used by
``felix broker`` / ``felix-broker`` / ``python -m felix_runtime_asyncio``) with graceful
shutdown on SIGTERM / SIGINT (:mod:`.app`). Certificates, logs, the Prometheus observer and
the process preamble are :mod:`felix_runtime`'s, shared with the anyio runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker with command-line ``argv`` (``sys.argv[1:]`` when None); see
    ``felix-broker --help``. Returns the exit code."""
    from felix_runtime_asyncio.app import main as app_main

    return app_main(argv)
