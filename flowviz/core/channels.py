"""gRPC client channels: one per upstream per process, created inside the running loop."""

from __future__ import annotations

import json

import grpc

# round_robin spreads calls over every address a dns:/// target resolves to (a headless
# Service in Kubernetes); with one address it behaves like pick_first.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
