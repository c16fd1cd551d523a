"""felix_runtime: what both runtime adapters share and neither decides: TLS material,
logging, the Prometheus observer and HTTP responder, the process preamble.

* :mod:`felix_runtime.tls`: the configured certificate, or a self-signed one for development;
* :mod:`felix_runtime.logs`: structured logs (text or JSON lines);
* :mod:`felix_runtime.prometheus`: the observer that counts into Prometheus, the scrape-time
  collector of engine and session gauges, and :class:`~felix_runtime.prometheus.Responder`,
  which turns one HTTP request head into the response bytes for ``/metrics``, ``/live`` and
  ``/ready``;
* :mod:`felix_runtime.process`: ``main()``'s preamble (settings, ``--print-config``,
  logging, exit codes), certificate loading and the startup log lines;
* :mod:`felix_runtime.udp`: the broker's UDP socket (bound with large buffers, read a batch
  at a time, written without blocking).
* :mod:`felix_runtime.filesystem`: :class:`~felix_runtime.filesystem.OsFileSystem`, the file
  layer under durable logs and resource definitions (kept-open descriptors, fsyncs that
  are safe on worker threads);
* :mod:`felix_runtime.metadata_store`: resource definitions on disk, one atomically
  replaced file per resource;
* :mod:`felix_runtime.storage`: the data directory as both runtimes open it, the server
  built on it, and :func:`~felix_runtime.storage.run_job`, what a worker thread runs for a
  storage job.

It is runtime-neutral: nothing here imports asyncio, anyio or trio or runs a loop (the UDP
helpers are plain non-blocking socket calls). Each adapter (``felix_runtime_asyncio``,
``felix_runtime_anyio``) keeps only its event loop (how it waits for the socket and the
timer), its HTTP carrier (read a request head, write the responder's bytes) and its wiring.
"""
