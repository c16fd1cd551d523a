"""felix_runtime_anyio: the broker on anyio (asyncio and trio backends).

It will drive the same sans-IO glue as felix_runtime_asyncio over an anyio UDP socket.
"""
