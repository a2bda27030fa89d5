"""flowviz/core/config.py is the one module that reads the environment: every other module of
flowviz/, services/ and gateway/ asks config for a setting, so each has one name, one default
and one validation message. Read from the source (AST), so a new `os.environ.get` anywhere fails
here before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flowviz.core import config

ROOT = Path(__file__).resolve().parents[3]
FOLDERS = ("flowviz", "services", "gateway")
OWNER = ROOT / "flowviz" / "core" / "config.py"
# The only exceptions, each with why.
EXCLUDED: set[str] = set()
READERS = frozenset({"environ", "environb", "getenv", "getenvb"})
# Writing the environment is not reading a setting: `flowviz run` sets DATABASE_URL, VALKEY_URL
# and the keys it made for itself and its children (os.environ.update / os.environ[k] = v).
WRITES = frozenset({"update"})


def _sources() -> list[Path]:
    files = [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    # Generated stubs (protoc) read nothing, and are not ours to edit.
    return [p for p in files if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) of every read of the environment in `source`."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names if a.name in READERS]
        if not (isinstance(node, ast.Attribute) and node.attr in READERS):
            continue
        if not (isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del)):
            continue
        if (
            isinstance(parent, ast.Attribute)
            and parent.attr in WRITES
            and isinstance(parents.get(parent), ast.Call)
        ):
            continue
        found.append((node.lineno, f"os.{node.attr}"))
    return found


def test_no_module_but_config_reads_the_environment() -> None:
    readers = []
    for path in _sources():
        name = path.relative_to(ROOT).as_posix()
        if path == OWNER or name in EXCLUDED:
            continue
        readers += [f"{name}:{line}: {what}" for line, what in environment_reads(path.read_text())]
    assert not readers, "read these through flowviz.core.config:\n" + "\n".join(readers)


def test_config_itself_reads_it() -> None:
    assert environment_reads(OWNER.read_text())  # the check sees what config.py does


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('A')",
        "import os\nx = os.environ['A']",
        "import os\nx = os.getenv('A', '1')",
        "import os\nos.environ.setdefault('A', '1')",
        "from os import environ",
        "import os\nenv = {**os.environ}",
    ],
)
def test_a_read_is_found(source: str) -> None:
    assert environment_reads(source)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.environ.update({'A': '1'})",
        "import os\nos.environ['A'] = '1'",
        "import os\nos.getpid()",
    ],
)
def test_a_write_is_not_a_read(source: str) -> None:
    assert not environment_reads(source)


def test_the_tools_settings_keep_their_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "VALKEY_URL", "FLOWVIZ_DATA_DIR", "FLOWVIZ_PG_PORT", "FLOWVIZ_VALKEY_PORT",
                 "FLOWVIZ_GATEWAY_PORT", "FLOWVIZ_DRAIN_SECONDS", "FLOWVIZ_ADMIN_USER", "FLOWVIZ_ADMIN_PASSWORD",
                 "FLOWVIZ_CACHE_SECRET", "FLOWVIZ_TOKEN_PUBLIC_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    given = config.tool_settings()
    assert (given.pg_port, given.valkey_port, given.gateway_port, given.drain_seconds) == (
        5433,
        6379,
        8000,
        10.0,
    )
    assert given.database_url == given.valkey_url == given.data_dir == given.admin_user == ""
    monkeypatch.setenv("FLOWVIZ_PG_PORT", "6543")
    monkeypatch.setenv("FLOWVIZ_ADMIN_USER", "root")
    assert (config.tool_settings().pg_port, config.tool_settings().admin_user) == (
        6543,
        "root",
    )  # read each call


@pytest.mark.parametrize(
    ("name", "value"),
    [("FLOWVIZ_PG_PORT", "five"), ("FLOWVIZ_VALKEY_PORT", "70000"), ("FLOWVIZ_DRAIN_SECONDS", "-1")],
)
def test_a_bad_tool_setting_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError, match=name):
        config.tool_settings()
