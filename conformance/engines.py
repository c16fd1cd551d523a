"""The QUIC engine of the suite's client: aioquic (the default) or qh3 (optional).

The suite drives its connection with aioquic's asyncio protocol either way
(:mod:`conformance.wire`). On qh3 the sans-IO ``QuicConnection`` is qh3's, behind
:class:`Qh3Client`, which gives aioquic's protocol what it expects: qh3's events as
aioquic's classes (both have the same event names and fields), and aioquic's contract for
a write after the peer closed (the data is dropped; the ``ConnectionTerminated`` event says
what happened; qh3 raises ``QuicConnectionError`` "connection is closed"). qh3 is imported
only when chosen.
"""

from __future__ import annotations

import dataclasses
import importlib
import ssl
from typing import Any, cast

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

__all__ = ["ENGINES", "Qh3Client", "client_connection"]

ENGINES = ("aioquic", "qh3")
"""The engines the suite's client can run on."""

_CLOSED = "connection is closed"  # qh3's QuicConnectionError reason for a write after close


class Qh3Client:
    """A qh3 client ``QuicConnection`` with aioquic's events and write contract."""

    def __init__(self, configuration: Any) -> None:
        connection = importlib.import_module("qh3.quic.connection")
        self._error: type[Exception] = connection.QuicConnectionError
        self._conn = connection.QuicConnection(configuration=configuration)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def next_event(self) -> qe.QuicEvent | None:
        """qh3's next event, as the aioquic event of the same name and fields."""
        event = self._conn.next_event()
        if event is None:
            return None
        cls: Any = getattr(qe, type(event).__name__, None)
        if not hasattr(cls, "__dataclass_fields__"):
            return cast(qe.QuicEvent, event)  # one aioquic does not know: the protocols skip it
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(cls)}
        return cast(qe.QuicEvent, cls(**fields))

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Write on a stream; dropped (as on aioquic) once the connection is closed."""
        try:
            self._conn.send_stream_data(stream_id, data, end_stream)
        except self._error as exc:
            if getattr(exc, "reason_phrase", None) != _CLOSED:
                raise


def client_connection(
    engine: str,
    *,
    alpn: list[str] | None,
    server_name: str,
    cafile: str | None,
    insecure: bool,
) -> QuicConnection:
    """A client connection of ``engine`` (typed as aioquic's: :class:`Qh3Client` has the
    calls aioquic's asyncio protocol makes).

    Raises:
        ValueError: an unknown engine.
        ImportError: qh3 chosen and not installed.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown QUIC engine {engine!r} (known: {', '.join(ENGINES)})")
    settings: dict[str, Any] = {
        "is_client": True,
        "alpn_protocols": alpn,
        "server_name": server_name,
        "idle_timeout": 15.0,
    }
    if engine == "qh3":
        module = importlib.import_module("qh3.quic.configuration")
        config: Any = module.QuicConfiguration(**settings, initial_rtt=0.1)
    else:
        config = QuicConfiguration(**settings)
    if insecure:
        config.verify_mode = ssl.CERT_NONE
    elif cafile:
        config.load_verify_locations(cafile)
    if engine == "qh3":
        return cast(QuicConnection, Qh3Client(config))
    return QuicConnection(configuration=config)
