"""The glue between a durable log store and the engine: jobs out, notices in.

Theory of operation
-------------------
A durable :class:`~felix_core.disklog.DiskLogStore` never blocks: what may block (fsyncs,
cold reads) it hands out as *jobs*. :class:`StorageGlue` is the server's side of that
contract, and the adapters' one way in:

* :meth:`StorageGlue.take_jobs` after every loop pass: the jobs to run now. The adapter runs
  each ``job.run()`` on a worker thread (asyncio: the loop's bounded executor; anyio:
  ``to_thread.run_sync`` under a limiter) and, back on the loop thread, calls
  :meth:`StorageGlue.job_done` with what ``run`` returned or raised;
* :meth:`StorageGlue.job_done` lets the job update its log (``job.finish``) and feeds the
  notices it returns to the engine: ``LogCommitted`` -> ``Broker.log_committed`` (the
  committed publishes waiting on the log complete: group commit), ``LogReadable`` ->
  ``Broker.log_readable``, ``LogFailed`` -> ``Broker.log_failed``. The router then sorts the
  completions into the connections' mailboxes, so the adapter's transmit that follows
  sends them;
* the store's fsync-interval timer is one more deadline of the server's one timer
  (:meth:`get_timer` / :meth:`handle_timer`);
* the metadata writes of the route (:class:`~felix_server.local_route.LocalRoute`), when its
  store writes files: :meth:`take_jobs` hands them out among the store's jobs, one at a
  time, after making and listing a new durable resource's log directories on the job's
  thread too (:meth:`log_dirs`, :meth:`DiskLogStore.prepare_directory
  <felix_core.disklog.DiskLogStore.prepare_directory>`), so neither the definition's
  fsyncs nor the ``mkdir`` nor the listing the log's open starts with run on the loop (the
  engine opens the log when the job's ``finish`` feeds it the new definition, and takes
  the listing then). A restart opens (recovers) every log before the loop serves: that
  listing and scan are the start's recovery time.

Shutdown: :meth:`final_jobs` asks every log for a last sync once no job is in flight;
the adapter runs them like the others, then calls :meth:`close` (logs closed, descriptors
released). Jobs in flight are counted (:attr:`in_flight`) so the adapter knows when it
may.
"""

from __future__ import annotations

from collections.abc import Callable

from felix_core.broker import Broker
from felix_core.disklog import (
    DiskLogStore,
    LogCommitted,
    LogFailed,
    LogReadable,
    StorageJob,
)
from felix_core.metadata import LEAF_KINDS, Kind, ResourceRecord
from felix_core.queue_journal import state_path
from felix_server.local_route import LocalRoute, MetadataJob

__all__ = ["StorageGlue"]


class StorageGlue:
    """Drives a :class:`~felix_core.disklog.DiskLogStore`'s jobs and timer for one engine.

    Args:
        store: the durable log store the engine's logs come from.
        engine: the engine told what the jobs found.
        route: the route whose metadata writes run as jobs too (when its store can).
    """

    def __init__(self, store: DiskLogStore, engine: Broker, route: LocalRoute | None = None):
        self.store = store
        self.engine = engine
        self.route = route
        if route is not None:
            route.write_off_loop(self.log_dirs)
        self.in_flight = 0
        """Jobs handed out by :meth:`take_jobs` whose :meth:`job_done` has not come."""
        self.failed_jobs = 0
        """Jobs whose ``run`` raised (each also fails its log or its read)."""

    def take_jobs(self, now: float) -> list[StorageJob]:
        """The jobs to run now (each on a worker thread, then :meth:`job_done`)."""
        jobs = self.store.take_jobs(now)
        if self.route is not None:
            jobs += self.route.take_jobs(now)
        self.in_flight += len(jobs)
        return jobs

    def log_dirs(self, record: ResourceRecord) -> Callable[[], None] | None:
        """For a resource about to be created: make and list its logs' directories (a
        durable stream, queue, with its state log, or cache) on the job's thread, so that
        opening the logs on the loop touches no file; or None (nothing on disk)."""
        dirs = self._log_directories(record)
        if not dirs:
            return None
        store = self.store

        def make() -> None:
            for directory in dirs:
                store.prepare_directory(directory)

        return make

    def _log_directories(self, record: ResourceRecord) -> list[str]:
        """The directories of a resource's durable logs (none for an ephemeral one)."""
        if record.kind not in LEAF_KINDS or record.settings.get("durability") != "durable":
            return []
        paths = [record.path]
        if record.kind is Kind.QUEUE:
            paths.append(state_path(record.path))
        return [self.store.directory(record.kind.value, path, record.uid) for path in paths]

    def job_done(self, job: StorageJob, outcome: object, now: float) -> None:
        """A job's ``run`` returned ``outcome`` (or raised it, an exception): apply it on
        the loop thread and tell the engine.

        Args:
            job: the job from :meth:`take_jobs`.
            outcome: what ``job.run()`` returned, or the exception it raised.
            now: the current time.
        """
        self.in_flight -= 1
        if isinstance(outcome, BaseException):
            self.failed_jobs += 1
        engine = self.engine
        for notice in job.finish(outcome, now):
            kind = Kind(notice.kind)
            if isinstance(notice, LogCommitted):
                engine.log_committed(kind, notice.path, notice.offset, now)
            elif isinstance(notice, LogReadable):
                engine.log_readable(kind, notice.path, now)
            elif isinstance(notice, LogFailed):
                engine.log_failed(kind, notice.path, notice.error, now)
        if isinstance(job, MetadataJob) and job.prepared.current is None:
            # a create: its logs opened in finish, or it failed; listings left go
            self.store.forget_listings(self._log_directories(job.prepared.record))

    def get_timer(self) -> float | None:
        """The store's next fsync-interval deadline (None: nothing to time)."""
        return self.store.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire the store's due fsync intervals (the jobs come with :meth:`take_jobs`)."""
        deadline = self.store.get_timer()
        if deadline is not None and deadline <= now:
            self.store.handle_timer(now)

    def final_jobs(self, now: float) -> list[StorageJob]:
        """At shutdown, once :attr:`in_flight` is 0: a last sync of every log with unsynced
        bytes (run them, :meth:`job_done` each, then :meth:`close`)."""
        for log in self.store.logs():
            if log.unsynced_bytes and log.failed is None:
                log.sync_wanted = True
        return self.take_jobs(now)

    def close(self) -> None:
        """Close every log (after the final syncs): their memory is released."""
        for log in self.store.logs():
            log.close()
