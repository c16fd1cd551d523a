"""The command line of ``felix bench``: its argument parser, alone in a light module.

``felix completion`` builds its scripts from this parser; importing it loads neither the
client, anyio, aioquic nor the bench extra (only :mod:`.settings`, plain data), so the
completion starts fast. :mod:`.command` parses with it and runs the scenarios.
"""

from __future__ import annotations

import argparse
import json

from .settings import ENGINES, RUNTIMES, SCENARIOS, Matrix, RunSettings

__all__ = ["build_parser"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,10, not {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, not {text!r}")
    return values


def _positive_ints(text: str) -> tuple[int, ...]:
    values = _ints(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of at least 1, not {text!r}")
    return values


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"--seconds must be within (0, 3600], not {text}")
    return value


def _setting(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``felix bench``."""
    p = argparse.ArgumentParser(
        prog="felix bench",
        description="Measure a Felix broker, next to the QUIC engine's own ceiling "
        "(raw-quic) and, for the cache, redis-py, in one run. Runs the broker in its own "
        "process unless --server is given; load generators run in their own processes.",
        epilog="`felix bench plot FILE --out DIR` draws PNG plots of a --json-file result. "
        "docs/performance.md explains each scenario and its figures.",
    )
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument(
        "--seconds",
        type=_seconds,
        default=RunSettings().seconds,
        help="load time of each figure (default %(default)s)",
    )
    p.add_argument(
        "--runtime",
        choices=tuple(RUNTIMES),
        default="asyncio",
        help="runtime of the broker this command starts (default asyncio)",
    )
    p.add_argument(
        "--server",
        "-s",
        metavar="URL",
        help="measure this broker instead of starting one (needs --ca or --insecure)",
    )
    p.add_argument("--ca", metavar="FILE", help="the --server broker's certificate (PEM)")
    p.add_argument(
        "--insecure",
        "-k",
        action="store_true",
        help="do not verify the --server broker's certificate",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop of the Felix load generators (default asyncio)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--json-file",
        metavar="FILE",
        help="also write the JSON document to FILE (with the table on stdout)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the broker and each load generator with py-spy while each figure runs "
        "(raw stacks and an SVG flamegraph per process and figure in DIR); print the share "
        "of samples by layer after the summary and put it in the JSON (needs py-spy and "
        "the right to attach: root or CAP_SYS_PTRACE)",
    )
    p.add_argument(
        "--profile-rate",
        type=_count,
        default=200,
        metavar="HZ",
        help="py-spy samples per second and process with --profile (default %(default)s)",
    )
    m = p.add_argument_group("matrix (comma-separated lists override the defaults)")
    d = Matrix()
    m.add_argument(
        "--payload",
        type=_ints,
        metavar="BYTES",
        help="payload sizes of pubsub-latency and pubsub-throughput (which skips 0) "
        f"(default {d.latency_payloads} and {d.throughput_payloads})",
    )
    m.add_argument(
        "--fanout",
        type=_positive_ints,
        metavar="N",
        help=f"subscribers per stream (default {d.latency_fanouts})",
    )
    m.add_argument(
        "--batch",
        type=_positive_ints,
        metavar="N",
        help=f"records per publish batch, throughput (default {d.throughput_batches})",
    )
    m.add_argument(
        "--consumers",
        type=_positive_ints,
        metavar="N",
        help=f"queue consumers (default {d.queue_consumers})",
    )
    m.add_argument(
        "--concurrency",
        type=_positive_ints,
        metavar="N",
        help=f"cache request concurrency (default {d.cache_concurrency})",
    )
    m.add_argument(
        "--publishers",
        type=_positive_ints,
        metavar="N",
        help=f"concurrent committed publishers, durable (default {d.durable_publishers})",
    )
    m.add_argument(
        "--memory-publishes",
        type=_count,
        metavar="N",
        help=f"records published past the stalled subscriber, memory (default "
        f"{d.memory_publishes:,}; in all with --seconds under 2, 100,000 per second)",
    )
    m.add_argument(
        "--stream-set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of every stream the bench creates, e.g. slow_consumer=block",
    )
    m.add_argument(
        "--engine",
        type=lambda t: tuple(t.split(",")),
        default=ENGINES,
        metavar="NAMES",
        help=f"raw QUIC engines (default {','.join(ENGINES)})",
    )
    m.add_argument(
        "--quic-engine",
        type=lambda t: tuple(t.split(",")),
        default=("aioquic",),
        metavar="NAMES",
        help="QUIC engines of the broker and clients, measured one after the other "
        "(default aioquic; e.g. aioquic,qh3)",
    )
    m.add_argument("--no-redis", action="store_true", help="skip the redis-py comparison")
    return p
