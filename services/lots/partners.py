"""Trading partners and locations: master data the lots service owns (the genealogy service
reads them when it records receipts and shipments, as it reads streams for runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from flowviz.core import audit, paging, validation
from flowviz.core.db import DB
from flowviz.core.errors import InvalidArgument, NotFound
from flowviz.core.server import Resources
from flowviz.lots.v1 import lots_pb2

ROLES = validation.PARTNER_ROLES

PARTNER = """SELECT id, code, name, roles, COALESCE(gln, '') AS gln, contact_name, contact_email,
    contact_phone, created_at FROM trading_partners"""
LOCATION = """SELECT l.id, l.code, l.name, COALESCE(p.code, '') AS partner_code, COALESCE(l.gln, '') AS gln,
    l.address, l.city, l.postal_code, l.country, l.created_at
FROM locations l LEFT JOIN trading_partners p ON p.id = l.partner_id"""


def roles(values: Sequence[str], *, required: bool) -> list[str]:
    if required and not values:
        raise InvalidArgument(
            "FIELD_REQUIRED", f"roles is required (one or more of {', '.join(ROLES)})", field="roles"
        )
    for value in values:
        if value not in ROLES:
            raise InvalidArgument("ROLE_INVALID", f"roles must be among {', '.join(ROLES)}", field="roles")
    if len(set(values)) < len(values):
        raise InvalidArgument("ROLE_REPEATED", "roles must not list a role twice", field="roles")
    return sorted(values, key=ROLES.index)


def _optional(value: str, check: Any, field: str) -> str:
    return check(value, field) if value else ""


def _partner_fields(request: Any, *, create: bool) -> dict[str, Any]:
    return {
        "name": validation.text(request.name, "name", required=create),
        "roles": roles(request.roles, required=create),
        "gln": _optional(request.gln, validation.gln, "gln"),
        "contact_name": validation.text(request.contact_name, "contact_name", required=False),
        "contact_email": _optional(request.contact_email, validation.email, "contact_email"),
        "contact_phone": validation.text(request.contact_phone, "contact_phone", required=False),
    }


def _location_fields(request: Any, *, create: bool) -> dict[str, Any]:
    return {
        "name": validation.text(request.name, "name", required=create),
        "gln": _optional(request.gln, validation.gln, "gln"),
        "address": validation.text(request.address, "address", required=False, max_len=500),
        "city": validation.text(request.city, "city", required=False),
        "postal_code": validation.text(request.postal_code, "postal_code", required=False),
        "country": _optional(request.country, validation.country, "country"),
    }


def partner_message(row: asyncpg.Record) -> lots_pb2.TradingPartner:
    partner = lots_pb2.TradingPartner(
        **{
            k: row[k]
            for k in ("code", "name", "roles", "gln", "contact_name", "contact_email", "contact_phone")
        }
    )
    partner.created_at.FromDatetime(row["created_at"])
    return partner


def location_message(row: asyncpg.Record) -> lots_pb2.Location:
    location = lots_pb2.Location(
        **{
            k: row[k]
            for k in ("code", "name", "partner_code", "gln", "address", "city", "postal_code", "country")
        }
    )
    location.created_at.FromDatetime(row["created_at"])
    return location


def _set_clause(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """SET for the fields that were given (empty: unchanged), $1 being the code."""
    given = {k: v for k, v in fields.items() if v not in ("", [])}
    sets = [f"{name} = ${i}" for i, name in enumerate(given, start=2)]
    return ", ".join(sets), list(given.values())


class Partners:
    def __init__(self, resources: Resources) -> None:
        self.r = resources

    async def _names_changed(self) -> None:
        """Cached traces and notification lists carry partner names, contacts and addresses, over
        any number of lots: after a change (rare, by an admin) every cached answer is orphaned,
        as after an import."""
        await self.r.cache.invalidate_all()

    async def _partner(self, db: DB, code: str) -> asyncpg.Record:
        row = await db.fetchrow(f"{PARTNER} WHERE code = $1", validation.code(code))
        if row is None:
            raise NotFound("PARTNER_NOT_FOUND", f"trading partner {code} does not exist", code=code)
        return row

    async def _location(self, db: DB, code: str) -> asyncpg.Record:
        row = await db.fetchrow(f"{LOCATION} WHERE l.code = $1", validation.code(code))
        if row is None:
            raise NotFound("LOCATION_NOT_FOUND", f"location {code} does not exist", code=code)
        return row

    async def create_partner(self, request: lots_pb2.CreateTradingPartnerRequest) -> lots_pb2.TradingPartner:
        code = validation.code(request.code)
        fields = _partner_fields(request, create=True)
        async with (
            self.r.pool.acquire() as conn,
            conn.transaction(),
        ):  # code or GLN taken: PARTNER_EXISTS, GLN_TAKEN
            await conn.execute(
                "INSERT INTO trading_partners (code, name, roles, gln, contact_name, contact_email, "
                "contact_phone) VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7)",
                code,
                *fields.values(),
            )
            await audit.record(conn, "create", "trading_partner", code, **fields)
        return partner_message(await self._partner(self.r.pool, code))

    async def get_partner(self, code: str) -> lots_pb2.TradingPartner:
        return partner_message(await self._partner(self.r.pool, code))

    async def list_partners(
        self, request: lots_pb2.ListTradingPartnersRequest
    ) -> lots_pb2.ListTradingPartnersResponse:
        if request.role and request.role not in ROLES:
            raise InvalidArgument("ROLE_INVALID", f"role must be one of {', '.join(ROLES)}", field="role")
        role = request.role or None
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: self.r.pool.fetch(
                f"{PARTNER} WHERE id > $1 AND ($3::text IS NULL OR $3 = ANY (roles)) ORDER BY id LIMIT $2",
                after,
                limit,
                role,
            ),
        )
        return lots_pb2.ListTradingPartnersResponse(
            partners=[partner_message(r) for r in rows], next_page_token=token
        )

    async def update_partner(self, request: lots_pb2.UpdateTradingPartnerRequest) -> lots_pb2.TradingPartner:
        code = validation.code(request.code)
        fields = _partner_fields(request, create=False)
        sets, values = _set_clause(fields)
        async with (
            self.r.pool.acquire() as conn,
            conn.transaction(),
        ):  # code or GLN taken: PARTNER_EXISTS, GLN_TAKEN
            await self._partner(conn, code)
            if sets:
                await conn.execute(f"UPDATE trading_partners SET {sets} WHERE code = $1", code, *values)
            await audit.record(conn, "update", "trading_partner", code, **fields)
        await self._names_changed()
        return partner_message(await self._partner(self.r.pool, code))

    async def create_location(self, request: lots_pb2.CreateLocationRequest) -> lots_pb2.Location:
        code = validation.code(request.code)
        fields = _location_fields(request, create=True)
        partner = validation.code(request.partner_code, "partner_code") if request.partner_code else ""
        async with (
            self.r.pool.acquire() as conn,
            conn.transaction(),
        ):  # code or GLN taken: LOCATION_EXISTS, GLN_TAKEN
            partner_id = (await self._partner(conn, partner))["id"] if partner else None
            await conn.execute(
                "INSERT INTO locations (code, name, partner_id, gln, address, city, postal_code, country) "
                "VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7, $8)",
                code,
                fields["name"],
                partner_id,
                *[fields[k] for k in ("gln", "address", "city", "postal_code", "country")],
            )
            await audit.record(conn, "create", "location", code, partner_code=partner, **fields)
        return location_message(await self._location(self.r.pool, code))

    async def get_location(self, code: str) -> lots_pb2.Location:
        return location_message(await self._location(self.r.pool, code))

    async def list_locations(self, request: lots_pb2.ListLocationsRequest) -> lots_pb2.ListLocationsResponse:
        partner_id = (
            (await self._partner(self.r.pool, request.partner_code))["id"] if request.partner_code else None
        )
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: self.r.pool.fetch(
                f"{LOCATION} WHERE l.id > $1 AND ($3::bigint IS NULL OR l.partner_id = $3) ORDER BY l.id LIMIT $2",
                after,
                limit,
                partner_id,
            ),
        )
        return lots_pb2.ListLocationsResponse(
            locations=[location_message(r) for r in rows], next_page_token=token
        )

    async def update_location(self, request: lots_pb2.UpdateLocationRequest) -> lots_pb2.Location:
        code = validation.code(request.code)
        fields = _location_fields(request, create=False)
        sets, values = _set_clause(fields)
        async with (
            self.r.pool.acquire() as conn,
            conn.transaction(),
        ):  # code or GLN taken: LOCATION_EXISTS, GLN_TAKEN
            await self._location(conn, code)
            if sets:
                await conn.execute(f"UPDATE locations SET {sets} WHERE code = $1", code, *values)
            await audit.record(conn, "update", "location", code, **fields)
        await self._names_changed()
        return location_message(await self._location(self.r.pool, code))
