"""Without the browser the browser tests say how to install it: skipped on a developer's
machine, failed in CI (where .ci/run installs it, so a missing browser is a broken set-up)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["FLOWVIZ_CHROMIUM"] = "/nonexistent/chromium"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/web/test_app.py", "-k", "layered"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("ci", [False, True])
def test_missing_chromium(ci: bool) -> None:
    result = _run(ci)
    assert "apt-get install -y chromium" in result.stdout, result.stdout
    if ci:
        assert result.returncode == 1 and "1 error" in result.stdout, result.stdout
    else:
        assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
