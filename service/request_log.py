"""One structured JSON line per request, and the fields that code deeper down adds to it.

The middleware opens a record per request; a task or batcher running for that request adds
fields (batch size, ...) with `note()`. Request bodies are never logged.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from contextvars import ContextVar
from typing import Any

_RECORD: ContextVar[dict[str, Any] | None] = ContextVar("seqserve_request_record", default=None)
access_log = logging.getLogger("seqserve.access")


def open_record(**fields: Any) -> dict[str, Any]:
    record = dict(fields)
    _RECORD.set(record)
    return record


def note(**fields: Any) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    record = _RECORD.get()
    if record is not None:
        record.update(fields)


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object per line; an access record's fields go in as they are."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {"time": when, "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
