"""flowviz.lots.v1.LotsService: proto <-> domain for lot master data."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import asyncpg
import grpc

from flowviz.core import paging, validation
from flowviz.core.errors import AlreadyExists, NotFound
from flowviz.core.lotrow import lot_message
from flowviz.core.server import Resources
from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from services.lots import repository

Context = grpc.aio.ServicerContext[Any, Any]


class LotsServicer(lots_pb2_grpc.LotsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources

    async def GetLot(self, request: lots_pb2.GetLotRequest, context: Context) -> lots_pb2.GetLotResponse:
        code = validation.lot_code(request.lot_code)
        row = await repository.get_lot(self.r.pool, code)
        if row is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        return lots_pb2.GetLotResponse(lot=lot_message(row))

    async def ListLots(
        self, request: lots_pb2.ListLotsRequest, context: Context
    ) -> lots_pb2.ListLotsResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token)
        if request.kind:
            validation.kind(request.kind)
        rows = await repository.list_lots(
            self.r.pool, after_id=after, kind=request.kind, product=request.product, limit=size + 1
        )
        response = lots_pb2.ListLotsResponse(lots=[lot_message(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = paging.encode(rows[size - 1]["id"])
        return response

    async def CreateLot(
        self, request: lots_pb2.CreateLotRequest, context: Context
    ) -> lots_pb2.CreateLotResponse:
        code = validation.lot_code(request.lot_code)
        try:
            row = await repository.insert_lot(
                self.r.pool,
                lot_code=code,
                kind=validation.kind(request.kind),
                product=validation.text(request.product, "product"),
                quantity=validation.quantity(request.quantity),
                uom=validation.uom(request.uom),
                produced_at=request.produced_at.ToDatetime(tzinfo=UTC)
                if request.HasField("produced_at")
                else None,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("LOT_EXISTS", f"lot {code} already exists", lot_code=code) from None
        return lots_pb2.CreateLotResponse(lot=lot_message(row))


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    lots_pb2_grpc.add_LotsServiceServicer_to_server(LotsServicer(resources), server)
    return [lots_pb2.DESCRIPTOR.services_by_name["LotsService"].full_name]
