"""felix_client: the Felix client library and the ``felix`` command-line tool.

It will hold an anyio-based async client (usable from asyncio and trio), a blocking facade,
and the ``felix`` CLI.
"""
