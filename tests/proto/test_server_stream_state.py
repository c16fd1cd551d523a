"""A connection's per-stream state is bounded by the streams in use, not by every stream
it ever opened: a finished request stream (both sides ended, every request answered) is
forgotten. A client that opens a new stream per request (as HTTP/3 does) would otherwise
grow the broker's memory for as long as the connection lives."""

from __future__ import annotations

from felix_proto import events as ev
from felix_proto import messages as m
from felix_proto.codec import encode
from felix_proto.server import ServerConnection


def _ready() -> ServerConnection:
    conn = ServerConnection(server_id="t", region="r")
    conn.stream_data_received(0, encode(m.Hello(versions=[2])), False)
    assert isinstance(conn.next_event(), ev.HandshakeRequested)
    conn.accept()
    conn.data_to_send()
    return conn


def _requests(conn: ServerConnection) -> list[m.Message]:
    out = []
    while (event := conn.next_event()) is not None:
        if isinstance(event, ev.RequestReceived):
            out.append(event.message)
    return out


def test_finished_request_streams_are_forgotten() -> None:
    conn = _ready()
    for i in range(1000):
        sid = 4 * (i + 1)
        get = m.CacheGet(request_id=i + 1, tenant="t", namespace="n", cache="c", key="k")
        if i % 2:  # the FIN before the reply, or after it
            conn.stream_data_received(sid, encode(get), True)
            for msg in _requests(conn):
                conn.send_reply(m.CacheValue(request_id=msg.request_id, found=False))  # type: ignore[attr-defined]
        else:
            conn.stream_data_received(sid, encode(get), False)
            for msg in _requests(conn):
                conn.send_reply(m.CacheValue(request_id=msg.request_id, found=False))  # type: ignore[attr-defined]
            conn.stream_data_received(sid, b"", True)
        written = conn.data_to_send()
        assert [(s, end) for s, _, end in written if s == sid] == [(sid, True)]
    assert set(conn._streams) == {0}
    assert conn._open == {} and conn._local_ended == set()


def test_unawaited_error_after_the_stream_is_forgotten_is_dropped() -> None:
    conn = _ready()
    publish = m.Publish(
        request_id=7, tenant="t", namespace="n", stream="s", payload=b"x", ack=m.AckMode.NONE
    )
    conn.stream_data_received(4, encode(publish), True)
    assert _requests(conn) == [publish]
    conn.data_to_send()
    assert 4 not in conn._streams  # nothing is awaited: the stream ended at once
    conn.send_error(7, 200, "no such stream")  # a late refusal: nowhere to send it
    assert conn.data_to_send() == []
    # a reset request stream is forgotten once its requests are answered
    conn.stream_data_received(
        8, encode(m.CacheGet(request_id=8, tenant="t", namespace="n", cache="c", key="k")), False
    )
    assert len(_requests(conn)) == 1
    conn.stream_reset(8, 0)
    conn.send_reply(m.CacheValue(request_id=8, found=False))
    assert set(conn._streams) == {0} and conn.data_to_send() == []
