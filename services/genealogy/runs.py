"""Production runs: inputs consumed, outputs produced, recorded whole or not at all.

One transaction writes the run, its output lots and its genealogy edges (the genealogy
service writes output lots itself, rather than asking the lots service, so that the run
is atomic: a crash anywhere leaves nothing behind). Input lots are locked FOR UPDATE in id
order so concurrent runs cannot over-consume one lot between the check and the insert.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from google.protobuf.message import Message

from flowviz.core import audit, outbox, validation
from flowviz.core.db import DB, Conn
from flowviz.core.errors import AlreadyExists, Conflict, DomainError, InvalidArgument, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.units import to_unit
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import balance, effective
from services.genealogy.balance import RunLine

MAX_LINES = validation.MAX_ITEMS
# Slack on "consumed beyond what it holds" for decimal rounding (3 decimals in the schema).
EPSILON = 0.0005

# The rules an input must meet, by the reason a refusal carries. The importer checks the same
# rules (in SQL, over a whole file) and reports them under these names, with these messages.
LOT_NOT_FOUND = "LOT_NOT_FOUND"
UOM_MISMATCH = "UOM_MISMATCH"
INSUFFICIENT_QUANTITY = "INSUFFICIENT_QUANTITY"
LOT_BLOCKED = "LOT_BLOCKED"


def uom_mismatch(lot_code: str, lot_uom: str, uom: str) -> str:
    return f"{lot_code} is counted in {lot_uom}; {uom} does not convert"


def insufficient(
    lot_code: str, held: float, available: float, wanted: float, uom: str, asks: str = "the run asks"
) -> str:
    return f"{lot_code} holds {available:g} {uom} not yet consumed or shipped (of {held:g}); {asks} for {wanted:g} {uom}"


def blocked(
    lot_code: str, status: str, blocking_lot: str, decision_id: int, reason: str, noun: str = "input"
) -> str:
    via = "" if blocking_lot == lot_code else f" through {blocking_lot}"
    return f"{noun} {lot_code} is {status}{via} (decision {decision_id}: {reason})"


async def check_releasable(db: DB, lots: Mapping[int, str] | Sequence[str], noun: str = "input") -> list[str]:
    """409 when a lot (id -> code, or codes) is on hold or rejected, itself or through an
    ancestor (qc's rule, from its read model: effective.lineage); else the lots and all their
    ancestors, whose cached answers consuming or shipping the lots changes (none for an unknown
    code). A run calls this inside its own transaction, after locking its inputs."""
    found = await effective.lineage(db, lots)
    for code in (
        lots.values() if isinstance(lots, Mapping) else lots
    ):  # the first blocked in the caller's order
        if blocking := found.blocked.get(code):
            block = blocking[0]
            raise Conflict(
                LOT_BLOCKED,
                blocked(code, block.status, block.lot_code, block.decision_id, block.reason, noun),
                lot_code=code,
                blocking_lot=block.lot_code,
                decision_id=block.decision_id,
                status=block.status,
            )
    return found.codes


class IdempotencyMismatch(DomainError):
    """The same idempotency key came back with a different request."""

    code = InvalidArgument.code  # mapped to 422 by the gateway's reason table


@dataclass(frozen=True)
class Recorded:
    run_code: str
    # The run as written (None for a replay: the caller reads the earlier run back).
    run: genealogy_pb2.ProductionRun | None
    # The lots whose cached answers the run changed: its inputs and their ancestors.
    affected: tuple[str, ...] = ()


def request_hash(request: Message) -> str:
    """The digest of a request without its idempotency_key (runs, receipts, shipments)."""
    body = type(request)()
    body.CopyFrom(request)
    body.idempotency_key = ""  # type: ignore[attr-defined]
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def validate(request: genealogy_pb2.RecordProductionRunRequest) -> None:
    validation.code(request.run_code, "run_code")
    validation.text(request.operator, "operator", required=False)
    if request.idempotency_key:
        validation.text(request.idempotency_key, "idempotency_key", max_len=200)
    for name in ("inputs", "outputs"):
        lines = getattr(request, name)
        if not lines:
            raise InvalidArgument(
                "RUN_INCOMPLETE",
                f"{name} is empty: a run needs at least one input and one output",
                field=name,
            )
        if len(lines) > MAX_LINES:
            raise InvalidArgument("RUN_TOO_LARGE", f"{name}: a run has at most {MAX_LINES}", field=name)
    seen: set[str] = set()
    for i, line in enumerate(request.inputs):
        field = f"inputs[{i}]"
        validation.lot_code(line.lot_code, f"{field}.lot_code")
        validation.quantity(line.quantity, f"{field}.quantity", positive=True)
        validation.uom(line.uom, f"{field}.uom")
        if line.lot_code in seen:
            raise InvalidArgument(
                "DUPLICATE_INPUT", f"{field}.lot_code: {line.lot_code} is listed twice as an input",
                field=f"{field}.lot_code",
            )  # fmt: skip
        seen.add(line.lot_code)
    for i, line in enumerate(request.outputs):
        field = f"outputs[{i}]"
        validation.lot_code(line.lot_code, f"{field}.lot_code")
        validation.kind(line.kind, f"{field}.kind")
        validation.text(line.product, f"{field}.product")
        validation.quantity(line.quantity, f"{field}.quantity", positive=True)
        validation.uom(line.uom, f"{field}.uom")
        if line.lot_code in seen:
            raise InvalidArgument(
                "DUPLICATE_LOT", f"{field}.lot_code: {line.lot_code} is listed twice (or as input and output)",
                field=f"{field}.lot_code",
            )  # fmt: skip
        seen.add(line.lot_code)
    if (
        request.HasField("started_at")
        and request.HasField("ended_at")
        and request.ended_at.ToDatetime() < (request.started_at.ToDatetime())
    ):
        raise InvalidArgument("TIMES_INVALID", "ended_at is before started_at", field="ended_at")


async def replay(conn: DB, key: str, digest: str) -> str | None:
    """The run code recorded earlier under `key`, or None; 422 when the body differs."""
    row = await conn.fetchrow(
        "SELECT run_code, request_hash FROM production_runs WHERE idempotency_key = $1", key
    )
    return None if row is None else same_request(key, row["run_code"], row["request_hash"], digest, "run")


def _ts(message: genealogy_pb2.RecordProductionRunRequest, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None  # type: ignore[arg-type]


# Lots are locked in id order (runs and shipments alike), so concurrent writers never deadlock.
LOCK_LOTS = """SELECT id, lot_code, kind, quantity::float8 AS quantity, uom FROM lots
WHERE lot_code = ANY($1::text[]) ORDER BY id FOR UPDATE"""


def used_and_earlier(table: str, code: str) -> str:
    """After the lots are locked: what each has given so far (to runs' edges and to shipments),
    the record of `table` made earlier under this idempotency key (a concurrent retry may have
    committed while we waited for the locks), and a lot that only a voided run produced
    (voided_lot_id, by voided_run; one with live inputs from another run stays usable), read
    after the locks so that a void that committed while we waited is seen. One row at least;
    the earlier columns are NULL when there is none, the used columns when nothing is used,
    the voided columns when no lot is voided."""
    return f"""
SELECT r.{code}::text AS earlier, r.request_hash, u.parent_lot_id, u.uom, u.quantity, vo.voided_lot_id,
       vo.voided_run
FROM (VALUES (1)) AS one
LEFT JOIN {table} r ON r.idempotency_key = $2
LEFT JOIN (SELECT parent_lot_id, uom, sum(quantity)::float8 AS quantity
           FROM (SELECT parent_lot_id, uom, quantity FROM lot_genealogy WHERE parent_lot_id = ANY($1::bigint[])
                 UNION ALL
                 SELECT lot_id, uom, quantity FROM shipments WHERE lot_id = ANY($1::bigint[])) given
           GROUP BY 1, 2) u ON true
LEFT JOIN LATERAL (
    SELECT v.child_lot_id AS voided_lot_id, p.run_code AS voided_run
    FROM voided_edges v JOIN production_runs p ON p.id = v.run_id
    WHERE v.child_lot_id = ANY($1::bigint[]) AND v.run_void_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM lot_genealogy g WHERE g.child_lot_id = v.child_lot_id)
    LIMIT 1
) vo ON true
"""


_USED_AND_EARLIER = used_and_earlier("production_runs", "run_code")


@contextlib.asynccontextmanager
async def transaction(db: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
    """A transaction on a connection of the pool, or a savepoint inside the transaction a given
    connection is in (an EPCIS capture records many events in one)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


async def lock_lots(conn: Conn, codes: list[str], noun: str) -> list[asyncpg.Record]:
    """The lots FOR UPDATE in id order; 404 naming the first that does not exist."""
    lots = await conn.fetch(LOCK_LOTS, codes)
    missing = sorted(set(codes) - {r["lot_code"] for r in lots})
    if missing:
        raise NotFound("LOT_NOT_FOUND", f"{noun} {', '.join(missing)} does not exist", lot_code=missing[0])
    return lots


def check_not_voided(lots: list[asyncpg.Record], found: asyncpg.Record, noun: str, verb: str) -> None:
    """409 when a lot (row of used_and_earlier) was produced only by a voided run."""
    if found["voided_lot_id"] is not None:
        voided = next(r["lot_code"] for r in lots if r["id"] == found["voided_lot_id"])
        raise Conflict(
            "LOT_VOIDED",
            f"{noun} {voided} was produced by run {found['voided_run']}, which is voided; it cannot be {verb}",
            lot_code=voided,
            run_code=found["voided_run"],
        )


# The run header, its output lots, their genealogy edges, the audit row and the run.recorded
# event (the outbox, $25: its data) in one statement (one round trip, not five). Everything hangs
# on the header: if a concurrent request with the same idempotency key committed first, its
# insert does nothing and neither does the rest. Output lots that already exist are skipped (the
# caller sees fewer outputs and rolls back). The event names the first output lot, as
# outbox.emit would (its product and kind, and the run's stream).
_WRITE = f"""
WITH h AS (
    INSERT INTO production_runs
        (run_code, stream_id, phase_id, operator, started_at, ended_at, idempotency_key, request_hash, recorded_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, operator, started_at, ended_at, created_at, recorded_by
), o AS (
    INSERT INTO lots (lot_code, kind, product, quantity, uom, stream_id, produced_at, created_by)
    SELECT o.code, o.kind, o.product, o.quantity, o.uom, $2, COALESCE($6, now()), $9
    FROM unnest($10::text[], $11::text[], $12::text[], $13::numeric[], $14::text[])
         AS o (code, kind, product, quantity, uom)
    WHERE EXISTS (SELECT FROM h)
    ON CONFLICT (lot_code) DO NOTHING
    RETURNING id, lot_code, kind, product, quantity::float8 AS quantity, uom
), e AS (
    INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id)
    SELECT e.parent, o.id, e.quantity, e.uom, h.id
    FROM unnest($15::bigint[], $16::text[], $17::numeric[], $18::text[]) AS e (parent, child, quantity, uom)
    JOIN o ON o.lot_code = e.child CROSS JOIN h
    RETURNING parent_lot_id, quantity, uom
), a AS (
    INSERT INTO audit_log ({audit.COLUMNS})
    SELECT $19, $20, $21, $22, $23, $24::jsonb WHERE EXISTS (SELECT FROM h)
), ev AS (
    INSERT INTO event_outbox (type, actor, lot_code, product, kind, stream_code, data)
    SELECT '{outbox.RUN_RECORDED}', $9, o.lot_code, o.product, o.kind,
           coalesce((SELECT s.code FROM streams s WHERE s.id = $2), ''), $25::jsonb
    FROM o WHERE o.lot_code = ($10::text[])[1]
)
SELECT h.*,
       (SELECT array_agg((o.id, o.lot_code, o.kind, o.quantity, o.uom)) FROM o) AS outputs,
       (SELECT array_agg((g.parent_lot_id, g.uom, g.quantity))
        FROM (SELECT parent_lot_id, uom, sum(quantity)::float8 AS quantity FROM e GROUP BY 1, 2) g) AS consumed
FROM h
"""


async def record(
    pool: asyncpg.Pool | Conn, request: genealogy_pb2.RecordProductionRunRequest, digest: str
) -> Recorded:
    """Write the run in one transaction (raises DomainError on any refusal) and return it as
    written, so that answering needs no second read. A retry of a recorded run returns
    Recorded(run_code, None); 422 if its body differs."""
    key = request.idempotency_key or None
    inputs = {line.lot_code: line for line in request.inputs}
    async with transaction(pool) as conn:
        stream_id, phase_id = await _process_step(conn, request.stream_code, request.phase_code)
        lots = await lock_lots(conn, list(inputs), "input lot")
        rows = await conn.fetch(_USED_AND_EARLIER, [r["id"] for r in lots], key)
        if key and rows[0]["earlier"] is not None:
            return Recorded(
                same_request(key, rows[0]["earlier"], rows[0]["request_hash"], digest, "run"), None
            )
        # Checked here, in the run's transaction, against qc's read model: one statement.
        id_of = {r["lot_code"]: r["id"] for r in lots}
        affected = await check_releasable(conn, {id_of[code]: code for code in inputs})
        check_not_voided(lots, rows[0], "input", "consumed")
        check_consumption(lots, inputs, [u for u in rows if u["parent_lot_id"] is not None], "the run")
        written = await conn.fetchrow(
            _WRITE,
            request.run_code,
            stream_id,
            phase_id,
            request.operator.strip(),
            _ts(request, "started_at"),
            _ts(request, "ended_at"),
            key,
            digest,
            caller_name(),
            *_outputs(request),
            *_edges(lots, inputs, request),
            *audit.row(
                "record",
                "production_run",
                request.run_code,
                inputs=[[i.lot_code, i.quantity, i.uom] for i in request.inputs],
                outputs=[[o.lot_code, o.quantity, o.uom] for o in request.outputs],
            ),
            outbox.encode(_event(request)),
        )
        if written is None:  # a concurrent request with this key committed first
            assert key is not None
            earlier = await replay(conn, key, digest)
            assert earlier is not None
            return Recorded(earlier, None)
        outputs = written["outputs"] or []
        if len(outputs) < len(request.outputs):  # raising rolls back the ones that were new
            made = {o[1] for o in outputs}
            taken = [o.lot_code for o in request.outputs if o.lot_code not in made]
            raise AlreadyExists(
                "LOT_EXISTS", f"output lot {', '.join(taken)} already exists", lot_code=taken[0]
            )
    code_of = {r["id"]: (r["lot_code"], r["kind"]) for r in lots}
    found = balance.summarize_run(
        request.run_code,
        [RunLine(*code_of[parent], quantity, uom) for parent, uom, quantity in written["consumed"]],
        [RunLine(code, kind, quantity, uom) for _, code, kind, quantity, uom in outputs],
        shared_output=False,  # the outputs are new lots: no other run feeds them yet
    )
    header_fields = {
        "run_code": request.run_code,
        "stream_code": request.stream_code,
        "phase_code": request.phase_code,
        **{k: written[k] for k in ("operator", "started_at", "ended_at", "created_at", "recorded_by")},
    }
    return Recorded(request.run_code, message(header_fields, found), tuple(affected))


def _event(request: genealogy_pb2.RecordProductionRunRequest) -> dict[str, Any]:
    """The run.recorded event's data."""
    return {
        "run_code": request.run_code,
        "stream_code": request.stream_code,
        "phase_code": request.phase_code,
        "operator": request.operator.strip(),
        "inputs": [{"lot_code": i.lot_code, "quantity": i.quantity, "uom": i.uom} for i in request.inputs],
        "outputs": [
            {
                "lot_code": o.lot_code,
                "kind": o.kind,
                "product": o.product,
                "quantity": o.quantity,
                "uom": o.uom,
            }
            for o in request.outputs
        ],
    }


def _outputs(request: genealogy_pb2.RecordProductionRunRequest) -> tuple[list[Any], ...]:
    """The output lots as the columns _WRITE unnests ($10-$14)."""
    out = request.outputs
    return (
        [o.lot_code for o in out],
        [o.kind for o in out],
        [o.product.strip() for o in out],
        [o.quantity for o in out],
        [o.uom for o in out],
    )


def _edges(
    lots: list[asyncpg.Record],
    inputs: Mapping[str, genealogy_pb2.RunLine],
    request: genealogy_pb2.RecordProductionRunRequest,
) -> tuple[list[Any], ...]:
    """Each input feeds each output in proportion to the output's share of the run's output,
    as the columns _WRITE unnests ($15-$18: parent id, child lot code, quantity, uom)."""
    total_out = sum(o.quantity for o in request.outputs)
    parents, children, quantities, uoms = [], [], [], []
    for lot in lots:
        line = inputs[lot["lot_code"]]
        for out in request.outputs:
            parents.append(lot["id"])
            children.append(out.lot_code)
            quantities.append(round(line.quantity * out.quantity / total_out, 3) or 0.001)
            uoms.append(line.uom)
    return parents, children, quantities, uoms


def same_request(key: str, earlier: str, earlier_hash: str, digest: str, what: str) -> str:
    """The code (or id) of the `what` recorded under `key`; 422 when it was recorded for a
    different body."""
    if earlier_hash != digest:
        raise IdempotencyMismatch(
            "IDEMPOTENCY_KEY_REUSED",
            f"idempotency key {key!r} was used for a different request ({what} {earlier})",
            **{f"{what}_code" if what == "run" else f"{what}_id": earlier},
        )
    return earlier


async def _process_step(conn: Conn, stream: str, phase: str) -> tuple[int | None, int | None]:
    if not stream:
        if phase:
            raise InvalidArgument("STREAM_REQUIRED", "phase_code needs a stream_code", field="stream_code")
        return None, None
    row = await conn.fetchrow(
        "SELECT s.id, p.id AS phase_id FROM streams s LEFT JOIN phases p ON p.stream_id = s.id AND p.code = $2 "
        "WHERE s.code = $1",
        stream,
        phase or None,
    )
    if row is None:
        raise NotFound("STREAM_NOT_FOUND", f"stream {stream} does not exist")
    if phase and row["phase_id"] is None:
        raise NotFound("PHASE_NOT_FOUND", f"phase {phase} of stream {stream} does not exist")
    return row["id"], row["phase_id"]


class Line(Protocol):
    """What a lot is asked to give: a run's input line, a shipment."""

    @property
    def lot_code(self) -> str: ...
    @property
    def quantity(self) -> float: ...
    @property
    def uom(self) -> str: ...


def check_consumption(
    lots: list[asyncpg.Record], inputs: Mapping[str, Line], used: list[asyncpg.Record], asker: str
) -> None:
    """Units must convert, and no lot may give more than it still holds (`used`: what each has
    given so far to runs and shipments, by unit, read after the lots were locked)."""
    for lot in lots:
        line = inputs[lot["lot_code"]]
        wanted = to_unit(line.quantity, line.uom, lot["uom"])
        if wanted is None:
            field = f"inputs[{list(inputs).index(lot['lot_code'])}].uom"
            raise Conflict(  # the request is well formed; the lot's own unit refuses it
                UOM_MISMATCH,
                f"{field}: {uom_mismatch(lot['lot_code'], lot['uom'], line.uom)}",
                field=field,
                lot_code=lot["lot_code"],
            )
        consumed = sum(
            to_unit(u["quantity"], u["uom"], lot["uom"]) or 0.0
            for u in used
            if u["parent_lot_id"] == lot["id"]
        )
        available = lot["quantity"] - consumed
        if wanted > available + EPSILON:
            raise Conflict(
                INSUFFICIENT_QUANTITY,
                insufficient(
                    lot["lot_code"], lot["quantity"], available, wanted, lot["uom"], f"{asker} asks"
                ),
                lot_code=lot["lot_code"],
                available=f"{available:g}",
                requested=f"{wanted:g}",
                uom=lot["uom"],
            )


RUN_HEADER = """
SELECT r.run_code, COALESCE(s.code, '') AS stream_code, COALESCE(p.code, '') AS phase_code, r.operator,
       r.started_at, r.ended_at, r.created_at, r.recorded_by, v.voided_by, v.voided_at, v.reason AS void_reason
FROM production_runs r LEFT JOIN streams s ON s.id = r.stream_id LEFT JOIN phases p ON p.id = r.phase_id
LEFT JOIN run_voids v ON v.run_id = r.id
WHERE r.run_code = $1
"""


def message(
    header: Mapping[str, Any] | asyncpg.Record, found: balance.RunBalance
) -> genealogy_pb2.ProductionRun:
    """The ProductionRun message from its header fields (as RUN_HEADER names them) and balance."""
    run = genealogy_pb2.ProductionRun(
        run_code=header["run_code"],
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
    if header.get("voided_by") is not None:
        run.voided.voided_by = header["voided_by"]
        run.voided.voided_at.FromDatetime(header["voided_at"])
        run.voided.reason = header["void_reason"]
    return run
