"""Run the gateway under granian (Rust HTTP server, ASGI, uvloop)."""

from granian import Granian
from granian.constants import Interfaces, Loops

from flowviz.core import keys
from flowviz.core.config import settings

if __name__ == "__main__":
    cfg = settings()
    keys.own_service_key(cfg.service_key, cfg.service_public_keys, "gateway")  # refuse to start without it
    Granian(
        "gateway.app:app",
        address=cfg.bind_host,
        port=cfg.ports["gateway"],
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        log_access=False,
    ).serve()
