"""Run the gateway under granian (Rust HTTP server, ASGI, uvloop), embedded in this process.

Embedded rather than granian's usual parent process with one worker child: the parent only
watched the child (which `make run` and Kubernetes already do for us) and cost 37 MB of memory.
SIGTERM or SIGINT stops it as the parent would: no new connections, the lifespan's shutdown."""

import asyncio
import signal

import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

from flowviz.core import keys
from flowviz.core.config import settings


async def main() -> None:
    from gateway.app import app

    cfg = settings()
    server = Server(app, address=cfg.bind_host, port=cfg.ports["gateway"], interface=Interfaces.ASGI)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


if __name__ == "__main__":
    cfg = settings()
    keys.own_service_key(cfg.service_key, cfg.service_public_keys, "gateway")  # refuse to start without it
    uvloop.run(main())
