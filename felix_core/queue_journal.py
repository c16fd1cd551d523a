"""The state log of a durable queue: group cursors, attempts and finished messages.

A durable queue's messages live in its log; what its consumer groups did with them lives
here, as records of a second, internal log (the *state log*, a
:class:`~felix_core.disklog.DiskLog` from the same store, in the directory of the queue's
name plus ``~state``, which no resource name can take). The record format is specified in
docs/storage-format.md ("Queue state log"); in short, every record is one state change of
one group:

* ``GROUP``: a group was created at a cursor;
* ``LEASED``: offsets were handed out, or given back, with the attempts now charged to each
  and the absolute time (ms since the epoch) before which each may not be handed out: a
  delivery's visibility deadline, a delayed nack's due time, 0 when it is ready at once;
  the group's cursor moves past them;
* ``PARKED``: offsets are dead letters waiting for room in their target (with their
  reason and last failure);
* ``FINISHED``: offsets left the group (acked, or moved out as dead letters);
* ``DELETED``: the group was deleted;
* ``CHECKPOINT``: the whole state of every group; replay starts over from it.

Two types of the first version are still read, never written: ``ATTEMPTS`` (a ``LEASED``
without times: ready at once) and ``CHECKPOINT_V1`` (a checkpoint without times and parked
dead letters).

Replaying the retained records in order gives back each group's cursor and its unfinished
offsets with their charged attempts, times and parked dead letters (:func:`replay`). A
delivery in flight at the crash was recorded when it was handed out, so it counts as an
attempt and stays invisible until its visibility deadline; a delayed nack stays delayed
until its due time; a parked dead letter stays parked; an ack is recorded when it is made,
so an acked message never comes back. Times are absolute (wall clock), so the time the
broker was down counts.

Compaction: after :data:`CHECKPOINT_EVERY` records the journal appends a checkpoint, asks
its log to commit it, and once the log says it is committed (fsynced) drops every record
before it (the log deletes whole segments, so the state log is bounded by a checkpoint, the
records after it and one segment). Dropping earlier would let a power loss take the
checkpoint and leave the records after a deleted prefix, which replay would misread.

A record that does not decode (the log's CRCs passed, so a bug rather than damage) is
counted in :attr:`QueueJournal.damaged` and :meth:`QueueJournal.load` replays around it:
from the first checkpoint after the last bad record when there is one, else the records
before the first bad one. The queue is rebuilt from that and writes a checkpoint at once,
so the next start replays from there: the error costs redeliveries, never the queue.

A write the state log refuses (disk full, a failed fsync) loses that record only: the
journal counts it in :attr:`QueueJournal.lost` and goes on; the next checkpoint writes the
whole state again. Every loss errs on the side of redelivery (at-least-once), never of
losing a message.

Pure: the journal writes through the :class:`~felix_core.log.Log` interface and is tested
over :class:`~felix_core.filesystem.MemoryFileSystem`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from felix_core.errors import InvalidArgument, StorageFailed, StorageFull
from felix_core.log import Log, LogSlice

__all__ = [
    "CHECKPOINT_EVERY",
    "STATE_SUFFIX",
    "GroupState",
    "QueueJournal",
    "StateRecordError",
    "decode",
    "encode_attempts",
    "encode_checkpoint",
    "encode_checkpoint_v1",
    "encode_deleted",
    "encode_finished",
    "encode_group",
    "encode_leased",
    "encode_parked",
    "replay",
    "state_path",
]

STATE_SUFFIX = "~state"
"""Appended to a queue's name for its state log's path (``~`` is never in a name)."""
CHECKPOINT_EVERY = 4096
"""State records between two checkpoints."""
STATE_SEGMENT_BYTES = 1 << 20
"""Segment size of a state log (small, so compaction frees space soon)."""

GROUP, ATTEMPTS, FINISHED, DELETED, CHECKPOINT_V1, LEASED, PARKED, CHECKPOINT = range(1, 9)

_HEAD = struct.Struct("<BB")  # type, group name length
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U8 = struct.Struct("<B")
_PAIR = struct.Struct("<QI")  # offset, attempts
_LEASE = struct.Struct("<QIQ")  # offset, attempts, until (ms since the epoch; 0: ready)


@runtime_checkable
class _CommitsOnRequest(Protocol):
    def request_commit(self, offset: int) -> None: ...


class StateRecordError(InvalidArgument):
    """A state record that cannot be decoded (a bug or damage the log's CRC missed)."""


@dataclass(slots=True)
class GroupState:
    """One group as the state log knows it."""

    cursor: int
    attempts: dict[int, int] = field(default_factory=dict)
    """Unfinished offset -> attempts charged to it, for offsets below ``cursor``."""
    until: dict[int, int] = field(default_factory=dict)
    """Unfinished offset -> the time (ms since the epoch) before which it may not be handed
    out (in flight: its visibility deadline; a delayed nack: its due time). Absent: ready."""
    parked: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Unfinished offset -> ``(reason, last failure)`` of a parked dead letter."""


def state_path(path: tuple[str, str, str]) -> tuple[str, str, str]:
    """The path a queue's state log is opened under."""
    return (path[0], path[1], path[2] + STATE_SUFFIX)


def _head(kind: int, group: str) -> bytes:
    name = group.encode()
    return _HEAD.pack(kind, len(name)) + name


def encode_group(group: str, cursor: int) -> bytes:
    """``GROUP``: ``group`` was created with ``cursor``."""
    return _head(GROUP, group) + _U64.pack(cursor)


def encode_attempts(group: str, pairs: Sequence[tuple[int, int]]) -> bytes:
    """``ATTEMPTS`` (read, no longer written: :func:`encode_leased`): each ``(offset,
    attempts)`` is handed out with that many charged."""
    n = len(pairs)
    body = struct.pack(f"<I{'QI' * n}", n, *[v for pair in pairs for v in pair])
    return _head(ATTEMPTS, group) + body


def encode_leased(group: str, leases: Sequence[tuple[int, int, int]]) -> bytes:
    """``LEASED``: each ``(offset, attempts, until_ms)`` has that many attempts charged and may
    not be handed out before ``until_ms`` (ms since the epoch; 0: ready at once)."""
    n = len(leases)
    body = struct.pack(f"<I{'QIQ' * n}", n, *[v for lease in leases for v in lease])
    return _head(LEASED, group) + body


def _short(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def encode_parked(group: str, parked: Sequence[tuple[int, int, str, str]]) -> bytes:
    """``PARKED``: each ``(offset, attempts, reason, failure)`` is a dead letter waiting for
    its target (reason and failure: short ASCII words, at most 255 bytes)."""
    parts = [_head(PARKED, group), _U32.pack(len(parked))]
    for offset, attempts, reason, failure in parked:
        parts.append(_PAIR.pack(offset, attempts) + _short(reason) + _short(failure))
    return b"".join(parts)


def encode_finished(group: str, offsets: Sequence[int]) -> bytes:
    """``FINISHED``: the offsets left the group (acked or dead-lettered)."""
    n = len(offsets)
    return _head(FINISHED, group) + struct.pack(f"<I{n}Q", n, *offsets)


def encode_deleted(group: str) -> bytes:
    """``DELETED``: the group was deleted."""
    return _head(DELETED, group)


def encode_checkpoint(groups: Mapping[str, GroupState]) -> bytes:
    """``CHECKPOINT``: every group's whole state (groups and offsets in order)."""
    parts = [_head(CHECKPOINT, ""), _U32.pack(len(groups))]
    for name in sorted(groups):
        g = groups[name]
        parts.append(_short(name) + _U64.pack(g.cursor) + _U32.pack(len(g.attempts)))
        until = g.until
        parts.extend(_LEASE.pack(o, g.attempts[o], until.get(o, 0)) for o in sorted(g.attempts))
        parts.append(_U32.pack(len(g.parked)))
        for o in sorted(g.parked):
            reason, failure = g.parked[o]
            parts.append(_U64.pack(o) + _short(reason) + _short(failure))
    return b"".join(parts)


def encode_checkpoint_v1(groups: Mapping[str, GroupState]) -> bytes:
    """``CHECKPOINT_V1`` (read, no longer written): cursors and charged attempts only."""
    parts = [_head(CHECKPOINT_V1, ""), _U32.pack(len(groups))]
    for name in sorted(groups):
        g = groups[name]
        encoded = name.encode()
        parts.append(bytes([len(encoded)]) + encoded + _U64.pack(g.cursor))
        parts.append(_U32.pack(len(g.attempts)))
        parts.extend(_PAIR.pack(o, g.attempts[o]) for o in sorted(g.attempts))
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, s: struct.Struct) -> tuple[int, ...]:
        if self.pos + s.size > len(self.data):
            raise StateRecordError("truncated queue state record")
        values = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return values

    def name(self, n: int) -> str:
        if self.pos + n > len(self.data):
            raise StateRecordError("truncated queue state record")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise StateRecordError("queue state record: group name not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise StateRecordError("queue state record: trailing bytes")


def decode(payload: bytes) -> tuple[int, str, object]:
    """Decode one record: ``(type, group, body)``; the body is the cursor (GROUP), a list of
    ``(offset, attempts)`` (ATTEMPTS), of ``(offset, attempts, until_ms)`` (LEASED), of
    ``(offset, attempts, reason, failure)`` (PARKED), a list of offsets (FINISHED), None
    (DELETED) or a dict of :class:`GroupState` (CHECKPOINT, CHECKPOINT_V1).

    Raises:
        StateRecordError: the payload is not a valid record.
    """
    r = _Reader(payload)
    kind, n = r.take(_HEAD)
    group = r.name(n)
    body: object
    if kind == GROUP:
        body = r.take(_U64)[0]
    elif kind == ATTEMPTS:
        (count,) = r.take(_U32)
        body = [(o, a) for o, a in (r.take(_PAIR) for _ in range(count))]
    elif kind == FINISHED:
        (count,) = r.take(_U32)
        body = [r.take(_U64)[0] for _ in range(count)]
    elif kind == DELETED:
        body = None
    elif kind == LEASED:
        (count,) = r.take(_U32)
        body = [(o, a, u) for o, a, u in (r.take(_LEASE) for _ in range(count))]
    elif kind == PARKED:
        (count,) = r.take(_U32)
        parked: list[tuple[int, int, str, str]] = []
        for _ in range(count):
            o, a = r.take(_PAIR)
            parked.append((o, a, r.name(r.take(_U8)[0]), r.name(r.take(_U8)[0])))
        body = parked
    elif kind in (CHECKPOINT, CHECKPOINT_V1):
        body = _groups(r, kind == CHECKPOINT)
    else:
        raise StateRecordError(f"unknown queue state record type {kind}")
    r.end()
    return kind, group, body


def _groups(r: _Reader, timed: bool) -> dict[str, GroupState]:
    groups: dict[str, GroupState] = {}
    (ngroups,) = r.take(_U32)
    for _ in range(ngroups):
        name = r.name(r.take(_U8)[0])
        g = groups[name] = GroupState(r.take(_U64)[0])
        (count,) = r.take(_U32)
        for _ in range(count):
            if timed:
                o, a, u = r.take(_LEASE)
                if u:
                    g.until[o] = u
            else:
                o, a = r.take(_PAIR)
            g.attempts[o] = a
        if timed:
            (count,) = r.take(_U32)
            for _ in range(count):
                (o,) = r.take(_U64)
                g.parked[o] = (r.name(r.take(_U8)[0]), r.name(r.take(_U8)[0]))
    return groups


def replay(payloads: Iterable[bytes]) -> dict[str, GroupState]:
    """Every group's state after the records in order (a checkpoint starts over).

    Records about a group not yet known (their ``GROUP`` record was compacted away before a
    checkpoint that follows them) create it, so a replay never fails on a compacted prefix.

    Raises:
        StateRecordError: a record is not valid.
    """
    groups: dict[str, GroupState] = {}
    for payload in payloads:
        kind, name, body = decode(payload)
        if kind in (CHECKPOINT, CHECKPOINT_V1):
            assert isinstance(body, dict)
            groups = body
            continue
        if kind == DELETED:
            groups.pop(name, None)
            continue
        if kind == GROUP:
            assert isinstance(body, int)
            groups[name] = GroupState(body)
            continue
        assert isinstance(body, list)
        g = groups.setdefault(name, GroupState(0))
        for item in body:
            offset = item if kind == FINISHED else item[0]
            g.cursor = max(g.cursor, offset + 1)
            g.until.pop(offset, None)
            g.parked.pop(offset, None)
            if kind == FINISHED:
                g.attempts.pop(offset, None)
                continue
            g.attempts[offset] = item[1]
            if kind == LEASED and item[2]:
                g.until[offset] = item[2]
            elif kind == PARKED:
                g.parked[offset] = (item[2], item[3])
    return groups


def _payloads(log: Log) -> Iterator[bytes]:
    offset = log.first_offset
    while offset < log.next_offset:
        got = log.read(offset, 4096, 1 << 30)
        assert isinstance(got, LogSlice), "a state log is read synchronously"
        yield from got.payloads
        offset = got.next_offset


class QueueJournal:
    """Writes one queue's state changes to its state log; see the module docstring.

    Args:
        log: the state log (recovered or new).
        checkpoint_every: records between two checkpoints (None: :data:`CHECKPOINT_EVERY`).
    """

    __slots__ = ("checkpoint_every", "compact_at", "damaged", "error", "log", "lost", "since")

    def __init__(self, log: Log, checkpoint_every: int | None = None) -> None:
        self.log = log
        self.checkpoint_every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
        self.since = 0
        """Records written since the last checkpoint."""
        self.lost = 0
        """Records the state log refused (disk full or failed) since the last checkpoint."""
        self.error: StorageFull | StorageFailed | None = None
        """Why the last refused record was refused (None once a checkpoint made up for it)."""
        self.damaged = 0
        """Records :meth:`load` found that do not decode."""
        self.compact_at: int | None = None
        """The offset of a checkpoint whose predecessors go once it is committed."""

    def load(self) -> dict[str, GroupState]:
        """The state the log holds (see :func:`replay`); around records that do not decode
        (see the module docstring)."""
        payloads = list(_payloads(self.log))
        bad: list[int] = []
        checkpoints: list[int] = []
        for i, payload in enumerate(payloads):
            try:
                kind = decode(payload)[0]
            except StateRecordError:
                bad.append(i)
                continue
            if kind == CHECKPOINT:
                checkpoints.append(i)
        self.damaged = len(bad)
        if not bad:
            return replay(payloads)
        after = [i for i in checkpoints if i > bad[-1]]
        return replay(payloads[after[0] :] if after else payloads[: bad[0]])

    def _write(self, payload: bytes) -> int | None:
        self.compact()
        try:
            offset = self.log.append(payload, 0)
        except (StorageFull, StorageFailed) as exc:
            self.lost += 1
            self.error = exc
            return None
        self.since += 1
        return offset

    def compact(self) -> None:
        """Drop the records before the last checkpoint if the log has committed it."""
        at = self.compact_at
        if at is not None and self.log.committed_offset > at:
            self.compact_at = None
            self.log.truncate_before(at)

    def group(self, name: str, cursor: int) -> None:
        """A group was created."""
        self._write(encode_group(name, cursor))

    def leased(self, name: str, leases: list[tuple[int, int, int]]) -> None:
        """Offsets were handed out or given back: ``(offset, attempts, until_ms)``."""
        if leases:
            self._write(encode_leased(name, leases))

    def parked(self, name: str, parked: list[tuple[int, int, str, str]]) -> None:
        """Dead letters were parked: ``(offset, attempts, reason, failure)``."""
        if parked:
            self._write(encode_parked(name, parked))

    def finished(self, name: str, offsets: list[int]) -> None:
        """Offsets left the group."""
        if offsets:
            self._write(encode_finished(name, offsets))

    def deleted(self, name: str) -> None:
        """A group was deleted."""
        self._write(encode_deleted(name))

    def due(self) -> bool:
        """Whether a checkpoint is due (enough records, or a write was lost since)."""
        return self.since >= self.checkpoint_every or self.lost > 0

    def checkpoint(self, groups: Mapping[str, GroupState]) -> None:
        """Write the whole state; the records before it go once it is committed."""
        offset = self._write(encode_checkpoint(groups))
        if offset is not None:
            self.since = 0
            self.lost = 0
            self.error = None
            self.compact_at = offset
            if isinstance(self.log, _CommitsOnRequest):
                self.log.request_commit(offset + 1)
            self.compact()
