"""The monolith's nine tables as SQLAlchemy 2.0 models (the seed's schema, the report's 9/9).

Column names and unique keys are the ones flowviz/tools/seed.sql relies on, so the same seed file
loads into both. Server-side defaults, because the seed leaves those columns out. Only the
keys the seed needs are indexed: the monolith's report lists indexes on the genealogy's
foreign keys as a future improvement (with the seed's four lots it makes no difference).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Numeric, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TIMESTAMP


class Base(DeclarativeBase):
    pass


def _id() -> Mapped[int]:
    return mapped_column(BigInteger, Identity(always=True), primary_key=True)


def _created() -> Mapped[datetime]:
    return mapped_column(TIMESTAMP(timezone=True), server_default=func.now())


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = _id()
    username: Mapped[str] = mapped_column(Text, unique=True)
    display_name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    role: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = _created()


class Stream(Base):
    __tablename__ = "streams"
    id: Mapped[int] = _id()
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = _created()


class Phase(Base):
    __tablename__ = "phases"
    __table_args__ = (UniqueConstraint("stream_id", "code"), UniqueConstraint("stream_id", "seq"))
    id: Mapped[int] = _id()
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    code: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    seq: Mapped[int]
    created_at: Mapped[datetime] = _created()


class Lot(Base):
    __tablename__ = "lots"
    id: Mapped[int] = _id()
    lot_code: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    product: Mapped[str] = mapped_column(Text)
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 3))
    uom: Mapped[str] = mapped_column(Text)
    stream_id: Mapped[int | None] = mapped_column(ForeignKey("streams.id"))
    produced_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    created_at: Mapped[datetime] = _created()


class ProductionRun(Base):
    __tablename__ = "production_runs"
    id: Mapped[int] = _id()
    run_code: Mapped[str] = mapped_column(Text, unique=True)
    stream_id: Mapped[int | None] = mapped_column(ForeignKey("streams.id"))
    phase_id: Mapped[int | None] = mapped_column(ForeignKey("phases.id"))
    operator: Mapped[str] = mapped_column(Text, server_default=text("''"))
    started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    created_at: Mapped[datetime] = _created()


class LotGenealogy(Base):
    """One edge: quantity of the parent lot consumed into the child lot."""

    __tablename__ = "lot_genealogy"
    # seed.sql's bare ON CONFLICT DO NOTHING needs a unique key to mean anything.
    __table_args__ = (UniqueConstraint("parent_lot_id", "child_lot_id", "run_id"),)
    id: Mapped[int] = _id()
    parent_lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    child_lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 3))
    uom: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("production_runs.id"))
    created_at: Mapped[datetime] = _created()


class QcGate(Base):
    __tablename__ = "qc_gates"
    id: Mapped[int] = _id()
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"))
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = _created()


class QcDecision(Base):
    __tablename__ = "qc_decisions"
    id: Mapped[int] = _id()
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    gate_id: Mapped[int | None] = mapped_column(ForeignKey("qc_gates.id"))
    decision: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    decided_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True), server_default=func.now())


class Scenario(Base):
    __tablename__ = "scenarios"
    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(Text)
    root_lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()
    duration_ms: Mapped[float] = mapped_column(server_default=text("0"))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONB)
