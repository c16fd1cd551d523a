"""Drive the sans-IO ClientConnection from a plain blocking loop (no asyncio, no anyio).

The example of ``docs/wire-protocol.md`` §12, kept runnable: it creates a stream, publishes
one record, prints its offset and closes. ``tests/runtimes/test_examples.py`` runs it
against every broker runtime.

Usage: python examples/plain_loop_client.py HOST PORT CAFILE [STREAM]
"""

from __future__ import annotations

import select
import socket
import sys
import time

from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN, ErrorCode, events
from felix_proto.client import ClientConnection
from felix_proto.messages import AdminCreate


def publish_once(host: str, port: int, cafile: str, stream: str) -> int:
    """Create ``stream`` (if absent), publish one record, return its offset."""
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost")
    config.load_verify_locations(cafile)
    quic = QuicConnection(configuration=config)
    felix = ClientConnection(client_name="plain-loop")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    offset = -1

    now = time.time()
    quic.connect((host, port), now=now)
    felix.connect(now=now)  # queues Hello on stream 0
    while True:
        # 1. Felix writes -> QUIC streams -> datagrams.
        for stream_id, data, end_stream in felix.data_to_send():
            quic.send_stream_data(stream_id, data, end_stream=end_stream)
        for datagram, addr in quic.datagrams_to_send(now=time.time()):
            sock.sendto(datagram, addr)

        # 2. Wait for a datagram or the earliest of the two timers.
        deadlines = [t for t in (quic.get_timer(), felix.get_timer()) if t is not None]
        timeout = max(0.0, min(deadlines) - time.time()) if deadlines else None
        readable, _, _ = select.select([sock], [], [], timeout)

        # 3. Feed what came, with the time.
        now = time.time()
        if readable:
            datagram, addr = sock.recvfrom(65536)
            quic.receive_datagram(datagram, addr, now=now)
        if (t := quic.get_timer()) is not None and t <= now:
            quic.handle_timer(now=now)
        if (t := felix.get_timer()) is not None and t <= now:
            felix.handle_timer(now)  # request deadlines, handshake timeout

        # 4. QUIC events -> Felix inputs.
        while (qe := quic.next_event()) is not None:
            if isinstance(qe, quic_events.StreamDataReceived):
                felix.stream_data_received(qe.stream_id, qe.data, qe.end_stream)
            elif isinstance(qe, (quic_events.StreamReset, quic_events.StopSendingReceived)):
                felix.stream_reset(qe.stream_id, qe.error_code)
            elif isinstance(qe, quic_events.ConnectionTerminated):
                felix.connection_lost()

        # 5. Felix events -> application decisions (which may call the API again).
        while (ev := felix.next_event()) is not None:
            if isinstance(ev, events.Welcomed):
                felix.admin(
                    AdminCreate, kind="stream", tenant="default", namespace="default",
                    name=stream, now=now,
                )  # fmt: skip
            elif isinstance(ev, events.AdminReplied) or (
                isinstance(ev, events.RequestFailed) and ev.code == ErrorCode.ALREADY_EXISTS
            ):
                felix.publish("default", "default", stream, b"hello", now=now)
            elif isinstance(ev, events.PublishAcked):
                offset = ev.first_offset
                felix.close()
            elif isinstance(ev, (events.RequestFailed, events.RequestTimedOut)):
                print("failed:", ev, file=sys.stderr)
                felix.close()
            elif isinstance(ev, events.CloseRequested):
                quic.close(error_code=ev.error_code, reason_phrase=ev.reason)
            elif isinstance(ev, events.ConnectionTerminated):
                for datagram, addr in quic.datagrams_to_send(now=time.time()):
                    sock.sendto(datagram, addr)  # flush the CONNECTION_CLOSE
                sock.close()
                return offset


if __name__ == "__main__":
    host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stream = sys.argv[4] if len(sys.argv) > 4 else "plain-loop"
    result = publish_once(host, port, cafile, stream)
    print("stored at offset", result)
    sys.exit(0 if result >= 0 else 1)
