"""The async bodies of the ``felix`` subcommands, and their output formatting.

Each command takes the parsed arguments, talks to the broker through
:class:`~felix_client.client.Client` and returns an exit code; errors propagate as
:class:`~felix_client.errors.FelixError` for :func:`felix_client.cli.main` to print.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import anyio

from felix_proto.messages import AckMode

from ._local import ttl_ms
from ._streams import QueueMessage
from .client import Client
from .errors import InvalidArgument
from .types import CacheEntry, Event, PublishResult, Start

__all__ = ["COMMANDS", "parse_start"]

_AGE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_start(text: str, now: float | None = None) -> Start:
    """Parse ``--from``: ``earliest``, ``latest``, an offset, an ISO 8601 time (UTC when it
    has no zone) or an age (``90s``, ``5m``, ``2h``, ``1d``) meaning that long ago.

    Raises:
        ValueError: none of these.
    """
    t = text.strip().lower()
    if t in ("earliest", "latest"):
        return Start.coerce(t)
    if t.isdigit():
        return Start.offset(int(t))
    age = _AGE.fullmatch(t)
    if age:
        seconds = float(age.group(1)) * _UNITS[age.group(2)]
        return Start.timestamp((time.time() if now is None else now) - seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid --from {text!r}: use earliest, latest, an offset, an ISO time "
            "(2026-01-31T12:00:00) or an age (5m, 2h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Start.timestamp(when)


def _client(args: argparse.Namespace, **extra: Any) -> Client:
    return Client(
        args.server,
        ca_file=args.ca,
        insecure=args.insecure,
        cert_file=getattr(args, "cert", None),
        key_file=getattr(args, "cert_key", None),
        token=args.token,
        tenant=args.tenant,
        namespace=args.namespace,
        timeout=args.timeout,
        client_name="felix-cli",
        quic_engine=args.quic_engine,
        **extra,
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _payload_json(data: bytes | None, field: str = "payload") -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return {field: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(data).decode("ascii")}


def _emit(
    args: argparse.Namespace, text: str, obj: dict[str, Any] | list[Any], out: TextIO | None = None
) -> None:
    stream = out or sys.stdout
    if args.output == "json":
        stream.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    else:
        stream.write(text + "\n")
    stream.flush()


def _headers(items: list[str]) -> dict[str, bytes] | None:
    out: dict[str, bytes] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"invalid header {item!r}: use NAME=VALUE")
        out[name] = value.encode()
    return out or None


async def _stdin_lines() -> AsyncIterator[bytes]:
    stdin = anyio.wrap_file(sys.stdin.buffer)
    async for line in stdin:
        yield line.rstrip(b"\r\n")


class _Progress:
    """A live ``count, rate`` line on stderr (when stderr is a terminal or forced)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.start = time.perf_counter()
        self.count = 0
        self.nbytes = 0
        self._last = self.last = self.start
        self.missed = 0

    def add(self, n: int, nbytes: int) -> None:
        if self.count == 0:  # the rate counts from the first message, not from connecting
            self.start = self._last = time.perf_counter()
        self.count += n
        self.nbytes += nbytes
        now = self.last = time.perf_counter()
        if self.enabled and now - self._last >= 0.5:
            self._last = now
            sys.stderr.write("\r" + self.line(now) + "   ")
            sys.stderr.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.count / elapsed
        mb = self.nbytes / elapsed / 1e6
        extra = f", {self.missed} missed (gaps)" if self.missed else ""
        return (
            f"{self.label} {self.count} msgs in {elapsed:.2f}s: {rate:,.0f} msg/s, "
            f"{mb:.1f} MB/s{extra}"
        )

    def finish(self, at_last_message: bool = False) -> None:
        """Print the final line: timed to now (publish: after the last ack) or to the last
        message (subscribe: an idle wait at the end does not count)."""
        if self.enabled:
            end = self.last if at_last_message else time.perf_counter()
            sys.stderr.write("\r" + self.line(end) + "   \n")
            sys.stderr.flush()


# ------------------------------------------------------------------------------- pub


async def cmd_pub(args: argparse.Namespace) -> int:
    """``felix pub STREAM [MSG]``."""
    ack = AckMode[args.ack.upper()]
    headers = _headers(args.header)
    key = args.key.encode() if args.key is not None else None
    if args.size is not None and args.count is None:
        args.count = 1
    async with _client(args) as client:
        if args.count is None and args.message is not None:
            result = await client.publish(
                args.stream, args.message.encode(), key=key, headers=headers, ack=ack
            )
            _print_published(args, result, 1)
            return 0
        progress = _Progress("published", not args.quiet and (args.count or 0) > 1)
        async with client.publisher(args.stream, ack=ack, max_batch_records=args.batch) as pub:
            if args.count is not None:
                await _publish_load(args, pub, key, headers, progress)
            else:
                async for line in _stdin_lines():
                    await pub.publish(line, key=key, headers=headers)
                    progress.add(1, len(line))
        progress.finish()
        last = pub.last_offset
        result = PublishResult(last - pub.acked_records + 1, last) if last is not None else None
        _print_published(args, result, pub.sent_records)
    return 0


async def _publish_load(
    args: argparse.Namespace,
    pub: Any,
    key: bytes | None,
    headers: dict[str, bytes] | None,
    progress: _Progress,
) -> None:
    if args.message is not None:
        payload = args.message.encode()
        if args.size is not None:
            payload = (payload * (args.size // max(len(payload), 1) + 1))[: args.size]
    else:
        payload = b"x" * (args.size or 100)
    interval = 1.0 / args.rate if args.rate else 0.0
    started = anyio.current_time()
    for i in range(args.count):
        if interval:
            due = started + i * interval
            delay = due - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
        await pub.publish(payload, key=key, headers=headers)
        progress.add(1, len(payload))


def _print_published(args: argparse.Namespace, result: PublishResult | None, count: int) -> None:
    if result is None:
        _emit(args, f"published {count} message(s)", {"published": count})
    elif count == 1 and result.first_offset == result.last_offset:
        _emit(
            args,
            f"published at offset {result.first_offset}",
            {"published": 1, "offset": result.first_offset},
        )
    else:
        _emit(
            args,
            f"published {count} messages, last offset {result.last_offset}",
            {"published": count, "last_offset": result.last_offset},
        )


# ------------------------------------------------------------------------------- sub


def _event_out(args: argparse.Namespace, event: Event) -> None:
    """Print one event, unflushed (``cmd_sub`` flushes before it waits for more)."""
    if event.gap_before:
        sys.stderr.write(f"-- gap: {event.gap_before} record(s) skipped by the broker --\n")
    if args.output != "json":
        sys.stdout.write(_text(event.payload) + "\n")
        return
    obj: dict[str, Any] = {"offset": event.offset, "timestamp_ms": event.timestamp_ms}
    obj.update(_payload_json(event.payload))
    obj.update(_payload_json(event.key, "key"))
    if event.headers:
        obj["headers"] = {k: _text(v) for k, v in event.headers.items()}
    if event.gap_before:
        obj["gap_before"] = event.gap_before
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")


async def cmd_sub(args: argparse.Namespace) -> int:
    """``felix sub STREAM``."""
    start = parse_start(args.start)
    progress = _Progress("received", args.stats)
    async with _client(args, reconnect=True) as client:
        sub = client.subscribe(args.stream, start=start, cache_feed=args.cache_feed)
        async with sub:
            it = aiter(sub)
            while args.count is None or progress.count < args.count:
                event: Event | None = None
                if sub.buffered:  # already received: no wait, so no idle timeout to set
                    event = await anext(it)
                else:
                    sys.stdout.flush()  # once per wait, not per line (a write each)
                    with anyio.move_on_after(args.idle if args.idle else math.inf):
                        try:
                            event = await anext(it)
                        except StopAsyncIteration:
                            break
                    if event is None:
                        break  # idle timeout
                if not args.quiet:
                    _event_out(args, event)
                progress.missed = sub.missed
                progress.add(1, len(event.payload))
            sys.stdout.flush()
    progress.finish(at_last_message=True)
    return 0


# ----------------------------------------------------------------------------- queue


async def cmd_queue_push(args: argparse.Namespace) -> int:
    """``felix queue push QUEUE [MSG]``."""
    async with _client(args) as client:
        if args.message is not None:
            result = await client.enqueue(args.queue, args.message.encode())
            assert result is not None
            _emit(
                args,
                f"enqueued at offset {result.first_offset}",
                {"enqueued": 1, "offset": result.first_offset},
            )
            return 0
        count, batch = 0, []
        async for line in _stdin_lines():
            batch.append(line)
            if len(batch) >= 256:
                await client.enqueue(args.queue, batch)
                count, batch = count + len(batch), []
        if batch:
            await client.enqueue(args.queue, batch)
            count += len(batch)
        _emit(args, f"enqueued {count} message(s)", {"enqueued": count})
    return 0


def _message_out(args: argparse.Namespace, msg: QueueMessage) -> None:
    obj: dict[str, Any] = {
        "offset": msg.offset,
        "attempt": msg.attempt,
        "timestamp_ms": msg.timestamp_ms,
    }
    obj.update(_payload_json(msg.payload))
    _emit(args, _text(msg.payload), obj)


async def cmd_queue_consume(args: argparse.Namespace) -> int:
    """``felix queue consume QUEUE``."""
    count = 0
    async with _client(args) as client:
        consumer = client.consume(args.queue, group=args.group, prefetch=args.prefetch)
        async with consumer:
            while args.count is None or count < args.count:
                with anyio.move_on_after(args.idle if args.idle else math.inf):
                    try:
                        msg = await anext(consumer)
                    except StopAsyncIteration:
                        break
                    _message_out(args, msg)
                    if args.nack:
                        await msg.nack()
                    elif args.ack == "committed":
                        await msg.ack_sync(AckMode.COMMITTED)
                    else:
                        await msg.ack()
                    count += 1
                    continue
                break
    return 0


# ----------------------------------------------------------------------------- cache


async def cmd_cache_put(args: argparse.Namespace) -> int:
    """``felix cache put CACHE KEY [VALUE]``."""
    if args.if_absent and args.if_version is not None:
        raise InvalidArgument("--if-absent and --if-version cannot be combined: give one condition")
    ttl_ms(args.ttl)  # a bad --ttl (negative, inf, nan) fails before connecting
    value = args.value.encode() if args.value is not None else sys.stdin.buffer.read()
    async with _client(args) as client:
        cache = client.cache(args.cache)
        if args.if_absent:
            stored = await cache.put_if_absent(args.key, value, ttl=args.ttl)
            _emit(args, "OK" if stored else "(exists)", {"stored": stored})
            return 0 if stored else 1
        if args.if_version is not None:
            version = await cache.compare_and_set(
                args.key, value, version=args.if_version, ttl=args.ttl
            )
        else:
            version = await cache.put(args.key, value, ttl=args.ttl)
        _emit(args, f"OK version {version}", {"stored": True, "version": version})
    return 0


def _entry_out(args: argparse.Namespace, entry: CacheEntry | None) -> None:
    if entry is None:
        _emit(args, "(nil)", {"found": False})
        return
    obj: dict[str, Any] = {"found": True, "version": entry.version, "ttl": entry.ttl_remaining}
    obj.update(_payload_json(entry.value, "value"))
    _emit(args, _text(entry.value), obj)


async def cmd_cache_get(args: argparse.Namespace) -> int:
    """``felix cache get CACHE KEY``."""
    async with _client(args) as client:
        _entry_out(args, await client.cache(args.cache).get(args.key))
    return 0


async def cmd_cache_del(args: argparse.Namespace) -> int:
    """``felix cache del CACHE KEY``."""
    async with _client(args) as client:
        deleted = await client.cache(args.cache).delete(args.key, if_version=args.if_version)
        _emit(args, f"(integer) {int(deleted)}", {"deleted": deleted})
    return 0


# ----------------------------------------------------------------------------- admin


def _settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as JSON when they parse (numbers, true,
    null, lists), else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"invalid setting {item!r}: use KEY=VALUE")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def _resource_name(resource: dict[str, Any]) -> str:
    """A listed resource's own name: a tenant's is in ``tenant``, a namespace's in
    ``namespace`` (their ``name`` is empty), the others' in ``name``."""
    kind = resource.get("kind")
    field = kind if kind in ("tenant", "namespace") else "name"
    return str(resource.get(field) or resource.get("name") or resource)


def _resource_text(resource: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in resource.items())


async def cmd_admin(args: argparse.Namespace) -> int:
    """``felix admin ACTION KIND [NAME]``."""
    action = args.admin_command
    async with _client(args) as client:
        admin = client.admin
        if action == "list":
            items = await admin.list(args.kind)
            text = "\n".join(_resource_name(r) for r in items) or "(none)"
            _emit(args, text, items)
        elif action == "create":
            res = await admin.create(args.kind, args.name, _settings(args.settings))
            _emit(args, f"created {args.kind} {args.name}", res)
        elif action == "update":
            res = await admin.update(args.kind, args.name, _settings(args.settings))
            _emit(args, f"updated {args.kind} {args.name}", res)
        elif action == "describe":
            res = await admin.describe(args.kind, args.name)
            _emit(args, _resource_text(res), res)
        else:
            await admin.delete(args.kind, args.name)
            _emit(args, f"deleted {args.kind} {args.name}", {"deleted": True})
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "pub": cmd_pub,
    "sub": cmd_sub,
    "queue push": cmd_queue_push,
    "queue consume": cmd_queue_consume,
    "cache put": cmd_cache_put,
    "cache get": cmd_cache_get,
    "cache del": cmd_cache_del,
    "admin create": cmd_admin,
    "admin describe": cmd_admin,
    "admin list": cmd_admin,
    "admin update": cmd_admin,
    "admin delete": cmd_admin,
}
"""Subcommand (``"cache get"`` ...) to its implementation."""
