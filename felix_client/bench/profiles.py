"""Profiles of ``felix bench --profile``: collapsed stacks in, a per-layer breakdown out.

Pure: text in, numbers and table lines out (:mod:`.spy` runs py-spy; :mod:`.flamegraph`
draws the SVG). py-spy's ``--format raw`` writes one line per distinct stack,
``frame;frame;...;frame COUNT``, outermost frame first, each frame ``function (file:line)``
(``file`` shortened to its package path, ``aioquic/quic/connection.py``, or a full path).

Attribution rule: a sample belongs to the layer of its *innermost frame that belongs to a
known layer* (walking from the leaf outwards). Frames of the standard library outside the
event loop (``enum``, ``dataclasses``, ``collections``, ``heapq``, ``struct``...) and of
unknown packages are skipped, so their cost goes to the layer that called them: a
``dataclasses.replace`` in ``felix_core`` is ``felix_core``'s work. Time inside a C
extension has no Python frame of its own (py-spy without ``--native``), so aioquic's
``_crypto`` and ``_buffer`` count for the aioquic frame that called them, and a
``socket.sendto`` for the Python frame around it: the asyncio transport's (``loop``), or
one of Felix's thin socket loops (``send_all``, ``read_batch``...: :data:`SOCKET_CALLS`),
which count as ``loop`` too when they are the innermost frame, since their own time is
the socket call. A package of no known layer (redis-py, a script) is ``other``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LAYERS",
    "SOCKET_CALLS",
    "Breakdown",
    "Stacks",
    "attribute",
    "breakdown",
    "format_table",
    "layer_of",
    "merge",
    "parse_collapsed",
    "parse_frame",
]

Stacks = Counter[tuple[str, ...]]
"""Samples per stack (outermost frame first)."""

LAYERS: dict[str, str] = {
    "quic": "the QUIC engine: aioquic or qh3 (their crypto and buffer extensions), cryptography",
    "proto": "felix_proto: frames, codec, connection state machines",
    "server": "felix_server: the broker's glue",
    "core": "felix_core: log, streams, queues, cache",
    "runtime": "felix_runtime*: the runtime adapters (socket loop, timers, dispatch)",
    "client": "felix_client (not its bench)",
    "bench": "felix_client.bench: the load generator's own job loop",
    "loop": "the event loop and socket calls: asyncio, selectors, socket, trio, anyio, uvloop, "
    "and the Felix functions whose own time is a sendto/recvfrom (SOCKET_CALLS)",
    "msgpack": "msgpack",
    "other": "no frame of a known layer",
}
"""The layers, in table order, with what each holds."""

_PACKAGES = {
    "aioquic": "quic",
    "qh3": "quic",
    "cryptography": "quic",
    "felix_proto": "proto",
    "felix_server": "server",
    "felix_core": "core",
    "felix_runtime": "runtime",
    "felix_runtime_asyncio": "runtime",
    "felix_runtime_anyio": "runtime",
    "felix_client": "client",
    "asyncio": "loop",
    "selectors": "loop",
    "socket": "loop",
    "trio": "loop",
    "anyio": "loop",
    "uvloop": "loop",
    "sniffio": "loop",
    "msgpack": "msgpack",
}
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a collapsed stack."""

    function: str
    file: str
    """As py-spy wrote it (shortened to the package path, or a full path); empty when the
    frame had no file part."""


def parse_frame(text: str) -> Frame:
    """``"Handle._run (asyncio/events.py:80)"`` -> ``Frame("Handle._run",
    "asyncio/events.py")``; a frame without ``(file)`` keeps its text as the function."""
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "")
    return Frame(match["function"], match["file"])


def parse_collapsed(text: str) -> Stacks:
    """Samples per stack from py-spy's ``--format raw`` output (the same stack on several
    lines is summed; a line that does not end with a count is skipped)."""
    stacks: Stacks = Counter()
    for line in text.splitlines():
        head, sep, count = line.rstrip().rpartition(" ")
        if not sep or not head or not count.isdigit():
            continue
        stacks[tuple(head.split(";"))] += int(count)
    return stacks


def merge(parts: Iterable[Stacks]) -> Stacks:
    """The samples of several recordings of one process, summed per stack."""
    total: Stacks = Counter()
    for part in parts:
        total.update(part)
    return total


def layer_of(file: str) -> str | None:
    """The layer a source file belongs to: one of :data:`LAYERS`, ``other`` for a package
    of no known layer (redis-py, a script), None for the standard library outside the event
    loop (skipped: its cost goes to the caller). The file's top-level package decides
    (``redis/asyncio/...`` is redis-py's, not asyncio's); ``felix_client/bench/...`` is
    ``bench``, the rest of ``felix_client`` is ``client``."""
    if not file or file.startswith("<"):
        return None  # <frozen importlib._bootstrap>, a frame without a file
    parts = [p for p in file.replace("\\", "/").split("/") if p]
    start = 0
    if file.startswith("/"):  # a full path: find where the package path starts
        marks = [i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")]
        marks += [i for i, p in enumerate(parts[:-1]) if p.startswith("python3")]
        known = [i for i, p in enumerate(parts) if p.removesuffix(".py") in _PACKAGES]
        start = max(marks) + 1 if marks else (known[0] if known else len(parts) - 1)
    top = parts[start].removesuffix(".py")
    layer = _PACKAGES.get(top)
    if layer == "client" and parts[start + 1 : start + 2] == ["bench"]:
        return "bench"
    if layer is not None:
        return layer
    return None if top in sys.stdlib_module_names else "other"


SOCKET_CALLS = frozenset(
    {
        ("send_all", "felix_runtime/udp.py"),
        ("read_batch", "felix_runtime/udp.py"),
        ("_UdpSocket._take", "felix_client/_transport.py"),
        ("_UdpSocket.send_nowait", "felix_client/_transport.py"),
        ("_UdpSocket.send", "felix_client/_transport.py"),
        ("Endpoint._readable", "felix_client/bench/quic_endpoint.py"),
        ("Endpoint.transmit", "felix_client/bench/quic_endpoint.py"),
    }
)
"""Functions whose own samples are their socket calls (``sock.sendto``/``recvfrom`` in a
loop): a C call has no frame of its own, so a sample *in* one of these (as the innermost
frame) is ``loop``, the socket's; a sample deeper (a ``feed`` it calls) is not."""


def _socket_call(frame: Frame) -> bool:
    return any(frame.function == f and frame.file.endswith(p) for f, p in SOCKET_CALLS)


def attribute(stack: Sequence[str]) -> str:
    """The layer of a sample: its innermost frame that is not a standard-library helper
    (see the module docstring), ``other`` when there is none; ``loop`` when the innermost
    frame is one of :data:`SOCKET_CALLS`."""
    if stack and _socket_call(parse_frame(stack[-1])):
        return "loop"
    for text in reversed(stack):
        layer = layer_of(parse_frame(text).file)
        if layer is not None:
            return layer
    return "other"


@dataclass(slots=True)
class Breakdown:
    """One process's profile over one figure."""

    samples: int = 0
    layers: dict[str, int] = field(default_factory=dict)
    """Samples per layer (every layer of :data:`LAYERS`, zeros included)."""
    top: list[tuple[str, int]] = field(default_factory=list)
    """The functions with the most samples of their own (leaf frames), ``function (file)``."""
    busy: float | None = None
    """Samples / (rate x seconds sampled): the share of the window the process was on a
    CPU or waiting for one (py-spy leaves idle threads out); None when not known."""
    files: list[str] = field(default_factory=list)
    """Where the recording's raw stacks and flamegraph are."""

    def share(self, layer: str) -> float:
        """The layer's share of the samples (0 without samples)."""
        return self.layers.get(layer, 0) / self.samples if self.samples else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: samples, shares by layer, top functions with their shares."""
        return {
            "samples": self.samples,
            "busy": None if self.busy is None else round(self.busy, 3),
            "layers": {layer: round(self.share(layer), 4) for layer in LAYERS},
            "top": [
                {"function": name, "share": round(n / self.samples, 4) if self.samples else 0.0}
                for name, n in self.top
            ],
            "files": list(self.files),
        }


NOT_MEASURED = ("prepare_heap (felix_client/bench/workers.py",)
"""Frames whose samples are left out: a worker's collection and ``gc.freeze`` before a
job starts (it runs inside the figure's window, yet before the job's measured part)."""


def breakdown(stacks: Mapping[tuple[str, ...], int], top: int = 5) -> Breakdown:
    """Samples by layer and the ``top`` functions by samples of their own (stacks through
    a :data:`NOT_MEASURED` frame left out)."""
    layers = dict.fromkeys(LAYERS, 0)
    leaves: Counter[str] = Counter()
    samples = 0
    for stack, count in stacks.items():
        if not stack or count <= 0:
            continue
        if any(frame.startswith(NOT_MEASURED) for frame in stack):
            continue
        samples += count
        layers[attribute(stack)] += count
        leaf = parse_frame(stack[-1])
        leaves[f"{leaf.function} ({leaf.file})" if leaf.file else leaf.function] += count
    return Breakdown(samples, layers, leaves.most_common(top))


def format_table(rows: Sequence[tuple[str, str, Breakdown]]) -> list[str]:
    """The profile table: one row per (figure, process), the share of each layer in percent
    (a layer with no sample in any row is left out), then each row's top functions."""
    layers = [name for name in LAYERS if any(b.layers.get(name, 0) for _, _, b in rows)]
    header = ["figure", "process", "samples", "busy", *layers]
    body = []
    last = ""
    for label, process, b in rows:
        shares = [f"{100 * b.share(name):.0f}%" for name in layers]
        busy = "" if b.busy is None else f"{100 * b.busy:.0f}%"
        body.append([label if label != last else "", process, f"{b.samples:,}", busy, *shares])
        last = label
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(header), line(["-" * w for w in widths])]
    lines.extend(line(row) for row in body)
    lines.append("")
    lines.append("top functions (samples of their own):")
    for label, process, b in rows:
        if b.samples:
            tops = ", ".join(f"{name} {100 * n / b.samples:.0f}%" for name, n in b.top)
        else:
            tops = "; ".join(name for name, _ in b.top) or "no samples"
        lines.append(f"  {label} / {process}: {tops}")
    return lines
