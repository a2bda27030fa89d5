"""flowviz.lots.v1.LotsService: lot master data and the process model (streams, phases)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from datetime import UTC
from typing import Any

import asyncpg
import grpc

from flowviz.core import audit, auth, paging, validation
from flowviz.core.errors import InvalidArgument, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.lotrow import lot_message
from flowviz.core.server import Resources
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from services.lots import repository
from services.lots.partners import Partners
from services.lots.repository import STATUSES
from services.lots.users import Users

Context = grpc.aio.ServicerContext[Any, Any]


P = "/flowviz.lots.v1.LotsService/"
POLICY: auth.Policy = {
    P + "GetLot": auth.READ,
    P + "ListLots": auth.READ,
    P + "CreateLot": auth.OPERATE,
    P + "CreateStream": auth.ADMIN_ONLY,
    P + "GetStream": auth.READ,
    P + "ListStreams": auth.READ,
    P + "UpdateStream": auth.ADMIN_ONLY,
    P + "CreatePhase": auth.ADMIN_ONLY,
    P + "UpdatePhase": auth.ADMIN_ONLY,
    P + "CreateUser": auth.ADMIN_ONLY,
    P + "ListUsers": auth.ADMIN_ONLY,
    P + "UpdateUser": auth.ADMIN_ONLY,
    # Every user for themselves (admin included); a service has no session to refresh or end.
    P + "RefreshToken": auth.READ,
    P + "Logout": auth.READ,
    # Master data like streams: who we buy from and ship to is curated by an admin (these names
    # and GLNs go to customers and the FDA in a recall); everyone who reads lots may read them.
    P + "CreateTradingPartner": auth.ADMIN_ONLY,
    P + "GetTradingPartner": auth.READ,
    P + "ListTradingPartners": auth.READ,
    P + "UpdateTradingPartner": auth.ADMIN_ONLY,
    P + "CreateLocation": auth.ADMIN_ONLY,
    P + "GetLocation": auth.READ,
    P + "ListLocations": auth.READ,
    P + "UpdateLocation": auth.ADMIN_ONLY,
}
PUBLIC = frozenset({P + "IssueToken"})


class LotsServicer(lots_pb2_grpc.LotsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self.genealogy: genealogy_pb2_grpc.GenealogyServiceAsyncStub
        self.users = Users(resources)
        self.partners = Partners(resources)

    async def start(self) -> None:
        self.genealogy = genealogy_pb2_grpc.GenealogyServiceStub(self.r.channel("genealogy"))

    async def _with_effective_status(self, lots: list[lots_pb2.Lot]) -> list[lots_pb2.Lot]:
        """Fill effective_status (holds inherited from ancestors) from the genealogy service,
        which computes it where the lineage is (from qc's read models)."""
        if lots:
            reply = await self.genealogy.BatchGetEffectiveStatus(
                genealogy_pb2.BatchGetEffectiveStatusRequest(lot_codes=[lot.lot_code for lot in lots]),
                timeout=self.r.settings.rpc_timeout,
                metadata=self.r.outgoing_metadata(),
            )
            effective = {s.lot_code: s for s in reply.statuses}
            for lot in lots:
                if (found := effective.get(lot.lot_code)) is not None:
                    lot.effective_status = found.effective_status
                    lot.blocking.extend(found.blocking)
                else:
                    lot.effective_status = lot.status
        return lots

    async def GetLot(self, request: lots_pb2.GetLotRequest, context: Context) -> lots_pb2.GetLotResponse:
        code = validation.lot_code(request.lot_code)
        row = await repository.get_lot(self.r.pool, code)
        if row is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
        [lot] = await self._with_effective_status([_lot(row)])
        return lots_pb2.GetLotResponse(lot=lot)

    async def ListLots(
        self, request: lots_pb2.ListLotsRequest, context: Context
    ) -> lots_pb2.ListLotsResponse:
        found = _lot_filter(request)

        def fetch(after: Any, limit: int) -> Awaitable[list[asyncpg.Record]]:
            return repository.list_lots(self.r.pool, found, after=after, limit=limit)

        # A token is a position: an id, or (produced_at, id) for a produced range, which lists in
        # that order (see repository.list_lots_query). Either form is read in either mode.
        if found.produced_after is None and found.produced_before is None:
            rows, token = await paging.fetch_page(
                request.page_size, request.page_token, fetch, decode_token=paging.decode_last_id
            )
        else:
            rows, token = await paging.fetch_page(
                request.page_size,
                request.page_token,
                fetch,
                decode_token=paging.decode_pair,
                encode_row=lambda row: paging.encode_pair(*repository.produced_key(row)),
            )
        lots = await self._with_effective_status([_lot(r) for r in rows])
        return lots_pb2.ListLotsResponse(lots=lots, next_page_token=token)

    async def CreateLot(
        self, request: lots_pb2.CreateLotRequest, context: Context
    ) -> lots_pb2.CreateLotResponse:
        code = validation.lot_code(request.lot_code)
        fields: dict[str, Any] = {
            "kind": validation.kind(request.kind),
            "product": validation.text(request.product, "product"),
            "quantity": validation.quantity(request.quantity),
            "uom": validation.uom(request.uom),
        }
        produced_at = request.produced_at.ToDatetime(tzinfo=UTC) if request.HasField("produced_at") else None
        async with self.r.pool.acquire() as conn, conn.transaction():  # a taken code: LOT_EXISTS
            row = await repository.insert_lot(
                conn, lot_code=code, produced_at=produced_at, created_by=caller_name(), **fields
            )
            await audit.record(conn, "create", "lot", code, **fields)
        lot = lot_message(row)
        lot.effective_status = lot.status
        return lots_pb2.CreateLotResponse(lot=lot)

    # --- streams and phases -------------------------------------------------------------------

    async def _streams(self, rows: list[asyncpg.Record]) -> list[lots_pb2.Stream]:
        phases = await repository.phases(self.r.pool, [r["id"] for r in rows])
        streams = []
        for row in rows:
            stream = lots_pb2.Stream(code=row["code"], name=row["name"], description=row["description"])
            stream.created_at.FromDatetime(row["created_at"])
            stream.phases.extend(
                lots_pb2.Phase(stream_code=p["stream_code"], code=p["code"], name=p["name"], seq=p["seq"])
                for p in phases
                if p["stream_code"] == row["code"]
            )
            streams.append(stream)
        return streams

    async def _stream(self, code: str) -> tuple[int, lots_pb2.Stream]:
        row = await repository.get_stream(self.r.pool, validation.code(code, "stream_code"))
        if row is None:
            raise NotFound("STREAM_NOT_FOUND", f"stream {code} does not exist")
        [stream] = await self._streams([row])
        return int(row["id"]), stream

    async def CreateStream(
        self, request: lots_pb2.CreateStreamRequest, context: Context
    ) -> lots_pb2.CreateStreamResponse:
        code = validation.code(request.code)
        name = validation.text(request.name, "name")
        description = validation.text(request.description, "description", required=False, max_len=1000)
        async with self.r.pool.acquire() as conn, conn.transaction():  # a taken code: STREAM_EXISTS
            await repository.insert_stream(conn, code, name, description)
            await audit.record(conn, "create", "stream", code, name=name)
        return lots_pb2.CreateStreamResponse(stream=(await self._stream(code))[1])

    async def GetStream(
        self, request: lots_pb2.GetStreamRequest, context: Context
    ) -> lots_pb2.GetStreamResponse:
        return lots_pb2.GetStreamResponse(stream=(await self._stream(request.code))[1])

    async def ListStreams(
        self, request: lots_pb2.ListStreamsRequest, context: Context
    ) -> lots_pb2.ListStreamsResponse:
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.list_streams(self.r.pool, after, limit),
        )
        return lots_pb2.ListStreamsResponse(streams=await self._streams(rows), next_page_token=token)

    async def UpdateStream(
        self, request: lots_pb2.UpdateStreamRequest, context: Context
    ) -> lots_pb2.UpdateStreamResponse:
        code = validation.code(request.code)
        name = validation.text(request.name, "name", required=False)
        description = validation.text(request.description, "description", required=False, max_len=1000)
        async with self.r.pool.acquire() as conn, conn.transaction():
            if not await repository.update_stream(conn, code, name, description):
                raise NotFound("STREAM_NOT_FOUND", f"stream {code} does not exist")
            await audit.record(conn, "update", "stream", code, name=name, description=description)
        return lots_pb2.UpdateStreamResponse(stream=(await self._stream(code))[1])

    def _phase(self, stream: lots_pb2.Stream, code: str) -> lots_pb2.Phase:
        for phase in stream.phases:
            if phase.code == code:
                return phase
        raise NotFound("PHASE_NOT_FOUND", f"phase {code} of stream {stream.code} does not exist")

    async def CreatePhase(
        self, request: lots_pb2.CreatePhaseRequest, context: Context
    ) -> lots_pb2.CreatePhaseResponse:
        stream_id, _ = await self._stream(request.stream_code)
        code = validation.code(request.code)
        name = validation.text(request.name, "name")
        if not 1 <= request.seq <= 1000:
            raise InvalidArgument(
                "SEQ_INVALID", "seq must be 1-1000 (the phase's position in the stream)", field="seq"
            )
        async with self.r.pool.acquire() as conn, conn.transaction():  # code or seq taken: PHASE_EXISTS
            await repository.insert_phase(conn, stream_id, code, name, request.seq)
            await audit.record(
                conn, "create", "phase", f"{request.stream_code}/{code}", name=name, seq=request.seq
            )
        _, stream = await self._stream(request.stream_code)
        return lots_pb2.CreatePhaseResponse(phase=self._phase(stream, code))

    async def UpdatePhase(
        self, request: lots_pb2.UpdatePhaseRequest, context: Context
    ) -> lots_pb2.UpdatePhaseResponse:
        stream_id, _ = await self._stream(request.stream_code)
        code = validation.code(request.code)
        name = validation.text(request.name, "name", required=False)
        if request.seq and not 1 <= request.seq <= 1000:
            raise InvalidArgument(
                "SEQ_INVALID", "seq must be 1-1000 (the phase's position in the stream)", field="seq"
            )
        async with self.r.pool.acquire() as conn, conn.transaction():  # seq taken: PHASE_EXISTS
            if not await repository.update_phase(conn, stream_id, code, name, request.seq):
                raise NotFound(
                    "PHASE_NOT_FOUND", f"phase {code} of stream {request.stream_code} does not exist"
                )
            await audit.record(
                conn, "update", "phase", f"{request.stream_code}/{code}", name=name, seq=request.seq
            )
        _, stream = await self._stream(request.stream_code)
        return lots_pb2.UpdatePhaseResponse(phase=self._phase(stream, code))

    # --- users and tokens (services/lots/users.py) -------------------------------------------

    async def IssueToken(
        self, request: lots_pb2.IssueTokenRequest, context: Context
    ) -> lots_pb2.IssueTokenResponse:
        return await self.users.issue_token(request, context)

    async def RefreshToken(
        self, request: lots_pb2.RefreshTokenRequest, context: Context
    ) -> lots_pb2.IssueTokenResponse:
        return await self.users.refresh_token(request, context)

    async def Logout(self, request: lots_pb2.LogoutRequest, context: Context) -> lots_pb2.LogoutResponse:
        return await self.users.logout(request, context)

    async def CreateUser(
        self, request: lots_pb2.CreateUserRequest, context: Context
    ) -> lots_pb2.CreateUserResponse:
        return await self.users.create_user(request, context)

    async def ListUsers(
        self, request: lots_pb2.ListUsersRequest, context: Context
    ) -> lots_pb2.ListUsersResponse:
        return await self.users.list_users(request, context)

    async def UpdateUser(
        self, request: lots_pb2.UpdateUserRequest, context: Context
    ) -> lots_pb2.UpdateUserResponse:
        return await self.users.update_user(request, context)

    # --- trading partners and locations (services/lots/partners.py) --------------------------

    async def CreateTradingPartner(
        self, request: lots_pb2.CreateTradingPartnerRequest, context: Context
    ) -> lots_pb2.CreateTradingPartnerResponse:
        return lots_pb2.CreateTradingPartnerResponse(partner=await self.partners.create_partner(request))

    async def GetTradingPartner(
        self, request: lots_pb2.GetTradingPartnerRequest, context: Context
    ) -> lots_pb2.GetTradingPartnerResponse:
        return lots_pb2.GetTradingPartnerResponse(partner=await self.partners.get_partner(request.code))

    async def ListTradingPartners(
        self, request: lots_pb2.ListTradingPartnersRequest, context: Context
    ) -> lots_pb2.ListTradingPartnersResponse:
        return await self.partners.list_partners(request)

    async def UpdateTradingPartner(
        self, request: lots_pb2.UpdateTradingPartnerRequest, context: Context
    ) -> lots_pb2.UpdateTradingPartnerResponse:
        return lots_pb2.UpdateTradingPartnerResponse(partner=await self.partners.update_partner(request))

    async def CreateLocation(
        self, request: lots_pb2.CreateLocationRequest, context: Context
    ) -> lots_pb2.CreateLocationResponse:
        return lots_pb2.CreateLocationResponse(location=await self.partners.create_location(request))

    async def GetLocation(
        self, request: lots_pb2.GetLocationRequest, context: Context
    ) -> lots_pb2.GetLocationResponse:
        return lots_pb2.GetLocationResponse(location=await self.partners.get_location(request.code))

    async def ListLocations(
        self, request: lots_pb2.ListLocationsRequest, context: Context
    ) -> lots_pb2.ListLocationsResponse:
        return await self.partners.list_locations(request)

    async def UpdateLocation(
        self, request: lots_pb2.UpdateLocationRequest, context: Context
    ) -> lots_pb2.UpdateLocationResponse:
        return lots_pb2.UpdateLocationResponse(location=await self.partners.update_location(request))


_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _status(value: str, field: str) -> str:
    if value not in STATUSES:
        raise InvalidArgument("STATUS_INVALID", f"{field} must be one of {', '.join(STATUSES)}", field=field)
    return value


def _lot(row: asyncpg.Record) -> lots_pb2.Lot:
    lot = lot_message(row)
    lot.voided_run = row["voided_run"] or ""
    return lot


def _lot_filter(request: lots_pb2.ListLotsRequest) -> repository.LotFilter:
    """The request's filters, each checked (a 400 names the field)."""
    if request.lot_code_prefix and not _PREFIX.fullmatch(request.lot_code_prefix):
        raise InvalidArgument(
            "LOT_CODE_PREFIX_INVALID",
            "lot_code_prefix must be 1-64 letters, digits and . _ - :",
            field="lot_code_prefix",
        )
    if request.product:
        validation.text(request.product, "product")
    if request.kind:
        validation.kind(request.kind)
    after = request.produced_after.ToDatetime(tzinfo=UTC) if request.HasField("produced_after") else None
    before = request.produced_before.ToDatetime(tzinfo=UTC) if request.HasField("produced_before") else None
    return repository.LotFilter(
        lot_code_prefix=request.lot_code_prefix,
        product=request.product.strip(),
        kind=request.kind,
        status=_status(request.status, "status") if request.status else "",
        effective=_status(request.effective_status, "effective_status") if request.effective_status else "",
        produced_after=after,
        produced_before=before,
    )


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = LotsServicer(resources)
    resources.on_start.append(servicer.start)
    lots_pb2_grpc.add_LotsServiceServicer_to_server(servicer, server)
    return [lots_pb2.DESCRIPTOR.services_by_name["LotsService"].full_name]
