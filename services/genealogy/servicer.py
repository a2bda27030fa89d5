"""flowviz.genealogy.v1.GenealogyService: traces answered from PostgreSQL, cached in Valkey."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from typing import IO, Any

import asyncpg
import grpc
import orjson

from flowviz.core import audit, auth, outbox, paging, validation
from flowviz.core.db import create_pool
from flowviz.core.errors import DomainError, InvalidArgument, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.lotrow import lot_message
from flowviz.core.metrics import TRACE_NODES
from flowviz.core.offloop import OffLoop
from flowviz.core.protojson import to_json
from flowviz.core.server import Resources
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from services.genealogy import (
    accountability,
    answers,
    balance,
    capture,
    convert,
    corrections,
    effective,
    events,
    exports,
    importer,
    lineage,
    lot_rows,
    notifications,
    qc_history,
    recall,
    receiving,
    renderings,
    runs,
    scenarios,
    shipping,
    trace,
)

Context = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH = 1000


P = "/flowviz.genealogy.v1.GenealogyService/"
POLICY: auth.Policy = {
    P + "GetTraceability": auth.READ,
    P + "BatchGetEffectiveStatus": auth.READ_OR_SERVICE,
    P + "QcStatusChanged": auth.SERVICE_ONLY,
    P + "RecordProductionRun": auth.OPERATE,
    P + "GetProductionRun": auth.READ,
    P + "GetTraceGraph": auth.READ,
    P + "StreamTraceGraph": auth.READ,
    P + "GetRecallImpact": auth.READ,
    P + "GetLotBalance": auth.READ,
    P + "ExportTrace": auth.READ,
    P + "ImportGenealogy": auth.OPERATE,
    P + "CreateScenario": auth.QUALITY,
    P + "GetScenario": auth.READ,
    P + "ListScenarios": auth.READ,
    # Whoever may record a run, an import or a lot may correct it (with a reason, on the record).
    P + "VoidProductionRun": auth.OPERATE,
    P + "VoidEdge": auth.OPERATE,
    P + "GetEdge": auth.READ,
    P + "CorrectLot": auth.OPERATE,
    P + "ListLotCorrections": auth.READ,
    # Goods in and out are recorded by whoever records runs (the people at the dock and the line).
    P + "RecordReceipt": auth.OPERATE,
    P + "GetReceipt": auth.READ,
    P + "RecordShipment": auth.OPERATE,
    P + "GetShipment": auth.READ,
    P + "GetRecallNotifications": auth.READ,
    P + "TraceSupplierLot": auth.READ,
    # Exports read what traces read; a capture records receipts, runs and shipments.
    P + "RenderExport": auth.READ,
    P + "RenderScenarioCsv": auth.READ,
    P + "RenderRecallNotificationsCsv": auth.READ,
    P + "CaptureEpcis": auth.OPERATE,
}
# Answers larger than this are computed each time rather than cached.
MAX_CACHED_BYTES = 4 * 1024 * 1024


class GenealogyServicer(genealogy_pb2_grpc.GenealogyServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        # Derives lot.blocked/unblocked from qc's decision events (events.py, issue 16).
        self.lot_events = events.Deriver(None)
        # Large answers (graphs, recalls, notification lists) are built off the serving loop.
        settings = resources.settings
        self.heavy = OffLoop(
            "genealogy-heavy",
            lambda: create_pool(
                settings.database_url,
                name="genealogy-heavy",
                min_size=1,
                max_size=settings.pool_max,
                statement_cache=settings.statement_cache,
            ),
        )

    async def start(self) -> None:
        await self.heavy.start()
        await self.lot_events.start(self.r.pool)

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
        # Side by side: the lot with its parents, children and their effective status (one
        # statement, lot_rows.NEIGHBOURS), and the lot's receipts and shipments.
        async def events() -> tuple[list[genealogy_pb2.Receipt], list[genealogy_pb2.Shipment]]:
            async with self.r.pool.acquire() as conn:
                return await receiving.of_lot(conn, code), await shipping.of_lot(conn, code)

        rows, (receipts, shipments) = await asyncio.gather(lot_rows.neighbours(self.r.pool, code), events())
        if not rows or rows[0]["rel"] != "self":
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        response = genealogy_pb2.GetTraceabilityResponse(
            lot=lot_message(rows[0]), receipts=receipts, shipments=shipments
        )
        code_of = {rows[0]["lot_id"]: code}
        block_rows = []
        for row in rows[1:]:
            if row["rel"] == "block":
                block_rows.append(
                    (
                        row["lot_id"],
                        row["lot_code"],
                        row["qc_status"],
                        row["edge_id"],
                        row["run_code"],
                        row["own"],
                    )
                )
                continue
            code_of[row["lot_id"]] = row["lot_code"]
            linked = genealogy_pb2.LinkedLot(
                lot=lot_message(row),
                edge_quantity=float(row["edge_quantity"]),
                edge_uom=row["edge_uom"],
                run_code=row["run_code"] or "",
                edge_id=row["edge_id"],
            )
            (response.parents if row["rel"] == "parent" else response.children).append(linked)
        lots = [response.lot, *(p.lot for p in response.parents), *(c.lot for c in response.children)]
        effective.fill(lots, effective.blocks_of(block_rows, code_of))
        return response

    async def BatchGetEffectiveStatus(
        self, request: genealogy_pb2.BatchGetEffectiveStatusRequest, context: Context
    ) -> genealogy_pb2.BatchGetEffectiveStatusResponse:
        if len(request.lot_codes) > MAX_BATCH:
            raise InvalidArgument(
                "BATCH_TOO_LARGE", f"lot_codes: at most {MAX_BATCH} per call", field="lot_codes"
            )
        codes = [validation.lot_code(c, "lot_codes") for c in request.lot_codes]
        return genealogy_pb2.BatchGetEffectiveStatusResponse(
            statuses=await effective.statuses(self.r.pool, codes)
        )

    async def QcStatusChanged(
        self, request: genealogy_pb2.QcStatusChangedRequest, context: Context
    ) -> genealogy_pb2.QcStatusChangedResponse:
        code = validation.lot_code(request.lot_code)
        # Every answer that shows the lot's status: its own, its ancestors' and descendants'
        # (effective status is inherited downwards), and the other parents of those.
        await self.r.cache.invalidate(await lineage.related(self.r.pool, [code]))
        self.lot_events.wake()  # the decision's lot events, off the caller's path
        return genealogy_pb2.QcStatusChangedResponse()

    async def RecordProductionRun(
        self, request: genealogy_pb2.RecordProductionRunRequest, context: Context
    ) -> genealogy_pb2.RecordProductionRunResponse:
        runs.validate(request)
        digest = runs.request_hash(request)
        # runs.record checks the inputs' QC status in its transaction (a replay answers what was
        # recorded, whatever their status is now) and names the lots whose answers it changed.
        recorded = await runs.record(self.r.pool, request, digest)  # a taken code: RUN_EXISTS, LOT_EXISTS
        if recorded.run is None:  # recorded earlier under this key
            return genealogy_pb2.RecordProductionRunResponse(
                run=await self._run(recorded.run_code), replayed=True
            )
        await self.r.cache.invalidate(recorded.affected)
        return genealogy_pb2.RecordProductionRunResponse(run=recorded.run, replayed=False)

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
        return runs.message(header, found)

    # --- traces, recall, balance ---------------------------------------------------------------

    def _limits(self, max_depth: int, max_nodes: int) -> tuple[int, int]:
        depth = max_depth or trace.DEFAULT_MAX_DEPTH
        nodes = max_nodes or trace.DEFAULT_MAX_NODES
        trace.check_limits(depth, nodes)
        return depth, nodes

    async def _root(self, code: str) -> None:
        if not await self.r.pool.fetchval("SELECT 1 FROM lots WHERE lot_code = $1", code):
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)

    async def GetTraceGraph(
        self, request: genealogy_pb2.GetTraceGraphRequest, context: Context
    ) -> genealogy_pb2.GetTraceGraphResponse:
        code = validation.lot_code(request.lot_code)
        direction = convert.DIRECTION_OF_ENUM.get(request.direction)
        if direction is None:
            raise InvalidArgument(
                "DIRECTION_INVALID", "direction must be upstream, downstream or both", field="direction"
            )
        depth, nodes = self._limits(request.max_depth, request.max_nodes)

        async def build(db: asyncpg.Pool) -> bytes:
            response = await answers.graph(db, code, direction=direction, max_depth=depth, max_nodes=nodes)
            if response is None:
                raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
            TRACE_NODES.observe(len(response.nodes))
            return response.SerializeToString()

        async def load() -> bytes:
            return await self.heavy.run(build)

        blob = await self.r.cache.lot_answer(
            code, f"graph:{direction}:{depth}:{nodes}", load, MAX_CACHED_BYTES
        )
        return genealogy_pb2.GetTraceGraphResponse.FromString(blob)

    async def StreamTraceGraph(
        self, request: genealogy_pb2.GetTraceGraphRequest, context: Context
    ) -> AsyncIterator[genealogy_pb2.TraceGraphChunk]:
        whole = await self.GetTraceGraph(request, context)
        step = 1000
        for start in range(0, max(len(whole.nodes), len(whole.edges)), step):
            yield genealogy_pb2.TraceGraphChunk(
                nodes=whole.nodes[start : start + step], edges=whole.edges[start : start + step]
            )
        yield genealogy_pb2.TraceGraphChunk(
            truncated=whole.truncated, cycles=whole.cycles, receipts=whole.receipts, shipments=whole.shipments
        )

    async def GetRecallImpact(
        self, request: genealogy_pb2.GetRecallImpactRequest, context: Context
    ) -> genealogy_pb2.GetRecallImpactResponse:
        code = validation.lot_code(request.lot_code)
        depth, nodes = self._limits(request.max_depth, request.max_nodes)

        async def build(db: asyncpg.Pool) -> bytes:
            found = await answers.recall_impact(db, code, max_depth=depth, max_nodes=nodes)
            if found is None:
                raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
            response = found[0]
            TRACE_NODES.observe(len(response.downstream) + len(response.upstream) + 1)
            return response.SerializeToString()

        async def load() -> bytes:
            return await self.heavy.run(build)

        blob = await self.r.cache.lot_answer(code, f"recall:{depth}:{nodes}", load, MAX_CACHED_BYTES)
        return genealogy_pb2.GetRecallImpactResponse.FromString(blob)

    async def GetLotBalance(
        self, request: genealogy_pb2.GetLotBalanceRequest, context: Context
    ) -> genealogy_pb2.GetLotBalanceResponse:
        code = validation.lot_code(request.lot_code)
        tolerance = request.tolerance if request.HasField("tolerance") else balance.DEFAULT_TOLERANCE
        found = await balance.lot_balance(self.r.pool, code, tolerance)
        if found is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        return convert.lot_balance(found)

    async def ExportTrace(
        self, request: genealogy_pb2.ExportTraceRequest, context: Context
    ) -> AsyncIterator[genealogy_pb2.ExportRow]:
        code = validation.lot_code(request.lot_code)
        direction = convert.DIRECTION_OF_ENUM.get(request.direction)
        if direction is None:
            raise InvalidArgument(
                "DIRECTION_INVALID", "direction must be upstream, downstream or both", field="direction"
            )
        await self._root(code)
        async for chunk in exports.rows(self.r.pool, code, direction):
            for row in chunk:
                yield row

    # --- import ------------------------------------------------------------------------------

    async def ImportGenealogy(
        self, request_iterator: AsyncIterator[genealogy_pb2.ImportChunk], context: Context
    ) -> genealogy_pb2.ImportGenealogyResponse:
        # Spooled: small imports stay in memory, large ones go to a temporary file.
        with (
            tempfile.SpooledTemporaryFile(8 * 1024 * 1024) as lots,
            tempfile.SpooledTemporaryFile(8 * 1024 * 1024) as edges,
        ):
            try:
                mode, seen = await _spool(request_iterator, lots, edges)
            except DomainError:
                # Read the rest before answering: an asyncio gRPC client still sending reports
                # INTERNAL instead of our refusal (grpc/grpc#36066), and the gateway's HTTP client
                # would see its upload cut off.
                async for _ in request_iterator:
                    pass
                raise
            if not seen:
                raise InvalidArgument("IMPORT_EMPTY", "send lots_csv and/or genealogy_csv", field="lots_csv")
            lots.seek(0)
            edges.seek(0)
            async with self.r.pool.acquire() as conn:
                result = await importer.import_csv(
                    conn,  # type: ignore[arg-type]
                    lots if "lots_csv" in seen else None,  # type: ignore[arg-type]
                    edges if "genealogy_csv" in seen else None,  # type: ignore[arg-type]
                    cache=self.r.cache,
                    historical=mode == genealogy_pb2.IMPORT_MODE_HISTORICAL,
                )
        return genealogy_pb2.ImportGenealogyResponse(
            ok=result.ok,
            lots_imported=result.lots_imported,
            edges_imported=result.edges_imported,
            runs_created=result.runs_created,
            errors_truncated=result.errors_truncated,
            seconds=result.seconds,
            errors=[_row_error(e) for e in result.errors],
            warnings=[_row_error(e) for e in result.warnings],
            warnings_truncated=result.warnings_truncated,
        )

    # --- mock-recall drills ------------------------------------------------------------------

    async def CreateScenario(
        self, request: genealogy_pb2.CreateScenarioRequest, context: Context
    ) -> genealogy_pb2.CreateScenarioResponse:
        name = validation.text(request.name, "name")
        code = validation.lot_code(request.lot_code)
        await self._root(code)
        started = time.perf_counter()
        # Uncached: the drill times the trace, and accounts from the propagation behind it.
        found = await answers.recall_impact(
            self.r.pool, code, max_depth=trace.DEFAULT_MAX_DEPTH, max_nodes=trace.HARD_MAX_NODES
        )
        if found is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        impact, down = found
        trace_ms = (time.perf_counter() - started) * 1000
        drill = accountability.account(down, self.r.settings.drill_tolerance, trace_ms)
        lot_balance = await self.GetLotBalance(genealogy_pb2.GetLotBalanceRequest(lot_code=code), context)
        [status] = await effective.statuses(self.r.pool, [code])
        # The QC decisions of every lot in the answer, with their signatures, frozen with it.
        shown = [impact.root.lot, *(r.lot for r in impact.downstream), *(c.lot for c in impact.upstream)]
        decisions = await qc_history.of_lot_codes(self.r.pool, sorted({lot.lot_code for lot in shown}))
        duration_ms = (time.perf_counter() - started) * 1000
        snapshot = orjson.dumps(
            {
                "lot_code": code,
                "qc_status": to_json(status),
                "qc_decisions": [qc_history.as_json(d) for d in decisions],
                "recall": to_json(impact, frozenset({"root", "downstream", "upstream"})),
                "mass_balance": to_json(lot_balance),
                "accountability": None if drill is None else to_json(convert.accountability(drill)),
            }
        )
        async with self.r.pool.acquire() as conn, conn.transaction():
            scenario_id = await scenarios.insert(conn, name, code, caller_name(), duration_ms, snapshot)
            await audit.record(conn, "create", "scenario", str(scenario_id), name=name, lot_code=code)
            await outbox.emit(
                conn,
                outbox.DRILL_COMPLETED,
                code,
                {
                    "scenario_id": scenario_id,
                    "name": name,
                    "lot_code": code,
                    "duration_ms": round(duration_ms, 3),
                    "affected_lots": 1 + len(impact.downstream),
                    "accountability": None if drill is None else to_json(convert.accountability(drill)),
                },
            )
        return genealogy_pb2.CreateScenarioResponse(scenario=await self._scenario(scenario_id))

    async def _scenario(self, scenario_id: int) -> genealogy_pb2.Scenario:
        row = await scenarios.get(self.r.pool, scenario_id)
        if row is None:
            raise NotFound("SCENARIO_NOT_FOUND", f"scenario {scenario_id} does not exist")
        return scenarios.message(row)

    async def GetScenario(
        self, request: genealogy_pb2.GetScenarioRequest, context: Context
    ) -> genealogy_pb2.GetScenarioResponse:
        return genealogy_pb2.GetScenarioResponse(scenario=await self._scenario(request.id))

    async def ListScenarios(
        self, request: genealogy_pb2.ListScenariosRequest, context: Context
    ) -> genealogy_pb2.ListScenariosResponse:
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: scenarios.page(self.r.pool, after, limit),
        )
        return genealogy_pb2.ListScenariosResponse(
            scenarios=[scenarios.message(r, with_snapshot=False) for r in rows], next_page_token=token
        )

    # --- corrections (services/genealogy/corrections.py) -------------------------------------

    async def VoidProductionRun(
        self, request: genealogy_pb2.VoidProductionRunRequest, context: Context
    ) -> genealogy_pb2.VoidProductionRunResponse:
        code = validation.code(request.run_code, "run_code")
        affected = await corrections.void_run(self.r.pool, code, corrections.reason(request.reason))
        await self.r.cache.invalidate(affected)
        return genealogy_pb2.VoidProductionRunResponse(run=await self._run(code))

    async def VoidEdge(
        self, request: genealogy_pb2.VoidEdgeRequest, context: Context
    ) -> genealogy_pb2.VoidEdgeResponse:
        edge_id = _edge_id(request.edge_id)
        affected = await corrections.void_edge(self.r.pool, edge_id, corrections.reason(request.reason))
        await self.r.cache.invalidate(affected)
        row = await corrections.get_edge(self.r.pool, edge_id)
        return genealogy_pb2.VoidEdgeResponse(edge=corrections.edge_message(row))

    async def GetEdge(
        self, request: genealogy_pb2.GetEdgeRequest, context: Context
    ) -> genealogy_pb2.GetEdgeResponse:
        row = await corrections.get_edge(self.r.pool, _edge_id(request.edge_id))
        return genealogy_pb2.GetEdgeResponse(edge=corrections.edge_message(row))

    async def CorrectLot(
        self, request: genealogy_pb2.CorrectLotRequest, context: Context
    ) -> genealogy_pb2.CorrectLotResponse:
        code = validation.lot_code(request.lot_code)
        change = corrections.lot_change(request)
        correction, affected = await corrections.correct_lot(
            self.r.pool, code, change, corrections.reason(request.reason)
        )
        await self.r.cache.invalidate(affected)
        row = await self.r.pool.fetchrow(lot_rows.LOT, code)
        assert row is not None
        lot = lot_message(row)
        effective.fill([lot], await effective.blocks(self.r.pool, {row["id"]: code}))
        return genealogy_pb2.CorrectLotResponse(lot=lot, correction=correction)

    async def ListLotCorrections(
        self, request: genealogy_pb2.ListLotCorrectionsRequest, context: Context
    ) -> genealogy_pb2.ListLotCorrectionsResponse:
        code = validation.lot_code(request.lot_code)
        await self._root(code)
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: self.r.pool.fetch(
                corrections.CORRECTIONS + " WHERE l.lot_code = $1 AND k.id > $2 ORDER BY k.id LIMIT $3",
                code,
                after,
                limit,
            ),
        )
        return genealogy_pb2.ListLotCorrectionsResponse(
            corrections=[corrections.correction_message(r) for r in rows], next_page_token=token
        )

    # --- receiving and shipping (services/genealogy/receiving.py, shipping.py) ---------------

    async def RecordReceipt(
        self, request: genealogy_pb2.RecordReceiptRequest, context: Context
    ) -> genealogy_pb2.RecordReceiptResponse:
        fields = receiving.validate(request)
        recorded = await receiving.record(self.r.pool, request, fields, runs.request_hash(request))
        if not recorded.replayed:  # a new lot: nothing cached shows it yet, but its own code may be asked
            await self.r.cache.invalidate([fields["lot_code"]])
        return genealogy_pb2.RecordReceiptResponse(
            receipt=await self._receipt(recorded.receipt_id), replayed=recorded.replayed
        )

    async def _receipt(self, receipt_id: int) -> genealogy_pb2.Receipt:
        row = await receiving.get(self.r.pool, receipt_id)
        if row is None:
            raise NotFound("RECEIPT_NOT_FOUND", f"receipt {receipt_id} does not exist", id=receipt_id)
        return receiving.message(row)

    async def GetReceipt(
        self, request: genealogy_pb2.GetReceiptRequest, context: Context
    ) -> genealogy_pb2.GetReceiptResponse:
        return genealogy_pb2.GetReceiptResponse(receipt=await self._receipt(_positive_id(request.id)))

    async def RecordShipment(
        self, request: genealogy_pb2.RecordShipmentRequest, context: Context
    ) -> genealogy_pb2.RecordShipmentResponse:
        fields = shipping.validate(request)
        digest = runs.request_hash(request)
        key = request.idempotency_key
        # As for a run: the lot's ancestors cannot change under us, and name every lot whose
        # cached answers (downstream traces, recalls) now show this shipment. An unknown lot has
        # none: the transaction answers its 404.
        try:
            affected = await runs.check_releasable(self.r.pool, [request.lot_code], "lot")
        except Exception as exc:
            # A replay answers what was recorded, whatever the lot's QC status (or qc) is now.
            if key and (earlier := await shipping.replay(self.r.pool, key, digest)):
                return genealogy_pb2.RecordShipmentResponse(
                    shipment=await self._shipment(earlier), replayed=True
                )
            if isinstance(exc, DomainError) and exc.reason == runs.LOT_BLOCKED:
                await shipping.refused(self.r.pool, request, exc)
            raise
        recorded = await shipping.record(self.r.pool, request, fields, digest)
        if not recorded.replayed:
            await self.r.cache.invalidate([request.lot_code, *affected])
        shipment = (
            shipping.message(recorded.row) if recorded.row else await self._shipment(recorded.shipment_id)
        )
        return genealogy_pb2.RecordShipmentResponse(shipment=shipment, replayed=recorded.replayed)

    async def _shipment(self, shipment_id: int) -> genealogy_pb2.Shipment:
        row = await shipping.get(self.r.pool, shipment_id)
        if row is None:
            raise NotFound("SHIPMENT_NOT_FOUND", f"shipment {shipment_id} does not exist", id=shipment_id)
        return shipping.message(row)

    async def GetShipment(
        self, request: genealogy_pb2.GetShipmentRequest, context: Context
    ) -> genealogy_pb2.GetShipmentResponse:
        return genealogy_pb2.GetShipmentResponse(shipment=await self._shipment(_positive_id(request.id)))

    # --- recall notification lists (services/genealogy/notifications.py) ---------------------

    async def GetRecallNotifications(
        self, request: genealogy_pb2.GetRecallNotificationsRequest, context: Context
    ) -> genealogy_pb2.GetRecallNotificationsResponse:
        code = validation.lot_code(request.lot_code)
        depth, nodes = self._limits(request.max_depth, request.max_nodes)

        async def build(db: asyncpg.Pool) -> bytes:
            down = await recall.recall(db, code, max_depth=depth, max_nodes=nodes)
            if down is None:
                raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
            return (await notifications.notifications(db, down)).SerializeToString()

        async def load() -> bytes:
            return await self.heavy.run(build)

        # Cached with the lot's other answers: a shipment, run or correction below the root drops
        # the root's hash (it is an ancestor of what changed).
        blob = await self.r.cache.lot_answer(code, f"notify:{depth}:{nodes}", load, MAX_CACHED_BYTES)
        return genealogy_pb2.GetRecallNotificationsResponse.FromString(blob)

    async def TraceSupplierLot(
        self, request: genealogy_pb2.TraceSupplierLotRequest, context: Context
    ) -> genealogy_pb2.TraceSupplierLotResponse:
        supplier = validation.code(request.supplier_code, "supplier_code")
        supplier_lot = validation.text(request.supplier_lot_code, "supplier_lot_code", max_len=64)
        self._limits(request.max_depth, request.max_nodes)
        if not await self.r.pool.fetchval("SELECT 1 FROM trading_partners WHERE code = $1", supplier):
            raise NotFound(
                "PARTNER_NOT_FOUND",
                f"supplier_code {supplier} is not a trading partner",
                field="supplier_code",
            )
        # None received is an answer too (an empty list), not a 404.
        response = genealogy_pb2.TraceSupplierLotResponse(
            receipts=await receiving.of_supplier_lot(self.r.pool, supplier, supplier_lot)
        )
        for receipt in response.receipts:
            response.downstream.append(
                await self.GetTraceGraph(
                    genealogy_pb2.GetTraceGraphRequest(
                        lot_code=receipt.lot_code,
                        direction=genealogy_pb2.DIRECTION_DOWNSTREAM,
                        max_depth=request.max_depth,
                        max_nodes=request.max_nodes,
                    ),
                    context,
                )
            )
            response.notifications.append(
                await self.GetRecallNotifications(
                    genealogy_pb2.GetRecallNotificationsRequest(
                        lot_code=receipt.lot_code, max_depth=request.max_depth, max_nodes=request.max_nodes
                    ),
                    context,
                )
            )
        return response

    # --- exports rendered here (services/genealogy/renderings.py) ---------------------------

    async def RenderExport(
        self, request: genealogy_pb2.RenderExportRequest, context: Context
    ) -> AsyncIterator[genealogy_pb2.RenderedChunk]:
        async for chunk in _chunks(await renderings.open_rendering(self.r.pool, request)):
            yield chunk

    async def RenderScenarioCsv(
        self, request: genealogy_pb2.RenderScenarioCsvRequest, context: Context
    ) -> AsyncIterator[genealogy_pb2.RenderedChunk]:
        async for chunk in _chunks(renderings.scenario_csv(await self._scenario(request.id))):
            yield chunk

    async def RenderRecallNotificationsCsv(
        self, request: genealogy_pb2.RenderRecallNotificationsCsvRequest, context: Context
    ) -> AsyncIterator[genealogy_pb2.RenderedChunk]:
        reply = await self.GetRecallNotifications(
            genealogy_pb2.GetRecallNotificationsRequest(lot_code=request.lot_code), context
        )
        async for chunk in _chunks(renderings.notifications_csv(request.lot_code, reply)):
            yield chunk

    async def CaptureEpcis(
        self, request: genealogy_pb2.CaptureEpcisRequest, context: Context
    ) -> genealogy_pb2.CaptureEpcisResponse:
        key = request.idempotency_key
        if key:
            validation.text(key, "idempotency_key", max_len=capture.KEY_MAX)
        body = capture.parse(request.document)
        whole, per_event = capture.schema_errors(body)
        if whole:
            raise InvalidArgument(
                "EPCIS_SCHEMA_INVALID",
                "the document does not validate against GS1's EPCIS 2.0 JSON Schema: " + "; ".join(whole[:5]),
                field="document",
            )
        events = body["epcisBody"]["eventList"]
        if not events or len(events) > capture.MAX_EVENTS:
            raise InvalidArgument(
                "EPCIS_EVENTS_COUNT",
                f"eventList must hold 1 to {capture.MAX_EVENTS} events",
                field="document",
            )
        async with self.r.pool.acquire() as conn:
            data = await capture.master_data(conn, body, events)
        planned = capture.plan(body, data, key, per_event)
        used = sorted({code for p in planned if p.rejected is None for code in p.uses})
        refusals, affected = await self._shipping_lineage(used)
        ok = await capture.record(self.r.pool, planned, key, refusals)
        if ok:
            created = [code for p in planned for code in p.creates]
            await self.r.cache.invalidate([*created, *affected])
        return capture.report(planned, ok)

    async def _shipping_lineage(self, codes: list[str]) -> tuple[dict[str, str], list[str]]:
        """Of the lots given that exist, those QC keeps from being shipped (with the message why),
        and every one of them with its ancestors (whose cached answers the capture changes)."""
        rows = await self.r.pool.fetch(
            "SELECT id, lot_code FROM lots WHERE lot_code = ANY($1::text[])", codes
        )
        if not rows:
            return {}, []
        found = await effective.lineage(self.r.pool, {r["id"]: r["lot_code"] for r in rows})
        refusals = {
            code: runs.blocked(code, b.status, b.lot_code, b.decision_id, b.reason, "lot")
            for code in codes
            for b in found.blocked.get(code, [])[:1]
        }
        return refusals, list(found.codes)


async def _spool(
    chunks: AsyncIterator[genealogy_pb2.ImportChunk], lots: IO[bytes], edges: IO[bytes]
) -> tuple[genealogy_pb2.ImportMode.ValueType, set[str]]:
    """An import's files written out as they arrive; its mode, and which files were sent."""
    seen: set[str] = set()
    mode = genealogy_pb2.IMPORT_MODE_UNSPECIFIED
    async for chunk in chunks:
        if chunk.mode and chunk.mode != mode:
            if mode:
                raise InvalidArgument("IMPORT_MODE_CONFLICT", "mode differs between chunks", field="mode")
            mode = chunk.mode
            if mode == genealogy_pb2.IMPORT_MODE_HISTORICAL:
                _require_admin_for_historical()
        part = chunk.WhichOneof("part")
        if part is not None:
            seen.add(part)
            (lots if part == "lots_csv" else edges).write(getattr(chunk, part))
    return mode, seen


async def _chunks(rendering: renderings.Rendering) -> AsyncIterator[genealogy_pb2.RenderedChunk]:
    """A rendering's pieces as chunks; the first names the content type and file name."""
    first = True
    async for data in rendering.pieces:
        if first:
            yield genealogy_pb2.RenderedChunk(
                data=data, content_type=rendering.content_type, filename=rendering.filename
            )
            first = False
        else:
            yield genealogy_pb2.RenderedChunk(data=data)


def _positive_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("ID_INVALID", "id must be a positive integer", field="id")
    return value


def _edge_id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("EDGE_ID_INVALID", "edge_id must be a positive integer", field="edge_id")
    return value


def _row_error(e: importer.RowError) -> genealogy_pb2.ImportRowError:
    return genealogy_pb2.ImportRowError(
        file=e.file, row=e.row, field=e.field, reason=e.reason, value=e.value, rule=e.rule
    )


def _require_admin_for_historical() -> None:
    """Historical mode lets the production-run rules through: admin only (operators import by the rules)."""
    identity = auth.current_identity.get()
    if identity is None or identity.role != auth.ADMIN:
        role = identity.role if identity else "none"
        raise auth.PermissionDenied(
            auth.ROLE_FORBIDDEN,
            f"historical import needs the role admin (yours: {role}); without mode=historical the "
            "import is checked by the production-run rules",
            role=role,
            required_role=auth.ADMIN,
            field="mode",
        )


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = GenealogyServicer(resources)
    resources.on_start.append(servicer.start)
    resources.on_close.append(servicer.lot_events.close)
    resources.on_close.append(servicer.heavy.close)
    genealogy_pb2_grpc.add_GenealogyServiceServicer_to_server(servicer, server)
    return [genealogy_pb2.DESCRIPTOR.services_by_name["GenealogyService"].full_name]
