"""A real webhook receiver on loopback for the tests: verifies each delivery with the reference
implementation (the standardwebhooks package), records what it got, and can be down, failing or
stuck on purpose."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook

from flowviz.tools.embedded import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]
    acknowledged: bool


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secret: str = ""
    # "ok": 204; "fail": 503; "stick": hold the request until `release` is set (then 204).
    mode: str = "ok"
    got: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stuck: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/flowviz"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.handle(self, headers, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, request: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except Exception as exc:
            with self._changed:
                self.refused.append(repr(exc))
                self._changed.notify_all()
            request.send_response(400)
            request.end_headers()
            return
        mode = self.mode
        if mode == "stick":
            self.mode = "ok"  # only the first request sticks
            with self._changed:
                self.got.append(Received(headers, body, payload, False))
                self._changed.notify_all()
            self.stuck.set()
            self.release.wait(60)
            return  # the dispatcher that sent it is gone: nothing to answer
        ok = mode == "ok"
        request.send_response(204 if ok else 503)
        request.send_header("content-length", "0")
        request.end_headers()
        with self._changed:
            self.got.append(Received(headers, body, payload, ok))
            self._changed.notify_all()

    def wait(self, what: str, check: Callable[[list[Received]], bool], timeout: float = 60) -> list[Received]:
        """The requests so far, once `check` holds for them (fails after `timeout` seconds)."""
        with self._changed:
            if not self._changed.wait_for(lambda: check(self.got), timeout):
                raise AssertionError(f"receiver: {what} not seen in {timeout}s; got {self.summary()}")
            return list(self.got)

    def acknowledged(self) -> list[dict[str, Any]]:
        with self._changed:
            return [r.payload for r in self.got if r.acknowledged]

    def summary(self) -> list[tuple[str, str | None, bool]]:
        return [(r.payload["type"], r.payload.get("lot_code"), r.acknowledged) for r in self.got]


def of_type(payloads: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [p for p in payloads if p["type"] == type_]


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)
