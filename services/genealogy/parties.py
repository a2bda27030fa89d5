"""The trading partners and locations a receipt or shipment names (master data the lots
service owns; read here in the event's own transaction, as runs read streams and phases)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from flowviz.core import validation
from flowviz.core.db import Conn
from flowviz.core.errors import Conflict, InvalidArgument, NotFound

DOCUMENT_TYPES = validation.DOCUMENT_TYPES
# Who may be named where: (field -> (code, role)) and (field -> (code, owner field or "" for ours)).
Partners = Mapping[str, tuple[str, str]]
Locations = Mapping[str, tuple[str, str]]

_RESOLVE = """
SELECT 'p' AS t, code, id, name, roles, NULL::bigint AS partner_id FROM trading_partners WHERE code = ANY($1::text[])
UNION ALL
SELECT 'l', code, id, name, NULL, partner_id FROM locations WHERE code = ANY($2::text[])
"""


def document(doc_type: str, number: str) -> tuple[str, str]:
    if doc_type not in DOCUMENT_TYPES:
        raise InvalidArgument(
            "DOCUMENT_TYPE_INVALID",
            f"document_type must be one of {', '.join(DOCUMENT_TYPES)}",
            field="document_type",
        )
    return doc_type, validation.text(number, "document_number", max_len=100)


def event_time(ts: Timestamp, present: bool, field: str) -> datetime:
    if not present:
        raise InvalidArgument("FIELD_REQUIRED", f"{field} is required (RFC 3339)", field=field)
    return ts.ToDatetime(tzinfo=UTC)


def codes(partners: Partners, locations: Locations) -> None:
    """Each named code is well formed (400 naming the field)."""
    for field, (code, _) in [*partners.items(), *locations.items()]:
        if not code:
            raise InvalidArgument("FIELD_REQUIRED", f"{field} is required", field=field)
        validation.code(code, field)


async def resolve(conn: Conn, partners: Partners, locations: Locations) -> dict[str, asyncpg.Record]:
    """field -> row (id, code, name) of each partner and location, in one round trip: 404 when one
    does not exist, 409 when a partner lacks the role or a location is not the owner's."""
    rows = await conn.fetch(_RESOLVE, [c for c, _ in partners.values()], [c for c, _ in locations.values()])
    found = {(r["t"], r["code"]): r for r in rows}
    out: dict[str, asyncpg.Record] = {}
    for field, (code, role) in partners.items():
        row = found.get(("p", code))
        if row is None:
            raise NotFound(
                "PARTNER_NOT_FOUND", f"{field} {code} is not a trading partner", field=field, code=code
            )
        if role not in row["roles"]:
            raise Conflict(
                "PARTNER_ROLE_MISSING",
                f"{field} {code} is not a {role} (its roles: {', '.join(row['roles'])})",
                field=field,
                code=code,
            )
        out[field] = row
    for field, (code, owner) in locations.items():
        row = found.get(("l", code))
        if row is None:
            raise NotFound("LOCATION_NOT_FOUND", f"{field} {code} is not a location", field=field, code=code)
        owner_id = out[owner]["id"] if owner else None
        if row["partner_id"] != owner_id:
            whose = f"a site of {partners[owner][0]}" if owner else "one of our own locations"
            raise Conflict(
                "LOCATION_NOT_OF_PARTNER", f"{field} {code} is not {whose}", field=field, code=code
            )
        out[field] = row
    return out
