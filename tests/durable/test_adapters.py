"""Both runtime adapters run storage jobs on worker threads, never on the event loop: an
fsync that blocks leaves the loop running, and its result comes back on the loop and
completes the committed publish; the unlinks of segments retention deleted run there too;
``close_storage`` waits for the jobs in flight and runs
the final syncs. asyncio's ``UdpRuntime``; anyio's ``AnyioUdpRuntime`` on asyncio and trio.
The engine is fed directly (no QUIC client: what is under test is the job plumbing)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import anyio
import pytest

from felix_core.disklog import DiskLogConfig, DiskLogStore
from felix_core.events import Appended
from felix_core.filesystem import MemoryFileSystem
from felix_core.metadata import MemoryMetadataStore
from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

pytestmark = pytest.mark.anyio
S = ("default", "default", "s")
R = ("default", "default", "r")


class GatedFs(MemoryFileSystem):
    """A MemoryFileSystem whose fsyncs wait for a gate and note their thread."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sync_threads: set[int] = set()
        self.remove_threads: set[int] = set()

    def remove(self, name: str) -> None:
        self.remove_threads.add(threading.get_ident())
        super().remove(name)

    def sync(self, name: str) -> None:
        self.sync_threads.add(threading.get_ident())
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        super().sync(name)


def make_server(fs: GatedFs) -> FelixServer:
    config = ServerConfig(listen="127.0.0.1:0")
    server = FelixServer(
        config,
        make_quic_configuration(config),
        now=0.0,
        logs=DiskLogStore(fs, DiskLogConfig(segment_bytes=4096)),
        metadata=MemoryMetadataStore(),
    )
    server.router.attach(1, 0.0)
    server.broker.create(1, 1, "stream", *S, {"durability": "durable", "fsync": "none"}, now=0.0)
    server.router.collect(0.0)
    server.router.take(1, 0.0)
    return server


async def wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.005)


async def exercise(
    fs: GatedFs, server: FelixServer, wake: Callable[[], None], close: Callable[[], Awaitable[None]]
) -> None:
    loop_thread = threading.get_ident()
    server.broker.publish(1, 2, *S, [b"x"], committed=True, now=1.0)
    server.router.collect(1.0)
    wake()
    await wait_for(fs.entered.is_set)
    # The fsync is blocked on its gate, and this coroutine, on the loop, goes on.
    assert loop_thread not in fs.sync_threads
    acked: list[Appended] = []
    await anyio.sleep(0.05)
    acked += [e for e in server.router.take(1, 1.0) if isinstance(e, Appended)]
    assert acked == []  # not before its fsync
    fs.gate.set()
    with anyio.fail_after(10):
        while not acked:
            await anyio.sleep(0.005)
            acked += [e for e in server.router.take(1, 1.0) if isinstance(e, Appended)]
    assert [e.request for e in acked] == [2]
    log = server.storage.store.log("stream", S) if server.storage else None
    assert log is not None and log.committed_offset == 1
    # Accepted records under fsync=none: only the final sync at shutdown writes them out.
    server.broker.publish(1, 3, *S, [b"y", b"z"], committed=False, now=1.0)
    server.router.collect(1.0)
    wake()
    await anyio.sleep(0.05)
    assert log.unsynced_bytes > 0
    await unlinks_off_the_loop(fs, server, wake)
    await close()
    assert log.unsynced_bytes == 0 and log.committed_offset == 3
    assert loop_thread not in fs.sync_threads


async def unlinks_off_the_loop(fs: GatedFs, server: FelixServer, wake: Callable[[], None]) -> None:
    """Segments retention deletes are unlinked by worker threads too."""
    loop_thread = threading.get_ident()
    small = {"durability": "durable", "retention_max_bytes": 4096}  # 4 KiB segments
    server.broker.create(1, 4, "stream", *R, small, now=1.0)
    server.router.collect(1.0)
    server.router.take(1, 1.0)
    log = server.storage.store.log("stream", R) if server.storage else None
    assert log is not None
    request = 100
    with anyio.fail_after(10):
        while not fs.remove_threads:  # retention acts on publishes, once rolls are synced
            request += 1
            server.broker.publish(1, request, *R, [bytes(1000)], now=1.0)
            server.router.collect(1.0)
            wake()
            await anyio.sleep(0.005)
    assert log.stats.segments_deleted > 0
    assert loop_thread not in fs.remove_threads


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_runtime_runs_jobs_on_worker_threads() -> None:
    from felix_runtime_asyncio.runtime import UdpRuntime

    fs = GatedFs()
    server = make_server(fs)
    runtime = UdpRuntime(server)
    await runtime.start("127.0.0.1", 0)
    try:
        await exercise(fs, server, runtime.wake, runtime.close_storage)
    finally:
        runtime.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_anyio_runtime_runs_jobs_on_worker_threads() -> None:
    fs = GatedFs()
    server = make_server(fs)
    runtime = AnyioUdpRuntime(server)
    runtime.bind("127.0.0.1", 0)
    serving = anyio.CancelScope()
    stopped = anyio.Event()

    async def serve() -> None:
        with serving:
            await runtime.serve()
        stopped.set()

    async def close() -> None:  # as the app does: stop the loop, then the final syncs
        serving.cancel()
        await stopped.wait()
        await runtime.close_storage()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await exercise(fs, server, runtime.wake, close)
    finally:
        runtime.close()
