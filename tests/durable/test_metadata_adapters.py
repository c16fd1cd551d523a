"""Both runtime adapters write resource definitions on worker threads: a create of a
durable stream whose definition file is stuck (a slow disk) leaves the loop running and is
answered once the file is written, then the stream takes publishes. asyncio's
``UdpRuntime``; anyio's ``AnyioUdpRuntime`` on asyncio and trio. The engine is fed
directly (no QUIC client: what is under test is the job plumbing)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest

from felix_core.disklog import DiskLogStore
from felix_core.events import Appended, EngineEvent, RequestRefused, ResourceDescribed
from felix_core.filesystem import MemoryFileSystem
from felix_runtime.metadata_store import FileMetadataStore
from felix_runtime_anyio.runtime import AnyioUdpRuntime
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

pytestmark = pytest.mark.anyio
S = ("default", "default", "s")


class GatedFs(MemoryFileSystem):
    """A MemoryFileSystem whose atomic writes wait for a gate (once closed) and note their
    thread."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()  # open while the store and the route start
        self.entered = threading.Event()
        self.write_threads: set[int] = set()

    def write_atomic(self, name: str, data: bytes) -> None:
        self.write_threads.add(threading.get_ident())
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        super().write_atomic(name, data)


class ThreadNotingFs(MemoryFileSystem):
    """A MemoryFileSystem that notes the thread of every directory listing and ``mkdir``
    (a real disk's ``listdir`` can block on a cold directory)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir_threads: list[tuple[str, int]] = []

    def list_dir(self, name: str) -> list[str]:
        self.dir_threads.append((name, threading.get_ident()))
        return super().list_dir(name)

    def make_dirs(self, name: str) -> None:
        self.dir_threads.append((name, threading.get_ident()))
        super().make_dirs(name)


def make_server(meta_fs: GatedFs, logs_fs: ThreadNotingFs) -> FelixServer:
    config = ServerConfig(listen="127.0.0.1:0")
    server = FelixServer(
        config,
        make_quic_configuration(config),
        now=0.0,
        logs=DiskLogStore(logs_fs),
        metadata=FileMetadataStore(meta_fs),
    )
    server.router.attach(1, 0.0)
    meta_fs.gate.clear()
    meta_fs.entered.clear()
    meta_fs.write_threads.clear()
    logs_fs.dir_threads.clear()
    return server


async def exercise(
    meta_fs: GatedFs, logs_fs: ThreadNotingFs, server: FelixServer, wake: Callable[[], None]
) -> None:
    loop_thread = threading.get_ident()
    server.broker.create(1, 1, "stream", *S, {"durability": "durable"}, now=1.0)
    server.router.collect(1.0)
    wake()
    with anyio.fail_after(10):
        while not meta_fs.entered.is_set():  # this coroutine, on the loop, goes on
            await anyio.sleep(0.005)
    await anyio.sleep(0.05)
    got: list[EngineEvent] = list(server.router.take(1, 1.0))
    assert got == []  # not answered before its definition is on disk
    assert logs_fs.list_dir("logs/stream/default/default/s")  # its directory: made already
    meta_fs.gate.set()
    with anyio.fail_after(10):
        while not any(isinstance(e, ResourceDescribed | RequestRefused) for e in got):
            await anyio.sleep(0.005)
            got += server.router.take(1, 1.0)
    assert [type(e) for e in got] == [ResourceDescribed]
    assert loop_thread not in meta_fs.write_threads and meta_fs.write_threads
    # the new log's directory was made and listed on the worker, and its open on the loop
    # (when the definition came back) touched no directory
    directory = "logs/stream/default/default/s/"
    touched = [(name, thread) for name, thread in logs_fs.dir_threads if name.startswith(directory)]
    assert touched and all(thread != loop_thread for _, thread in touched), touched
    assert server.storage is not None and not server.storage.store._listings  # taken
    server.broker.publish(1, 2, *S, [b"x"], now=1.0)
    server.router.collect(1.0)
    assert [e.request for e in server.router.take(1, 1.0) if isinstance(e, Appended)] == [2]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_runtime_writes_definitions_on_worker_threads() -> None:
    from felix_runtime_asyncio.runtime import UdpRuntime

    meta_fs, logs_fs = GatedFs(), ThreadNotingFs()
    server = make_server(meta_fs, logs_fs)
    runtime = UdpRuntime(server)
    await runtime.start("127.0.0.1", 0)
    try:
        await exercise(meta_fs, logs_fs, server, runtime.wake)
        await runtime.close_storage()
    finally:
        meta_fs.gate.set()
        runtime.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_anyio_runtime_writes_definitions_on_worker_threads() -> None:
    meta_fs, logs_fs = GatedFs(), ThreadNotingFs()
    server = make_server(meta_fs, logs_fs)
    runtime = AnyioUdpRuntime(server)
    runtime.bind("127.0.0.1", 0)
    serving = anyio.CancelScope()
    stopped = anyio.Event()

    async def serve() -> None:
        with serving:
            await runtime.serve()
        stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await exercise(meta_fs, logs_fs, server, runtime.wake)
            serving.cancel()
            await stopped.wait()
            await runtime.close_storage()
    finally:
        meta_fs.gate.set()
        runtime.close()
