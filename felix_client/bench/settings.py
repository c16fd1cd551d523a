"""What a bench run measures and where: the scenario matrices, durations, QUIC settings and
the broker a load generator connects to.

Everything here is plain data, picklable, so the parent hands it to the load-generator
processes as it is. It imports nothing heavy (the client only when a load generator
connects): :mod:`.parser`, and so ``felix completion``, reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import Client

__all__ = [
    "ENGINES",
    "RAW_CLIENT",
    "RAW_SERVER",
    "RUNTIMES",
    "SCENARIOS",
    "BrokerTarget",
    "Matrix",
    "QuicSettings",
    "RunSettings",
]

SCENARIOS = (
    "raw-quic",
    "pubsub-latency",
    "pubsub-throughput",
    "queue",
    "cache",
    "durable",
    "memory",
    "all",
)
"""The scenarios ``felix bench`` knows, in the order ``all`` runs them."""

ENGINES = ("aioquic", "qh3")
"""The QUIC engines :func:`.quic_endpoint.load_engine` knows."""
RUNTIMES: dict[str, list[str]] = {
    "asyncio": ["--runtime", "asyncio"],
    "anyio-asyncio": ["--runtime", "anyio", "--backend", "asyncio"],
    "anyio-trio": ["--runtime", "anyio", "--backend", "trio"],
    "asyncio-uvloop": ["--runtime", "asyncio", "--loop", "uvloop"],
}
"""``--runtime`` of ``felix bench`` -> the ``felix broker`` flags that select it
(``asyncio-uvloop``: the asyncio runtime on uvloop, the ``uvloop`` extra)."""

MiB = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicSettings:
    """The QUIC settings of one side of a connection."""

    max_datagram_size: int
    max_data: int
    max_stream_data: int
    idle_timeout: float


RAW_SERVER = QuicSettings(
    max_datagram_size=1452, max_data=16 * MiB, max_stream_data=4 * MiB, idle_timeout=15.0
)
"""The broker's defaults (``felix broker --print-config``, ``[transport]``): the raw QUIC
server uses them so that the ceiling is measured with the settings the broker runs with."""
RAW_CLIENT = QuicSettings(
    max_datagram_size=1452, max_data=8 * MiB, max_stream_data=4 * MiB, idle_timeout=60.0
)
"""``felix_client``'s defaults (``TransportOptions``), for the raw QUIC client."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerTarget:
    """How a load generator reaches the broker."""

    url: str
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 30.0
    quic_engine: str = "aioquic"
    """The QUIC engine of the load generators' clients (and of the broker ``felix bench``
    starts)."""

    def connect(self) -> Client:
        """A new client (enter it with ``async with``); one QUIC connection."""
        from ..client import Client

        return Client(
            self.url,
            ca_file=self.ca_file,
            insecure=self.insecure,
            timeout=self.timeout,
            client_name="felix-bench",
            quic_engine=self.quic_engine,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Matrix:
    """The parameters each scenario runs through (``all`` runs every combination)."""

    latency_payloads: tuple[int, ...] = (0, 100, 1024)
    latency_fanouts: tuple[int, ...] = (1, 10)
    throughput_payloads: tuple[int, ...] = (100, 1024, 4096)
    throughput_batches: tuple[int, ...] = (1, 64)
    throughput_fanouts: tuple[int, ...] = (1, 10)
    queue_consumers: tuple[int, ...] = (1, 4)
    queue_payload: int = 100
    queue_enqueue_batch: int = 64
    cache_value: int = 256
    cache_concurrency: tuple[int, ...] = (1, 64)
    durable_payload: int = 100
    durable_batch: int = 64
    """Records per publish of the ``durable`` scenario (accepted and committed)."""
    durable_publishers: tuple[int, ...] = (1, 64)
    """Concurrent committed publishers of the ``durable`` scenario."""
    raw_message: int = 100
    """Size of the raw one-way messages (the pub/sub throughput anchor is 100 B records)."""
    raw_ping: int = 64
    """Size of the raw ping-pong message."""
    memory_publishes: int = 1_000_000
    """Records the ``memory`` scenario publishes past its stalled subscriber."""
    memory_payload: int = 100
    memory_batch: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """One invocation of ``felix bench``."""

    seconds: float = 2.0
    """How long each figure's load runs (warm-up and draining come on top)."""
    loop: str = "asyncio"
    """The event loop of the Felix load generators (``asyncio`` or ``trio``)."""
    matrix: Matrix = field(default_factory=Matrix)
    stream_settings: dict[str, object] = field(default_factory=dict)
    """Settings for every stream the bench creates (default: the broker's defaults)."""
    engines: tuple[str, ...] = ("aioquic", "qh3")
    """Raw QUIC engines to measure (qh3 only when installed)."""
    quic_engines: tuple[str, ...] = ("aioquic",)
    """The QUIC engines the Felix scenarios run on, one after the other (broker and
    clients on the same engine); each figure's anchor is raw QUIC of its own engine."""
    redis: bool = True
    """Measure redis-py against a local redis-server next to the cache (when installed)."""
