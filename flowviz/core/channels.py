"""gRPC client channels: one per upstream per process, created inside the running loop.

Chosen so that a rolling restart of a service's replicas fails no call (README "Replicas and
rolling restarts"):

- round_robin over every address of the target: a static list (`ipv4:127.0.0.1:p1,127.0.0.1:p2`)
  or what a dns:/// name resolves to (a headless Service in Kubernetes).
- client-side health checking (grpc.health.v1 Watch on ""): a replica that got SIGTERM reports
  NOT_SERVING at once and leaves the picker before it stops accepting calls.
- waitForReady: while no replica is ready (the moment a lone replica restarts) a call waits, up
  to its own deadline, instead of failing at once with UNAVAILABLE.
- no retryPolicy on status codes: a call that reached a server is never re-sent by the channel
  (it may have run; a write without an Idempotency-Key would run twice). gRPC's transparent
  retry (on by default) re-sends only calls that never reached a server's application: refused
  streams, streams past a GOAWAY.
- keepalive pings find a dead peer (a host gone, a partition) within ~15 s; a fast reconnect
  backoff brings a restarted replica back into the rotation within ~1 s of it listening.
"""

from __future__ import annotations

import json

import grpc

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{"name": [{}], "waitForReady": True}],
    }
)

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

# The server's side of keepalive: accept the clients' pings (the default would GOAWAY a client
# that pings more often than every 5 minutes without calls).
SERVER_KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
