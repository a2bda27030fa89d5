"""Effective status on every lot of graph, recall and one-level answers, batches and run
checks, from qc's read models (qc_lot_blocks, qc_lot_status), against a real database."""

from __future__ import annotations

import asyncpg

from flowviz.lots.v1 import lots_pb2
from services.genealogy import answers, effective, lot_rows

from .graphs import build, decide


def statuses(lots: list[lots_pb2.Lot]) -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    return {
        lot.lot_code: (lot.status, lot.effective_status, [(b.lot_code, b.status) for b in lot.blocking])
        for lot in lots
    }


async def recall_lots(conn: asyncpg.Connection, code: str) -> list[lots_pb2.Lot]:
    found = await answers.recall_impact(conn, code, max_depth=50, max_nodes=10_000)
    assert found is not None
    response = found[0]
    return [response.root.lot, *(r.lot for r in response.downstream), *(c.lot for c in response.upstream)]


async def blocks(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT l.lot_code, b.status, b.reason FROM qc_lot_blocks b JOIN lots l ON l.id = b.lot_id"
    )
    return {r["lot_code"]: (r["status"], r["reason"]) for r in rows}


async def test_read_model_follows_the_latest_decision(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B; C > B")
    assert await blocks(conn) == {}
    await decide(conn, "A", "hold")
    await decide(conn, "C", "pass")
    assert await blocks(conn) == {"A": ("on_hold", "test")}
    await decide(conn, "A", "release")
    assert await blocks(conn) == {}
    await decide(conn, "A", "reject")
    await decide(conn, "C", "hold")
    assert await blocks(conn) == {"A": ("rejected", "test"), "C": ("on_hold", "test")}


async def test_seed_recall_of_the_spice_shows_the_hold_downstream(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        before = statuses(await recall_lots(conn, "RAW-SPICE-001"))
        assert before["MIX-BATCH-88"] == ("pending", "pending", [])
        assert before["FG-DONER-X1"] == ("pending", "pending", [])
        await decide(conn, "RAW-SPICE-001", "hold")
        decision = await conn.fetchval("SELECT max(id) FROM qc_decisions")
        lots = await recall_lots(conn, "RAW-SPICE-001")
        after = statuses(lots)
        assert after["RAW-SPICE-001"] == ("on_hold", "on_hold", [("RAW-SPICE-001", "on_hold")])
        for code in ("MIX-BATCH-88", "FG-DONER-X1"):
            assert after[code] == ("pending", "on_hold", [("RAW-SPICE-001", "on_hold")])
        fg = next(lot for lot in lots if lot.lot_code == "FG-DONER-X1")
        assert (fg.blocking[0].decision_id, fg.blocking[0].reason) == (decision, "test")
        # The finished good's composition: the spice blocks itself, the beef is not blocked.
        up = statuses(await recall_lots(conn, "FG-DONER-X1"))
        assert up["RAW-SPICE-001"][1] == "on_hold" and up["RAW-BEEF-001"] == ("passed", "passed", [])
        assert up["FG-DONER-X1"][1:] == ("on_hold", [("RAW-SPICE-001", "on_hold")])
        graph = await answers.graph(conn, "MIX-BATCH-88", direction="both", max_depth=50, max_nodes=100)
        assert graph is not None
        assert {n.lot.lot_code: n.lot.effective_status for n in graph.nodes} == {
            "MIX-BATCH-88": "on_hold",
            "FG-DONER-X1": "on_hold",
            "RAW-SPICE-001": "on_hold",
            "RAW-BEEF-001": "passed",
        }
    finally:
        await conn.close()


async def test_blocks_from_outside_the_walk_and_rejected_over_hold(conn: asyncpg.Connection) -> None:
    # X is an ingredient of M that a recall of R never walks to; Y is R's grandparent-side lot.
    await build(conn, "R > M > F; X0 > X > M; Y > F")
    await decide(conn, "X0", "hold")
    await decide(conn, "M", "reject")
    found = statuses(await recall_lots(conn, "R"))
    assert found["R"] == ("pending", "pending", [])
    # Its own block first, then the ancestors', by code.
    assert found["M"] == ("rejected", "rejected", [("M", "rejected"), ("X0", "on_hold")])
    assert found["F"] == ("pending", "rejected", [("M", "rejected"), ("X0", "on_hold")])
    await decide(conn, "M", "pass")  # (a test shortcut: rejected is final through the API)
    found = statuses(await recall_lots(conn, "R"))
    assert found["M"] == ("passed", "on_hold", [("X0", "on_hold")])
    assert found["F"] == ("pending", "on_hold", [("X0", "on_hold")])


async def own_statuses(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT l.lot_code, s.status FROM qc_lot_status s JOIN lots l ON l.id = s.lot_id")
    return {r["lot_code"]: r["status"] for r in rows}


async def test_own_status_read_model_follows_the_latest_decision(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B")
    assert await own_statuses(conn) == {}  # no decision: pending
    await decide(conn, "A", "hold")
    await decide(conn, "B", "pass")
    assert await own_statuses(conn) == {"A": "on_hold", "B": "passed"}
    await decide(conn, "A", "release")
    assert await own_statuses(conn) == {"A": "released", "B": "passed"}
    await decide(conn, "B", "reject")
    assert await own_statuses(conn) == {"A": "released", "B": "rejected"}


async def test_batch_statuses_in_one_statement(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > C; D > C")
    await decide(conn, "A", "hold")
    await decide(conn, "D", "pass")
    await decide(conn, "C", "reject")
    found = {
        s.lot_code: (s.status, s.effective_status, s.blocked, [(b.lot_code, b.status) for b in s.blocking])
        for s in await effective.statuses(conn, ["C", "NOPE", "B", "D"])
    }
    assert list(found) == ["C", "B", "D"]  # request order, unknown lots left out
    assert found["C"] == ("rejected", "rejected", True, [("C", "rejected"), ("A", "on_hold")])
    assert found["B"] == ("pending", "on_hold", True, [("A", "on_hold")])
    assert found["D"] == ("passed", "passed", False, [])


async def test_run_lineage_names_every_ancestor_and_the_blocks(conn: asyncpg.Connection) -> None:
    ids = await build(conn, "A > B > C; D > C; E > F")
    found = await effective.lineage(conn, {ids["C"]: "C", ids["F"]: "F"})
    assert sorted(found.codes) == ["A", "B", "C", "D", "E", "F"] and found.blocked == {}
    await decide(conn, "B", "hold")
    await decide(conn, "C", "hold")
    found = await effective.lineage(conn, {ids["C"]: "C", ids["F"]: "F"})
    assert {c: [(b.lot_code, b.status) for b in bs] for c, bs in found.blocked.items()} == {
        "C": [("C", "on_hold"), ("B", "on_hold")]
    }


async def test_one_level_trace_carries_effective_status(conn: asyncpg.Connection) -> None:
    await build(conn, "X > A > B > C; Y > B")
    await decide(conn, "X", "hold")
    rows = await conn.fetch(lot_rows.NEIGHBOURS, "B")
    lots = {r["lot_code"]: r["qc_status"] for r in rows if r["rel"] != "block"}
    assert lots == {"B": None, "A": None, "Y": None, "C": None}
    blocked = {(r["lot_id"], r["lot_code"], r["qc_status"]) for r in rows if r["rel"] == "block"}
    id_of = {r["lot_code"]: r["lot_id"] for r in rows if r["rel"] != "block"}
    # X blocks A and B (in the answer) and C (below B); Y is not blocked.
    assert blocked == {(id_of[c], "X", "on_hold") for c in ("A", "B", "C")}
