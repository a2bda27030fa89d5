"""An error from a call to another service is passed on as it was, its ErrorInfo included: the
lots service's ListLots calling qc while qc's database is unreachable answers 503
DATABASE_UNAVAILABLE, not a TypeError turned 502 (found by bench/outage_bench.py). Two real
grpc.aio servers behind the real interceptor; no data is involved."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from flowviz.core import db
from flowviz.core.errors import from_rpc_error
from flowviz.core.interceptors import interceptors
from tests.conftest import TRUSTED

METHOD = "/t.Relay/Call"


def server(behavior: Any) -> tuple[grpc.aio.Server, int]:
    resources: Any = SimpleNamespace(
        settings=SimpleNamespace(
            token_public_key=TRUSTED.user, service_public_keys=TRUSTED.services, token_ttl=900
        ),
        ready=True,
        name="t",
    )
    srv = grpc.aio.server(interceptors=interceptors(resources, {}, frozenset({METHOD})))
    handler = grpc.unary_unary_rpc_method_handler(behavior)
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Relay", {"Call": handler})])
    return srv, srv.add_insecure_port("127.0.0.1:0")


def test_an_upstream_error_keeps_its_reason() -> None:
    async def scenario() -> grpc.aio.AioRpcError:
        async def upstream(request: bytes, context: Any) -> bytes:
            raise db.unavailable()

        up, up_port = server(upstream)
        await up.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{up_port}")

        async def middle(request: bytes, context: Any) -> bytes:
            reply: bytes = await channel.unary_unary(METHOD)(request, timeout=5)
            return reply

        mid, mid_port = server(middle)
        await mid.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{mid_port}") as client:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.unary_unary(METHOD)(b"x", timeout=5)
                return caught.value
        finally:
            await channel.close()
            await mid.stop(None)
            await up.stop(None)

    err = asyncio.run(scenario())
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.UNAVAILABLE, failure
    assert failure.reason == "DATABASE_UNAVAILABLE" and failure.metadata["retry_after_seconds"] == "1"
