"""The gateway's request ids, metrics and access log: one pure-ASGI middleware (the registry is served on the
metrics port by `flowviz.core.metrics.serve_metrics`, not on the public HTTP port).

Per request: a `time.perf_counter()` pair, one counter increment and one histogram
observation on label children cached per (method, route template, status), and one JSON
access line (`msg: "access"`, method, route, path, status, duration_ms, request_id, and
trace_id/span_id when tracing is on). Metric names are documented in `flowviz.core.metrics`.

The access line is built directly (`AccessLog`), not through a `logging` record and
formatter, which cost several times more on every request; it has the same shape as every
other JSON line (`flowviz.core.logs`), and the lines of one event-loop turn leave in one write.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from typing import Any, TextIO

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowviz.core import logs, metrics

access_log = logging.getLogger("gateway.access")

# Anything else is counted as OTHER: a client must not be able to mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class AccessLog:
    """Access lines in the format of the root handler: JSON written here, text via `logging`."""

    def __init__(self) -> None:
        self._bound = False
        self._stream: TextIO | None = None  # None: text format, go through logging
        self._proc = ""
        self._second = -1
        self._prefix = ""
        self._pending: list[bytes] = []
        self._scheduled = False

    def _bind(self) -> None:
        """Follow the root handler `logs.setup()` installed (the lifespan runs it before requests)."""
        self._bound = True
        handler = next(iter(logging.getLogger().handlers), None)
        formatter = getattr(handler, "formatter", None)
        if isinstance(handler, logging.StreamHandler) and isinstance(formatter, logs.JsonFormatter):
            self._stream, self._proc = handler.stream, formatter.process_name
            atexit.register(self.flush)

    def write(self, method: str, route: str, path: str, status: int, duration_ms: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        if not self._bound:
            self._bind()
        if self._stream is None:
            access_log.info(
                "access",
                extra={
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        doc: dict[str, object] = {
            "ts": f"{self._prefix}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "proc": self._proc,
            "logger": "gateway.access",
            "msg": "access",
        }
        rid = logs.request_id.get()
        if rid:
            doc["request_id"] = rid
        if logs.span_ids is not None and (ids := logs.span_ids()) is not None:
            doc["trace_id"], doc["span_id"] = ids
        doc["method"], doc["route"], doc["path"] = method, route, path
        doc["status"], doc["duration_ms"] = status, duration_ms
        self._pending.append(orjson.dumps(doc))
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._stream is None:
            return
        lines, self._pending = self._pending, []
        try:
            self._stream.write(b"\n".join(lines).decode() + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: never fail a request over a log line
            pass


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value by its lower-case name, without building starlette's Headers."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Observability:
    """Gives every HTTP request its request id, and counts, times and logs it by route template
    (not raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.access = AccessLog()
        self._seconds: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what ServerErrorMiddleware answers if the app raises before responding
        # The caller's request id if well formed, else a new one: on every log line of this
        # request (a context variable, so never a previous request's) and echoed in the answer.
        rid = logs.accept_request_id(_header(scope, b"x-request-id"))
        logs.request_id.set(rid)
        echo = (b"x-request-id", rid.encode())

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            if method not in _METHODS:
                method = "OTHER"
            self._observe(method, route, status, elapsed)
            self.access.write(method, route, scope["path"], status, round(elapsed * 1000, 3))

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route)
        seconds = self._seconds.get(key)
        if seconds is None:
            seconds = self._seconds[key] = metrics.HTTP_SECONDS.labels(method, route)
        seconds.observe(elapsed)
        count_key = (method, route, status)
        count = self._counts.get(count_key)
        if count is None:
            count = self._counts[count_key] = metrics.HTTP_REQUESTS.labels(method, route, str(status))
        count.inc()
