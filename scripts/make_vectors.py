"""Write the golden wire vectors to ``conformance/vectors/*.json``.

One file per vector; the format is documented in ``conformance/vectors/README.md``.
Message vectors hold a message's wire fields (bytes as ``{"$bytes": "<hex>"}``) and the
complete frame in hex; error vectors hold a frame and the error a receiver must report.

Usage: ``python scripts/make_vectors.py [--check] [--out DIR]``. ``--check`` writes
nothing and exits 1 if a file on disk differs from what would be written.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from felix_proto import messages as m
from felix_proto.codec import encode
from felix_proto.frames import DEFAULT_MAX_FRAME_SIZE, MAGIC

OUT = Path(__file__).resolve().parents[1] / "conformance" / "vectors"
FORMAT_VERSION = 1

_P = b"hello"

MESSAGE_VECTORS: list[tuple[str, m.Message]] = [
    (
        "hello",
        m.Hello(
            versions=[2],
            client_name="felix-py/0.1",
            capabilities=["batch", "cache-feed"],
            token="tok-123",
            max_frame_size=1 << 20,
        ),
    ),
    ("hello_minimal", m.Hello(versions=[2])),
    (
        "welcome",
        m.Welcome(
            version=2,
            server_id="broker-1",
            region="eu-west",
            capabilities=["batch"],
            limits={"max_frame_size": 16777216, "max_batch_records": 1024},
        ),
    ),
    (
        "welcome_tenant",
        m.Welcome(
            version=2,
            server_id="broker-1",
            capabilities=["token-refresh"],
            limits={"max_frame_size": 16777216},
            tenant="acme",
        ),
    ),
    ("ping", m.Ping(nonce=(1 << 64) - 1)),
    ("pong", m.Pong(nonce=42)),
    ("goaway", m.GoAway(reason="shutting down", deadline_ms=25000)),
    (
        "error",
        m.Error(
            code=205,
            message="offset 3 is below the retained range",
            request_id=9,
            details={"first_offset": 100, "requested": 3},
        ),
    ),
    ("error_connection", m.Error(code=100, message="bad frame", retryable=False)),
    ("ok", m.Ok(request_id=1)),
    ("reauthenticate", m.Reauthenticate(request_id=2, token="eyJhbGciOiJFZERTQSJ9.e30.c2ln")),
    ("token_exchange", m.TokenExchange(request_id=3, id_token="eyJhbGciOiJSUzI1NiJ9.e30.c2ln")),
    (
        "token_issued",
        m.TokenIssued(request_id=3, token="eyJhbGciOiJFZERTQSJ9.e30.c2ln", expires_in_ms=900000),
    ),
    (
        "publish",
        m.Publish(request_id=7, stream="created", payload=_P, tenant="acme", namespace="orders"),
    ),
    (
        "publish_full",
        m.Publish(
            request_id=8,
            stream="created",
            payload=b"\x00\xff",
            key=b"k1",
            headers={"trace": b"abc"},
            ack=m.AckMode.COMMITTED.value,
            tenant="acme",
            namespace="orders",
        ),
    ),
    (
        "publish_batch",
        m.PublishBatch(
            request_id=10,
            stream="created",
            payloads=[b"a", b"bc", b""],
            keys=[b"k", None, b"k"],
            headers=[None, {"h": b"v"}, None],
            ack=m.AckMode.NONE.value,
            tenant="acme",
            namespace="orders",
        ),
    ),
    ("publish_ack", m.PublishAck(request_id=10, first_offset=100, last_offset=102)),
    (
        "subscribe",
        m.Subscribe(
            request_id=11,
            stream="created",
            start=m.StartKind.OFFSET.value,
            start_value=100,
            credit_messages=256,
            credit_bytes=65536,
            tenant="acme",
            namespace="orders",
        ),
    ),
    ("subscribed", m.Subscribed(request_id=11, subscription_id=1, first_offset=100)),
    ("subscription_stream_start", m.SubscriptionStreamStart(subscription_id=1, request_id=11)),
    (
        "event_batch",
        m.EventBatch(
            base_offset=100,
            payloads=[b"a", b"bc"],
            timestamps_ms=[1700000000000, 1700000000001],
        ),
    ),
    (
        "event_batch_full",
        m.EventBatch(
            base_offset=5,
            payloads=[b"x"],
            timestamps_ms=[1700000000000],
            keys=[b"k"],
            headers=[{"h": b"v"}],
        ),
    ),
    ("credit", m.Credit(subscription_id=1, messages=128, bytes=1 << 20)),
    ("unsubscribe", m.Unsubscribe(request_id=12, subscription_id=1)),
    ("subscription_gap", m.SubscriptionGap(missed=10, next_offset=210)),
    (
        "subscription_ended",
        m.SubscriptionEnded(
            subscription_id=1, reason=m.EndReason.LAGGED.value, message="slow", next_offset=210
        ),
    ),
    (
        "enqueue",
        m.Enqueue(
            request_id=13,
            queue="jobs",
            payloads=[b"job-1", b"job-2"],
            tenant="acme",
            namespace="orders",
        ),
    ),
    (
        "consume",
        m.Consume(
            request_id=14,
            queue="jobs",
            group="workers",
            prefetch=8,
            tenant="acme",
            namespace="orders",
        ),
    ),
    ("consuming", m.Consuming(request_id=14, consumer_id=3)),
    ("consumer_stream_start", m.ConsumerStreamStart(consumer_id=3, request_id=14)),
    (
        "delivery",
        m.Delivery(
            delivery_id=77, attempt=2, offset=5, payload=b"job-1", timestamp_ms=1700000000000
        ),
    ),
    (
        "delivery_batch",
        m.DeliveryBatch(
            delivery_ids=[78, 79],
            attempts=[1, 3],
            offsets=[6, 2],
            payloads=[b"job-2", b"job-0"],
            timestamps_ms=[1700000000001, 1699999999000],
            keys=[b"k", None],
            headers=[None, {"h": b"v"}],
        ),
    ),
    ("ack", m.Ack(consumer_id=3, delivery_ids=[77, 78], request_id=15)),
    (
        "ack_committed",
        m.Ack(consumer_id=3, delivery_ids=[79], request_id=16, mode=m.AckMode.COMMITTED.value),
    ),
    ("nack", m.Nack(consumer_id=3, delivery_ids=[79], delay_ms=1000)),
    ("cancel_consume", m.CancelConsume(request_id=16, consumer_id=3)),
    ("consumer_ended", m.ConsumerEnded(consumer_id=3, reason=m.EndReason.DELETED.value)),
    (
        "cache_put",
        m.CachePut(
            request_id=17,
            cache="sessions",
            key="user:1",
            value=b"v1",
            ttl_ms=60000,
            tenant="acme",
            namespace="orders",
        ),
    ),
    (
        "cache_put_cas",
        m.CachePut(
            request_id=18,
            cache="sessions",
            key="user:1",
            value=b"v2",
            if_version=4,
            tenant="acme",
            namespace="orders",
        ),
    ),
    ("cache_put_result", m.CachePutResult(request_id=17, stored=True, version=5)),
    (
        "cache_get",
        m.CacheGet(
            request_id=19, cache="sessions", key="user:1", tenant="acme", namespace="orders"
        ),
    ),
    (
        "cache_value",
        m.CacheValue(request_id=19, found=True, value=b"v1", version=5, ttl_remaining_ms=59000),
    ),
    ("cache_value_miss", m.CacheValue(request_id=20, found=False)),
    (
        "cache_delete",
        m.CacheDelete(
            request_id=21, cache="sessions", key="user:1", tenant="acme", namespace="orders"
        ),
    ),
    ("cache_deleted", m.CacheDeleted(request_id=21, deleted=True)),
    (
        "admin_create",
        m.AdminCreate(
            request_id=22,
            kind=m.ResourceKind.STREAM.value,
            tenant="acme",
            namespace="orders",
            name="created",
            settings={
                "retention_max_age_ms": 86400000,
                "retention_max_records": None,
                "slow_consumer": "block",
            },
        ),
    ),
    (
        "admin_describe",
        m.AdminDescribe(
            request_id=23, kind="stream", tenant="acme", namespace="orders", name="created"
        ),
    ),
    ("admin_list", m.AdminList(request_id=24, kind="namespace", tenant="acme")),
    (
        "admin_update",
        m.AdminUpdate(
            request_id=25,
            kind="cache",
            tenant="acme",
            namespace="orders",
            name="sessions",
            settings={"default_ttl_ms": 1000},
        ),
    ),
    ("admin_delete", m.AdminDelete(request_id=26, kind="tenant", tenant="acme")),
    (
        "admin_resource",
        m.AdminResource(request_id=22, resource={"kind": "stream", "name": "created"}),
    ),
    (
        "admin_resources",
        m.AdminResources(request_id=24, resources=[{"name": "orders"}, {"name": "billing"}]),
    ),
]


def to_json(value: Any) -> Any:
    """A decoded msgpack value as JSON: bytes become ``{"$bytes": "<hex>"}``."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def _frame(payload: bytes, *, version: int = 2, flags: int = 0, length: int | None = None) -> str:
    declared = len(payload) if length is None else length
    return (struct.pack(">IHHI", MAGIC, version, flags, declared) + payload).hex()


def _packed(code: Any, fields: Any) -> bytes:
    return bytes(msgpack.packb([code, fields]))


def message_vector(name: str, msg: m.Message) -> dict[str, Any]:
    """The vector of one message."""
    frame = encode(msg)
    wire_type, fields = msgpack.unpackb(frame[12:])
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": "message",
        "message": type(msg).__name__,
        "type": wire_type,
        "fields": to_json(fields),
        "frame_hex": frame.hex(),
    }


def _error(
    name: str,
    description: str,
    frame_hex: str,
    error: str,
    code: int,
    *,
    fatal: bool,
    **extra: Any,
) -> dict[str, Any]:
    vector = {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": "error",
        "description": description,
        "frame_hex": frame_hex,
        "error": error,
        "error_code": code,
        "fatal": fatal,
    }
    vector.update(extra)
    return vector


def error_vectors() -> list[dict[str, Any]]:
    """The framing and payload error vectors."""
    ping = _packed(m.Ping.TYPE, {"nonce": 1})
    publish = {"request_id": 7, "tenant": "t", "namespace": "n", "stream": "s", "payload": b"x"}
    v1_ok = b'{"type":"ok"}'
    return [
        _error(
            "error_bad_magic",
            "the first four bytes are not FLX1",
            ("464c5832" + _frame(ping)[8:]),
            "BadFrame",
            100,
            fatal=True,
        ),
        _error(
            "error_v1_header",
            "a version-1 (reference implementation) JSON frame",
            _frame(v1_ok, version=1),
            "UnsupportedVersion",
            101,
            fatal=True,
            version=1,
            supported_versions=[2],
        ),
        _error(
            "error_unknown_version",
            "version 3",
            _frame(ping, version=3),
            "UnsupportedVersion",
            101,
            fatal=True,
            version=3,
            supported_versions=[2],
        ),
        _error(
            "error_unknown_flag",
            "flag bit 0x0001 set; version 2 defines no flags",
            _frame(ping, flags=0x0001),
            "BadFrame",
            100,
            fatal=True,
        ),
        _error(
            "error_oversize_length",
            "declared length one above the default maximum (16 MiB); no payload follows",
            _frame(b"", length=DEFAULT_MAX_FRAME_SIZE + 1),
            "FrameTooLarge",
            204,
            fatal=True,
            max_frame_size=DEFAULT_MAX_FRAME_SIZE,
        ),
        _error(
            "error_truncated_msgpack",
            "an intact frame whose msgpack document is cut short",
            _frame(ping[:-1]),
            "BadFrame",
            100,
            fatal=False,
        ),
        _error(
            "error_not_an_array",
            "the payload is a msgpack map, not [type, fields]",
            _frame(msgpack.packb({"type": 3})),
            "BadFrame",
            100,
            fatal=False,
        ),
        _error(
            "error_unknown_type",
            "message type 0x7f is not defined; the request id is still reported",
            _frame(_packed(0x7F, {"request_id": 5})),
            "UnknownMessageType",
            102,
            fatal=False,
            request_id=5,
        ),
        _error(
            "error_wrong_field_type",
            "Publish.stream is an int",
            _frame(_packed(m.Publish.TYPE, {**publish, "stream": 5})),
            "BadFrame",
            100,
            fatal=False,
            request_id=7,
            field="stream",
            message="Publish.stream: expected str, got int",
        ),
        _error(
            "error_missing_field",
            "Publish without its required payload",
            _frame(_packed(m.Publish.TYPE, {k: v for k, v in publish.items() if k != "payload"})),
            "BadFrame",
            100,
            fatal=False,
            request_id=7,
            field="payload",
        ),
        _error(
            "error_bool_for_int",
            "Ping.nonce is true: bools are not integers",
            _frame(_packed(m.Ping.TYPE, {"nonce": True})),
            "BadFrame",
            100,
            fatal=False,
            field="nonce",
        ),
        _error(
            "error_negative_int",
            "Ok.request_id is -1: ids are unsigned",
            _frame(_packed(m.Ok.TYPE, {"request_id": -1})),
            "BadFrame",
            100,
            fatal=False,
            field="request_id",
        ),
        _error(
            "error_ttl_above_max",
            "CachePut.ttl_ms is 2**64-1, above MAX_DURATION_MS (10**12): INVALID_ARGUMENT",
            _frame(
                _packed(
                    m.CachePut.TYPE,
                    {
                        "request_id": 9,
                        "tenant": "t",
                        "namespace": "n",
                        "cache": "c",
                        "key": "k",
                        "value": b"v",
                        "ttl_ms": (1 << 64) - 1,
                    },
                )
            ),
            "InvalidField",
            202,
            fatal=False,
            request_id=9,
            field="ttl_ms",
            message="CachePut.ttl_ms: 18446744073709551615 is above the maximum 1000000000000",
        ),
        _error(
            "error_bad_enum",
            "Publish.ack is 9, not an AckMode",
            _frame(_packed(m.Publish.TYPE, {**publish, "ack": 9})),
            "BadFrame",
            100,
            fatal=False,
            request_id=7,
            field="ack",
        ),
        _error(
            "error_parallel_length",
            "PublishBatch.keys has 2 entries for 1 payload",
            _frame(
                _packed(
                    m.PublishBatch.TYPE,
                    {
                        "request_id": 8,
                        "tenant": "t",
                        "namespace": "n",
                        "stream": "s",
                        "payloads": [b"x"],
                        "keys": [None, None],
                    },
                )
            ),
            "BadFrame",
            100,
            fatal=False,
            request_id=8,
            field="keys",
        ),
        _error(
            "error_list_element_type",
            "PublishBatch.payloads[1] is a str",
            _frame(
                _packed(
                    m.PublishBatch.TYPE,
                    {
                        "request_id": 8,
                        "tenant": "t",
                        "namespace": "n",
                        "stream": "s",
                        "payloads": [b"x", "y"],
                    },
                )
            ),
            "BadFrame",
            100,
            fatal=False,
            request_id=8,
            field="payloads",
        ),
        _error(
            "error_ext_type",
            "a msgpack ext value (ext types are not used by Felix)",
            _frame(_packed(m.Ping.TYPE, {"nonce": msgpack.ExtType(5, b"x")})),
            "BadFrame",
            100,
            fatal=False,
        ),
    ]


def all_vectors() -> dict[str, dict[str, Any]]:
    """Every vector by file stem."""
    vectors = {name: message_vector(name, msg) for name, msg in MESSAGE_VECTORS}
    vectors.update({v["name"]: v for v in error_vectors()})
    return vectors


def render(vector: dict[str, Any]) -> str:
    """A vector's file text."""
    return json.dumps(vector, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) every vector file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args(argv)
    vectors = all_vectors()
    covered = {type(msg) for _, msg in MESSAGE_VECTORS}
    missing = sorted(c.__name__ for c in m.MESSAGE_TYPES.values() if c not in covered)
    if missing:
        print(f"no vector for: {', '.join(missing)}", file=sys.stderr)
        return 1
    stale = []
    for name, vector in vectors.items():
        path = args.out / f"{name}.json"
        text = render(vector)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale vectors: {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{len(vectors)} vectors {'checked' if args.check else 'written'} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
