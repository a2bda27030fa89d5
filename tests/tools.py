"""Outside tools a test needs (executables, Python modules): found, or the test is skipped
saying exactly what is missing and how to get it. Under CI (the `CI` environment variable is
set; `.ci/run` sets it) a missing tool fails the test instead, since CI installs every tool.

    tools.require("hadolint", ("kubectl", "kustomize"), how="run `bash deploy/install-tools.sh`")

Executables are looked up in the project's .venv/bin first (where pinned tools are installed
from PyPI), then on PATH; "docker compose" (with a space) means the Docker CLI plugin.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def find(name: str) -> str | None:
    """The path of executable `name` (.venv/bin first, then PATH), or None."""
    if " " in name:  # a subcommand plugin, e.g. "docker compose"
        command, sub = name.split(" ", 1)
        path = find(command)
        if path is None:
            return None
        found = subprocess.run([path, sub, "version"], capture_output=True, check=False, timeout=30)
        return path if found.returncode == 0 else None
    venv = VENV_BIN / name
    return str(venv) if os.access(venv, os.X_OK) else shutil.which(name)


def missing(message: str) -> None:
    """Skip the test with `message`, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so a missing tool fails the test)")
    pytest.skip(message)


def require(*tools: str | tuple[str, ...], how: str) -> None:
    """Each tool (a name, or a tuple of alternatives any one of which will do) must be found."""
    absent = [
        " or ".join(tool) if isinstance(tool, tuple) else tool
        for tool in tools
        if not any(find(name) for name in (tool if isinstance(tool, tuple) else (tool,)))
    ]
    if absent:
        missing(f"missing {', '.join(absent)}: {how}")


def require_module(name: str, how: str) -> ModuleType:
    """The Python module `name`, imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"missing the Python module {name}: {how}")
        raise  # not reached: missing() skips or fails
