"""felix_server: the sans-IO broker server shared by every runtime adapter.

It will hold what both runtimes need and neither should decide on its own: the glue that
maps aioquic's sans-IO QUIC events to felix_proto server connections and those to the
felix_core broker, and the configuration model. Pure like felix_proto and felix_core: no
I/O, no clock.
"""
