"""flowviz.qc.v1.QcService: append-only QC decisions, gates, and effective status.

A lot is blocked when it or any ancestor's latest decision is hold or reject. qc owns the
decisions and their transition rules, and publishes each lot's own state as read models
(qc_lot_status, qc_lot_blocks: kept by triggers in the decision's transaction, so a hold counts
the instant it commits). Effective status needs the lineage, so the genealogy service computes
it from those; qc asks it (one way: genealogy never calls qc).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc

from flowviz.core import audit, auth, paging, passwords, validation
from flowviz.core.errors import Conflict, InvalidArgument, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.ratelimit import LoginThrottle, TooManyAttempts, username_key
from flowviz.core.server import Resources
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.qc.v1 import qc_pb2, qc_pb2_grpc
from services.qc import repository

Context = grpc.aio.ServicerContext[Any, Any]

DECISION_OF_ENUM = {
    qc_pb2.DECISION_PASS: "pass",
    qc_pb2.DECISION_HOLD: "hold",
    qc_pb2.DECISION_RELEASE: "release",
    qc_pb2.DECISION_REJECT: "reject",
}
ENUM_OF_DECISION = {v: k for k, v in DECISION_OF_ENUM.items()}
# Decisions allowed from each status. Rejected is final: a rejected lot cannot be released.
ALLOWED = {
    "pending": {"pass", "hold", "reject"},
    "passed": {"hold", "reject"},
    "on_hold": {"release", "reject"},
    "released": {"hold", "reject"},
    "rejected": set(),
}
# Latest decision -> the lot's own status (what qc_lot_status holds; migration 0015).
STATUS_OF_DECISION = {
    "": "pending",
    "pass": "passed",
    "hold": "on_hold",
    "release": "released",
    "reject": "rejected",
}
# What an electronic signature of each decision means (recorded with it, shown in its history).
MEANING = {"release": "released for use", "reject": "rejected", "hold": "placed on hold"}


def allowed_decisions(status: str) -> list[str]:
    """The decisions allowed from `status`, in the order pass, hold, release, reject."""
    return [d for d in DECISION_OF_ENUM.values() if d in ALLOWED[status]]


MAX_BATCH = 1000


def decision_message(row: asyncpg.Record) -> qc_pb2.QcDecision:
    message = qc_pb2.QcDecision(
        id=row["id"],
        lot_code=row["lot_code"],
        gate_code=row["gate_code"],
        decision=ENUM_OF_DECISION[row["decision"]],
        reason=row["reason"],
        decided_by=row["decided_by"],
        supersedes_id=row["supersedes_id"],
    )
    message.decided_at.FromDatetime(row["decided_at"])
    if row["signed_at"] is not None:
        message.signature.signer = row["decided_by"]
        message.signature.signer_name = row["signer_name"]
        message.signature.signed_at.FromDatetime(row["signed_at"])
        message.signature.meaning = row["signature_meaning"]
    return message


def gate_message(row: asyncpg.Record) -> qc_pb2.QcGate:
    return qc_pb2.QcGate(
        code=row["code"],
        name=row["name"],
        stream_code=row["stream_code"],
        phase_code=row["phase_code"],
        description=row["description"],
    )


P = "/flowviz.qc.v1.QcService/"
POLICY: auth.Policy = {
    P + "GetQcStatus": auth.READ,
    P + "BatchGetQcStatus": auth.READ_OR_SERVICE,
    P + "ListQcDecisions": auth.READ,
    P + "RecordQcDecision": auth.QUALITY,
    P + "CreateQcGate": auth.ADMIN_ONLY,
    P + "GetQcGate": auth.READ,
    P + "ListQcGates": auth.READ,
    P + "UpdateQcGate": auth.ADMIN_ONLY,
}


class QcServicer(qc_pb2_grpc.QcServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self.genealogy: genealogy_pb2_grpc.GenealogyServiceAsyncStub
        # Wrong signature passwords are throttled like failed logins (shared in Valkey).
        self.signatures = LoginThrottle(self._valkey, free=5)

    def _valkey(self) -> Any:
        cache = getattr(self.r, "cache", None)  # set once the service is up
        return None if cache is None else cache.client

    async def start(self) -> None:
        self.genealogy = genealogy_pb2_grpc.GenealogyServiceStub(self.r.channel("genealogy"))

    async def _statuses(self, lot_codes: list[str]) -> list[qc_pb2.LotQcStatus]:
        """Own and effective status of each known lot, in request order (from genealogy, which
        computes effective status where the lineage is)."""
        reply = await self.genealogy.BatchGetEffectiveStatus(
            genealogy_pb2.BatchGetEffectiveStatusRequest(lot_codes=lot_codes),
            timeout=self.r.settings.rpc_timeout,
            metadata=self.r.outgoing_metadata(),
        )
        return [
            qc_pb2.LotQcStatus(
                lot_code=s.lot_code,
                status=s.status,
                effective_status=s.effective_status,
                blocked=s.blocked,
                blocking=[
                    qc_pb2.Block(
                        lot_code=b.lot_code, status=b.status, decision_id=b.decision_id, reason=b.reason
                    )
                    for b in s.blocking
                ],
            )
            for s in reply.statuses
        ]

    async def GetQcStatus(
        self, request: qc_pb2.GetQcStatusRequest, context: Context
    ) -> qc_pb2.GetQcStatusResponse:
        code = validation.lot_code(request.lot_code)
        found = await self._statuses([code])
        if not found:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        s = found[0]
        return qc_pb2.GetQcStatusResponse(
            lot_code=s.lot_code,
            status=s.status,
            effective_status=s.effective_status,
            blocked=s.blocked,
            blocking=s.blocking,
        )

    async def BatchGetQcStatus(
        self, request: qc_pb2.BatchGetQcStatusRequest, context: Context
    ) -> qc_pb2.BatchGetQcStatusResponse:
        if len(request.lot_codes) > MAX_BATCH:
            raise InvalidArgument(
                "BATCH_TOO_LARGE", f"lot_codes: at most {MAX_BATCH} per call", field="lot_codes"
            )
        codes = [validation.lot_code(c, "lot_codes") for c in request.lot_codes]
        return qc_pb2.BatchGetQcStatusResponse(statuses=await self._statuses(codes))

    async def _lot_id(self, lot_code: str) -> int:
        code = validation.lot_code(lot_code)
        row = await repository.lot(self.r.pool, code)
        if row is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        return int(row["id"])

    async def ListQcDecisions(
        self, request: qc_pb2.ListQcDecisionsRequest, context: Context
    ) -> qc_pb2.ListQcDecisionsResponse:
        lot_id = await self._lot_id(request.lot_code)
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.list_decisions(self.r.pool, lot_id, after, limit),
        )
        return qc_pb2.ListQcDecisionsResponse(
            decisions=[decision_message(r) for r in rows], next_page_token=token
        )

    async def RecordQcDecision(
        self, request: qc_pb2.RecordQcDecisionRequest, context: Context
    ) -> qc_pb2.RecordQcDecisionResponse:
        code = validation.lot_code(request.lot_code)
        decision = DECISION_OF_ENUM.get(request.decision)
        if decision is None:
            raise InvalidArgument(
                "DECISION_INVALID", "decision must be pass, hold, release or reject", field="decision"
            )
        reason = validation.text(request.reason, "reason", required=decision != "pass", max_len=1000)
        # Signed before any lock is taken: checking a password takes tens of milliseconds.
        signer_name = await self._signature(decision, request.password)
        gate: int | None = None
        if request.gate_code:
            gate = await repository.gate_id(self.r.pool, request.gate_code)
            if gate is None:
                # 409, not 404: the lot in the path exists; the body names a gate that does not.
                raise Conflict(
                    "GATE_NOT_FOUND",
                    f"gate_code: QC gate {request.gate_code} does not exist",
                    field="gate_code",
                )
        async with self.r.pool.acquire() as conn, conn.transaction():
            row = await repository.lot(conn, code)
            if row is None:
                raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
            # One decision at a time per lot, so the transition check sees the latest.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('qc'), $1::int)", row["id"] % 2**31)
            row = await repository.lot(conn, code)
            assert row is not None
            current = STATUS_OF_DECISION[row["decision"] or ""]
            if decision not in ALLOWED[current]:
                allowed = allowed_decisions(current)
                raise Conflict(
                    "TRANSITION_NOT_ALLOWED",
                    f"lot {code} is {current}: {decision} is not allowed; "
                    + (f"allowed: {', '.join(allowed)}" if allowed else "none is (rejected is final)"),
                    field="decision",
                    lot_code=code,
                    status=current,
                    decision=decision,
                    allowed=",".join(allowed),
                )
            supersedes = request.supersedes_id or None
            if supersedes is not None:
                owner = await repository.decision_lot(conn, supersedes)
                if owner != row["id"]:
                    # What it may supersede instead: this lot's own decisions.
                    ids = [str(i) for i in await repository.decision_ids(conn, row["id"])]
                    choices = f"lot {code}'s decisions: {', '.join(ids)}" if ids else f"lot {code} has none"
                    where = "does not exist" if owner is None else f"is not a decision of lot {code}"
                    raise Conflict(
                        "SUPERSEDES_UNKNOWN" if owner is None else "SUPERSEDES_OTHER_LOT",
                        f"supersedes_id: decision {supersedes} {where}; {choices}",
                        field="supersedes_id",
                        allowed=",".join(ids),
                    )
            inserted = await repository.insert_decision(
                conn,
                lot_id=row["id"],
                gate_id=gate,
                decision=decision,
                reason=reason,
                username=caller_name(),
                supersedes_id=supersedes,
                signer_name=signer_name,
                meaning=MEANING[decision] if signer_name is not None else None,
                # Its qc.decision.recorded event is written by the same statement (the outbox);
                # genealogy derives lot.blocked/unblocked from it, in the order decisions commit.
                previous_status=current,
                status=STATUS_OF_DECISION[decision],
            )
            await audit.record(
                conn,
                "decide",
                "qc_decision",
                str(inserted["id"]),
                reason=reason,
                lot_code=code,
                decision=decision,
                signed=inserted["signature_meaning"] or "",
            )
        await self._status_changed(code)
        status = await self.GetQcStatus(qc_pb2.GetQcStatusRequest(lot_code=code), context)
        return qc_pb2.RecordQcDecisionResponse(decision=decision_message(inserted), status=status)

    async def _status_changed(self, code: str) -> None:
        """After a decision commits: genealogy's cached answers show statuses, and it knows which
        show this lot's. If it cannot be told, every cached answer is orphaned instead, so none
        can be stale once the decision is acknowledged."""
        try:
            await self.genealogy.QcStatusChanged(
                genealogy_pb2.QcStatusChangedRequest(lot_code=code),
                timeout=self.r.settings.rpc_timeout,
                metadata=self.r.outgoing_metadata(),
            )
        except grpc.aio.AioRpcError:
            await self.r.cache.invalidate_all()

    async def _signature(self, decision: str, password: str) -> str | None:
        """The signer's name when `decision` must be signed and `password` is the caller's own."""
        if decision not in ("release", "reject") and not (decision == "hold" and self.r.settings.sign_holds):
            return None
        if not password:
            raise InvalidArgument(
                "SIGNATURE_REQUIRED",
                f"password is required: a {decision} is signed by re-entering your password",
                field="password",
            )
        name = caller_name()
        key = username_key(name)
        if (wait := await self.signatures.wait(key)) is not None:
            raise TooManyAttempts.after(wait)
        row = await repository.signer(self.r.pool, name)
        ok = await passwords.verify_password_async(row["password_hash"] if row else None, password[:1024])
        if not ok or row is None or row["disabled"]:
            if (wait := await self.signatures.failure(key)) is not None:
                raise TooManyAttempts.after(wait)
            raise InvalidArgument("SIGNATURE_INVALID", "password is not your password", field="password")
        await self.signatures.success(key)
        return str(row["display_name"] or name)

    async def CreateQcGate(
        self, request: qc_pb2.CreateQcGateRequest, context: Context
    ) -> qc_pb2.CreateQcGateResponse:
        code = validation.code(request.code)
        name = validation.text(request.name, "name")
        description = validation.text(request.description, "description", required=False, max_len=1000)
        phase = await repository.phase_id(self.r.pool, request.stream_code, request.phase_code)
        if phase is None:
            raise NotFound(
                "PHASE_NOT_FOUND",
                f"phase {request.phase_code} of stream {request.stream_code} does not exist",
            )
        await repository.insert_gate(self.r.pool, code, name, phase, description)  # taken: GATE_EXISTS
        return qc_pb2.CreateQcGateResponse(gate=await self._gate(code))

    async def _gate(self, code: str) -> qc_pb2.QcGate:
        row = await repository.get_gate(self.r.pool, code)
        if row is None:
            raise NotFound("GATE_NOT_FOUND", f"QC gate {code} does not exist")
        return gate_message(row)

    async def GetQcGate(self, request: qc_pb2.GetQcGateRequest, context: Context) -> qc_pb2.GetQcGateResponse:
        return qc_pb2.GetQcGateResponse(gate=await self._gate(validation.code(request.code)))

    async def ListQcGates(
        self, request: qc_pb2.ListQcGatesRequest, context: Context
    ) -> qc_pb2.ListQcGatesResponse:
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.list_gates(self.r.pool, after, limit),
        )
        return qc_pb2.ListQcGatesResponse(gates=[gate_message(r) for r in rows], next_page_token=token)

    async def UpdateQcGate(
        self, request: qc_pb2.UpdateQcGateRequest, context: Context
    ) -> qc_pb2.UpdateQcGateResponse:
        code = validation.code(request.code)
        name = validation.text(request.name, "name", required=False)
        description = validation.text(request.description, "description", required=False, max_len=1000)
        if not await repository.update_gate(self.r.pool, code, name, description):
            raise NotFound("GATE_NOT_FOUND", f"QC gate {code} does not exist")
        return qc_pb2.UpdateQcGateResponse(gate=await self._gate(code))


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = QcServicer(resources)
    resources.on_start.append(servicer.start)
    qc_pb2_grpc.add_QcServiceServicer_to_server(servicer, server)
    return [qc_pb2.DESCRIPTOR.services_by_name["QcService"].full_name]
