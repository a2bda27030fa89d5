"""The gateway's metrics and access log: one pure-ASGI middleware and the /metrics route.

Per request: a `time.perf_counter()` pair, one counter increment and one histogram
observation on label children cached per (method, route template, status), and one JSON
access line (`msg: "access"`, method, route, path, status, duration_ms, request_id, and
trace_id/span_id when tracing is on). Metric names are documented in `flowviz.core.metrics`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowviz.core import logs, metrics

access_log = logging.getLogger("gateway.access")

# Anything else is counted as OTHER: a client must not be able to mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class Observability:
    """Counts, times and logs every HTTP request by route template (not raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seconds: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what ServerErrorMiddleware answers if the app raises before responding

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        logs.request_id.set("")  # the endpoint sets it; never a previous request's
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            if method not in _METHODS:
                method = "OTHER"
            self._observe(method, route, status, elapsed)
            access_log.info(
                "access",
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

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


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the gateway's registry, in the format the scraper accepts."""
    body, content_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})
