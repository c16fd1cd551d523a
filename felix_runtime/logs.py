"""Structured logging for the broker: human-readable by default, one JSON object per line
with ``--log-format json``.

Every record may carry extra fields (``log.info("listening", extra={"fields": {...}})``);
the text format appends them as ``key=value``, the JSON format as keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["configure_logging", "log_fields", "logger"]

logger = logging.getLogger("felix")


def log_fields(**fields: object) -> dict[str, Any]:
    """The ``extra`` argument carrying structured fields: ``extra=log_fields(port=7447)``."""
    return {"fields": fields}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            line += "  " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(
                {k: v if isinstance(v, int | float | bool) else str(v) for k, v in fields.items()}
            )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def configure_logging(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Send the ``felix`` (and aioquic's ``quic``) logger's records to ``stream`` in ``fmt``.

    Args:
        fmt: ``text`` or ``json``.
        level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: where to write (stderr when None).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    # aioquic logs connection errors on "quic"; without a handler they would reach Python's
    # last-resort handler as bare text, breaking JSON logs. Its info/debug lines are per
    # packet, so only warnings and above come through unless debug is asked for.
    quic = logging.getLogger("quic")
    for log, lvl in ((logger, level.upper()), (quic, "DEBUG" if level == "debug" else "WARNING")):
        for old in list(log.handlers):
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(lvl)
        log.propagate = False
