"""The broker's data directory, as both runtimes open it, and how they run storage jobs.

Layout of ``<data-dir>`` (``--data-dir``, default ``./felix-data``)::

    metadata/   resource definitions (felix_runtime.metadata_store.FileMetadataStore)
    logs/       durable resources' segments (felix_core.disklog.DiskLogStore), one
                directory per resource: <kind>/<tenant>/<namespace>/<name>/<uid>/
    cert.pem, key.pem   the development certificate (felix_runtime.tls)
    lock        held (flock) while a broker runs on the directory: a second broker started
                on it refuses to start instead of writing the same files

:func:`build_server` opens both stores on :class:`~felix_runtime.filesystem.OsFileSystem`
and builds the :class:`~felix_server.server.FelixServer` on them: the engine is fed the
stored resource definitions, which opens (recovers) every durable log, after
:func:`sweep_logs` removed the directories of incarnations no definition names (a resource
deleted while the broker died before its files went: never opened), and the time that
takes is the recovery duration (a metric, and a log line per log that recovery had to
repair). :func:`run_job` is what a worker thread runs for each storage job: ``job.run()``,
its exception returned rather than raised (the job's ``finish`` decides what it means), and
the fsync's duration observed.

Nothing here imports an event loop: each adapter puts :func:`run_job` on its own threads
(asyncio: ``loop.run_in_executor`` on a :class:`~concurrent.futures.ThreadPoolExecutor` of
:data:`STORAGE_THREADS`; anyio: ``to_thread.run_sync`` under a ``CapacityLimiter`` of the
same size).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from aioquic.quic.configuration import QuicConfiguration

from felix_core.disklog import DiskLogStore, StorageJob, SyncJob
from felix_core.filesystem import FileSystemError
from felix_core.queue_journal import state_path
from felix_runtime.filesystem import OsFileSystem
from felix_runtime.logs import log_fields, logger
from felix_runtime.metadata_store import FileMetadataStore
from felix_server.access import Authenticate, Exchange
from felix_server.config import ServerConfig
from felix_server.observer import ServerObserver
from felix_server.quic import FelixQuicConnection
from felix_server.quic_engine import QuicConnectionLike
from felix_server.server import FelixServer

__all__ = [
    "STORAGE_THREADS",
    "BrokerStorage",
    "build_server",
    "open_storage",
    "run_job",
    "sweep_logs",
]

STORAGE_THREADS = 4
"""Worker threads for fsyncs and cold reads (at most one sync per log is in flight; more
threads let logs on the same disk queue their fsyncs in the kernel together)."""

JobTimer = Callable[[StorageJob, float], None]
"""Told how long each job's ``run`` took (the Prometheus observer's ``storage_job_ran``)."""


@dataclass(slots=True)
class BrokerStorage:
    """The opened data directory."""

    logs_fs: OsFileSystem
    """``<data-dir>/logs``."""
    metadata_fs: OsFileSystem
    """``<data-dir>/metadata``."""
    logs: DiskLogStore
    """Durable resources' logs (ephemeral ones get memory logs from it too)."""
    metadata: FileMetadataStore
    """Resource definitions."""
    lock_fd: int
    """The open ``lock`` file, flocked."""

    def close(self) -> None:
        """Release the cached file descriptors (after the logs' final syncs) and the lock."""
        self.logs_fs.close()
        self.metadata_fs.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = -1


def _lock(data_dir: str) -> int:
    """Take the data directory's lock (or raise OSError naming the directory)."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"{data_dir} is in use by another broker (its lock file is held)") from None
    return fd


def open_storage(
    config: ServerConfig, *, on_append: Callable[[float], None] | None = None
) -> BrokerStorage:
    """Open (creating if missing) the data directory's stores.

    Args:
        config: the broker configuration (``data_dir``).
        on_append: told the duration of every append to a segment (a metric).

    Raises:
        OSError: the data directory cannot be created or read, or another broker holds it
            (the broker cannot start: exit code 1).
    """
    lock_fd = _lock(config.data_dir)
    try:
        logs_fs = OsFileSystem(
            os.path.join(config.data_dir, "logs"),
            on_append=on_append,
            durable_removes=False,
            durable_mkdirs=False,  # a create's directories: fsynced by the log's first sync
        )
        metadata_fs = OsFileSystem(os.path.join(config.data_dir, "metadata"))
        metadata = FileMetadataStore(metadata_fs)
    except FileSystemError as exc:  # not a usable data directory
        os.close(lock_fd)
        raise OSError(f"cannot open the data directory {config.data_dir}: {exc}") from exc
    except BaseException:
        os.close(lock_fd)
        raise
    for damaged in metadata.damaged:
        logger.error(
            "resource definition not loaded (damaged file)",
            extra=log_fields(file=f"metadata/{damaged.name}", reason=damaged.reason),
        )
    return BrokerStorage(logs_fs, metadata_fs, DiskLogStore(logs_fs, root=""), metadata, lock_fd)


def build_server(
    config: ServerConfig,
    quic_configuration: QuicConfiguration,
    storage: BrokerStorage,
    observer: ServerObserver,
    *,
    connection_factory: Callable[..., QuicConnectionLike] = FelixQuicConnection,
    authenticate: Authenticate | None = None,
    exchange: Exchange | None = None,
) -> tuple[FelixServer, float]:
    """Build the server on the opened stores; the engine recovers every durable log.

    ``connection_factory`` (the configured QUIC engine's), ``authenticate`` and ``exchange`` go to
    :class:`~felix_server.server.FelixServer` unchanged.

    Returns:
        The server and how long recovery took, in seconds (after a log line for each log
        that recovery truncated or found damaged).
    """
    started = time.perf_counter()
    sweep_logs(storage)
    server = FelixServer(
        config,
        quic_configuration,
        now=time.time(),
        observer=observer,
        logs=storage.logs,
        metadata=storage.metadata,
        connection_factory=connection_factory,
        authenticate=authenticate,
        exchange=exchange,
    )
    seconds = time.perf_counter() - started
    logs = list(storage.logs.logs())
    for record in storage.metadata.records():
        if record.settings.get("durability") == "durable" and (
            storage.logs.log(record.kind.value, record.path) is None
        ):
            logger.error(  # the engine leaves a resource it cannot open unserved
                "durable log could not be opened: the resource is not served",
                extra=log_fields(kind=record.kind.value, path="/".join(record.path)),
            )
    for log in logs:
        report = log.recovery
        where = log.directory
        if report.corrupt_offset is not None:
            logger.error(
                "durable log damaged: read-only below the bad batch",
                extra=log_fields(log=where, offset=report.corrupt_offset),
            )
        if report.truncated_bytes:
            logger.warning(
                "durable log: torn tail truncated",
                extra=log_fields(log=where, bytes=report.truncated_bytes),
            )
    logger.info(
        "storage: resource definitions and durable logs",
        extra=log_fields(
            data_dir=config.data_dir,
            resources=len(storage.metadata.records()),
            durable_logs=len(logs),
            recovery_s=round(seconds, 3),
        ),
    )
    return server, seconds


def sweep_logs(storage: BrokerStorage) -> None:
    """Remove the log directories of incarnations the stored definitions no longer name (a
    resource deleted while the broker died before its files went), before any log opens;
    a log line for each. A durable queue's definition names its state log too."""
    live = [
        (record.kind.value, record.path, record.uid)
        for record in storage.metadata.records()
        if record.settings.get("durability") == "durable"
    ]
    live += [(kind, state_path(path), uid) for kind, path, uid in live if kind == "queue"]
    report = storage.logs.sweep(live)
    for directory in report.removed:
        logger.warning(
            "durable log of a deleted resource removed at start",
            extra=log_fields(log=directory),
        )
    for directory, reason in report.failed:
        logger.error(
            "durable log of a deleted resource could not be removed (never opened)",
            extra=log_fields(log=directory, reason=reason),
        )


def run_job(job: StorageJob, timer: JobTimer | None = None) -> object:
    """Run one storage job on a worker thread.

    Args:
        job: the job.
        timer: told how long ``run`` took (thread-safe callers only).

    Returns:
        What ``job.run()`` returned, or the exception it raised (for ``job.finish``).
    """
    started = time.perf_counter()
    outcome: object
    try:
        outcome = job.run()
    except Exception as exc:  # reported to the job's finish, which fails its log
        outcome = exc
    if timer is not None:
        timer(job, time.perf_counter() - started)
    return outcome


def is_sync(job: StorageJob) -> bool:
    """Whether ``job`` is an fsync (for the sync-duration histogram)."""
    return isinstance(job, SyncJob)
