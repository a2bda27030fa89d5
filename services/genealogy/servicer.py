"""flowviz.genealogy.v1.GenealogyService: traces answered from PostgreSQL, cached in Valkey."""

from __future__ import annotations

from typing import Any

import grpc

from flowviz.core import validation
from flowviz.core.errors import NotFound
from flowviz.core.lotrow import lot_message
from flowviz.core.server import Resources
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from services.genealogy import repository

Context = grpc.aio.ServicerContext[Any, Any]

TRACE_KEY = "fv:trace:v1:"


class GenealogyServicer(genealogy_pb2_grpc.GenealogyServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources

    async def GetTraceability(
        self, request: genealogy_pb2.GetTraceabilityRequest, context: Context
    ) -> genealogy_pb2.GetTraceabilityResponse:
        code = validation.lot_code(request.lot_code)

        async def load() -> bytes:
            return (await self._trace(code)).SerializeToString()

        # Cached as serialized bytes: a hit costs one Valkey GET and one parse.
        blob = await self.r.cache.get_or_load(TRACE_KEY + code, load)
        return genealogy_pb2.GetTraceabilityResponse.FromString(blob)

    async def _trace(self, code: str) -> genealogy_pb2.GetTraceabilityResponse:
        rows = await repository.neighbours(self.r.pool, code)
        if not rows or rows[0]["rel"] != "self":
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        response = genealogy_pb2.GetTraceabilityResponse(lot=lot_message(rows[0]))
        for row in rows[1:]:
            linked = genealogy_pb2.LinkedLot(
                lot=lot_message(row),
                edge_quantity=float(row["edge_quantity"]),
                edge_uom=row["edge_uom"],
                run_code=row["run_code"] or "",
            )
            (response.parents if row["rel"] == "parent" else response.children).append(linked)
        return response


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    genealogy_pb2_grpc.add_GenealogyServiceServicer_to_server(GenealogyServicer(resources), server)
    return [genealogy_pb2.DESCRIPTOR.services_by_name["GenealogyService"].full_name]
