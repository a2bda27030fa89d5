"""The HTTP floor: the gateway's server stack (granian ASGI + uvloop + starlette, the same
granian options as `gateway/__main__.py`) serving one tiny JSON route and nothing else.

What a figure costs beyond this floor is what flowviz itself adds (auth, gRPC hop, cache,
database). `bench/run.py` starts it; by hand:

    .venv/bin/python bench/floor_http.py --port 18001 && curl localhost:18001/ping
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = orjson.dumps({"status": "ok", "components": {"floor": {"healthy": True}}})


async def ping(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/ping", ping)])


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    args = parser.parse_args()
    # The worker imports "floor_http:app": make this folder importable there too.
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    Granian(
        "floor_http:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
