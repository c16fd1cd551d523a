"""The decoding budget: how many msgpack values one frame payload may expand into.

Theory of operation
-------------------

A frame's size bounds its bytes, not what its bytes become: one byte of msgpack (``0x80``,
an empty map) becomes a 64-byte ``dict`` and an 8-byte list slot, so a 15 MiB frame of
empty maps costs a gigabyte and seconds of CPU before any field is looked at. msgpack's
per-container limits (``max_array_len``, ``max_map_len``) do not help: 4,096 arrays of
3,662 empty maps each respect any length limit a 3,662-record batch needs.

So a payload may declare at most :data:`MAX_VALUES` msgpack values in total: the top-level
array, every element of every array, every key and every value of every map, at any
depth, in known and unknown fields alike. :func:`check_values` walks the payload's bytes
without building anything and raises :class:`~felix_proto.errors.TooManyValues` as soon
as the counts *declared* by the array and map headers seen so far add up to more than the
budget; it reads each value's first bytes only (a str, bin or ext is skipped by its
length), so it costs at most one small step per value within the budget.

Most payloads are never walked: every value takes at least one byte, so a payload of at
most ``MAX_VALUES`` bytes cannot break the rule, and the walk stops as soon as the values
declared so far plus one per byte still unread fit the budget: a 16 MiB frame of one
payload takes a few steps, a 16 MiB batch of 8,192 records of 2 KiB about 8,000 (~1 ms),
and no frame more than ``MAX_VALUES`` (~45 ms in CPython 3.11), refused or not.

The walk does not validate: a malformed document ends it quietly (msgpack then reports
the error, having built at most what the walk had counted), and nesting depth is left to
msgpack (1,024 levels).
"""

from __future__ import annotations

import struct

from .errors import TooManyValues

__all__ = ["MAX_VALUES", "check_values"]

MAX_VALUES = 1 << 19
"""Most msgpack values one payload may hold (524,288); see docs/wire-protocol.md §3."""

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_REQUEST_ID = b"\xaarequest_id"
"""``request_id`` as a msgpack fixstr: how the top-level key is recognised."""


def _scalar_sizes() -> list[int]:
    """For each first byte, the size of a scalar whose size it fixes; 0 otherwise."""
    sizes = [0] * 256
    for b in range(0x80):
        sizes[b] = 1  # positive fixint
    for b in range(0xE0, 0x100):
        sizes[b] = 1  # negative fixint
    for b in range(0xA0, 0xC0):
        sizes[b] = 1 + (b & 0x1F)  # fixstr
    fixed = {
        0xC0: 1,  # nil
        0xC2: 1,  # false
        0xC3: 1,  # true
        0xCA: 5,  # float 32
        0xCB: 9,  # float 64
        0xCC: 2,  # uint 8
        0xCD: 3,  # uint 16
        0xCE: 5,  # uint 32
        0xCF: 9,  # uint 64
        0xD0: 2,  # int 8
        0xD1: 3,  # int 16
        0xD2: 5,  # int 32
        0xD3: 9,  # int 64
        0xD4: 3,  # fixext 1: type byte and data
        0xD5: 4,  # fixext 2
        0xD6: 6,  # fixext 4
        0xD7: 10,  # fixext 8
        0xD8: 18,  # fixext 16
    }
    for b, size in fixed.items():
        sizes[b] = size
    return sizes


_SCALAR = _scalar_sizes()
_SHORT = [0] * 256
"""For bin 8, str 8 and ext 8: the bytes before the body, which a 1-byte length follows."""
_SHORT[0xC4] = _SHORT[0xD9] = 2
_SHORT[0xC7] = 3
_LONG = {
    0xC5: (0, 3),  # bin 16: (32-bit length?, bytes before the body)
    0xC6: (1, 5),  # bin 32
    0xDA: (0, 3),  # str 16
    0xDB: (1, 5),  # str 32
    0xC8: (0, 4),  # ext 16: length, type byte
    0xC9: (1, 6),  # ext 32
}


def check_values(payload: bytes, limit: int = MAX_VALUES) -> None:
    """Refuse a payload that declares more than ``limit`` msgpack values, building nothing.

    Args:
        payload: a frame payload (untrusted).
        limit: the budget (at least 1).

    Raises:
        TooManyValues: the payload declares more values than ``limit``; not fatal, with
            ``request_id`` when a top-level ``request_id`` field preceded the excess.
    """
    end = len(payload)
    if end <= limit:
        return
    # The envelope [type, {fields}] is read by hand, so that a request_id met among the
    # top-level fields can go into the error; any other shape is walked as one value.
    pos, entries = _envelope(payload)
    if entries is None:
        _walk(payload, 0, 1, 1, 0, limit, None)
        return
    declared = 3 + 2 * entries  # the array, its two elements, each key and value
    if declared > limit:
        raise _too_many(declared, limit, None)
    request_id = None
    for i in range(entries):
        if payload.startswith(_REQUEST_ID, pos):
            request_id = _uint_at(payload, pos + len(_REQUEST_ID))
        after = 2 * (entries - i - 1)  # values declared and not yet reached
        result = _walk(payload, pos, 2, declared, after, limit, request_id)
        if result is None:
            return
        pos, declared = result


def _envelope(data: bytes) -> tuple[int, int | None]:
    """Where the first top-level key starts and how many fields there are, for a payload
    that opens like ``[int, map]``; ``(0, None)`` for anything else."""
    if len(data) < 3 or data[0] != 0x92:
        return 0, None
    b = data[1]
    if not (b < 0x80 or 0xCC <= b <= 0xCF):  # the type code: a positive int
        return 0, None
    pos = 1 + _SCALAR[b]
    if pos >= len(data):
        return 0, None
    b = data[pos]
    if 0x80 <= b <= 0x8F:
        return pos + 1, b & 0x0F
    if b == 0xDE and pos + 3 <= len(data):
        return pos + 3, _U16(data, pos + 1)[0]
    if b == 0xDF and pos + 5 <= len(data):
        return pos + 5, _U32(data, pos + 1)[0]
    return 0, None


def _uint_at(data: bytes, pos: int) -> int | None:
    """The unsigned integer encoded at ``pos``, or None if there is none."""
    if pos >= len(data):
        return None
    b = data[pos]
    if b < 0x80:
        return b
    size = _SCALAR[b]
    if 0xCC <= b <= 0xCF and pos + size <= len(data):
        return int.from_bytes(data[pos + 1 : pos + size], "big")
    return None


def _walk(
    data: bytes,
    pos: int,
    todo: int,
    declared: int,
    after: int,
    limit: int,
    request_id: int | None,
) -> tuple[int, int] | None:
    """Step over ``todo`` values from ``pos``, counting what their headers declare.

    ``declared`` counts every value declared so far (these ``todo`` included) and ``after``
    those declared further on. Returns the position after the values and the new count,
    or None when the rest of the payload cannot exceed the budget or is malformed.
    """
    end = len(data)
    scalar = _SCALAR
    short = _SHORT
    # Values yet to be declared take a byte each beyond the first bytes of the pending
    # ones (these ``todo`` and ``after``), so the total is at most declared + (end - pos)
    # - todo - after. Once that fits the budget, i.e. pos + todo >= goal, nothing left
    # can exceed it. Since declared <= limit, goal <= end - after: past that check at
    # least two bytes remain, so data[pos + 1] exists.
    goal = declared + end - after - limit
    while todo:
        if pos + todo >= goal:
            return None
        b = data[pos]
        todo -= 1
        size = scalar[b]
        if size:
            pos += size
            continue
        size = short[b]
        if size:  # bin 8, str 8, ext 8 (a position past the end ends the walk above)
            pos += size + data[pos + 1]
            continue
        if b <= 0x9F:  # fixmap 0x80..0x8f, fixarray 0x90..0x9f
            count = (b & 0x0F) * 2 if b <= 0x8F else b & 0x0F
            pos += 1
        elif b in _LONG:  # bin, str, ext 16 and 32: a 2- or 4-byte length, then the body
            wide, before = _LONG[b]
            if pos + before > end:
                return None
            pos += before + (_U32(data, pos + 1)[0] if wide else _U16(data, pos + 1)[0])
            continue
        elif b >= 0xDC:  # array 16, 32, map 16, 32
            wide = b & 1
            if pos + 3 + 2 * wide > end:
                return None
            count = _U32(data, pos + 1)[0] if wide else _U16(data, pos + 1)[0]
            if b >= 0xDE:
                count *= 2
            pos += 5 if wide else 3
        else:  # 0xc1, never used: malformed, msgpack will say so
            return None
        declared += count
        if declared > limit:
            raise _too_many(declared, limit, request_id)
        goal += count
        todo += count
    if pos > end:
        return None
    return pos, declared


def _too_many(declared: int, limit: int, request_id: int | None) -> TooManyValues:
    return TooManyValues(
        f"the payload declares at least {declared} msgpack values; at most {limit} are allowed",
        details={"max_values": limit},
        request_id=request_id,
    )
