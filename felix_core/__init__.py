"""Felix engine: one append-only log with stream, queue and cache projections.

Pure: no I/O, no clock, no threads. Time arrives as ``now`` (seconds since the epoch);
deadlines leave through ``get_timer()``. The runtime talks to :class:`Broker` only.
"""
