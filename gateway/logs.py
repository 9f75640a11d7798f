"""Structured logs: one JSON object per line, each carrying the current request's id.

``request_id`` is a context variable the request middleware (``gateway.logging_mw``) sets
for the life of each request, so every line logged while serving it (the access line, an
unhandled error's traceback, a warning deep in a handler) carries the same id.

Extra fields passed as ``logger.info(..., extra={...})`` become keys of the object.  Callers
never pass credentials, cookies, tokens or request bodies; nothing here reads them.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

LOG_FORMATS = ("json", "text")
# Attributes every LogRecord has: everything else on a record came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, ...extra, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines (``GATEWAY_LOG_FORMAT=text``), still with the request id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        extras = _extras(record)
        if rid is not None and "request_id" not in extras:
            extras = {"request_id": rid, **extras}
        if not extras:
            return line
        fields = " ".join(f"{k}={v}" for k, v in extras.items())
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} [{fields}]{sep}{tail}"


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``GATEWAY_LOG_FORMAT`` (``json`` or ``text``)."""
    return TextFormatter() if log_format == "text" else JsonFormatter()


def configure_logging(level: str, log_format: str = "json") -> None:
    """Send every log record to stderr in ``log_format``, replacing earlier handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
