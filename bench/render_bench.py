"""How the gateway turns a large answer into JSON: whole (`orjson.dumps(to_json(...))`) or in
parts (`flowviz.core.protojson.dumps`), on a made-up graph of N lots. Prints the JSON's size, the
peak of Python allocations while encoding (tracemalloc) and the time (best and median of 7).

    .venv/bin/python bench/render_bench.py --lots 10000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
import tracemalloc
from collections.abc import Callable

import orjson

from flowviz.core.protojson import dumps, to_json
from flowviz.genealogy.v1 import genealogy_pb2


def graph(lots: int) -> genealogy_pb2.GetTraceGraphResponse:
    answer = genealogy_pb2.GetTraceGraphResponse(root="RAW-0", direction=genealogy_pb2.DIRECTION_BOTH)
    for i in range(lots):
        node = answer.nodes.add(depth=i % 12, side="downstream")
        lot = node.lot
        lot.lot_code, lot.kind, lot.product, lot.quantity, lot.uom = (
            f"L-{i:06d}",
            "MIX",
            "doner mix",
            40.5,
            "kg",
        )
        lot.produced_at.FromJsonString("2026-01-16T08:00:00Z")
        lot.created_at.FromJsonString("2026-01-16T08:00:01Z")
        answer.edges.add(parent=f"L-{i:06d}", child=f"L-{i + 1:06d}", quantity=i / 3, uom="kg", edge_id=i)
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=10_000)
    args = parser.parse_args()
    answer = graph(args.lots)
    flat = frozenset({"nodes"})
    ways: dict[str, Callable[[], bytes]] = {
        "whole (to_json + orjson)": lambda: orjson.dumps(to_json(answer, flat)),
        "in parts (protojson.dumps)": lambda: dumps(answer, flat),
    }
    print(f"{args.lots:,} lots; load average {os.getloadavg()[0]:.2f}")
    for name, encode in ways.items():
        tracemalloc.start()
        body = encode()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        times = timeit.repeat(encode, timer=time.perf_counter, number=1, repeat=7)
        print(
            f"{name:28} JSON {len(body) / 1e6:.1f} MB, allocations peak {peak / 1e6:.1f} MB, "
            f"best {min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
