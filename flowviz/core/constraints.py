"""Database refusals as the 4xx they are: the one table from constraint to reason.

A servicer lets asyncpg's integrity errors rise; the status interceptor maps them here. A
unique constraint names what is taken (constraint name -> reason, the field and the
message); a CHECK names the column (PostgreSQL's <table>_<column>_check naming,
migration 0009). A constraint missing from the table still maps to a 409/400, with a generic
reason, never a 500.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import asyncpg

from flowviz.core.errors import AlreadyExists, DomainError, InvalidArgument


class Taken(NamedTuple):
    reason: str
    field: str
    message: str  # {value}: the value that is taken


# Unique constraints and unique indexes, by name (PostgreSQL names inline UNIQUE <table>_<cols>_key).
UNIQUE: dict[str, Taken] = {
    "users_username_key": Taken("USER_EXISTS", "username", "user {value} already exists"),
    "streams_code_key": Taken("STREAM_EXISTS", "code", "stream {value} already exists"),
    "phases_stream_id_code_key": Taken("PHASE_EXISTS", "code", "the stream already has phase {value}"),
    "phases_stream_id_seq_key": Taken("PHASE_EXISTS", "seq", "position {value} is taken in the stream"),
    "lots_lot_code_key": Taken("LOT_EXISTS", "lot_code", "lot {value} already exists"),
    "production_runs_run_code_key": Taken("RUN_EXISTS", "run_code", "run {value} already exists"),
    "qc_gates_code_key": Taken("GATE_EXISTS", "code", "QC gate {value} already exists"),
    "trading_partners_code_key": Taken("PARTNER_EXISTS", "code", "partner {value} already exists"),
    "trading_partners_gln_key": Taken("GLN_TAKEN", "gln", "GLN {value} already belongs to another partner"),
    "locations_code_key": Taken("LOCATION_EXISTS", "code", "location {value} already exists"),
    "locations_gln_key": Taken("GLN_TAKEN", "gln", "GLN {value} already belongs to another location"),
}

# Unique keys that callers never meet as errors: the statements that could break them answer
# the conflict themselves (ON CONFLICT: idempotent replays, one receipt per lot, one edge per
# run and pair) or only a migration writes them.
ANSWERED_IN_SQL = frozenset(
    {
        "production_runs_idempotency_key_key",
        "receipts_idempotency_key_key",
        "receipts_lot_id_key",
        "shipments_idempotency_key_key",
        "run_voids_run_id_key",
        "lot_genealogy_edge_key",
        "audit_log_seq_idx",
        # Events (issue 16): the outbox's event ids are generated; a delivery per subscription
        # and event is written with ON CONFLICT DO NOTHING by the fan-out.
        "event_outbox_event_id_key",
        "event_deliveries_subscription_id_outbox_id_key",
    }
)

# PostgreSQL's detail for a unique violation: Key (col, ...)=(value, ...) already exists.
_KEY = re.compile(r"Key \((?P<cols>.*)\)=\((?P<vals>.*)\) already exists")


def _taken(exc: asyncpg.UniqueViolationError) -> DomainError:
    name = exc.constraint_name or ""
    match = _KEY.search(getattr(exc, "detail", None) or "")
    # Composite keys (phases: stream id, code) name the last column's value: the one the caller chose.
    value = match["vals"].split(", ")[-1] if match else ""
    known = UNIQUE.get(name)
    if known is None:
        return AlreadyExists("ALREADY_EXISTS", f"a value is already taken (database rule {name})")
    # Without the detail (a role that may not read the key's columns) the value is unknown.
    message = known.message.format(value=value or "(value not shown)")
    metadata = {"field": known.field, known.field: value} if value else {"field": known.field}
    return AlreadyExists(known.reason, message, **metadata)


def _check(exc: asyncpg.CheckViolationError) -> DomainError:
    name, prefix, suffix = exc.constraint_name or "", f"{exc.table_name}_", "_check"
    column = name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)
    field = name[len(prefix) : -len(suffix)] if column else name
    return InvalidArgument("FIELD_INVALID", f"{field} is not valid (database rule {name})", field=field)


def database_error(exc: BaseException) -> DomainError | None:
    """A value PostgreSQL refused, as the 4xx it is (None: not a refusal of a value)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return _taken(exc)
    if isinstance(exc, asyncpg.CheckViolationError):
        return _check(exc)
    if isinstance(exc, asyncpg.DataError):  # SQLSTATE 22: a value PostgreSQL cannot take (a NUL byte, ...)
        return InvalidArgument("VALUE_INVALID", "a value is not valid here")
    return None
