"""CPU cost of one grpc.aio unary call on this machine, client and server side.

Starts the gRPC floor (bench/floor_grpc.py: a bare grpc.aio server on uvloop answering
grpc.health.v1 Check) and calls it from a grpc.aio client on uvloop, `--calls` times with
`--concurrency` calls in flight. Prints calls/s and CPU microseconds per call of each side:
the part of every flowviz request that no change to flowviz's own code can remove (the
gateway pays the client side once per request, a service the server side).

    .venv/bin/python bench/grpc_cost.py --calls 20000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

FLOOR = Path(__file__).resolve().parent / "floor_grpc.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(port: int, calls: int, concurrency: int) -> tuple[float, float]:
    """(seconds, client CPU seconds) for `calls` Check calls."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        await stub.Check(request, wait_for_ready=True, timeout=30)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await stub.Check(request, timeout=10)

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(FLOOR), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "listening on ..."
        proc = psutil.Process(server.pid)
        uvloop.run(load(port, 1_000, args.concurrency))  # warm up
        before = sum(proc.cpu_times()[:2])
        seconds, client_cpu = uvloop.run(load(port, args.calls, args.concurrency))
        server_cpu = sum(proc.cpu_times()[:2]) - before
    finally:
        server.terminate()
        server.wait(10)
    n = args.calls
    print(
        f"{n:,} calls, {args.concurrency} in flight: {n / seconds:,.0f} calls/s; CPU per call: "
        f"client {client_cpu / n * 1e6:.0f} us, server {server_cpu / n * 1e6:.0f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
