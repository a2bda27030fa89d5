"""Abuse limits: oversized bodies, huge pages and traces, login floods. Each is refused with a
4xx, and no process of the system grows by 50 MB or more while refusing them."""

from __future__ import annotations

import httpx

from tests.conftest import System

MB = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_limits_refuse_and_memory_stays_flat(system: System, http: httpx.Client) -> None:
    before = {name: rss(proc.pid) for name, proc in system.procs.items()}

    big = b'{"lot_code": "' + b"A" * (10 * MB) + b'"}'
    for _ in range(5):
        r = http.post("/api/lots", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
    # The same body without a Content-Length (chunked): refused once past the limit, not buffered whole.
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    r = http.post("/api/lots", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413

    r = http.get("/api/lots", params={"page_size": 1000000})
    assert r.status_code == 400 and r.json()["error"]["reason"] == "PAGE_SIZE_TOO_LARGE"
    r = http.get("/api/lots/FG-DONER-X1/qc-decisions", params={"page_size": 1000000})
    assert r.status_code == 400

    for _ in range(20):
        r = httpx.post(
            system.base + "/api/auth/token", json={"username": "nobody", "password": "x" * 1024}, timeout=10
        )
        assert r.status_code in (401, 429)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0

    after = {name: rss(proc.pid) for name, proc in system.procs.items()}
    grown = {name: (after[name] - before[name]) / MB for name in before}
    print("\nRSS growth (MB):", {k: round(v, 1) for k, v in grown.items()})
    assert all(g < 50 for g in grown.values()), grown
