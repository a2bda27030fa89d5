"""The web app's static files (web/), served as they are: no service is called for them.

`/` is the app's page (its view lives in the query string), `/web/...` its modules, styles and
vendored libraries, `/api/docs` the vendored Swagger UI over /api/openapi.json. SecureHeaders
wraps the whole gateway: every answer (these files, the API, its errors) carries strict headers:
scripts only from this origin (no inline script), no framing, no MIME sniffing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parent.parent / "web"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "worker-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


# API answers are the caller's data (or a token): no browser or proxy keeps them.
NO_STORE = (b"cache-control", b"no-store")


class SecureHeaders:
    """Adds HEADERS to every answer of the wrapped ASGI app, and no-store to /api/* answers that
    set no cache policy of their own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *HEADERS]
                if api and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        # The page names its modules without a version: revalidate it every time.
        return FileResponse(WEB / name, headers={"cache-control": "no-cache"})

    return page


def routes() -> list[BaseRoute]:
    return [
        Route("/", _page("index.html"), methods=["GET", "HEAD"]),
        Route("/api/docs", _page("docs.html"), methods=["GET", "HEAD"]),
        Mount("/web", app=StaticFiles(directory=WEB)),
    ]
