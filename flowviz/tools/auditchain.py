"""`flowviz audit verify`: seal what is committed, walk the audit log's hash chain (migrations
0010, 0013) and name the first row that was edited, deleted or inserted behind the database's rules.

A write stamps its row with `digest` (sha256 of its content); the services' sealer links rows
into the chain after commit: `seq` (1, 2, ...), `prev_hash` (the hash of row seq - 1) and `hash`
(sha256 over seq, prev_hash and the content). verify first seals every committed row itself
(unless --no-seal, e.g. as a role that may not), then walks in seq order:
- a gap in seq: rows were removed (deleted);
- the content no longer gives the stored hash, or its digest: the row was changed (edited);
- prev_hash is not the hash of the row before: that row was changed and its hash recomputed;
then the rows not yet sealed, in id order:
- no digest: the row was inserted with the triggers off (inserted);
- the content no longer gives its digest (edited);
- older than --max-unsealed-age seconds: no sealer has run (unsealed): is any service up?
The chain proves nothing about its own end: keep the head hash this prints somewhere else (a
ticket, a signed e-mail) and compare it, to catch the last rows removed or a rewritten chain.
Rows not yet sealed (normally for under a second) are that end too: the superuser can remove
one, or edit it and recompute its digest, unseen.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass

import psycopg

from flowviz.core import config

CONTENT = "at, actor, action, entity, entity_key, reason, details"
WALK = f"""
SELECT id, seq, prev_hash, hash, digest,
       flowviz_audit_digest(seq, prev_hash, {CONTENT}) AS recomputed,
       flowviz_audit_digest(NULL, NULL, {CONTENT}) AS content_digest,
       extract(epoch FROM now() - at)::float8 AS age
FROM audit_log ORDER BY seq NULLS LAST, id
"""
SEAL_BATCH = 10_000
MAX_UNSEALED_AGE = 60.0  # seconds: the services seal every ~0.2 s


@dataclass
class Result:
    rows: int  # sealed rows found intact
    head: str  # hex hash of the last of them ("" for an empty log)
    broken_at: int | None = None  # audit_log.id of the first row found wrong
    problem: str = ""  # "edited", "deleted", "inserted" or "unsealed"
    message: str = ""
    unsealed: int = 0  # rows after the head not yet sealed, none of them wrong
    oldest_unsealed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def seal(database_url: str) -> int:
    """Seal every committed row (waiting for a sealer already at it); returns how many. A database
    from before migration 0013 has nothing to seal."""
    total = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regprocedure('flowviz_audit_seal(integer, boolean)')").fetchone()
        if not found or found[0] is None:
            return 0
        while True:
            row = conn.execute("SELECT flowviz_audit_seal(%s, true)", (SEAL_BATCH,)).fetchone()
            sealed = int(row[0]) if row and row[0] is not None else 0
            total += sealed
            if sealed < SEAL_BATCH:
                return total


def verify(database_url: str, *, sealing: bool = True, max_unsealed_age: float = MAX_UNSEALED_AGE) -> Result:
    if sealing:
        # A role that may only read cannot seal: the walk then reports what is still unsealed.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            seal(database_url)
    with psycopg.connect(database_url) as conn, conn.cursor(name="audit_walk") as cur:
        cur.itersize = 10_000
        cur.execute(WALK)
        rows, prev_id, prev_hash = 0, 0, b""
        unsealed, oldest = 0, 0.0
        for row_id, seq, stored_prev, stored, digest, recomputed, content_digest, age in cur:
            if seq is None:
                if digest is None or stored is not None or stored_prev is not None:
                    return Result(rows, prev_hash.hex(), row_id, "inserted",
                                  f"row {row_id} was inserted behind the rules (no digest: the triggers were off)")  # fmt: skip
                if bytes(digest) != bytes(content_digest):
                    return Result(rows, prev_hash.hex(), row_id, "edited",
                                  f"row {row_id} (not yet sealed) was edited: its content no longer gives its digest")  # fmt: skip
                if age > max_unsealed_age:
                    return Result(rows, prev_hash.hex(), row_id, "unsealed",
                                  f"row {row_id} has waited {age:.0f} s to be sealed (more than "
                                  f"{max_unsealed_age:g} s): no sealer is running")  # fmt: skip
                unsealed, oldest = unsealed + 1, max(oldest, age)
                continue
            if stored is None or stored_prev is None:
                return Result(rows, prev_hash.hex(), row_id, "inserted",
                              f"row {row_id} was inserted outside the chain (seq {seq} without a hash)")  # fmt: skip
            if seq != rows + 1:
                return Result(rows, prev_hash.hex(), row_id, "deleted",
                              f"rows with seq {rows + 1}..{seq - 1} are missing before row {row_id} "
                              f"(seq {seq}): deleted")  # fmt: skip
            if bytes(recomputed) != bytes(stored) or (
                digest is not None and bytes(digest) != bytes(content_digest)
            ):
                return Result(rows, prev_hash.hex(), row_id, "edited",
                              f"row {row_id} (seq {seq}) was edited: its content no longer gives its hash")  # fmt: skip
            if bytes(stored_prev) != prev_hash:
                return Result(rows, prev_hash.hex(), prev_id, "edited",
                              f"row {prev_id} (seq {seq - 1}) was edited and rehashed: row {row_id} "
                              "does not follow it")  # fmt: skip
            rows, prev_id, prev_hash = seq, row_id, bytes(stored)
        return Result(rows, prev_hash.hex(), unsealed=unsealed, oldest_unsealed_s=oldest)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowviz audit", description="walk the audit log's hash chain")
    parser.add_argument("command", choices=["verify"])
    parser.add_argument("--no-seal", action="store_true", help="only read: do not seal committed rows first")
    parser.add_argument("--max-unsealed-age", type=float, default=MAX_UNSEALED_AGE, metavar="SECONDS",
                        help="an unsealed row older than this is reported (default %(default)g)")  # fmt: skip
    args = parser.parse_args(argv)
    url = config.tool_settings().database_url
    if not url:
        sys.exit("DATABASE_URL is not set")
    result = verify(url, sealing=not args.no_seal, max_unsealed_age=args.max_unsealed_age)
    if result.ok:
        print(f"audit chain intact: {result.rows} rows, head {result.head}")
        if result.unsealed:
            print(f"and {result.unsealed} rows written since, not yet sealed (the oldest {result.oldest_unsealed_s:.1f} s ago)")  # fmt: skip
        return 0
    print(f"audit chain broken: {result.message}", file=sys.stderr)
    print(
        f"the {result.rows} rows before it are intact, up to hash {result.head or '(none)'}", file=sys.stderr
    )
    return 1
