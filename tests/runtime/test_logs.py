"""Logging setup: every line the broker writes has the chosen format, aioquic's included."""

from __future__ import annotations

import io
import json
import logging

from felix_runtime.logs import configure_logging, logger


def test_json_logs_carry_aioquic_warnings_and_drop_its_chatter() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    try:
        logger.info("felix line")
        logging.getLogger("quic").warning("Error: 376, reason: No common ALPN protocols")
        logging.getLogger("quic").info("per-packet detail")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["msg"] for line in lines] == [
            "felix line",
            "Error: 376, reason: No common ALPN protocols",
        ]
    finally:
        configure_logging("text", "info")
