"""An SVG flamegraph of collapsed stacks (``felix bench --profile`` keeps one per process
and figure, next to py-spy's raw text).

py-spy writes one format per recording; rather than sample each process twice, the SVG is
drawn here from the raw stacks: one box per frame, as wide as its samples, the outermost
frame at the bottom, coloured by the layer of :mod:`.profiles` the frame's file belongs to
(grey: no known layer), with a tooltip (``<title>``) giving the frame and its share. Pure:
stacks in, SVG text out.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from .profiles import layer_of, parse_frame

__all__ = ["COLOURS", "render"]

COLOURS = {
    "quic": "#e4572e",
    "proto": "#4e79a7",
    "server": "#76b7b2",
    "core": "#59a14f",
    "runtime": "#edc948",
    "client": "#b07aa1",
    "bench": "#ff9da7",
    "loop": "#9c755f",
    "msgpack": "#f28e2b",
}
WIDTH = 1200.0
ROW = 16
MIN_WIDTH = 0.3
"""Boxes narrower than this many pixels are not drawn."""


class _Tree:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Tree] = {}


def render(stacks: Mapping[tuple[str, ...], int], title: str) -> str:
    """The flamegraph of ``stacks`` as an SVG document."""
    root = _Tree()
    for stack, count in stacks.items():
        if count <= 0:
            continue
        root.count += count
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Tree())
            node.count += count
    depth = _depth(root)
    height = (depth + 2) * ROW
    boxes: list[str] = []
    total = max(root.count, 1)

    def draw(node: _Tree, x: float, level: int) -> None:
        for frame, child in sorted(node.children.items()):
            width = child.count / total * WIDTH
            if width >= MIN_WIDTH:
                boxes.append(_box(frame, child.count, total, x, height - (level + 2) * ROW, width))
                draw(child, x, level + 1)
            x += width

    draw(root, 0.0, 0)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height}" '
        f'viewBox="0 0 {WIDTH:.0f} {height}" font-family="monospace" font-size="11">'
    )
    caption = f'<text x="4" y="12">{escape(title)} ({root.count:,} samples)</text>'
    return "\n".join([head, caption, *boxes, "</svg>", ""])


def _depth(node: _Tree) -> int:
    """Frames on the longest stack under ``node``."""
    return max((1 + _depth(child) for child in node.children.values()), default=0)


def _box(frame: str, count: int, total: int, x: float, y: int, width: float) -> str:
    parsed = parse_frame(frame)
    colour = COLOURS.get(layer_of(parsed.file) or "", "#bab0ac")
    tip = escape(f"{frame}: {count:,} samples, {100 * count / total:.1f}%")
    chars = int(width / 7)
    label = escape(parsed.function[:chars]) if chars >= 3 else ""
    return (
        f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
        f'height="{ROW - 1}" fill="{colour}"/>'
        + (f'<text x="{x + 2:.1f}" y="{y + 11}">{label}</text>' if label else "")
        + "</g>"
    )
