"""felix_server: the sans-IO broker server shared by every runtime adapter.

It holds what both runtimes need and neither should decide on its own:

* :mod:`felix_server.server`: :class:`~felix_server.server.FelixServer`, datagrams in and
  out for every QUIC connection of a broker (demultiplexed by connection ID), the
  :class:`~felix_core.broker.Broker`, encode-once fanout of its outputs, one combined timer
  and graceful shutdown;
* :mod:`felix_server.session`: one QUIC connection: aioquic events -> felix_proto
  ``ServerConnection`` -> broker, replies and errors, back-pressure;
* :mod:`felix_server.dispatch`: one engine call per request kind;
* :mod:`felix_server.quic`: aioquic's connection with Felix's ALPN rule;
* :mod:`felix_server.config`: the typed settings model and its pure loader;
* :mod:`felix_server.observer` and :mod:`felix_server.stats`: hooks and figures for
  metrics (no-ops by default).

Pure like felix_proto and felix_core: no I/O, no clock; ``now`` is always an argument.
"""
