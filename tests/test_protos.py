"""Each proto compiles with `-I protos` alone (the way ghz and grpcurl load them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_tools import protoc

PROTOS = sorted((Path(__file__).parent.parent / "protos").rglob("*.proto"))


def test_there_are_versioned_protos() -> None:
    packages = {p.parent.relative_to(p.parents[3]).as_posix() for p in PROTOS}
    assert {"flowviz/lots/v1", "flowviz/genealogy/v1", "flowviz/qc/v1", "flowviz/health/v1"} <= packages


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_compiles_alone_with_only_the_protos_include(proto: Path, tmp_path: Path) -> None:
    root = proto.parents[3]
    # protoc's own include (google/protobuf/*.proto well-known types) is what ghz also bundles.
    import grpc_tools

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{root}", f"-I{wkt}", f"--python_out={tmp_path}", str(proto)]
    assert protoc.main(args) == 0
