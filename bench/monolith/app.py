"""The monolith flowviz replaced, re-created for bench/side_by_side.py (issue 14).

FastAPI + async SQLAlchemy (asyncpg), one uvicorn worker, its own database of the seed's nine
tables. `GET /api/traceability/{lot_code}` is the monolith's trace as its report describes it:
the lot, its parents, its children; three queries a request (ORM selects, SQLAlchemy's
compiled-statement cache on), no answer cache. The database URL comes from
MONOLITH_DATABASE_URL (postgresql+asyncpg://...), set by the bench; run it with

    bench/monolith/.venv/bin/python -m uvicorn app:app --app-dir bench/monolith --workers 1
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from models import Lot, LotGenealogy, ProductionRun
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

# SQLAlchemy's default pool (5 + 10 overflow), as the monolith ran it.
engine = create_async_engine(os.environ["MONOLITH_DATABASE_URL"])
Session = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI(title="flowviz monolith (re-created for the bench)")


async def session() -> AsyncIterator[AsyncSession]:
    async with Session() as s:
        yield s


DB = Annotated[AsyncSession, Depends(session)]


class LotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    lot_code: str
    kind: str
    product: str
    quantity: float
    uom: str
    produced_at: datetime | None
    created_at: datetime


class LinkedLotOut(LotOut):
    """A parent or child: the lot's fields and its edge's side by side."""

    edge_quantity: float
    edge_uom: str
    run_code: str | None


class TraceOut(BaseModel):
    lot: LotOut
    parents: list[LinkedLotOut]
    children: list[LinkedLotOut]


@app.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _linked(rows: Any) -> list[LinkedLotOut]:
    return [
        LinkedLotOut(
            lot_code=lot.lot_code,
            kind=lot.kind,
            product=lot.product,
            quantity=float(lot.quantity),
            uom=lot.uom,
            produced_at=lot.produced_at,
            created_at=lot.created_at,
            edge_quantity=float(qty),
            edge_uom=uom,
            run_code=run_code,
        )
        for lot, qty, uom, run_code in rows
    ]


@app.get("/api/traceability/{lot_code}", response_model=TraceOut)
async def traceability(lot_code: str, db: DB) -> TraceOut:
    lot = (await db.execute(select(Lot).where(Lot.lot_code == lot_code))).scalar_one_or_none()
    if lot is None:
        raise HTTPException(status_code=404, detail=f"lot {lot_code} not found")
    edge = (Lot, LotGenealogy.quantity, LotGenealogy.uom, ProductionRun.run_code)
    parents = await db.execute(
        select(*edge)
        .join(LotGenealogy, LotGenealogy.parent_lot_id == Lot.id)
        .outerjoin(ProductionRun, ProductionRun.id == LotGenealogy.run_id)
        .where(LotGenealogy.child_lot_id == lot.id)
        .order_by(Lot.lot_code)
    )
    children = await db.execute(
        select(*edge)
        .join(LotGenealogy, LotGenealogy.child_lot_id == Lot.id)
        .outerjoin(ProductionRun, ProductionRun.id == LotGenealogy.run_id)
        .where(LotGenealogy.parent_lot_id == lot.id)
        .order_by(Lot.lot_code)
    )
    return TraceOut(
        lot=LotOut.model_validate(lot), parents=_linked(parents.all()), children=_linked(children.all())
    )
