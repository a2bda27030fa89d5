"""The arrows between services, read from the source: no two services call each other in a
circle, genealogy (where effective status is computed) calls none, and no service's SQL names
qc's private decisions table (the others read qc's published read models)."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"
CHANNEL = re.compile(r"""\.channel\(\s*["']([a-z]+)["']\s*\)""")


def calls() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for source in SERVICES.glob("*/*.py"):
        service = source.parent.name
        found.setdefault(service, set()).update(CHANNEL.findall(source.read_text()))
    return found


def test_service_calls_form_no_circle() -> None:
    graph = calls()
    assert graph["qc"] == {"genealogy"} and graph["lots"] == {"genealogy"}
    assert graph["genealogy"] == set()

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ())
        )

    assert not [s for s in graph if reaches(s, s)]


def test_only_qc_names_its_decisions_table() -> None:
    # In SQL (FROM, JOIN, INTO, UPDATE, TABLE): a drill snapshot's JSON key of that name is not a read.
    in_sql = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+qc_decisions\b", re.IGNORECASE)
    readers = {
        source.relative_to(SERVICES).as_posix()
        for source in SERVICES.glob("*/*.py")
        if in_sql.search(source.read_text()) and source.parent.name != "qc"
    }
    assert readers == set()
    assert in_sql.search((SERVICES / "qc" / "repository.py").read_text())  # the pattern finds qc's own
