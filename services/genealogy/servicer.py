"""flowviz.genealogy.v1.GenealogyService: traces answered from PostgreSQL, cached in Valkey."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc

from flowviz.core import auth, validation
from flowviz.core.channels import open_channel
from flowviz.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from flowviz.core.lineage import ancestors, related
from flowviz.core.lotrow import lot_message
from flowviz.core.server import Resources
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2, qc_pb2_grpc
from services.genealogy import balance, repository, runs

Context = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH = 1000


P = "/flowviz.genealogy.v1.GenealogyService/"
POLICY: auth.Policy = {
    P + "GetTraceability": auth.READ,
    P + "GetAncestors": auth.READ_OR_SERVICE,
    P + "RecordProductionRun": auth.OPERATE,
    P + "GetProductionRun": auth.READ,
}


class GenealogyServicer(genealogy_pb2_grpc.GenealogyServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self.qc: qc_pb2_grpc.QcServiceAsyncStub

    async def start(self) -> None:
        channel = open_channel(self.r.settings.addrs["qc"])
        self.qc = qc_pb2_grpc.QcServiceStub(channel)
        self.r.on_close.append(lambda: channel.close(None))

    async def GetTraceability(
        self, request: genealogy_pb2.GetTraceabilityRequest, context: Context
    ) -> genealogy_pb2.GetTraceabilityResponse:
        code = validation.lot_code(request.lot_code)

        async def load() -> bytes:
            return (await self._neighbours(code)).SerializeToString()

        # Cached as serialized bytes: a hit costs one Valkey round trip and one parse.
        blob = await self.r.cache.lot_answer(code, "neighbours", load)
        return genealogy_pb2.GetTraceabilityResponse.FromString(blob)

    async def _neighbours(self, code: str) -> genealogy_pb2.GetTraceabilityResponse:
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
        lots = [response.lot, *(p.lot for p in response.parents), *(c.lot for c in response.children)]
        await self._fill_effective_status(lots)
        return response

    async def _fill_effective_status(self, lots: list[lots_pb2.Lot]) -> None:
        """Holds inherited from ancestors, from the qc service (the owner of QC decisions)."""
        codes = list(dict.fromkeys(lot.lot_code for lot in lots))
        effective: dict[str, str] = {}
        for start in range(0, len(codes), MAX_BATCH):
            reply = await self.qc.BatchGetQcStatus(
                qc_pb2.BatchGetQcStatusRequest(lot_codes=codes[start : start + MAX_BATCH]),
                timeout=self.r.settings.rpc_timeout,
                metadata=self.r.outgoing_metadata(),
            )
            effective.update((s.lot_code, s.effective_status) for s in reply.statuses)
        for lot in lots:
            lot.effective_status = effective.get(lot.lot_code, lot.status)

    async def GetAncestors(
        self, request: genealogy_pb2.GetAncestorsRequest, context: Context
    ) -> genealogy_pb2.GetAncestorsResponse:
        if len(request.lot_codes) > MAX_BATCH:
            raise InvalidArgument("BATCH_TOO_LARGE", f"at most {MAX_BATCH} lot codes per call")
        codes = [validation.lot_code(c, "lot_codes") for c in request.lot_codes]
        found = await ancestors(self.r.pool, codes)
        return genealogy_pb2.GetAncestorsResponse(
            lots=[
                genealogy_pb2.LotAncestors(lot_code=c, ancestor_codes=found[c]) for c in codes if c in found
            ]
        )

    async def RecordProductionRun(
        self, request: genealogy_pb2.RecordProductionRunRequest, context: Context
    ) -> genealogy_pb2.RecordProductionRunResponse:
        runs.validate(request)
        await self._check_releasable([line.lot_code for line in request.inputs])
        try:
            recorded = await runs.record(self.r.pool, request)
        except asyncpg.UniqueViolationError as exc:
            if "run_code" in str(exc.constraint_name):
                raise AlreadyExists("RUN_EXISTS", f"run {request.run_code} already exists") from None
            raise AlreadyExists("LOT_EXISTS", "an output lot already exists") from None
        if not recorded.replayed:
            # New edges change every answer about the inputs and their ancestors.
            await self.r.cache.invalidate(
                await related(self.r.pool, recorded.related_lots, up=True, down=False)
            )
        run = await self._run(recorded.run_code)
        return genealogy_pb2.RecordProductionRunResponse(run=run, replayed=recorded.replayed)

    async def _check_releasable(self, lot_codes: list[str]) -> None:
        """An input on hold or rejected (itself or through an ancestor) cannot be consumed."""
        reply = await self.qc.BatchGetQcStatus(
            qc_pb2.BatchGetQcStatusRequest(lot_codes=lot_codes),
            timeout=self.r.settings.rpc_timeout,
            metadata=self.r.outgoing_metadata(),
        )
        for status in reply.statuses:
            if status.blocked:
                block = status.blocking[0]
                via = "" if block.lot_code == status.lot_code else f" through {block.lot_code}"
                raise Conflict(
                    "LOT_BLOCKED",
                    f"input {status.lot_code} is {block.status}{via} (decision {block.decision_id}: {block.reason})",
                    lot_code=status.lot_code,
                    blocking_lot=block.lot_code,
                    decision_id=block.decision_id,
                    status=block.status,
                )

    async def GetProductionRun(
        self, request: genealogy_pb2.GetProductionRunRequest, context: Context
    ) -> genealogy_pb2.GetProductionRunResponse:
        return genealogy_pb2.GetProductionRunResponse(
            run=await self._run(validation.code(request.run_code, "run_code"))
        )

    async def _run(self, run_code: str) -> genealogy_pb2.ProductionRun:
        header = await self.r.pool.fetchrow(runs.RUN_HEADER, run_code)
        found = await balance.run_balance(self.r.pool, run_code)
        if header is None or found is None:
            raise NotFound("RUN_NOT_FOUND", f"production run {run_code} does not exist", run_code=run_code)
        run = genealogy_pb2.ProductionRun(
            run_code=run_code,
            stream_code=header["stream_code"],
            phase_code=header["phase_code"],
            operator=header["operator"],
            recorded_by=header["recorded_by"],
            inputs=[
                genealogy_pb2.RunLine(lot_code=i.lot_code, quantity=i.quantity, uom=i.uom, kind=i.kind)
                for i in found.inputs
            ],
            outputs=[
                genealogy_pb2.RunLine(lot_code=o.lot_code, quantity=o.quantity, uom=o.uom, kind=o.kind)
                for o in found.outputs
            ],
            balance=genealogy_pb2.RunBalance(
                unit=found.unit,
                total_input=found.total_input,
                total_output=found.total_output,
                input_vs_output_diff=found.input_vs_output_diff,
                tolerance=found.tolerance,
                flags=found.flags,
            ),
        )
        for name in ("started_at", "ended_at", "created_at"):
            if header[name] is not None:
                getattr(run, name).FromDatetime(header[name])
        return run


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = GenealogyServicer(resources)
    resources.on_start.append(servicer.start)
    genealogy_pb2_grpc.add_GenealogyServiceServicer_to_server(servicer, server)
    return [genealogy_pb2.DESCRIPTOR.services_by_name["GenealogyService"].full_name]
