"""``felix bench``: measure a broker the way ``nats bench`` does, with ratios to the QUIC
engine's own ceiling from the same run.

The broker runs in its own process (started here with ``felix broker``, or the one named
by ``--server``); load generators run in worker processes. Modules, one concern each:

* :mod:`.parser`: the command line (light: ``felix completion`` reads it);
* :mod:`.command`: the plan of each scenario, the run, the output;
* :mod:`.servers`: the broker and redis-server this command starts;
* :mod:`.workers`: the load-generator processes and their jobs' context;
* :mod:`.runner`: what a scenario gets from the run, and the progress line;
* :mod:`.quic_endpoint`, :mod:`.raw_quic`: the ``raw-quic`` ceiling (aioquic, qh3);
* :mod:`.pubsub`, :mod:`.queues`, :mod:`.cache`, :mod:`.memory`: the Felix scenarios
  (their jobs and the parent's side);
* :mod:`.hdr`, :mod:`.report`: latency percentiles, figures, ratios, table and JSON;
* :mod:`.plot`: ``felix bench plot``, PNGs of a JSON result (matplotlib).

``docs/performance.md`` says what each scenario measures and shows the latest figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .command import main

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    """``main`` is imported on first use (PEP 562): importing :mod:`.parser` must not load
    the scenarios, the client and the bench extra."""
    if name == "main":
        from .command import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
