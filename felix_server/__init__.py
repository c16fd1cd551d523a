"""felix_server: the sans-IO broker server shared by every runtime adapter.

It holds what both runtimes need and neither should decide on its own:

* :mod:`felix_server.server`: :class:`~felix_server.server.FelixServer`, datagrams in and
  out for every QUIC connection of a broker (demultiplexed by connection ID), one combined
  timer and graceful shutdown (:mod:`felix_server.drain`);
* :mod:`felix_server.session`: one QUIC connection: aioquic events -> felix_proto
  ``ServerConnection`` -> router, answers and feeds back; its back-pressure is a
  :mod:`felix_server.gate`, its held feed writes a :mod:`felix_server.outbox`;
* :mod:`felix_server.router`: where each request is served (the local engine today, a peer
  broker later) and one mailbox of engine events per connection;
  :mod:`felix_server.local_route` turns a wire request into the engine call and applies the
  engine's metadata writes to the store; :mod:`felix_server.requests` turns completions
  into wire replies;
* :mod:`felix_server.access`: the authentication seam (``Hello`` -> principal or refusal);
* :mod:`felix_server.batches` and :mod:`felix_server.split`: event batches encoded once,
  and cut for clients with a small ``max_frame_size``;
* :mod:`felix_server.quic`: aioquic's connection with Felix's ALPN rule;
* :mod:`felix_server.config`: the typed settings model and its pure loader;
* :mod:`felix_server.observer` and :mod:`felix_server.stats`: hooks and figures for
  metrics (no-ops by default).

Pure like felix_proto and felix_core: no I/O, no clock; ``now`` is always an argument.
"""
