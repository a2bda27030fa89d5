"""A client that gives up cancels the database query behind its request."""

from __future__ import annotations

import socket
import time

import psycopg

from tests.conftest import System, token

WAITING = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name LIKE 'flowviz-genealogy%' AND wait_event_type = 'Lock' AND state = 'active'"
)


def _wait_until(conn: psycopg.Connection, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (row := conn.execute(WAITING).fetchone()) is None or row[0] != expected:
        assert time.monotonic() < deadline, f"expected {expected} waiting queries, saw {row}"
        time.sleep(0.02)


def test_closing_the_connection_cancels_the_query(system: System) -> None:
    url = system.env["DATABASE_URL"]
    with psycopg.connect(url) as locker, psycopg.connect(url, autocommit=True) as watcher:
        # Hold the genealogy table so the trace query waits inside PostgreSQL.
        locker.execute("LOCK TABLE lot_genealogy IN ACCESS EXCLUSIVE MODE")
        host, port = system.base.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(
            f"GET /api/traceability/RAW-BEEF-001/graph?max_depth=37 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token('ana')}\r\n\r\n".encode()
        )
        _wait_until(watcher, 1)
        client.close()  # the client gives up
        _wait_until(watcher, 0)  # ... and the query is gone while the lock is still held
        locker.rollback()
