"""One JSON object a line on every process, carrying the request id of the call in progress."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Callable

import orjson

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
SpanIds = Callable[[], tuple[str, str] | None]
# (trace_id, span_id) of the current span, for each log line: registered by flowviz.core.tracing
# with use_span_ids while tracing is on; None otherwise.
span_ids: SpanIds | None = None


def use_span_ids(source: SpanIds | None) -> SpanIds | None:
    """Set where log lines get their trace and span ids (None: nowhere); returns the previous."""
    global span_ids
    previous, span_ids = span_ids, source
    return previous


# A request id from a caller (HTTP header or gRPC metadata) is kept only when it is this short and
# plain; otherwise a fresh one is made (a caller must not write into our logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def accept_request_id(value: object) -> str:
    """The caller's request id if it is well formed, else a new one."""
    return value if isinstance(value, str) and _REQUEST_ID.fullmatch(value) else os.urandom(16).hex()


def escape(text: str) -> str:
    """Text for a human-readable log line: control characters (newlines, ANSI escapes) shown as
    \\xNN, so a value can neither start a fake line nor repaint the terminal."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


class TextFormatter(logging.Formatter):
    """FLOWVIZ_LOG_FORMAT=text: one line a record, its message escaped (tracebacks stay lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "proc": self.process_name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            doc["request_id"] = rid
        if span_ids is not None and (ids := span_ids()) is not None:
            doc["trace_id"], doc["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup(process_name: str, fmt: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        handler.setFormatter(TextFormatter(f"%(asctime)s {process_name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
