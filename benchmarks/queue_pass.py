"""In-memory broker CPU per acked queue message: QUIC, session and engine, no sockets.

The sans-IO server of ``tests/runtime/memory_net.py`` (aioquic on both sides, datagrams
moved by hand, a fake clock) with one consumer that agreed to ``delivery-batch`` (prefetch
256), acking each batch as it arrives. Lists of 64 x 100 B are enqueued by engine calls
(through the server's router, which dispatches at once). After a warm-up of 2,000
messages, the thread CPU of the broker's work is summed: the server's calls
(``datagram_received``, ``handle_timer``, ``datagrams_to_send``) and the enqueue calls
(their dispatch); the client's work is not counted. Thread CPU moves little with the load
of the machine; compare code with ``PYTHONPATH`` on another checkout, alternating runs.

Usage: ``python benchmarks/queue_pass.py [--messages N] [--profile FILE]``; ``--profile``
writes a cProfile of the broker's calls only (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[1:1] = [str(ROOT / "tests"), str(ROOT / "tests" / "runtime")]  # the test harness

from memory_net import MemoryNet, N, T  # noqa: E402

from felix_proto import events as fe  # noqa: E402
from felix_proto.client import DELIVERY_BATCH  # noqa: E402

BATCH = 64
WARM_UP = 2_000


def run(messages: int, profile: cProfile.Profile | None) -> float:
    """Broker microseconds of thread CPU per acked message."""
    with tempfile.TemporaryDirectory() as tmp:
        net = MemoryNet(Path(tmp))
        client = net.client(capabilities=[DELIVERY_BATCH])
        felix = client.felix
        assert felix is not None
        net.broker.create("queue", T, N, "q", now=net.now)
        felix.consume(T, N, "q", prefetch=256, now=net.now)
        spent = [0.0]

        def timed(call: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.thread_time()
                if profile is not None:
                    profile.enable()
                try:
                    return call(*args, **kwargs)  # datagrams_to_send returns a list: done
                finally:
                    if profile is not None:
                        profile.disable()
                    spent[0] += time.thread_time() - start

            return wrapper

        def ack_all() -> int:
            ids: dict[int, list[int]] = {}
            for event in client.events:
                if isinstance(event, fe.DeliveryReceived):
                    ids.setdefault(event.consumer_id, []).append(event.delivery.delivery_id)
            client.events.clear()
            for consumer_id, delivery_ids in ids.items():
                felix.ack(consumer_id, delivery_ids, now=net.now)
            return sum(map(len, ids.values()))

        items = [b"q" * 100] * BATCH
        enqueue = net.broker.enqueue
        acked, measuring = 0, False
        while acked < messages:
            if not measuring and acked >= WARM_UP:
                measuring, acked = True, 0
                server = net.server
                for name in ("datagram_received", "handle_timer", "datagrams_to_send"):
                    setattr(server, name, timed(getattr(server, name)))
                enqueue = timed(enqueue)
            enqueue(999, T, N, "q", items, now=net.now)
            net.step()
            acked += ack_all()
            net.step()
            acked += ack_all()
        return spent[0] / acked * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000, help="acked messages measured")
    parser.add_argument("--profile", help="write a cProfile of the broker's calls here")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    us = run(args.messages, profile)
    print(f"broker CPU {us:.2f} us per acked message ({args.messages:,} messages, batch {BATCH})")
    if profile is not None:
        profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
