"""flowviz.qc.v1.QcService: QC decisions and lot status."""

from __future__ import annotations

from typing import Any

import grpc

from flowviz.core import paging, validation
from flowviz.core.errors import NotFound
from flowviz.core.lotrow import STATUS_OF_DECISION
from flowviz.core.server import Resources
from flowviz.qc.v1 import qc_pb2, qc_pb2_grpc
from services.qc import repository

Context = grpc.aio.ServicerContext[Any, Any]

DECISION_ENUM = {
    "pass": qc_pb2.DECISION_PASS,
    "hold": qc_pb2.DECISION_HOLD,
    "release": qc_pb2.DECISION_RELEASE,
    "reject": qc_pb2.DECISION_REJECT,
}


class QcServicer(qc_pb2_grpc.QcServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources

    async def _lot(self, lot_code: str) -> tuple[int, str]:
        code = validation.lot_code(lot_code)
        row = await repository.lot_status(self.r.pool, code)
        if row is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        return row["id"], STATUS_OF_DECISION[row["decision"] or ""]

    async def GetQcStatus(
        self, request: qc_pb2.GetQcStatusRequest, context: Context
    ) -> qc_pb2.GetQcStatusResponse:
        _, status = await self._lot(request.lot_code)
        return qc_pb2.GetQcStatusResponse(lot_code=request.lot_code, status=status)

    async def ListQcDecisions(
        self, request: qc_pb2.ListQcDecisionsRequest, context: Context
    ) -> qc_pb2.ListQcDecisionsResponse:
        lot_id, _ = await self._lot(request.lot_code)
        size = paging.page_size(request.page_size)
        rows = await repository.list_decisions(
            self.r.pool, lot_id, paging.decode(request.page_token), size + 1
        )
        response = qc_pb2.ListQcDecisionsResponse()
        for row in rows[:size]:
            decision = response.decisions.add(
                id=row["id"],
                lot_code=row["lot_code"],
                gate_code=row["gate_code"],
                decision=DECISION_ENUM[row["decision"]],
                reason=row["reason"],
                decided_by=row["decided_by"],
                supersedes_id=row["supersedes_id"],
            )
            decision.decided_at.FromDatetime(row["decided_at"])
        if len(rows) > size:
            response.next_page_token = paging.encode(rows[size - 1]["id"])
        return response


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    qc_pb2_grpc.add_QcServiceServicer_to_server(QcServicer(resources), server)
    return [qc_pb2.DESCRIPTOR.services_by_name["QcService"].full_name]
