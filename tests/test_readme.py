"""The README's example requests: one for every route that writes, and each of them works as
written against the running system."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gateway.routes import API
from tests.conftest import ROOT, System, token
from tests.tools import require

README = (ROOT / "README.md").read_text()
WRITES = ("POST", "PUT", "PATCH", "DELETE")
CURL = re.compile(r"""curl\b[^\n]*?-X (\w+) "?(\$A|localhost:8000/api)(/[^\s"?]*)""")


def examples() -> str:
    """The shell block of the "Example requests" section."""
    section = README.split("### Example requests", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def write_routes() -> set[tuple[str, str]]:
    routes = {(r.method, r.path) for r in API}
    return {(method, path) for method, path in routes if method in WRITES}


def test_every_write_route_has_an_example() -> None:
    shown = [(method, "/api" + path) for method, _, path in CURL.findall(README)]
    missing = []
    for method, path in sorted(write_routes()):
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        if not any(m == method and pattern.match(p) for m, p in shown):
            missing.append(f"{method} {path}")
    assert not missing, f"README has no example request for: {', '.join(missing)}"


def test_the_examples_work_as_written(system: System, tmp_path: Path) -> None:
    require("curl", how="install curl (Debian: apt-get install curl)")
    host = system.base.removeprefix("http://")
    script = (
        "set -euo pipefail\n"
        # Each request must succeed (a 4xx/5xx fails the script, showing the body).
        'curl() { command curl -sS --fail-with-body "$@"; echo; }\n'
        f"TOKEN={token('ada')}\n" + examples().replace("localhost:8000", host)
    )
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    replies = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(replies) == examples().count("curl -X")
    # The historical import at the end let two rules through, and said so.
    assert '"rule":"LOT_BLOCKED"' in replies[-1] and '"rule":"INSUFFICIENT_QUANTITY"' in replies[-1]
