"""Structured JSON logs, one object per line, with secrets scrubbed.

The gateway logs request metadata only (ids, pair, status, timings, a key's 8-digit digest prefix), never
headers, bodies or keys; as a second guard, anything that looks like a bearer token or an API key is
masked before a line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

LOGGER_NAME = "atlas_router.gateway"

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[^\s\"',]+"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"\b(sk-)[A-Za-z0-9_\-]{8,}"),
]

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}


def redact(text: str) -> str:
    """Mask bearer tokens, ``key=value`` secrets and sk-style keys."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False, default=str))


def configure_json_logging(level: str = "info", stream: Any = None) -> None:
    """Send the gateway's and uvicorn's logs to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level.upper())
        log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # the gateway writes its own access line


def gateway_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
