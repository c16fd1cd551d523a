"""felix_runtime_asyncio: the broker on asyncio.

It will attach felix_server's sans-IO glue to a UDP socket under asyncio: move datagrams,
arm one timer, dispatch events. It also provides the broker binary, the metrics endpoint and
graceful shutdown.
"""
