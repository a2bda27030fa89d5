"""`flowviz audit verify`: walk the audit log's hash chain (migration 0010) and name the first
row that was edited, deleted or inserted behind the database's rules.

Each row carries `seq` (1, 2, ...), `prev_hash` (the hash of row seq - 1) and `hash` (sha256 over
its content and prev_hash, computed by the database on insert). Walking in seq order:
- no seq or hash: the row was inserted with the chain's trigger off (inserted);
- a gap in seq: rows were removed (deleted);
- the content no longer gives the stored hash: the row was changed (edited);
- prev_hash is not the hash of the row before: that row was changed and its hash recomputed.
The chain proves nothing about its own end: keep the head hash this prints somewhere else
(a ticket, a signed e-mail) and compare it, to catch the last rows removed or a rewritten chain.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import psycopg

WALK = """
SELECT id, seq, prev_hash, hash,
       flowviz_audit_digest(seq, prev_hash, at, actor, action, entity, entity_key, reason, details) AS recomputed
FROM audit_log ORDER BY seq NULLS LAST, id
"""


@dataclass
class Result:
    rows: int
    head: str  # hex hash of the last row ("" for an empty log)
    broken_at: int | None = None  # audit_log.id of the first row found wrong
    problem: str = ""  # "edited", "deleted" or "inserted"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(database_url: str) -> Result:
    with psycopg.connect(database_url) as conn, conn.cursor(name="audit_walk") as cur:
        cur.itersize = 10_000
        cur.execute(WALK)
        rows, prev_id, prev_hash = 0, 0, b""
        for row_id, seq, stored_prev, stored, recomputed in cur:
            if seq is None or stored is None:
                return Result(rows, prev_hash.hex(), row_id, "inserted",
                              f"row {row_id} was inserted outside the chain (no seq or hash)")  # fmt: skip
            if seq != rows + 1:
                return Result(rows, prev_hash.hex(), row_id, "deleted",
                              f"rows with seq {rows + 1}..{seq - 1} are missing before row {row_id} "
                              f"(seq {seq}): deleted")  # fmt: skip
            if bytes(recomputed) != bytes(stored):
                return Result(rows, prev_hash.hex(), row_id, "edited",
                              f"row {row_id} (seq {seq}) was edited: its content no longer gives its hash")  # fmt: skip
            if bytes(stored_prev) != prev_hash:
                return Result(rows, prev_hash.hex(), prev_id, "edited",
                              f"row {prev_id} (seq {seq - 1}) was edited and rehashed: row {row_id} "
                              "does not follow it")  # fmt: skip
            rows, prev_id, prev_hash = seq, row_id, bytes(stored)
        return Result(rows, prev_hash.hex())


def main(argv: list[str]) -> int:
    if argv != ["verify"]:
        sys.exit("usage: flowviz audit verify   (DATABASE_URL)")
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL is not set")
    result = verify(url)
    if result.ok:
        print(f"audit chain intact: {result.rows} rows, head {result.head}")
        return 0
    print(f"audit chain broken: {result.message}", file=sys.stderr)
    print(
        f"the {result.rows} rows before it are intact, up to hash {result.head or '(none)'}", file=sys.stderr
    )
    return 1
