"""The one protobuf codegen, run by `make proto` (per changed file) and the Dockerfile (all).

    python scripts/protoc.py protos/flowviz/lots/v1/lots.proto ...

Generated modules land beside the shared package (`from flowviz.lots.v1 import lots_pb2`); the
only include is protos/ (plus protoc's well-known types), so every proto compiles with `-I protos`
alone. Type stubs: mypy-protobuf's where its plugins sit next to this Python (the dev venv, for
mypy --strict), else protoc's own .pyi (the image, which has no dev tools).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("protoc-gen-mypy", "protoc-gen-mypy_grpc")


def args(protos: list[str], bindir: Path) -> list[str]:
    wkt = resources.files("grpc_tools") / "_proto"
    out = ["grpc_tools.protoc", "-I", "protos", "--python_out=.", "--grpc_python_out=."]
    plugins = [bindir / name for name in PLUGINS]
    if all(p.exists() for p in plugins):
        out += [f"--plugin={p.name}={p}" for p in plugins] + ["--mypy_out=.", "--mypy_grpc_out=."]
    else:
        out.append("--pyi_out=.")
    return [*out, *protos, f"-I{wkt}"]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python scripts/protoc.py PROTO...", file=sys.stderr)
        return 2
    protos = [os.path.relpath(Path(p).resolve(), ROOT) for p in argv]
    os.chdir(ROOT)
    return int(protoc.main(args(protos, Path(sys.executable).parent)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
